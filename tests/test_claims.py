"""The claims experiment: verdicts and intervals on hand-computed differences, the schedule pilot, fixed
weights taken from another run's final weights (weights_from) through the runner, and the committed
manifests' consistency with the pilot and learning-rate grid they were chosen from."""

import json
import textwrap

import pytest
import yaml

from engine.config import ConfigError, load_config
from experiments import runner
from experiments.claims import CONTRADICTED, SUPPORTED, UNRESOLVED, claim_verdict, verdict
from experiments.delta_m import confidence_interval
from experiments.layout import Paths
from experiments.manifest import find_manifests, load_manifest
from experiments.plan import Pending, plan
from experiments.report import write_report

# Stands in for train.py. Learned weights end at 0.6 / 0.05 / 1.4 (+ seed / 100); metrics are made so that,
# paired by seed, uncertainty beats the fixed copy of its weights by 1.0, 1.5, 2.0 mIoU points (seeds 0, 1, 2)
# and by 1, 2, 3 px of instance error. Validation during training (val_every)
# logs mIoU 5 + step / 10 (+ seed).
FAKE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, os.getcwd())
    from engine.config import load_config
    files = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--config"]
    cfg = load_config(files, [a for a in sys.argv[1:] if "=" in a])
    run_dir = cfg.resolved_run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    s, n = cfg.seed, cfg.optim.iterations
    learned = cfg.method.name == "uncertainty"
    final = {"semantic": 0.6, "instance": 0.05, "depth": 1.4}
    if learned:
        w = {t: final[t] + s / 100 for t in cfg.tasks}
    else:
        w = dict(cfg.method.selected.weights)
    lines = [{"step": k, **{f"weight/{t}": (1.0 if learned and k == 1 else w[t]) for t in cfg.tasks}} for k in (1, n)]
    for k in range(cfg.val_every or n, n, cfg.val_every or n):
        lines.append({"step": k, "val/semantic/miou": 5 + k / 10 + s})
    with open(run_dir / "launched.txt", "w") as f:
        json.dump(w, f)
    copy = not learned and w.get("instance", 1.0) < 0.2  # the fixed copy of the learned weights
    miou = 10.0 + s + (2.0 + s / 2 if learned else 0.0) + (1.0 if copy else 0.0)
    inst = 5.0 + (s + 1 if copy else 0.0)
    metrics = {"semantic/miou": 5 + n / 10 + s if cfg.val_every else miou, "instance/mean_error_px": inst,
               "depth/mean_error_px": 1.0}
    lines.append({"step": n, "val/semantic/miou": metrics["semantic/miou"]})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\\n" for x in lines))
    (run_dir / "metrics.json").write_text(json.dumps({
        "step": n, "iterations": n, "config": cfg.to_dict(), "identity": cfg.identity(), "command": sys.argv,
        "git_commit": "fake", "metrics": {k: v for k, v in metrics.items() if k.split("/")[0] in cfg.tasks}}))
""")

CLAIMS = """
title: C
seeds: [0, 1, 2]
columns: [semantic/miou, instance/mean_error_px]
rows:
  - {name: uw, config: {method: {name: uncertainty}}}
  - {name: copy, weights_from: uw}
claims:
  - {name: dynamics, claim: UW beats its weights held fixed, better: uw, than: copy}
  - {name: reverse, claim: the copy beats UW, better: copy, than: uw}
"""


@pytest.fixture
def mini(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "mini.yaml").write_text("tasks: [semantic, instance]\nmodel: {backbone: resnet18}\n"
                                       "optim: {iterations: 6}\n")
    (tmp_path / "fake_train.py").write_text(FAKE)
    return Paths(configs, tmp_path / "runs", tmp_path / "results"), tmp_path / "fake_train.py"


def test_interval_and_verdicts_on_hand_computed_differences():
    ci = confidence_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(0.975, 2) = 4.3027: half width 2.484
    assert ci["mean"] == pytest.approx(2.0) and ci["low"] == pytest.approx(-0.48414, abs=1e-4)
    assert verdict(ci) == UNRESOLVED
    ci = confidence_interval([2.0, 2.5, 3.0])  # sd 0.5: [1.258, 3.742]
    assert ci["low"] == pytest.approx(1.25793, abs=1e-4) and verdict(ci) == SUPPORTED
    assert verdict(confidence_interval([-2.0, -2.5, -3.0])) == CONTRADICTED
    assert verdict(confidence_interval([5.0])) == UNRESOLVED  # one seed: no interval
    assert claim_verdict([SUPPORTED, SUPPORTED]) == SUPPORTED
    assert claim_verdict([SUPPORTED, UNRESOLVED]) == UNRESOLVED
    assert claim_verdict([SUPPORTED, CONTRADICTED]) == CONTRADICTED


def test_weights_from_waits_for_its_source_then_trains_its_final_weights_and_claims_are_judged(mini):
    paths, script = mini
    (paths.manifests / "c.yaml").write_text(CLAIMS)
    manifests = find_manifests(paths.manifests, ["c"])
    pending: list[str] = []
    jobs = plan("mini", manifests, paths=paths, pending=pending)
    assert len(jobs) == 3 and len(pending) == 3 and "copy seed 0 waits for c/uw seed 0" in pending[0]
    with pytest.raises(Pending):
        plan("mini", manifests, paths=paths)

    summary = runner.reproduce("mini", manifests, n_parallel=2, paths=paths, train_script=script)
    assert len(summary["trained"]) == 6 and not summary["failed"] and not summary["pending"]
    for seed in (0, 1, 2):  # each copy trained its own seed's final learned weights, exactly
        (job,) = [j for j in plan("mini", manifests, paths=paths) if j.run.row.name == "copy" and j.run.seed == seed]
        weights = json.loads((paths.runs / "mini" / job.run.identity / "launched.txt").read_text())
        assert weights == {"semantic": 0.6 + seed / 100, "instance": 0.05 + seed / 100}
        assert job.run.config.method.name == "fixed"

    write_report(manifests[0], "mini", paths)
    t = json.loads((paths.results / "mini" / "c.json").read_text())
    by = {c["name"]: c for c in t["claims"]}
    (miou,) = [m for m in by["dynamics"]["metrics"] if m["metric"] == "semantic/miou"]
    assert miou["difference"]["values"] == pytest.approx([1.0, 1.5, 2.0]) and miou["verdict"] == SUPPORTED
    assert miou["difference"]["low"] == pytest.approx(1.5 - 4.302653 * 0.5 / 3 ** 0.5, abs=1e-5)
    (inst,) = [m for m in by["dynamics"]["metrics"] if m["metric"] == "instance/mean_error_px"]
    assert inst["difference"]["values"] == pytest.approx([1.0, 2.0, 3.0])  # lower error is better: positive
    assert inst["verdict"] == UNRESOLVED and by["dynamics"]["verdict"] == UNRESOLVED  # not on every task
    assert by["reverse"]["verdict"] == CONTRADICTED  # mIoU's interval lies below 0
    md = (paths.results / "mini" / "c.md").read_text()
    assert "### Claims" in md and "**dynamics**: UW beats its weights held fixed | **not resolved**" in md
    copy_row = next(r for r in t["rows"] if r["name"] == "copy")
    assert copy_row["seeds"] == [0, 1, 2] and "uw's final weights" in copy_row["method"]


def test_a_claims_table_before_the_source_runs_names_the_copy_as_missing(mini):
    paths, _ = mini
    (paths.manifests / "c.yaml").write_text(CLAIMS)
    (manifest,) = find_manifests(paths.manifests, ["c"])
    write_report(manifest, "mini", paths)
    t = json.loads((paths.results / "mini" / "c.json").read_text())
    copy_row = next(r for r in t["rows"] if r["name"] == "copy")
    assert copy_row["missing_seeds"] == [0, 1, 2] and copy_row["planned_command"] is None
    assert all(c["verdict"] == UNRESOLVED for c in t["claims"])


def test_pilot_picks_the_shortest_schedule_whose_last_third_moves_less_than_the_seed_spread(mini):
    paths, script = mini
    # mIoU = 5 + step/10 + seed: over the last third it rises by n/30 (0.2 at 6 iterations, 3.0 at 90);
    # the seeds' spread is sd(0, 1) = 0.71: the short schedule settled, the long one did not.
    (paths.manifests / "p.yaml").write_text(textwrap.dedent("""
        title: P
        seeds: [0, 1]
        pilot: true
        columns: [semantic/miou]
        rows:
          - {name: short, config: {tasks: [semantic], optim: {iterations: 6}, val_every: 2}}
          - {name: longest, config: {tasks: [semantic], optim: {iterations: 90}, val_every: 30}}
        """))
    manifests = find_manifests(paths.manifests, ["p"])
    runner.reproduce("mini", manifests, n_parallel=2, paths=paths, train_script=script)
    write_report(manifests[0], "mini", paths)
    p = json.loads((paths.results / "mini" / "p.json").read_text())["pilot"]
    rows = {r["name"]: r for r in p["rows"]}
    assert rows["short"]["metrics"]["semantic/miou"]["change"] == pytest.approx(0.2)  # at step 4 of 6
    assert rows["short"]["metrics"]["semantic/miou"]["from_step"] == [4]
    assert rows["longest"]["metrics"]["semantic/miou"]["change"] == pytest.approx(3.0)  # > sd: not settled
    assert rows["longest"]["metrics"]["semantic/miou"]["final_std"] == pytest.approx(0.5 ** 0.5)
    assert [r["settled"] for r in p["rows"]] == [True, False]
    assert p["chosen_iterations"] == p["used_iterations"] == 6
    assert "**Chosen schedule: 6 iterations.**" in (paths.results / "mini" / "p.md").read_text()


@pytest.mark.parametrize("rows, error", [
    ("[{name: a, weights_from: b}]", "weights_from names no row"),
    ("[{name: a, weights_from: a}]", "weights_from must name another row"),
    ("[{name: a, weights_from: b}, {name: b, weights_from: c}, {name: c}]", "itself takes weights_from"),
])
def test_manifest_weights_from_is_checked(tmp_path, rows, error):
    path = tmp_path / "m.yaml"
    path.write_text(f"title: M\nseeds: [0]\ncolumns: [semantic/miou]\nrows: {rows}\n")
    with pytest.raises(ConfigError, match=error):
        load_manifest(path)


@pytest.mark.parametrize("claim, error", [
    ("{name: x, claim: c, better: a, than: zz}", "names rows that do not exist"),
    ("{name: x, claim: c, better: a, than: {sky: a}}", "than must be a row"),
    ("{name: x, claim: c, better: a}", "a claim needs"),
])
def test_manifest_claims_are_checked(tmp_path, claim, error):
    path = tmp_path / "m.yaml"
    path.write_text(f"title: M\nseeds: [0]\ncolumns: [semantic/miou]\nrows: [{{name: a}}]\nclaims: [{claim}]\n")
    with pytest.raises(ConfigError, match=error):
        load_manifest(path)


def _committed(name: str) -> dict | None:
    path = Paths().results / "synthetic-calibrated" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_the_claims_preset_trains_the_pilots_chosen_schedule():
    pilot = _committed("claims-pilot")
    if pilot is None or any(r["missing_seeds"] for r in pilot["rows"]):
        pytest.skip("the pilot is not complete")
    cfg = load_config([Paths().configs / "synthetic-calibrated.yaml"])
    assert cfg.optim.iterations == pilot["pilot"]["used_iterations"]


def test_the_claims_single_task_rows_use_the_best_learning_rate_of_the_grid():
    grid = _committed("claims-lr")
    if grid is None or any(r["missing_seeds"] for r in grid["rows"]):
        pytest.skip("the learning-rate grid is not complete")
    manifest = yaml.safe_load((Paths().manifests / "claims.yaml").read_text())
    metric = {"semantic": "semantic/miou", "instance": "instance/mean_error_px", "depth": "depth/mean_error_px"}
    for task, key in metric.items():
        rows = [r for r in grid["rows"] if r["tasks"] == [task]]
        sign = 1 if key == "semantic/miou" else -1
        # chosen on seed 0 (the grid's seed; the chosen rows also hold the claims' seeds 1 and 2)
        best = max(rows, key=lambda r: sign * r["ours"][key]["values"][r["seeds"].index(0)])
        lr = float(best["name"].split("-lr")[1])
        (row,) = [r for r in manifest["rows"] if r["name"] == f"{task}-only"]
        assert row["config"]["optim"]["lr"] == lr, task


def _mini_cli(paths) -> list[str]:
    return ["--preset", "mini", "--configs-dir", str(paths.configs), "--runs-dir", str(paths.runs),
            "--results-dir", str(paths.results)]


def test_a_manifest_for_other_presets_is_skipped_by_all_and_refused_by_name(mini, capsys):
    import reproduce

    paths, _ = mini
    (paths.manifests / "c.yaml").write_text(CLAIMS + "for_presets: [elsewhere]\n")
    common = _mini_cli(paths)
    assert reproduce.main(["c", *common, "--dry-run"]) == 2
    assert "manifest c is defined only on preset(s) elsewhere" in capsys.readouterr().err
    assert reproduce.main(["all", *common, "--dry-run"]) == 0
    assert reproduce.main(["aggregate", *common]) == 0
    assert not (paths.results / "mini" / "c.json").exists()


def test_when_no_schedule_settles_the_longest_is_used_and_the_table_says_so():
    from experiments.claims import pilot_markdown

    p = {"rule": "r", "chosen_iterations": None, "used_iterations": 480,
         "rows": [{"name": "a", "iterations": 240, "settled": False, "metrics": {}},
                  {"name": "b", "iterations": 480, "settled": False, "metrics": {}}]}
    text = "\n".join(pilot_markdown({"pilot": p, "columns": []}))
    assert "No pilot schedule settled on every metric" in text and "trains the longest one, 480" in text


def test_a_superseded_manifest_is_skipped_by_all_and_refused_by_name(mini, capsys):
    """`all --preset synthetic-protocol` planned the v1 manifests (table1, benchmark, ...) beside their protocol
    versions: 49 trainings no table reads. `superseded` names the replacement on a preset."""
    import reproduce
    from experiments.manifest import for_preset, list_manifests

    paths, _ = mini
    (paths.manifests / "c.yaml").write_text(CLAIMS + "superseded: {mini: d}\n")
    common = _mini_cli(paths)
    assert reproduce.main(["c", *common, "--dry-run"]) == 2
    assert "manifest c is superseded on preset mini by d" in capsys.readouterr().err
    assert reproduce.main(["all", *common, "--dry-run"]) == 0 and "c/" not in capsys.readouterr().out
    (paths.manifests / "c.yaml").write_text(CLAIMS + "superseded: [mini]\n")
    assert reproduce.main(["all", *common, "--dry-run"]) == 2
    assert "superseded must map preset names" in capsys.readouterr().err
    # `plan` (no names, or `all`) plans what `all` trains: on a preset made for some manifests, only those
    (paths.manifests / "c.yaml").write_text(CLAIMS + "for_presets: [mini]\n")
    (paths.manifests / "e.yaml").write_text(CLAIMS.replace("title: C", "title: E"))
    for what in (["plan"], ["plan", "all"]):
        assert reproduce.main([*what, *common, "--measure-steps", "0"]) == 0
        out = capsys.readouterr().out
        assert "  new      c/uw seed 0" in out and "e/" not in out
    committed = for_preset(list_manifests(Paths().manifests), "synthetic-protocol", named=False)
    assert {m.name for m in committed if not m.name.startswith("protocol-")} == {"table2"}  # no v1 protocol
    assert len(committed) == 10
