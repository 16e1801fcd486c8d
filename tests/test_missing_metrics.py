"""Missing (NaN) metrics: strict JSON writes them as null; records, curves, aggregation and tables carry
them as "n/a" with the reason instead of crashing the runner, and tables say over how many seeds each mean
was taken."""

import json
import math
import os
from pathlib import Path

import yaml

import reproduce
from experiments import plots
from experiments.layout import Paths
from experiments.records import val_curves

ROOT = Path(__file__).resolve().parents[1]

TINY_PRESET = """\
model: {backbone: resnet18, aspp_channels: 8, head_channels: 8}
data: {size: [32, 64], num_workers: 0, train_frames: 2}
optim: {iterations: 2, batch_size: 2}
log_every: 1
val_every: 1
eval_batch_size: 1
"""


def test_null_values_in_a_training_log_are_nan_curves(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 1, "val/semantic/miou": 10.0, "val/semantic/iou/train": None,
                               "val/depth/mean_error_px": None}) + "\n"
                   + json.dumps({"step": 2, "val/semantic/miou": 12.0, "val/depth/mean_error_px": 1.5}) + "\n")
    curves = plots.read_curves(log, prefixes=("val/",))
    assert math.isnan(curves["val/semantic/iou/train"][0]) and math.isnan(curves["val/depth/mean_error_px"][0])
    val = val_curves(log)
    assert val["semantic/miou"] == [10.0, 12.0] and math.isnan(val["depth/mean_error_px"][0])


def test_a_small_val_set_with_nan_metrics_runs_to_a_table(synthetic_root, tmp_path, monkeypatch, capsys):
    """The issue's reproduction: a manifest row with a one-frame val set (classes absent: NaN IoUs, null in
    metrics.jsonl), trained by the real train.py, recorded and aggregated; a seed whose metric is null shows
    as n/a with the reason, and the mean says over how many seeds it was taken."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "tiny.yaml").write_text(TINY_PRESET)
    (configs / "experiments" / "small.yaml").write_text(yaml.safe_dump({
        "title": "Small val set", "seeds": [0, 1], "columns": ["semantic/miou", "depth/mean_error_px"],
        "rows": [{"name": "sd", "config": {"tasks": ["semantic", "depth"], "method": {"name": "fixed"},
                                           "data": {"val_frames": 1}}}]}))
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    dirs = ["--configs-dir", str(configs), "--runs-dir", str(paths.runs), "--results-dir", str(paths.results)]
    args = ["small", "--preset", "tiny", "--jobs", "1", "--threads", "1", "--data-root", str(synthetic_root), *dirs]
    assert reproduce.main(args) == 0, capsys.readouterr().err
    records = sorted(paths.records("tiny").glob("*.json"))
    assert len(records) == 2
    first = json.loads(records[0].read_text())
    assert "val_curves" in first  # validated during training; per-class IoUs of absent classes were null
    logged = [json.loads(ln) for ln in (paths.runs / "tiny" / first["identity"] / "metrics.jsonl").open()]
    assert any(v is None for row in logged for k, v in row.items() if k.startswith("val/semantic/iou/"))

    # One seed's depth error is missing (e.g. no valid disparity in its val frames): null in its record.
    first["metrics"]["depth/mean_error_px"] = None
    records[0].write_text(json.dumps(first))
    assert reproduce.main(args) == 0, capsys.readouterr().err  # the rerun's triage does not die either
    assert reproduce.main(["aggregate", "small", "--preset", "tiny", *dirs]) == 0
    table = json.loads((paths.results / "tiny" / "small.json").read_text())
    depth = table["rows"][0]["ours"]["depth/mean_error_px"]
    assert depth["n"] == 1 and depth["missing"]["seeds"] == [first["seed"]]
    assert "no valid pixel" in depth["missing"]["reason"]
    assert table["rows"][0]["ours"]["semantic/miou"]["n"] == 2
    md = (paths.results / "tiny" / "small.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| sd |"))
    assert "(n=1)" in row and "(n=2)" not in row
    assert f"n/a on seed {first['seed']}" in md and "no valid pixel" in md

    # Every seed n/a: the cell says n/a and why, not "missing" (which means not run yet).
    for path in records:
        rec = json.loads(path.read_text())
        rec["metrics"]["depth/mean_error_px"] = None
        path.write_text(json.dumps(rec))
    assert reproduce.main(["aggregate", "small", "--preset", "tiny", "--allow-fewer", *dirs]) == 0
    md = (paths.results / "tiny" / "small.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| sd |"))
    assert "n/a (no valid pixel" in row
    assert os.environ["WANDB_MODE"] == "disabled"


def test_a_record_rewritten_after_loading_keeps_its_null_metrics(tmp_path):
    """The runner adds official scores to a loaded record and writes it back: a NaN metric stays null."""
    from engine.config import Config
    from experiments.records import load_records
    from infra.atomic import write_json

    cfg = Config()
    paths = Paths(tmp_path / "configs", tmp_path / "runs", tmp_path / "results")
    path = paths.records("p") / f"{cfg.identity()}.json"
    write_json(path, {"config": cfg.to_dict(), "identity": cfg.identity(),
                      "metrics": {"semantic/miou": 1.0, "depth/mean_error_px": None},
                      "curves": {"step": [1, 2], "weight/depth": [None, 0.5]}})
    rec = load_records(paths, "p")[cfg.identity()]
    assert rec.missing == ("depth/mean_error_px",) and "depth/mean_error_px" not in rec.data["metrics"]
    assert math.isnan(rec.data["curves"]["weight/depth"][0])
    write_json(path, rec.stored())
    assert json.loads(path.read_text())["metrics"] == {"semantic/miou": 1.0, "depth/mean_error_px": None}
