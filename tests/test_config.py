"""Config loading: presets, dotted overrides, method options, unknown keys and bad values, identity."""

from pathlib import Path

import pytest

from engine.config import Config, ConfigError, config_from_dict, load_config, overrides_from_mapping

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_paper_optimiser():
    cfg = Config()
    o = cfg.optim
    assert (o.lr, o.momentum, o.nesterov, o.weight_decay, o.poly_power) == (2.5e-3, 0.9, True, 1e-4, 0.9)
    assert cfg.tasks == ("semantic", "instance", "depth")


def test_files_apply_in_order_then_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  backbone: resnet18\noptim:\n  iterations: 10\n")
    over = tmp_path / "row.yaml"
    over.write_text("tasks: [depth, semantic]\nmethod:\n  name: fixed\n"
                    "  fixed: {weights: {semantic: 0.9, depth: 0.1}}\n")
    cfg = load_config([base, over], ["optim.iterations=20", "method.fixed.weights.semantic=0.89", "data.size=[64,128]"])
    assert cfg.name == "base-row"
    assert cfg.model.backbone == "resnet18"
    assert cfg.optim.iterations == 20
    assert cfg.tasks == ("semantic", "depth")  # canonical order
    assert cfg.method.selected.weights == {"semantic": 0.89, "depth": 0.1}
    assert cfg.data.size == (64, 128)
    assert cfg.resolved_run_dir.as_posix() == f"runs/base-row/{cfg.identity()}"  # one directory per experiment


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.iteration'.*optim.iterations"):
        load_config([], ["optim.iteration=5"])
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        load_config([], ["modle.backbone=resnet18"])


@pytest.mark.parametrize("override, match", [
    ("optim.iterations=ten", "expected an integer"),
    ("optim.iterations=0", "must be positive"),
    ("optim.lr=[1]", "expected a number"),
    ("data.size=[64]", "expected 2 values"),
    ("model.output_stride=4", "must be 8 or 16"),
    ("tasks=[semantic, normals]", "unknown task"),
    ("method.fixed.weights.normals=1", "unknown task"),
    ("method.fixed.weights.depth=-1", "finite and >= 0"),
    ("method.name=gradsurgery", "unknown method 'gradsurgery'"),
    ("method.uncertainty.form=eq7", "method.uncertainty: unknown uncertainty form"),
    ("method.dwa.temperature=0", "method.dwa: temperature must be > 0"),
    ("method.uncertainty.formm=gal", "unknown config key 'method.uncertainty.formm'.*method.uncertainty.form"),
    ("method.pcgrd.space=features", "unknown config key 'method.pcgrd'.*method.pcgrad"),
    ("method.lr_mult=-1", "lr_mult must be >= 0"),
    ("amp=fp8", "amp must be"),
    ("data.flip=maybe", "true/false"),
    ("optim.iterations", "key=value"),
])
def test_bad_values_name_the_key(override, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        load_config([], [override])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])


def test_round_trip_and_identity():
    cfg = load_config([], ["model.backbone=resnet18", "seed=3", "method.name=dwa", "method.dwa.temperature=3"])
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict() and again.identity() == cfg.identity()
    # the identity ignores where and how the run is logged, but not what changes the weights
    same = ["model.backbone=resnet18", "seed=3", "run_dir=x", "log_every=1", "method.name=dwa",
            "method.dwa.temperature=3", "data.root=/elsewhere", "data.num_workers=7"]
    assert load_config([], same).identity() == cfg.identity()
    for change in ("seed=4", "method.dwa.temperature=2.5", "method.dwa.window=10", "optim.lr=0.1"):
        assert load_config([], same + [change]).identity() != cfg.identity(), change
    # without the seed: what all seeds of a row share
    assert load_config([], same + ["seed=4"]).identity(seed=False) == cfg.identity(seed=False)


def test_identity_hashes_only_values_that_differ_from_the_defaults():
    # Setting a value to its default changes nothing; so a new option with a default cannot either.
    assert load_config([], ["optim.lr=0.0025", "method.uncertainty.form=eq10"]).identity() == Config().identity()
    # Options of a method that is not selected do not count (a preset may set them for other rows).
    fixed = ["tasks=[depth]", "method.name=fixed"]
    assert load_config([], fixed + ["method.uncertainty.form=gal"]).identity() == load_config([], fixed).identity()
    assert load_config([], ["method.uncertainty.form=gal"]).identity() != Config().identity()


def test_every_method_has_its_own_identity_even_with_default_options():
    """The method's name always counts: two methods with all options at their defaults are different
    experiments (a default Config is uncertainty weighting)."""
    from losses import METHODS

    identities = {name: load_config([], [f"method.name={name}"]).identity() for name in METHODS}
    assert len(set(identities.values())) == len(METHODS), identities
    assert identities["uncertainty"] == Config().identity()


def test_a_preset_that_sets_uncertainty_options_does_not_break_fixed_rows(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("method:\n  name: uncertainty\n  uncertainty: {form: gal, init_log_var: 1.0}\n")
    cfg = load_config([preset], overrides_from_mapping({"tasks": ["depth"], "method": {
        "name": "fixed", "fixed": {"weights": {"depth": 1.0}}}}))
    assert cfg.method.name == "fixed" and cfg.to_dict()["method"] == {
        "name": "fixed", "lr_mult": 1.0, "fixed": {"weights": {"depth": 1.0}}}
    assert load_config([preset]).method.selected.form == "gal"


def test_overrides_from_mapping_replace_mappings_like_a_yaml_file(tmp_path):
    row = {"tasks": ["semantic", "depth"], "method": {"name": "fixed", "fixed": {"weights": {"semantic": 1 / 3}}},
           "optim": {"lr": 0.01}, "data": {"size": None}}
    overrides = overrides_from_mapping(row)
    assert overrides == ["tasks=[semantic, depth]", "method.name=fixed",
                         "method.fixed.weights={semantic: 0.3333333333333333}", "optim.lr=0.01", "data.size=null"]
    preset = tmp_path / "p.yaml"
    preset.write_text("method: {fixed: {weights: {depth: 0.5}}}\n")
    from_file = tmp_path / "row.yaml"
    from_file.write_text(__import__("yaml").safe_dump(row))
    assert load_config([preset], overrides).to_dict() | {"name": None} == \
        load_config([preset, from_file]).to_dict() | {"name": None}


def test_configs_saved_before_methods_had_options_still_load():
    old = Config().to_dict()
    del old["method"]
    old["weighting"] = {"name": "fixed", "weights": {"depth": 0.5}, "form": "eq10", "init_log_var": None,
                        "lr_mult": 1.0}
    old["tasks"] = ["depth"]
    cfg = config_from_dict(old)
    assert cfg.method.name == "fixed" and cfg.method.selected.weights == {"depth": 0.5}
    assert cfg.identity() == load_config([], ["tasks=[depth]", "method.name=fixed",
                                              "method.fixed.weights={depth: 0.5}"]).identity()


def test_presets_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config([path])


def test_string_fields_keep_the_command_line_text():
    # YAML would read `off` as False and `123` as an int; string fields take the text as written
    cfg = load_config([], ["amp=off", "name=123", "run_dir=null", "tasks=[depth]"])
    assert (cfg.amp, cfg.name, cfg.run_dir, cfg.tasks) == ("off", "123", None, ("depth",))
