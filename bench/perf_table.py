"""The speed tables of results/perf/README.md, generated from the JSON files the benchmarks wrote.

    python -m bench.perf_table [--dir results/perf]     then: python -m experiments.readme

Step benchmarks (`python -m bench.train ... --json results/perf/X.json`) give one row per variant;
data benchmarks (`python -m bench.data ... --json results/perf/data-cache.json`) one row per root;
packing benchmarks (`python -m bench.packing ...`, results/perf/packing-<device>.json) one row per N.
Each table names the command and git commit behind its file. The page ends with the speed switches
that have no measured GPU figure yet (SWITCHES).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.provenance import ROOT, short_commit


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def model_label(model: dict) -> str:
    """The network a step file measured: the backbone for DeepLabV3, the architecture for SegNet (which has no
    backbone), both for the 2-task DeepLabV3+."""
    arch = model.get("arch", "deeplabv3")
    if arch == "deeplabv3":
        return model["backbone"]
    return arch if arch.startswith("segnet") else f"{arch} {model['backbone']}"


def step_table(name: str, r: dict) -> list[str]:
    h, w = r["size"]
    optimizer = r["config"]["optim"].get("optimizer", "sgd")
    peaks = ", ".join(f"{k} {v:.3g}" for k, v in (r.get("peak_TFLOPs") or {}).items()) or "none"
    load = r.get("load_average_1min")
    lines = [f"### {name}: {r['config_name']} ({model_label(r['config']['model'])}, {r['method']}, "
             f"batch {r['batch']} at {h}x{w}), "
             f"{r['device']}", "",
             f"`{r['command']}` at git commit {short_commit(r['git_commit'])}, torch {r['torch']}, {r['time']}. "
             f"{r['gflop_per_image']} GFLOP per image (FlopCounterMode: forward, backward, {optimizer}); peak TFLOP/s: "
             f"{peaks} ({r['peak_source']})"
             + (f"; 1-minute load average {load[0]} before, {load[1]} after." if load else "."), "",
             "| variant | overrides | images/s | step p50 (s) | step p90 (s) | data wait | TFLOP/s | MFU | "
             "MFU vs bf16 peak | x naive | peak memory (GiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, row in r["variants"].items():
        mem = "-" if row.get("peak_mem_GiB") is None else f"{row['peak_mem_GiB']:.2f}"
        lines.append(f"| {v} | {' '.join(row['overrides']) or '-'} | {row['images_per_s']:.2f} | "
                     f"{row['s_per_step_p50']:.3f} | {row['s_per_step_p90']:.3f} | {_pct(row['data_wait_fraction'])} | "
                     f"{row['achieved_TFLOPs']:.3g} | {_pct(row['mfu'])} ({row['precision']}) | "
                     f"{_pct(row['mfu_bf16'])} | {row.get('speedup_vs_naive', float('nan')):.2f} | {mem} |")
    if r["device"].startswith("cpu"):
        lines += ["", f"Peak resident memory of the process, all variants together: {r['peak_rss_GiB']} GiB."]
    return lines


def data_table(name: str, r: dict) -> list[str]:
    lines = [f"### {name}: loading a sample, PNGs vs the Tiny cache", "",
             f"`{r['command']}` at git commit {short_commit(r['git_commit'])}, {r['machine']}, {r['threads']} thread, "
             f"{r['time']}; {r['note']}.", "",
             "| files | items | frames timed | decode only (ms) | item from PNGs (ms) | item from cache (ms) | "
             "cache speed-up | with flip: PNG / cache (ms) | equal items |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        ms = x["ms_per_item"]
        lines.append(f"| {x['file_size'][0]}x{x['file_size'][1]} | {x['item_size'][0]}x{x['item_size'][1]} | "
                     f"{x['items']} | {ms['decode']:.2f} | {ms['png']:.2f} | {ms['cache']:.3f} | "
                     f"{x['speedup_cache_vs_png']:.1f}x | {ms['png_flip']:.2f} / {ms['cache_flip']:.3f} | "
                     f"{x['cache_equals_png']} |")
    return lines


def packing_table(name: str, r: dict) -> list[str]:
    lines = [f"### {name}: N trainings at once on {r['device']}", "",
             f"`{r['command']}` at git commit {short_commit(r['git_commit'])}, {r['time']}: {r['config_name']}, "
             f"{r['iterations']} iterations of batch {r['batch']} per run (wall time from launch to the last "
             f"run's end: start-up, training, final validation); 1-minute load average "
             f"{r['load_average_1min'][0]} before, {r['load_average_1min'][1]} after.", "",
             "| N at once | threads each | wall (s) | runs per hour | runs per GPU-hour | images/s of each run |",
             "|---|---|---|---|---|---|"]
    for row in r["packing"]:
        gpu_hour = "-" if row["runs_per_gpu_hour"] is None else f"{row['runs_per_gpu_hour']:.2f}"
        rates = ", ".join("-" if v is None else f"{v:.2f}" for v in row["images_per_s"])
        lines.append(f"| {row['n']} | {row['threads_each']} | {row['wall_s']:.1f} | {row['runs_per_hour']:.2f} | "
                     f"{gpu_hour} | {rates} |")
    return lines


# The speed switches of issue 13 that change when or where the numbers are computed, not the numbers (none is
# part of the experiment identity), and what is measured of them. The GPU step files that time a switch are
# named per switch (GPU_MEASURED); the others have no GPU figure yet.
GPU_MEASURED = {
    "check_finite: step | log": ["gpu-paper_tiny.json (variant deferred)"],
    "compile: none | default | reduce-overhead | max-autotune": [
        "gpu-paper_tiny-compiled.json (variant compiled: default)",
        "gpu-paper_tiny-graphs.json (variant graphs: reduce-overhead)"],
    "data.resident: true": ["gpu-paper_tiny-loader.json (variant resident)"],
    "reproduce.py --per-gpu N": ["packing-gpu.json"],
}
SWITCHES = [
    ("check_finite: step | log", "log keeps the per-step losses on the device and checks them in one copy at "
     "each log point and before every checkpoint or validation (the error names the task and the step; a "
     "non-finite step never reaches a checkpoint), instead of a host synchronisation every step. "
     "Gradient-space methods still check their Jacobian every step."),
    ("compile: none | default | reduce-overhead | max-autotune", "torch.compile of the network after the DDP "
     "wrap; the model object stays eager (checkpoints and evaluation). reduce-overhead adds CUDA graphs on GPU "
     "(on the CPU it runs as default). Inductor's first compile of the smallest test model took about 2 "
     "minutes on the 2-core CPU; compiled and eager steps agree (tests)."),
    ("data.resident: true", "the training split's finished items live on the training device; batches are "
     "gathered there in the loader's order with per-sample flips on the device, equal to the DataLoader's "
     "batches bit for bit (tests). 31 bytes per pixel per frame: 2.8 GiB for Cityscapes' 2975 training frames "
     "at 128x256."),
    ("reproduce.py --per-gpu N", "N trainings share each visible GPU (N x GPUs at a time); "
     "python -m bench.packing measures runs per hour for several N."),
]


def switches_section(directory: Path) -> list[str]:
    lines = ["### Speed switches", "",
             "Each switch runs and is tested on the CPU through the same code (`device=cpu`); CPU figures, where "
             "measured, are in the tables above (packing-cpu.json, cpu-synthetic-cpu-switches.json). The last "
             "column names the GPU step file above that times the switch; \"not measured\" where no GPU has.", "",
             "| switch | what it does | GPU figure |", "|---|---|---|"]
    pipe = "\\|"  # a literal | inside a table cell
    measured = {k: "; ".join(f for f in files if (directory / f.split(" ")[0]).exists()) or "not measured"
                for k, files in GPU_MEASURED.items()}
    return lines + [f"| `{k.replace('|', pipe)}` | {v} | {measured.get(k, 'not measured')} |" for k, v in SWITCHES]


def render(directory: Path) -> str:
    out = ["<!-- generated by python -m bench.perf_table from results/perf/*.json; do not edit -->", ""]
    for path in sorted(directory.glob("*.json")):
        r = json.loads(path.read_text())
        if "variants" in r and "gflop_per_step" in r:  # (bench.compare_runs files also have variants: not tables)
            out += step_table(path.name, r) + [""]
        elif "results" in r:
            out += data_table(path.name, r) + [""]
        elif "packing" in r:
            out += packing_table(path.name, r) + [""]
    out += switches_section(directory) + [""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(ROOT / "results" / "perf"))
    args = p.parse_args(argv)
    directory = Path(args.dir)
    (directory / "README.md").write_text(render(directory))
    print(f"wrote {directory / 'README.md'}")


if __name__ == "__main__":
    main()
