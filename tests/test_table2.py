"""Table 2 through the runner: a manifest with `official:` scores each finished run with evaluate.py --official
(full resolution, both official evaluators), keeps the scores in its record and reports them beside the paper."""

import json
import textwrap
from pathlib import Path

import pytest
import torch

import reproduce
from engine.config import load_config
from experiments import runner
from experiments.layout import Paths
from experiments.manifest import find_manifests, load_manifest
from experiments.plan import runs_of
from models import build_model
from tests.test_reproduce import FAKE_TRAIN

MINI = "model: {backbone: resnet18, aspp_channels: 8, head_channels: 8}\ndata: {size: [32, 64], num_workers: 0}\n"
MANIFEST = """\
title: Table 2
paper: table2
seeds: [0]
columns: [semantic/miou]
official: {grouping: [hough]}
rows:
  - name: uw
    label: 3 task uncertainty weighting
    config: {tasks: [semantic, instance, depth], method: {name: uncertainty}}
"""


@pytest.fixture
def table2(tmp_path, synthetic_root, monkeypatch):
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "mini.yaml").write_text(MINI)
    (configs / "experiments" / "table2.yaml").write_text(MANIFEST)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    manifests = find_manifests(paths.manifests, ["table2"])
    summary = runner.reproduce("mini", manifests, None, 1, paths=paths, train_script=tmp_path / "fake_train.py",
                               data_root=str(synthetic_root))
    assert len(summary["trained"]) == 1
    run = runs_of(manifests[0], "mini", None, paths)[0]
    torch.manual_seed(0)  # the checkpoint a real training would leave: a random model of the run's config
    cfg = load_config([configs / "mini.yaml"], run.overrides)
    torch.save({"config": cfg.to_dict(), "model": build_model(cfg).state_dict(), "step": 1, "optimizer": {}},
               run.run_dir / "checkpoint.pt")
    return paths, manifests, run, str(synthetic_root)


def test_official_scores_are_kept_in_the_record_and_reported(table2):
    paths, manifests, run, root = table2
    scored = []
    assert runner.evaluate_official_runs("mini", manifests, None, paths, root, scored=scored) == []
    assert scored == [run.name]  # counted, so the runner logs an invocation that only scored runs
    record = json.loads((paths.records("mini") / f"{run.identity}.json").read_text())
    official = record["official"]
    assert official["command"][:2] == ["python", "evaluate.py"] and "--official" in official["command"]
    assert official["frames"] == 3 and official["file_size"] == [64, 128]
    assert set(official["instance_ap"]) == {"hough"} and "iou_class" in official["official"]
    assert "depth/rmse_px" in official["full_resolution"] and "root" not in official  # no machine paths
    log = run.run_dir / "evaluate.log"
    size = log.stat().st_size
    assert runner.evaluate_official_runs("mini", manifests, None, paths, root, scored=scored) == []  # once only
    assert scored == [run.name]
    assert log.stat().st_size == size

    assert reproduce.main(["aggregate", "table2", "--preset", "mini", "--configs-dir", str(paths.configs),
                           "--results-dir", str(paths.results)]) == 0
    t = json.loads((paths.results / "mini" / "table2.json").read_text())
    row = t["rows"][0]["official"]
    assert row["seeds"] == [0] and set(row["instance"]) == {"hough"}
    # Disparity errors in the paper's units: pixels of a 2048-wide frame = file pixels x 2048 / 128.
    raw, paper_units = row["depth"]["depth/mean_error_px"]["mean"], row["depth"]["depth/mean_error_px@2048"]["mean"]
    assert paper_units == pytest.approx(raw * 16)
    md = (paths.results / "mini" / "table2.md").read_text()
    assert "| 3 task uncertainty weighting (ours) | hough |" in md
    assert "| Multi-task, this work (paper, arXiv v3) | OPTICS | 21.6 | 39 | 35 | 37 | |" in md
    assert "| Multi-task, this work (paper) | 78.5 | 57.4 | 89.9 | 77.7 | 2.92 | 5.88 |  |" in md
    assert "multiplied by 2048 / width" in md and "evaluate.py --official" in md


def test_a_record_without_its_checkpoint_is_a_named_failure(table2, capsys):
    paths, manifests, run, root = table2
    (run.run_dir / "checkpoint.pt").unlink()
    failed = runner.evaluate_official_runs("mini", manifests, None, paths, root)
    assert len(failed) == 1 and "has no checkpoint to score" in failed[0][1]


def test_the_committed_table2_row_trains_longer_only_on_the_synthetic_preset():
    root = Path(__file__).resolve().parents[1]
    manifest = load_manifest(root / "configs" / "experiments" / "table2.yaml")
    assert manifest.official == {"grouping": ["hough", "optics"]}
    for preset, iterations in (("synthetic-cpu", 600), ("paper_full", 100000)):
        (run,) = runs_of(manifest, preset)
        assert run.config.optim.iterations == iterations and run.config.method.name == "uncertainty"
        assert run.config.tasks == ("semantic", "instance", "depth")


def test_manifest_official_grouping_is_checked(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text(MANIFEST.replace("[hough]", "[dbscan]"))
    with pytest.raises(Exception, match="official.grouping must be a list of"):
        load_manifest(bad)
    bad.write_text(textwrap.dedent(MANIFEST).replace("official: {grouping: [hough]}", "official: {groupin: [hough]}"))
    with pytest.raises(Exception, match="unknown key"):
        load_manifest(bad)
