"""Runs per hour with N trainings packed onto one device, to choose `reproduce.py --per-gpu N`.

    python -m bench.packing --config configs/paper_tiny.yaml [key=value ...] [--n 1,2,4] [--out FILE]

For each N, launches N short trainings of the config at once (`python train.py`, distinct seeds, each in
its own temporary run directory), with the environment reproduce.py gives them (experiments/runner.py
`job_env`): on a GPU machine all N on the first visible GPU, on the CPU the cores split between them. The
time is the whole wall time until the last of them ends: process start, data set, training, final
validation, as in a real reproduce.py run. Reports runs per hour (N x 3600 / wall) and, on a GPU, per
GPU-hour (the same figure: one GPU), each run's images/s from its metrics.jsonl, and writes them to
results/perf/packing-<device>.json (default; `python -m bench.perf_table` renders it). Keep the trainings
short (e.g. optim.iterations=200) but long enough that start-up does not dominate, unless that is the point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.config import load_config
from experiments.layout import ROOT, TRAIN_SCRIPT
from experiments.runner import cpu_count, die_with_parent, job_env, visible_gpus
from infra.atomic import write_json
from infra.provenance import git_commit


def device_name(gpus: list[str]) -> tuple[str, str]:
    """(description, file-name slug): the first visible GPU's name, or the CPU's architecture."""
    if gpus:
        import torch

        name = torch.cuda.get_device_name(0)
        return name, re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
    return f"cpu {platform.machine()} ({cpu_count()} cores)", "cpu"


def run_packed(n: int, files: list[str], overrides: list[str], gpus: list[str], work: Path,
               threads: int | None) -> dict:
    """N trainings at once on one device; their wall time, exit codes and images/s."""
    procs, logs = [], []
    start = time.perf_counter()
    for slot in range(n):
        run_dir = work / f"n{n}-{slot}"
        cmd = [sys.executable, str(TRAIN_SCRIPT), *(a for f in files for a in ("--config", f)), *overrides,
               f"seed={slot}", f"run_dir={run_dir}"]
        log = open(work / f"n{n}-{slot}.log", "w")
        logs.append(log)
        procs.append((run_dir, time.perf_counter(), subprocess.Popen(
            cmd, cwd=ROOT, env=job_env(slot, n, gpus, threads), stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent())))
    walls, codes = [], []
    for _, began, proc in procs:
        codes.append(proc.wait())
        walls.append(time.perf_counter() - began)
    wall = time.perf_counter() - start
    for log in logs:
        log.close()
    if any(codes):
        bad = [i for i, c in enumerate(codes) if c]
        tail = (work / f"n{n}-{bad[0]}.log").read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"N={n}: training(s) {bad} exited with status {[codes[i] for i in bad]}: {tail[0]}")
    rates = []
    for run_dir, _, _ in procs:
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        seen = [r["images_per_s"] for r in rows if "images_per_s" in r]
        rates.append(round(sum(seen) / len(seen), 2) if seen else None)
    return {"n": n, "wall_s": round(wall, 1), "runs_per_hour": round(n * 3600 / wall, 2),
            "runs_per_gpu_hour": round(n * 3600 / wall, 2) if gpus else None,
            "run_wall_s": [round(w, 1) for w in walls], "images_per_s": rates,
            "threads_each": int(job_env(0, n, gpus, threads)["OMP_NUM_THREADS"])}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("overrides", nargs="*", help="key=value overrides of every training (e.g. optim.iterations=200)")
    p.add_argument("--n", default="1,2,4", help="comma-separated numbers of trainings at once")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per training (default: cores / N)")
    p.add_argument("--out", default=None, help="JSON file (default: results/perf/packing-<device>.json)")
    p.add_argument("--work", default=None, help="where the run directories go (default: a temporary directory)")
    args = p.parse_args(argv)
    try:
        ns = [int(v) for v in args.n.split(",") if v.strip()]
    except ValueError:
        p.error(f"--n expects comma-separated integers, got {args.n!r}")
    if not ns or min(ns) < 1:
        p.error(f"--n needs positive counts, got {args.n!r}")
    cfg = load_config(args.config, args.overrides)  # validated here, once, before anything starts
    gpus = visible_gpus()[:1] if cfg.device != "cpu" else []
    where, slug = device_name(gpus)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="packing-", dir=args.work) as work:
        for n in ns:
            row = run_packed(n, args.config, args.overrides, gpus, Path(work), args.threads)
            rows.append(row)
            print(f"N={n}: {row['wall_s']} s for {n} run(s): {row['runs_per_hour']} runs/hour"
                  + (f" ({row['runs_per_gpu_hour']} per GPU-hour)" if gpus else "")
                  + f", images/s each {row['images_per_s']}, {row['threads_each']} thread(s) each", flush=True)
    result = {"packing": rows, "command": "python -m bench.packing " + " ".join(sys.argv[1:] if argv is None
                                                                               else argv),
              "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "device": where, "gpus": len(gpus), "cpus": cpu_count(), "config_name": cfg.name,
              "iterations": cfg.optim.iterations, "batch": cfg.optim.batch_size,
              "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    out = Path(args.out) if args.out else ROOT / "results" / "perf" / f"packing-{slug}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
