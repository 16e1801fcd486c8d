"""What a plan costs before anything runs: runs to start and to reuse, wall time here, GPU-hours, disk.

    python reproduce.py plan table1 --preset paper_tiny [--seeds ...] [--set k=v] [--grid k=a,b] [--measure-steps 2]

- Runs: each job's state (runner.status): `done` (a record exists) and `finished` (a run directory
  holds a finished run; it is recorded, not retrained) are reused; `new` and `resume` are started.
- Wall time on this machine: for each distinct kind of training step among the runs to start (model,
  input size, batch, tasks, method, precision) the step train.py runs (engine.step.train_step) is timed
  here on a random batch of that shape, `--measure-steps` steps after one warm-up, with the threads
  each training would get. Wall = remaining steps x seconds per step / trainings at once. Validation,
  data loading and start-up are not counted, and trainings at once are assumed not to slow each other
  (on a busy CPU they do): read it as a lower bound. Where the preset's records hold finished runs of
  the same kind and configured device, a second figure prices each step at what those runs took per
  iteration, whole run (median `wall_time_s / iterations`: loading, validation, start-up and the
  trainings beside them included): what the runs will take when started the way those were.
- GPU-hours at paper scale: every run to start trained on the paper's schedule (paper_tiny: 50,000
  iterations of batch 8 at 128x256; paper_full for the full-resolution preset; the 2-task protocols' own
  presets, cityscapes2-mtan and cityscapes2-hps, for those protocols) at one GPU's throughput, taken from
  results/perf/gpu-<paper preset>.json when `bench.train --json` has measured one there, else the documented
  figure below; for a preset with neither (the 2-task protocols, until a GPU measures them) it is estimated
  from the FLOPs of its step at the rate paper_tiny achieved (`estimated_throughput`). Every run is priced as
  the preset's step: single-task runs cost less, gradient-space methods (several backward passes) more.
- Disk: a checkpoint of each kind measured by serialising the parts train.py checkpoints after one
  step (model, method, optimiser with its momentum, scheduler, scaler), times the runs to start (a
  resumed run already has its checkpoint); an atomic checkpoint write briefly needs one more copy per
  training running at once.
"""

from __future__ import annotations

import functools
import io
import json
import time
from dataclasses import dataclass, field

from engine.config import Config, load_config
from experiments.layout import ROOT, Paths, rel
from experiments.plan import Job, waiting_runs
from experiments.records import Record

# One GPU's training throughput (images/s) when results/perf holds no GPU measurement of the paper preset.
# Source: docs/speed.md's "Measured speed" table, one H100 80GB: the whole train.py loop on paper_tiny ran
# at 140-173 images/s (metrics.jsonl, synthetic data, 12 loader workers); we take the low end. paper_full:
# 109 images/s, the training step alone (bench.train, batch 16 of 512x512 crops), no loader.
ASSUMED_GPU = {
    "paper_tiny": (140.0, "assumed: the low end of 140-173 images/s measured for the whole train.py loop of "
                          "paper_tiny on one H100 80GB (docs/speed.md, Measured speed)"),
    "paper_full": (109.0, "assumed: 109 images/s measured for the paper_full training step on one H100 80GB "
                          "(docs/speed.md, Measured speed; step only, no data loading)"),
}


@dataclass
class Kind:
    """Runs whose training steps cost the same: one measurement serves them all."""

    config: Config
    runs: list = field(default_factory=list)  # (Job, remaining steps)
    s_per_step: float | None = None
    checkpoint_bytes: int | None = None


def step_kind(cfg: Config) -> str:
    """The config fields that set a step's cost (not the seed, learning rate or weights)."""
    return json.dumps({"model": cfg.to_dict()["model"], "size": cfg.data.size, "crop": cfg.data.crop,
                       "batch": cfg.optim.batch_size, "tasks": list(cfg.tasks), "method": cfg.method.name,
                       "amp": cfg.amp, "channels_last": cfg.channels_last, "compile": cfg.compile}, sort_keys=True,
                      default=list)


def recorded_step_time(records, kind: str, device: str) -> tuple[float, int] | None:
    """(median whole-run seconds per iteration, number of runs) of the finished runs among `records` whose step
    is of `kind` (step_kind) on the configured `device` (a record does not say which machine ran it: the figure
    is right for records trained where the plan runs); None without any. A record without a complete wall time (a run
    resumed from a checkpoint written before wall times were kept) or without iterations is left out."""
    import statistics

    times = []
    for record in records:
        data = record.data
        wall, iterations = data.get("wall_time_s"), data.get("iterations")
        if not wall or not iterations or data.get("wall_time_complete") is False:
            continue
        try:
            cfg = record.config
        except ValueError:  # a record this code no longer loads says nothing about this code's steps
            continue
        if cfg.device == device and step_kind(cfg) == kind:
            times.append(wall / iterations)
    return (statistics.median(times), len(times)) if times else None


def logged_step(run_dir) -> int:
    """The last step a run directory's metrics.jsonl logged (0 without one): how far a resumed run got."""
    log = (run_dir if run_dir.is_absolute() else ROOT / run_dir) / "metrics.jsonl"
    step = 0
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                step = max(step, int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return step


def measure(cfg: Config, steps: int, threads: int) -> tuple[float, int]:
    """(seconds per training step on this machine's CPU or first GPU, checkpoint bytes) of `cfg`."""
    import torch

    from engine.build import random_batch_parts as build
    from engine.distributed import pick_device
    from engine.step import train_step

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = pick_device("auto" if cfg.device == "cuda" else cfg.device)  # a CUDA preset falls back to the CPU
        parts, batch = build(cfg, device)
        train_step(parts, batch, 0)  # warm-up (allocations, cuDNN's choice)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            train_step(parts, batch, i + 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        buffer = io.BytesIO()
        torch.save(parts.state_dict(), buffer)
        return seconds, buffer.tell()
    finally:
        torch.set_num_threads(before)


def gpu_throughput(preset: str, paths: Paths = Paths()) -> tuple[float, str]:
    """(images/s of one GPU on `preset`'s paper-scale config, where the figure comes from)."""
    path = paths.results / "perf" / f"gpu-{preset}.json"
    if path.exists():
        data = json.loads(path.read_text())
        v = (data.get("variants") or {}).get("config") or {}
        if v.get("images_per_s"):
            return float(v["images_per_s"]), f"measured: {rel(path)} ({data.get('device')}, training step only)"
    return ASSUMED_GPU[preset] if preset in ASSUMED_GPU else estimated_throughput(preset)


# The preset whose schedule and throughput price a plan at paper scale ("paper_tiny" for every other preset).
PAPER_SCALE = {"paper_full": "paper_full", "cityscapes2-mtan": "cityscapes2-mtan", "cityscapes2-hps": "cityscapes2-hps",
               "cityscapes2-cpu": "cityscapes2-mtan"}


def paper_preset(preset: str) -> str:
    return PAPER_SCALE.get(preset, "paper_tiny")


def gflop_per_image(cfg: Config) -> float:
    """GFLOP of one training image through `cfg`'s model, forward and backward (matmuls and convolutions, 2 per
    multiply-add; torch.utils.flop_counter), counted on the meta device: no memory, no compute, well under a
    second. The optimiser and the losses (element-wise) are not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import build_model

    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    with torch.device("meta"):
        model = build_model(cfg, pretrained=False)
        x = torch.empty(2, 3, h, w)
    model.train()
    with FlopCounterMode(display=False) as counter:
        sum(o.float().mean() for o in model(x).values()).backward()
    return counter.get_total_flops() / 2 / 1e9


@functools.cache  # plan and the confirmation question both price a plan: count the FLOPs once
def estimated_throughput(preset: str) -> tuple[float, str]:
    """(images/s, how) of one GPU on `preset`, estimated, not measured: its step's FLOPs at the FLOP rate
    paper_tiny achieved in the whole train.py loop on one H100 (ASSUMED_GPU's 140 images/s times paper_tiny's
    GFLOP per image). A network with other layers (SegNet's max-unpooling, say) may run at another rate."""
    paths = Paths()
    tiny = gflop_per_image(load_config([paths.configs / "paper_tiny.yaml"], ["model.pretrained=none"]))
    ours = gflop_per_image(load_config([paths.configs / f"{preset}.yaml"], ["model.pretrained=none"]))
    rate = ASSUMED_GPU["paper_tiny"][0] * tiny / 1e3  # TFLOP/s
    return rate * 1e3 / ours, (f"estimated, not measured: {ours:.0f} GFLOP per image (forward + backward) at the "
                               f"{rate:.1f} TFLOP/s paper_tiny achieved in the whole train.py loop on one H100 "
                               f"({ASSUMED_GPU['paper_tiny'][0]:g} images/s x {tiny:.0f} GFLOP)")


def human_time(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def split_jobs(jobs: list[Job], records: dict[str, Record]) -> dict[str, list[Job]]:
    """Jobs by state: done, finished (both reused), new, resume (both started), conflict."""
    from experiments.runner import status

    out: dict[str, list[Job]] = {"done": [], "finished": [], "new": [], "resume": [], "conflict": []}
    for job in jobs:
        out[status(job, records)].append(job)
    return out


def gpu_hours(n_runs: int, preset: str, paths: Paths = Paths()) -> tuple[float, str]:
    """(GPU-hours for `n_runs` trainings on the paper's schedule, a sentence saying how). The paper presets
    and results/perf are the repository's, whatever --configs-dir and --results-dir say."""
    scale = paper_preset(preset)
    paths = Paths()
    cfg = load_config([paths.configs / f"{scale}.yaml"])
    images_per_s, source = gpu_throughput(scale, paths)
    hours = n_runs * cfg.optim.iterations * cfg.optim.batch_size / images_per_s / 3600
    return hours, (f"{n_runs} runs x {cfg.optim.iterations:,} iterations x batch {cfg.optim.batch_size} "
                   f"({scale}) at {images_per_s:.3g} images/s per GPU ({source}); validation not counted")


def plan_report(preset: str, jobs: list[Job], records: dict[str, Record], pending: list[str], n_parallel: int,
                threads: int, measure_steps: int = 2, paths: Paths = Paths(), verbose: bool = True) -> dict:
    """Print the plan and its costs; return the figures (runs by state, wall_s, gpu_hours, disk_bytes)."""
    by = split_jobs(jobs, records)
    start, reuse = by["new"] + by["resume"], by["done"] + by["finished"]
    state_of = {id(job): state for state, group in by.items() for job in group}
    print(f"plan on {preset}: {len(jobs)} runs: {len(start)} to start ({len(by['new'])} new, {len(by['resume'])} "
          f"to resume), {len(reuse)} to reuse ({len(by['done'])} with a record, {len(by['finished'])} finished "
          f"and recorded at start)" + (f", {len(by['conflict'])} in conflict" if by["conflict"] else "")
          + (f", {waiting_runs(pending)} waiting for another run's record" if pending else ""))
    if verbose:
        for title, group in (("to start", start), ("to reuse", reuse), ("in conflict", by["conflict"])):
            if group:
                print(f"{title}:")
            for job in group:
                print(f"  {state_of[id(job)]:<8} {', '.join(job.names)} seed {job.run.seed} [{job.run.identity}]")
        for reason in pending:
            n = getattr(reason, "runs", 1)
            print(f"  waiting  {reason}" + (f" [{n} runs]" if n != 1 else ""))
    kinds: dict[str, Kind] = {}
    for job in start:
        cfg = job.run.config
        done = logged_step(job.run.run_dir) if state_of[id(job)] == "resume" else 0
        kinds.setdefault(step_kind(cfg), Kind(cfg)).runs.append((job, max(0, cfg.optim.iterations - done)))
    out = {"start": len(start), "reuse": len(reuse), "pending": waiting_runs(pending), "conflict": len(by["conflict"]),
           "wall_s": None, "gpu_hours": None, "disk_bytes": None}
    if not start:
        return out
    hours, how = gpu_hours(len(start) + waiting_runs(pending), preset, paths)
    out["gpu_hours"] = hours
    print(f"paper scale: {hours:.1f} GPU-hours = {how}" + (" (the waiting runs included)" if pending else ""))
    if pending:
        print(f"the {waiting_runs(pending)} waiting runs are not in the wall time and disk below (their configs "
              f"depend on records not written yet; a row shared by two manifests counts twice)")
    if measure_steps <= 0:
        print("wall time and disk here: not measured (--measure-steps 0)")
        return out
    print(f"measuring {len(kinds)} kind(s) of training step here ({measure_steps} steps after one warm-up, "
          f"{threads} thread(s) each) ...", flush=True)
    wall, disk, recorded_wall, n_recorded = 0.0, 0, 0.0, 0
    for key, kind in kinds.items():
        kind.s_per_step, kind.checkpoint_bytes = measure(kind.config, measure_steps, threads)
        steps = sum(n for _, n in kind.runs)
        new = sum(1 for job, _ in kind.runs if state_of[id(job)] == "new")
        wall += steps * kind.s_per_step
        disk += new * kind.checkpoint_bytes
        recorded = recorded_step_time(records.values(), key, kind.config.device)
        if recorded:
            n_recorded += 1
        recorded_wall += steps * (recorded[0] if recorded else kind.s_per_step)
        c = kind.config
        print(f"  {model_label(c)} {'x'.join(map(str, c.data.crop or c.data.size or ()))} batch "
              f"{c.optim.batch_size}, {'+'.join(c.tasks)}, {c.method.name}: {kind.s_per_step:.3f} s/step"
              + (f" (recorded: {recorded[0]:.3f} s per iteration, whole run, median of {recorded[1]})" if recorded
                 else "")
              + f", checkpoint {human_bytes(kind.checkpoint_bytes)}; {len(kind.runs)} runs, {steps:,} steps")
    wall /= n_parallel
    out["wall_s"], out["disk_bytes"] = wall, disk
    print(f"wall time here: about {human_time(wall)} ({n_parallel} training(s) at a time; steps only: validation, "
          "data loading and start-up not counted, and trainings at once assumed not to slow each other)")
    if n_recorded:
        recorded_wall /= n_parallel
        out["recorded_wall_s"] = recorded_wall
        print(f"wall time from the records: about {human_time(recorded_wall)} ({n_recorded} of {len(kinds)} kind(s) "
              "at their recorded runs' whole-run time per iteration, the rest at the measured step time; "
              f"{n_parallel} at a time: right when the recorded runs also ran {n_parallel} at a time on this machine)")
    print(f"disk: {human_bytes(disk)} of checkpoints under {rel(paths.runs / preset)} "
          f"(+{human_bytes(max(k.checkpoint_bytes for k in kinds.values()) * n_parallel)} while they are written)")
    return out


CONFIRM_ABOVE = 20  # more trainings to start than this: `all` and named manifests ask first (--yes skips)


def model_label(cfg) -> str:
    """The network as the plan names it: the backbone for the paper's DeepLabV3 (e.g. "resnet101"), else the
    architecture, with its backbone where it has one ("segnet-mtan", "deeplabv3plus-hps resnet50")."""
    arch = cfg.model.arch
    if arch == "deeplabv3":
        return cfg.model.backbone
    return f"{arch} {cfg.model.backbone}" if arch.startswith("deeplab") else arch


def confirm_start(preset: str, jobs: list[Job], records: dict[str, Record], assume_yes: bool, ask=input,
                  interactive: bool | None = None, paths: Paths = Paths()) -> None:
    """Before starting more than CONFIRM_ABOVE trainings: say how many and their GPU-hours, then ask on a
    terminal, or stop with an error naming --yes elsewhere. Raises ValueError when not confirmed."""
    import sys

    by = split_jobs(jobs, records)
    n = len(by["new"]) + len(by["resume"])
    if n <= CONFIRM_ABOVE or assume_yes:
        return
    hours, how = gpu_hours(n, preset, paths)
    print(f"{preset}: {n} trainings to start ({len(by['new'])} new, {len(by['resume'])} to resume), "
          f"{len(by['done']) + len(by['finished'])} reused; at paper scale about {hours:.0f} GPU-hours ({how})")
    interactive = sys.stdin.isatty() if interactive is None else interactive
    if interactive:
        try:
            answer = ask(f"start {n} trainings? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() in ("y", "yes"):
            return
    raise ValueError(f"not started: {n} trainings to start (more than {CONFIRM_ABOVE}); see them and their cost "
                     f"with `python reproduce.py plan ... --preset {preset}`, then pass --yes to start them")
