"""Appendix B: the sigma^2 settling iteration on hand-made curves, and the manifest's report through the runner."""

import json

import pytest

import reproduce
from experiments import runner
from experiments.aggregate import settle_step
from experiments.layout import Paths
from experiments.manifest import find_manifests, load_manifest
from tests.test_reproduce import FAKE_TRAIN


def test_settle_step_is_the_first_step_from_which_the_curve_stays_within_the_tolerance():
    steps = [10, 20, 30, 40, 50, 60]
    # final 1.0: 1.05 at 30 is inside 10 %, 1.2 at 40 leaves it again, so it settles from 50
    assert settle_step(steps, [3.0, 2.0, 1.05, 1.2, 0.95, 1.0], 0.1) == 50
    assert settle_step(steps, [1.0] * 6, 0.1) == 10
    assert settle_step(steps, [3.0, 2.0, 1.5, 1.3, 1.11, 1.0], 0.1) == 60  # only the last point
    assert settle_step(steps, [1.0, 1.0, 1.0, 1.0, 1.0, float("nan")], 0.1) is None
    assert settle_step([], [], 0.1) is None


def test_manifest_settle_is_checked(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("title: A\nseeds: [0]\nsettle: 10\ncolumns: [semantic/miou]\nrows: [{name: r}]\n")
    with pytest.raises(Exception, match="settle must be a fraction between 0 and 1"):
        load_manifest(path)


def test_appendixb_report_gives_each_rows_settling_iteration_and_one_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "mini.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 1}\nlog_every: 1\n")
    (configs / "experiments" / "appendixb.yaml").write_text(
        (Paths().manifests / "appendixb.yaml").read_text().replace("[semantic, instance, depth]", "[depth]"))
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)  # logs sigma2/depth 2.0 at step 1, 2.5 at step 2
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    summary = runner.reproduce("mini", find_manifests(paths.manifests, ["appendixb"]), None, 1, paths=paths,
                               train_script=tmp_path / "fake_train.py")
    assert len(summary["trained"]) == 4
    assert reproduce.main(["aggregate", "appendixb", "--preset", "mini", "--configs-dir", str(configs),
                           "--results-dir", str(paths.results)]) == 0
    t = json.loads((paths.results / "mini" / "appendixb.json").read_text())
    for row in t["rows"]:
        depth = row["settle"]["tasks"]["depth"]
        assert depth["settle_step"]["mean"] == 2 and depth["final_sigma2"]["mean"] == 2.5  # 2.0 is 20 % off
    md = (paths.results / "mini" / "appendixb.md").read_text()
    assert "stays within 10% of its final value" in md and "| s0 = -2 | 2 | 2.500 |" in md
    assert (paths.results / "mini" / "appendixb.png").stat().st_size > 10_000
