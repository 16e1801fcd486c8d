"""Bad configs stop at load time with one line naming the cause (issue 23): values that used to reach a
traceback (seed, backbone, frame size, a binary file, a YAML alias bomb), path names that escape the runs and
results folders, and fixed weights that train nothing."""

import pytest

import reproduce
import train
from engine.config import ConfigError, load_config


@pytest.mark.parametrize("override, match", [
    ("seed=9223372036854775808", r"seed must be in \[0, 2\*\*63\)"),
    ("model.backbone=resnet7", "model.backbone must be one of resnet101, resnet18, resnet34, resnet50"),
    ("data.size=[1,1]", "data.size must be at least 16 pixels on each side"),
    ("data.crop=[8,8]", "data.crop must be at least 16 pixels"),
    ("name=../x", "name '../x' must be a plain name"),
    ("name=a/b", "must be a plain name"),
])
def test_bad_values_are_refused_at_config_load(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config([], [override])


def test_the_largest_seed_and_the_smallest_size_still_load():
    assert load_config([], ["seed=9223372036854775807"]).seed == 2**63 - 1
    assert load_config([], ["data.size=[16,16]"]).data.size == (16, 16)
    with pytest.raises(ConfigError, match="at least 32 pixels"):  # twice the output stride
        load_config([], ["data.size=[16,16]", "model.output_stride=16"])


def test_a_binary_config_file_is_one_line(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SystemExit, match=r"config error: .*checkpoint\.pt: cannot read it as a YAML config"):
        train.main(["--config", str(path)])


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
              f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: line 2: YAML aliases \(\*a\) are not allowed"):
        load_config([path])


def test_all_zero_fixed_weights_are_refused():
    with pytest.raises(ConfigError, match="every trained task weighs 0"):
        load_config([], ["method.name=fixed", "method.fixed.weights={semantic: 0, instance: 0, depth: 0}"])
    load_config([], ["method.name=fixed", "method.fixed.weights={semantic: 0, instance: 0, depth: 1}"])  # a sweep end


@pytest.mark.parametrize("preset", ["../x", "a/b", ".hidden", ""])
def test_a_preset_that_is_a_path_is_refused(preset, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        reproduce.main(["aggregate", "--preset", preset, "--results-dir", str(tmp_path / "results")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be a plain name" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "results").exists()
