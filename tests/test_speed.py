"""Speed switches (issue: GPU step, CPU bf16): each one trains a short run on the CPU, and the step
benchmark (bench/train.py) reports its figures for the config, the naive baseline and extra variants."""

import json

import pytest
import torch

import train
from bench.perf_table import render
from bench.train import gpu_peaks
from bench.train import main as bench_train
from engine.build import build_parts
from engine.config import load_config
from engine.step import train_step
from infra.provenance import ROOT

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true"]

SWITCHES = {"channels_last": ["channels_last=true"], "bf16": ["amp=bf16"],
            "bf16-channels_last": ["amp=bf16", "channels_last=true"], "foreach": ["optim.impl=foreach"],
            "fused": ["optim.impl=fused"], "loop": ["optim.impl=loop"]}


@pytest.mark.parametrize("name", SWITCHES)
def test_each_switch_trains_a_short_run(synthetic_root, tmp_path, name):
    out = train.main([*TINY, f"data.root={synthetic_root}", f"run_dir={tmp_path / name}", "optim.iterations=3",
                      *SWITCHES[name]])
    saved = json.loads((tmp_path / name / "metrics.json").read_text())
    assert saved["step"] == 3 and out["metrics"]["semantic/miou"] >= 0
    losses = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(row["loss/total"])) for row in losses if "loss/total" in row)


def test_channels_last_computes_the_same_step():
    from bench.train import random_batch

    results = []
    for cl in (False, True):
        cfg = load_config([], [*TINY, f"channels_last={str(cl).lower()}", "deterministic=false"])
        parts = build_parts(cfg, torch.device("cpu"), steps_per_epoch=10)
        parts.model.train()
        if cl:
            conv = next(m for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d))
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        results.append(train_step(parts, random_batch(2, 32, 64, torch.device("cpu")), 0).losses)
    for key in results[0]:
        assert results[1][key] == pytest.approx(results[0][key], rel=1e-4), key


def test_channels_last_is_part_of_the_identity():
    assert load_config([], ["channels_last=true"]).identity() != load_config([], []).identity()


def test_step_benchmark_reports_variants_flops_and_mfu(tmp_path):
    out = tmp_path / "perf.json"
    result = bench_train([*TINY, "--steps", "2", "--warmup", "1", "--rounds", "2", "--peak-n", "256",
                          "--variant", "bf16", "amp=bf16", "--json", str(out)])
    assert set(result["variants"]) == {"config", "naive", "bf16"}
    assert result["gflop_per_step"] > 0 and set(result["peak_TFLOPs"]) == {"fp32", "bf16"}
    bf16, base = result["variants"]["bf16"], result["variants"]["naive"]
    assert bf16["precision"] == "bf16" and bf16["overrides"] == ["amp=bf16"] and base["precision"] == "fp32"
    assert base["speedup_vs_naive"] == 1.0 and 0 < bf16["mfu_bf16"] and base["data_wait_fraction"] == 0.0
    for row in result["variants"].values():
        assert row["s_per_step_p50"] <= row["s_per_step_p90"] and row["images_per_s"] > 0
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m bench.train") and saved["git_commit"] and saved["config"]
    table = render(tmp_path)  # results/perf/README.md from the JSON files
    assert "| bf16 | amp=bf16 |" in table and saved["command"] in table


def test_step_benchmark_with_the_real_loader_measures_the_data_wait(synthetic_root):
    result = bench_train([*TINY, f"data.root={synthetic_root}", "--steps", "2", "--warmup", "1", "--rounds", "1",
                          "--peak-n", "256", "--loader", "--no-baseline"])
    row = result["variants"]["config"]
    assert result["loader"] and 0 < row["data_wait_fraction"] < 1


def test_gpu_peak_table():
    assert gpu_peaks("NVIDIA H100 80GB HBM3")[0] == "H100 SXM"
    assert gpu_peaks("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert gpu_peaks("NVIDIA H200")[1]["bf16"] > gpu_peaks("NVIDIA A100-SXM4-80GB")[1]["bf16"]
    assert gpu_peaks("Tesla T4") == (None, None)


def test_sgd_implementation_switch():
    from engine.config import ConfigError

    for impl, flags in (("foreach", {"foreach": True}), ("fused", {"fused": True}), ("loop", {"foreach": False})):
        parts = build_parts(load_config([], [*TINY, f"optim.impl={impl}"]), torch.device("cpu"), steps_per_epoch=10)
        assert all(parts.optimizer.defaults[k] == v for k, v in flags.items()), impl
    with pytest.raises(ConfigError, match="optim.impl must be auto, foreach, fused or loop"):
        load_config([], ["optim.impl=fast"])


def test_compare_runs_over_seeds(tmp_path):
    from bench.compare_runs import METRICS
    from bench.compare_runs import main as compare

    def run(name, seed, value):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"config": {"seed": seed}, "command": ["python", "train.py"],
                                                    "wall_time_s": 10.0, "metrics": dict.fromkeys(METRICS, value)}))
        return str(d)

    a = [run("a0", 0, 1.0), run("a1", 1, 3.0)]  # mean 2, sd sqrt(2)
    out = compare(["--a", "fp32", *a, "--b", "bf16", run("b0", 0, 2.5), run("b1", 1, 3.5)])
    assert out["metrics"]["depth/rmse_px"]["diff_in_sd_a"] == pytest.approx(1 / 2**0.5)
    assert out["within_one_sd"]
    out = compare(["--a", "fp32", *a, "--b", "bf16", run("c0", 0, 4.0), run("c1", 1, 4.0)])
    assert not out["within_one_sd"]


def test_perf_table_names_the_network_and_optimiser_a_step_file_measured(tmp_path):
    """A SegNet-MTAN file was headed with the unused default backbone ("resnet101") and "SGD" though the
    protocol trains with Adam; the table names the architecture and the optimiser of the file's config."""
    committed = json.loads((ROOT / "results" / "perf" / "gpu-cityscapes2-mtan.json").read_text())
    (tmp_path / "gpu-x.json").write_text(json.dumps(committed))
    table = render(tmp_path)
    assert "(segnet-mtan, fixed, batch 8 at 128x256)" in table and "forward, backward, adam" in table
    assert "resnet101" not in table
    assert "| `compile: none" in table and table.count("| not measured |") == 4  # gpu-x.json times no switch
    committed = render(ROOT / "results" / "perf")
    assert "| gpu-paper_tiny-compiled.json (variant compiled: default); gpu-paper_tiny-graphs.json" in committed
    assert "at git commit f2577dd4be59-dirty" in committed  # the mark of a modified tree is kept, not cut off
