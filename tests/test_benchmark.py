"""The method benchmark: Delta_m in both conventions on hand-computed cases, paired-seed intervals,
the benchmark table from run records (Delta_m, overheads, missing rows), --methods, the pass counter."""

import json
import math
import statistics

import pytest
import torch
from scipy import stats
from test_aggregate import PRESET, manifest, paths, rows_by_name, table, write_record  # noqa: F401

from bench.methods import PassCounter
from bench.train import random_batch
from engine.build import build_parts
from engine.config import ConfigError, load_config
from engine.step import train_step
from experiments.delta_m import confidence_interval, delta_m, paired_delta_m
from experiments.layout import Paths
from experiments.manifest import find_manifests
from reproduce import only_methods

BASE = {"semantic/miou": 50.0, "semantic/pixel_acc": 80.0, "instance/mean_error_px": 4.0,
        "depth/mean_error_px": 0.5, "depth/rmse_px": 1.0}


def test_delta_m_both_conventions_hand_computed():
    method = {"semantic/miou": 55.0, "semantic/pixel_acc": 80.0,  # +10 %, 0 %   (higher is better)
              "instance/mean_error_px": 5.0,  # -25 % (error up by a quarter)
              "depth/mean_error_px": 0.45, "depth/rmse_px": 1.1}  # +10 %, -10 %
    d = delta_m(method, BASE)
    # pooled, positive = worse: -(10 + 0 - 25 + 10 - 10) / 5
    assert d["pooled"] == pytest.approx(3.0)
    # per task, positive = better: semantic (10 + 0)/2 = 5, instance -25, depth (10 - 10)/2 = 0 -> -20 / 3
    assert d["per_task"] == pytest.approx(-20.0 / 3)
    assert delta_m(BASE, BASE) == {"pooled": 0.0, "per_task": 0.0}


def test_confidence_interval_is_student_t_over_seeds():
    ci = confidence_interval([1.0, 2.0, 6.0])
    half = stats.t.ppf(0.975, 2) * statistics.stdev([1.0, 2.0, 6.0]) / math.sqrt(3)
    assert ci["mean"] == pytest.approx(3.0)
    assert (ci["low"], ci["high"]) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    assert half == pytest.approx(4.303 * math.sqrt(7) / math.sqrt(3), rel=1e-3)
    one = confidence_interval([2.0])
    assert one["low"] is None and one["high"] is None and one["n"] == 1


def test_paired_delta_m_pairs_seeds_and_skips_unpaired_ones():
    metrics = ["semantic/miou", "depth/mean_error_px"]
    def point(miou, depth):
        return {"semantic/miou": miou, "depth/mean_error_px": depth}

    base = {0: point(50.0, 0.5), 1: point(40.0, 0.4)}
    method = {0: point(55.0, 0.5), 1: point(40.0, 0.44), 2: point(99.0, 0.1)}  # seed 2 has no baseline
    d = paired_delta_m(method, base, metrics)
    assert d["seeds"] == [0, 1]
    # seed 0: pooled -(10 + 0)/2 = -5; seed 1: -(0 - 10)/2 = +5 (paired with seed 1's own baseline)
    assert d["pooled"]["values"] == pytest.approx([-5.0, 5.0])
    assert d["per_task"]["values"] == pytest.approx([5.0, -5.0])
    assert paired_delta_m({3: method[0]}, base, metrics) is None


def test_benchmark_table_from_records(paths):  # noqa: F811
    for seed in (0, 1):
        write_record(paths, "benchmark", "semantic-only", seed,
                     {"semantic/miou": 50.0 + seed, "semantic/pixel_acc": 80.0})
        write_record(paths, "benchmark", "instance-only", seed, {"instance/mean_error_px": 4.0})
        write_record(paths, "benchmark", "depth-only", seed, {"depth/mean_error_px": 0.5, "depth/rmse_px": 1.0})
        write_record(paths, "benchmark", "famo", seed, {"semantic/miou": 55.0 + seed, "semantic/pixel_acc": 80.0,
                                                       "instance/mean_error_px": 4.0, "depth/mean_error_px": 0.5,
                                                       "depth/rmse_px": 1.0})
    overheads = {"command": "python -m bench.methods --preset mini", "device": "CPU", "git_commit": "abc",
                 "file": "results/mini/benchmark-overheads.json", "reference": "the 'fixed' row", "steps": 5,
                 "rounds": 3, "memory": "peak", "rows": {
                     "famo": {"step_time_rel": 1.31, "peak_memory_mib": 200.0, "backward_passes": 1.0},
                     "fixed": {"step_time_rel": 1.0, "peak_memory_mib": 190.0, "backward_passes": 1.0}}}
    (paths.results / PRESET / "benchmark-overheads.json").write_text(json.dumps(overheads))
    t = table(paths, "benchmark")
    rows = rows_by_name(t)
    famo = rows["famo"]
    # semantic mIoU +10 % (seed 0) and +1/0.51... per seed: 55/50 and 56/51; every other metric equal
    expected = [-100 * (5 / 50) / 5, -100 * (5 / 51) / 5]
    assert famo["delta_m"]["pooled"]["values"] == pytest.approx(expected)
    assert famo["delta_m"]["per_task"]["values"] == pytest.approx([100 * (5 / 50) / 2 / 3, 100 * (5 / 51) / 2 / 3])
    assert famo["delta_m"]["seeds"] == [0, 1]
    assert rows["semantic-only"]["baseline"] and rows["semantic-only"]["delta_m"] is None
    assert rows["dwa"]["delta_m"] is None and rows["dwa"]["missing_seeds"] == [0, 1, 2]
    assert famo["overheads"]["step_time_rel"] == 1.31 and t["overheads"]["command"].startswith("python -m bench")
    md = (paths.results / PRESET / "benchmark.md").read_text()
    assert "Δm % (pooled, + worse)" in md and "Nash-MTL / FAMO convention" in md and "LibMTL" in md
    line = next(x for x in md.splitlines() if x.startswith("| FAMO |"))
    lo, hi = famo["delta_m"]["pooled"]["low"], famo["delta_m"]["pooled"]["high"]
    assert f"[{lo:+.2f}, {hi:+.2f}]" in line and "| 1.31 |" in line
    assert (paths.results / PRESET / "benchmark.png").stat().st_size > 0


def test_only_methods_keeps_baselines_and_the_reference(paths):  # noqa: F811
    m = manifest(paths, "benchmark")
    (kept,) = only_methods([m], ["famo", "pcgrad"])
    assert [r.name for r in kept.rows] == ["semantic-only", "instance-only", "depth-only", "fixed", "pcgrad", "famo"]
    assert only_methods([m], None) == [m]
    with pytest.raises(ConfigError, match="unknown method"):
        only_methods([m], ["famo", "nope"])


def test_only_methods_takes_row_names():
    """--methods ls picks the benchmark's linear-scalarisation row (its method is `fixed`): a row name used to
    be refused as an unknown method."""
    (m,) = find_manifests(Paths().manifests, ["protocol-benchmark"])
    (kept,) = only_methods([m], ["ls", "dwa"])
    assert [r.name for r in kept.rows] == ["semantic-only", "instance-only", "depth-only", "fixed", "ls", "dwa"]


@pytest.mark.parametrize("name, options, backward, to_features, forward", [
    ("fixed", [], 1, 1, 1),
    ("famo", [], 1, 1, 2),  # the extra forward after the step
    ("gradnorm", [], 1, 4, 1),  # plus one partial backward per task to the last shared layer
    ("pcgrad", [], 3, 3, 1),  # one full backward per task
    ("pcgrad", ["method.pcgrad.space=features"], 1, 4, 1),  # K to the features, one through the encoder
])
def test_pass_counter(name, options, backward, to_features, forward):
    cfg = load_config([], ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8",
                           "data.size=[32,64]", "optim.batch_size=2", "device=cpu", f"method.name={name}", *options])
    p = build_parts(cfg, torch.device("cpu"), steps_per_epoch=2)
    counter = PassCounter(p.model)
    train_step(p, random_batch(2, 32, 64, torch.device("cpu")), 0)
    assert (counter.encoder, counter.features, counter.forwards) == (backward, to_features, forward)


def test_overheads_are_measured_once_for_all_rows_when_a_row_lacks_them(paths, monkeypatch):  # noqa: F811
    import subprocess

    import reproduce

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    m = manifest(paths, "benchmark")
    out = paths.results / PRESET / "benchmark-overheads.json"
    reproduce.measure_overheads(PRESET, [m], paths, paths.configs)
    assert len(calls) == 1 and calls[0][1:3] == ["-m", "bench.methods"] and str(out) in calls[0]
    rows = {r.name: {} for r in m.rows if r.name not in m.baselines.values()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows}))
    reproduce.measure_overheads(PRESET, [m], paths, paths.configs)  # complete: nothing to measure
    assert len(calls) == 1
    del rows["famo"]
    out.write_text(json.dumps({"rows": rows}))
    reproduce.measure_overheads(PRESET, [m], paths, paths.configs)  # a row is missing: all measured again
    assert len(calls) == 2


def test_overheads_of_a_manifest_whose_lr_grid_is_not_recorded_yet(tmp_path, monkeypatch):
    """bench.methods measures a grid manifest's rows before their lr grid has records (a step takes the same
    time at any lr): it used to stop with a traceback (Pending) on the protocol benchmark."""
    from bench import methods

    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "mini.yaml").write_text(
        "tasks: [semantic, depth]\ndevice: cpu\nmodel: {backbone: resnet18, aspp_channels: 8, head_channels: 8}\n"
        "data: {size: [32, 64]}\noptim: {batch_size: 2, lr: 0.01}\n")
    (configs / "experiments" / "grid.yaml").write_text(
        "title: G\nseeds: [0]\nlr_grid: {values: [0.02, 0.05], seeds: [0]}\ncolumns: [semantic/miou]\nrows:\n"
        "  - {name: fixed, config: {method: {name: fixed, fixed: {weights: {semantic: 0.5, depth: 0.5}}}}}\n"
        "  - {name: uw, config: {method: {name: uncertainty}}}\n")
    monkeypatch.setattr(methods, "measure_memory", lambda run, steps, threads: 0.0)  # no child processes here
    out = tmp_path / "overheads.json"
    assert methods.main(["--preset", "mini", "--manifest", "grid", "--configs-dir", str(configs), "--steps", "1",
                         "--rounds", "1", "--warmup", "0", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"fixed", "uw"} and rows["fixed"]["step_time_rel"] == 1.0
