"""Reproduce the paper's tables (or any experiment manifest): plan, train what is missing, aggregate.

    python reproduce.py list                                  # manifests and methods
    python reproduce.py all --preset NAME [--seeds 0,1,2] [--jobs N | --per-gpu N] [--threads T] [--shard i/n]
        [--dry-run]
    python reproduce.py MANIFEST [MANIFEST ...] --preset NAME [same options]
    python reproduce.py aggregate [MANIFEST ...] --preset NAME  # see for_presets in experiments/manifest.py
    python reproduce.py benchmark --preset NAME [--methods a,b,c] [--seeds 0,1,2]
    python reproduce.py plan [MANIFEST ...] --preset NAME   # runs to start / reuse, wall time, GPU-hours, disk
    python reproduce.py curves [MANIFEST ...] --preset NAME  # loss and validation curves per run and row
    ... [--set key=value ...] [--grid key=v1,v2 ...]         # sweeps without YAML (docs/sweeps.md)
    python reproduce.py MANIFEST|all --preset NAME --launcher submitit [--profile slurm] [--launcher-set KEY=VALUE]
        [--per-gpu N] [--no-wait] [--retry-failed]
    python reproduce.py status [MANIFEST ...] --preset NAME [--profile slurm]   # queued/running/done/failed

A manifest is configs/experiments/<name>.yaml (table1, figure2a, figure2b, ...): rows of config
overrides applied on the preset configs/<NAME>.yaml. Each (row, seed) is one run, named by its
experiment identity and trained with train.py in runs/<NAME>/<identity>; rows that resolve to the
same config share one run. A run is skipped when results/<NAME>/runs/<identity>.json (its record,
committed) exists, recorded when its run directory holds a finished run, resumed when it holds a
checkpoint. A manifest with `official:` (table2) then scores each run with the official Cityscapes
evaluators at full resolution (`evaluate.py --official`) and keeps the scores in its record.
Aggregation writes results/<NAME>/<manifest>.{json,md} (+ .png for sweeps, curves/) from
the records only, and never replaces a table with one that holds fewer results.

A manifest with single-task `baselines` (benchmark) is a method benchmark: its table adds Delta_m in
both conventions and the overheads that `python -m bench.methods` measures in one run (step time
relative to fixed weights, peak memory, passes per step); reproduce.py runs that measurement after
training when results/<NAME>/<manifest>-overheads.json lacks a row. --methods trains only the rows of
those methods (plus the single-task baselines and the fixed-weights reference); the table is still
written from every record.

--jobs N runs N trainings at a time: one GPU each where GPUs exist, otherwise the CPU cores split
between them (default: one per GPU, else one single-threaded training per core; on two cores that
measured about 1.4x the throughput of one two-threaded training). --per-gpu N packs N trainings onto
each visible GPU (N x GPUs at a time, the CPU cores split between all of them): small models leave a
GPU mostly idle, and `python -m bench.packing` measures runs per GPU-hour for several N to choose
it. --shard i/n runs only every n-th
run from the i-th on, for several machines sharing one filesystem; every runner on one runs directory must use
the same n (a runner of an overlapping shard is refused). More than 20 trainings to start are listed
with their GPU-hours and asked for first (--yes skips the question; without a terminal it is required).
Killing the runner stops its trainings, which keep
their last checkpoints; Ctrl-C and SIGTERM exit with status 130 / 143.

--launcher submitit submits the same runs as cluster jobs (SLURM job arrays, or submitit's local executor)
with the settings of a launcher profile (configs/launchers/<NAME>.yaml, --launcher-set KEY=VALUE), requeues
preempted ones, and records them as they finish; see docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from engine.config import ConfigError, name_problem
from experiments.aggregate import load_paper
from experiments.estimate import confirm_start, plan_report
from experiments.launchers.driver import launch, print_status, status
from experiments.launchers.profile import load_profile
from experiments.layout import ROOT, Paths, rel
from experiments.manifest import find_manifests, for_preset, list_manifests
from experiments.plan import plan, shard
from experiments.progress import write_progress
from experiments.records import load_records, read_json
from experiments.report import FewerResultsError, write_report
from experiments.runner import (
    cpu_count,
    evaluate_official_runs,
    log_invocation,
    reproduce,
    trainings_at_once,
    visible_gpus,
)
from experiments.sweep import parse_grid, parse_set, sweep_manifests
from infra.lock import LockHeld
from infra.stop import Terminated, exit_status, stop_signals
from losses import METHODS, method_lines


def print_list(paths: Paths) -> None:
    """The manifests and the methods, with their kinds and options."""
    print("manifests (configs/experiments/):")
    for m in list_manifests(paths.manifests):
        print(f"  {m.name:<12} {m.title}: {len(m.rows)} rows, seeds {','.join(map(str, m.seeds))}"
              + (" (sweep)" if m.is_sweep else ""))
    print("methods (method.name; options under method.<name>.*):")
    for line in method_lines():
        print(f"  {line}")


def aggregate_all(preset: str, manifests, paths: Paths, seeds=None, allow_fewer: bool = False,
                  with_progress: bool = False) -> list[Path]:
    """Write every manifest's table (and, `with_progress`, results/<preset>/progress.md over them); say which
    records match no row."""
    records, paper = load_records(paths, preset), load_paper()
    written = []
    for m in manifests:
        written += write_report(m, preset, paths, seeds, records, paper, allow_fewer)
    if with_progress and seeds is None:
        written += write_progress(preset, manifests, records, paths)
    used = {job.run.config.identity(seed=False) for job in plan(preset, manifests, seeds, paths, records=records,
                                                                pending=[])}
    unused = sorted(r.identity for r in records.values() if r.row_identity not in used)
    if unused:
        print(f"note: {len(unused)} record(s) in {rel(paths.records(preset))} match no row of "
              f"{', '.join(m.name for m in manifests)}: {', '.join(unused)}")
    return written


def only_methods(manifests, methods: list[str] | None):
    """The manifests with only the rows training one of `methods` (a method name, e.g. famo, or a row's
    name, e.g. ls: linear scalarisation, whose method is `fixed`), plus every single-task baseline row and
    the `fixed` reference row; a name that is neither is an error."""
    if not methods:
        return manifests
    row_names = {r.name for m in manifests for r in m.rows}
    unknown = [m for m in methods if m not in METHODS and m not in row_names]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown} in --methods; valid are the methods {sorted(METHODS)} "
                          f"and the manifests' row names")
    out = []
    for m in manifests:
        keep = set((m.baselines or {}).values()) | {"fixed"} | set(methods)
        rows = tuple(r for r in m.rows if r.name in keep
                     or (r.config.get("method") or {}).get("name") in methods)
        out.append(dataclasses.replace(m, rows=rows))
    return out


def measure_overheads(preset: str, manifests, paths: Paths, configs_dir: Path) -> None:
    """Run bench.methods (one run: all rows, so step times compare) where a benchmark lacks rows."""
    for m in manifests:
        if not m.baselines:
            continue
        path = paths.results / preset / f"{m.name}-overheads.json"
        have = set(read_json(path).get("rows", {})) if path.exists() else set()
        need = {r.name for r in m.rows if r.name not in m.baselines.values()}
        if need <= have:
            continue
        command = [sys.executable, "-m", "bench.methods", "--preset", preset, "--manifest", m.name,
                   "--configs-dir", str(configs_dir), "--out", str(path)]
        print(f"measuring overheads: {' '.join(command[1:])}")
        if subprocess.run(command, cwd=ROOT).returncode != 0:
            raise ValueError(f"the overhead measurement of {m.name} failed; its table is written without it")


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--seeds expects comma-separated integers, got {text!r}") from e
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds is empty")
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--shard expects i/n, e.g. 1/3, got {text!r}") from e
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def preset_name(text: str) -> str:
    """argparse type: a preset's name, a plain file stem (runs/NAME and results/NAME are written with it)."""
    problem = name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"--preset {text!r}: {problem}")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", help="list | all | aggregate | plan | curves [MANIFEST ...] | "
                                           "MANIFEST [MANIFEST ...]")
    p.add_argument("--preset", type=preset_name, help="configs/NAME.yaml, e.g. synthetic-cpu or paper_tiny")
    p.add_argument("--seeds", type=parse_seeds, help="comma-separated; replaces every row's seeds")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings at a time (default: one per GPU, else one per CPU core, each with one thread)")
    p.add_argument("--per-gpu", type=int, default=None, metavar="N",
                   help="N trainings share each visible GPU (N x GPUs at a time; choose N with "
                        "python -m bench.packing)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per training (default: cores / jobs). On a busy machine keep it at 1: "
                        "two-thread torch measured up to 25x slower when the other core was taken")
    p.add_argument("--shard", type=parse_shard, default=(1, 1), help="run only shard i of n (1-based)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    p.add_argument("--data-root", help="dataset root passed to train.py as data.root (default: $CITYSCAPES_DATASET)")
    p.add_argument("--allow-fewer", action="store_true", help="let aggregation replace a table with fewer results")
    p.add_argument("--methods", type=lambda t: [m for m in t.split(",") if m],
                   help="comma-separated method or row names (famo, ls): train only their rows (plus single-task "
                        "baselines and the fixed-weights reference)")
    p.add_argument("--set", type=parse_set, action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every row (after its own), as train.py's key=value; repeatable")
    p.add_argument("--grid", type=parse_grid, action="append", default=[], metavar="KEY=V1,V2",
                   help="one row per value (several --grid: every combination); tables go to <manifest>--<tag>")
    p.add_argument("--yes", action="store_true", help="start more than 20 trainings without asking")
    p.add_argument("--measure-steps", type=int, default=2,
                   help="plan: training steps timed per kind of run to estimate the wall time (0: none)")
    p.add_argument("--out", type=Path, help="curves: folder for the figures (default: runs/<preset>/curves)")
    p.add_argument("--skip-overheads", action="store_true", help="do not measure a benchmark's overheads")
    p.add_argument("--configs-dir", type=Path, default=Paths.configs, help="presets and experiments/ manifests")
    p.add_argument("--runs-dir", type=Path, default=Paths.runs, help="run directories (default: runs)")
    p.add_argument("--results-dir", type=Path, default=Paths.results, help="records and tables (default: results)")
    p.add_argument("--launcher", choices=("local", "submitit"), default="local",
                   help="local: trainings as subprocesses here (default); submitit: cluster jobs (docs/scale-out.md)")
    p.add_argument("--profile", default="slurm", help="launcher profile: configs/launchers/NAME.yaml or a YAML path")
    p.add_argument("--launcher-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a launcher profile setting, e.g. partition=gpu or time_min=600 (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="submitit: submit and return (rerun later to record)")
    p.add_argument("--retry-failed", action="store_true", help="submitit: submit runs that failed again")
    args = p.parse_args(argv)
    paths = Paths(args.configs_dir.resolve(), args.runs_dir.resolve(), args.results_dir.resolve())
    command, names = args.what[0], args.what[1:]
    start = time.time()
    try:
        if command == "list":
            print_list(paths)
            return 0
        if not args.preset:
            raise ConfigError("--preset is required (e.g. --preset synthetic-cpu)")
        if command == "status":
            manifests = for_preset(find_manifests(paths.manifests, names) if names
                                   else list_manifests(paths.manifests), args.preset, named=bool(names))
            print_status(args.preset, status(args.preset, manifests, load_profile(args.profile, args.launcher_set),
                                             args.seeds, paths, args.data_root))
            return 0
        if command in ("all", "aggregate", "plan", "curves"):
            if command != "all" and names == ["all"]:  # `plan all` = `plan`: every manifest
                names = []
            manifests = find_manifests(paths.manifests, names) if names else list_manifests(paths.manifests)
            manifests = for_preset(manifests, args.preset, named=bool(names))
            if command in ("all", "plan") and not names and any(m.for_presets for m in manifests):
                manifests = [m for m in manifests if m.for_presets]  # a preset made for some manifests: only those
        else:
            manifests = for_preset(find_manifests(paths.manifests, args.what), args.preset, named=True)
        if command == "aggregate":
            dedicated = [m for m in manifests if m.for_presets]
            if not names and dedicated:  # a preset made for some manifests: those, and tables written before
                manifests = [m for m in manifests if m.for_presets or
                             (paths.results / args.preset / f"{m.name}.json").exists()]
            manifests = sweep_manifests(manifests, args.preset, args.set, args.grid)
            for path in aggregate_all(args.preset, manifests, paths, args.seeds, args.allow_fewer,
                                      with_progress=not names and not args.set and not args.grid):
                print(rel(path))
            return 0
        manifests = sweep_manifests(manifests, args.preset, args.set, args.grid)
        if command == "curves":
            from experiments.curves import write_curves

            for path in write_curves(args.preset, manifests, paths, args.seeds, args.out):
                print(rel(path))
            return 0
        n_parallel = trainings_at_once(args.jobs, args.per_gpu, visible_gpus(), cpu_count())
        if command == "plan" or not args.dry_run:
            pending: list[str] = []
            records = load_records(paths, args.preset)
            jobs = shard(plan(args.preset, only_methods(manifests, args.methods), args.seeds, paths, args.data_root,
                              records, pending), *args.shard)
            if command == "plan":
                plan_report(args.preset, jobs, records, pending, n_parallel,
                            args.threads or max(1, cpu_count() // n_parallel), args.measure_steps, paths)
                return 0
            if not args.dry_run:
                confirm_start(args.preset, jobs, records, args.yes, paths=paths)
        if args.launcher == "submitit" and not args.dry_run:
            summary = launch(args.preset, only_methods(manifests, args.methods),
                             load_profile(args.profile, args.launcher_set), args.seeds, paths, args.data_root,
                             args.per_gpu, args.threads, wait=not args.no_wait, retry_failed=args.retry_failed)
            if summary.pop("in_flight"):
                return 0  # tables once every run is recorded: the same command again
        else:
            summary = reproduce(args.preset, only_methods(manifests, args.methods), args.seeds, n_parallel,
                                args.shard, args.dry_run, paths, args.data_root, threads=args.threads)
        summary["scored"] = []
        summary["failed"] += evaluate_official_runs(args.preset, manifests, args.seeds, paths, args.data_root,
                                                    args.dry_run, args.shard, summary["scored"])
        if args.dry_run:
            return 0
        wall = time.time() - start
        log_invocation(args.preset, argv if argv is not None else sys.argv[1:], summary, wall, n_parallel, paths,
                       args.per_gpu)
        if not args.skip_overheads and not summary["failed"]:
            measure_overheads(args.preset, manifests, paths, args.configs_dir.resolve())
        for path in aggregate_all(args.preset, manifests, paths, args.seeds, args.allow_fewer,
                                  with_progress=command == "all" and not names and not args.set and not args.grid
                                  and not args.methods):
            print(rel(path))
    except (ConfigError, ValueError, FewerResultsError, LockHeld) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for job, reason in summary["failed"]:
        print(f"failed: {job if isinstance(job, str) else job.run.name}: {reason}", file=sys.stderr)
    print(f"trained {len(summary['trained'])}, skipped {len(summary['skipped'])}, failed {len(summary['failed'])} "
          f"in {wall:.0f} s")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    # SIGTERM (e.g. from a job scheduler) unwinds like Ctrl-C, so run_jobs stops the trainings it started.
    with stop_signals():
        try:
            sys.exit(main())
        except (KeyboardInterrupt, Terminated) as interruption:
            print("\ninterrupted: the trainings it started were stopped and keep their last checkpoints; "
                  "run the same command to resume", file=sys.stderr)
            sys.exit(exit_status(interruption))
