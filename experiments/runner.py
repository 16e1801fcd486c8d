"""Running a plan: skip what has a record, export what finished, train the rest N at a time.

Each training is `python train.py ...` in a subprocess (its output appended to <run_dir>/train.log);
an interrupted run resumes from its checkpoint when launched again. With GPUs, each training gets
one (CUDA_VISIBLE_DEVICES), N trainings sharing each GPU with `--per-gpu N` (slot s on GPU s mod G:
N x G slots put N on every GPU); the CPU cores are split between the trainings running at once.
The trainings die with the runner (Linux: a parent-death signal, SIGTERM, so they keep their last
checkpoint), however the runner ends, even by SIGKILL; train.py's run-directory lock keeps a second
runner from training the same run at once. A runner holds its shard's lock (runs/<preset>/.shard-i-of-n.lock)
while it trains: the same shard twice, or shards of a different n over the same runs/ (which overlap),
are refused.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import platform
import queue
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from engine.config import ConfigError, config_from_dict
from experiments.launchers.job import die_with_parent
from experiments.layout import ROOT, TRAIN_SCRIPT, Paths, rel
from experiments.manifest import Manifest
from experiments.plan import Job, plan, runs_of, shard
from experiments.records import Record, load_records, read_json, record_from_run, write_record
from infra.atomic import append_line, dumps, sweep_temp_files, write_json
from infra.lock import FileLock, describe, is_locked, read_holder
from infra.provenance import git_commit


def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES order), empty without CUDA."""
    import torch  # only here: planning and aggregation do not need it

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(count)]
    return ids[:count]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def trainings_at_once(jobs: int | None, per_gpu: int | None, gpus: list[str], cpus: int) -> int:
    """How many trainings run at a time: `per_gpu` x the visible GPUs (`--per-gpu N`), else `jobs`, else one per
    GPU, else one per CPU core. ValueError for a count below 1, --per-gpu without GPUs, or --jobs that disagrees."""
    if per_gpu is not None:
        if per_gpu < 1:
            raise ValueError(f"--per-gpu must be at least 1, got {per_gpu}")
        if not gpus:
            raise ValueError("--per-gpu N packs N trainings onto each visible GPU, and no GPU is visible; on the "
                             "CPU use --jobs N (and --threads)")
        if jobs is not None and jobs != per_gpu * len(gpus):
            raise ValueError(f"--jobs {jobs} disagrees with --per-gpu {per_gpu} x {len(gpus)} visible GPUs "
                             f"({per_gpu * len(gpus)} at a time); give one of them")
        return per_gpu * len(gpus)
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    return jobs or len(gpus) or cpus


def job_env(slot: int, n_parallel: int, gpus: list[str], threads: int | None = None) -> dict[str, str]:
    """Environment of the training in `slot` of `n_parallel`: GPU `slot mod len(gpus)` (with n_parallel = N x GPUs,
    N trainings on each), and its share of the CPU cores (or `threads`)."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    env.setdefault("WANDB_MODE", "disabled")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    threads = threads or max(1, cpu_count() // n_parallel)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)  # torch's intra-op threads follow OMP
    return env


def _abs(path: Path) -> Path:
    """A run directory as a path from here (run directories are written relative to the repository root)."""
    return path if path.is_absolute() else ROOT / path


def status(job: Job, records: dict[str, Record]) -> str:
    """done (record kept) | finished (metrics.json only) | resume (checkpoint) | new | conflict."""
    run = job.run
    if run.identity in records:
        return "done"
    final = _abs(run.run_dir) / "metrics.json"
    if final.exists():
        same = config_from_dict(read_json(final)["config"]).identity() == run.identity
        return "finished" if same else "conflict"
    return "resume" if (final.parent / "checkpoint.pt").exists() else "new"


STALE_TEMP_S = 3600.0  # a temporary file this old in results/ is no write in progress (another shard's runner)


_SHARD_LOCK = re.compile(r"^\.shard-(\d+)-of-(\d+)\.lock$")


def claim_shard(directory: Path, shard_of: tuple[int, int], command: list[str] | None = None) -> FileLock:
    """Hold the lock of shard i/n in `directory` (runs/<preset>) while this runner trains. Another runner
    of the same shard, or a live runner of a shard with a different n (shards 1/2 and 1/3 overlap), is an
    error naming it. Release the returned lock when done."""
    i, n = shard_of
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(directory / f".shard-{i}-of-{n}.lock", f"shard {i}/{n} of {rel(directory)}", command)
    lock.acquire()
    for other in sorted(directory.iterdir()):
        m = _SHARD_LOCK.match(other.name)
        if m and int(m[2]) != n and is_locked(other):
            lock.release()
            raise ValueError(f"--shard {i}/{n} overlaps shard {m[1]}/{m[2]}, which "
                             f"{describe(read_holder(other))} is running on {rel(directory)}; runners that share "
                             f"a runs directory must split it with the same n")
    return lock


def run_jobs(jobs: list[Job], preset: str, n_parallel: int = 1, paths: Paths = Paths(),
             train_script: Path = TRAIN_SCRIPT, gpus: list[str] | None = None,
             threads: int | None = None) -> dict[str, list]:
    """Train `jobs` (none of them done), `n_parallel` at a time; record each run as it finishes.

    Returns {"trained": [Job], "failed": [(Job, reason)]}. On a terminal a bar shows the runs done,
    running and left, with the time left at the rate runs have finished so far (stderr).
    """
    gpus = visible_gpus() if gpus is None else gpus
    preexec = die_with_parent()
    slots: queue.Queue[int] = queue.Queue()
    for s in range(n_parallel):
        slots.put(s)
    procs: dict[int, subprocess.Popen] = {}
    walls: dict[int, float] = {}
    bar = tqdm(total=len(jobs), desc=f"{preset} runs", unit="run", dynamic_ncols=True, disable=None)

    def show() -> None:
        finished = bar.n
        bar.set_postfix(done=finished, running=len(procs), left=len(jobs) - finished - len(procs), refresh=True)

    def train_one(job: Job) -> int:
        slot = slots.get()
        try:
            cmd = job.command(python=sys.executable, train_script=train_script)
            run_dir = _abs(job.run.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            append_line(run_dir / "train.log", f"=== {stamp} launch: {shlex.join(cmd)}")
            with open(run_dir / "train.log", "a") as log:  # the training's own output (a stream)
                # Same process group as this runner (stopping the group stops its trainings), and a
                # parent-death signal: killing the runner alone stops them too.
                tqdm.write(f"start    {job.run.name}")
                start = time.perf_counter()
                proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(slot, n_parallel, gpus, threads),
                                        stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
                procs[id(job)] = proc
                show()
                rc = proc.wait()
                walls[id(job)] = time.perf_counter() - start
                return rc
        finally:
            procs.pop(id(job), None)
            slots.put(slot)

    done: dict[str, list] = {"trained": [], "failed": []}
    pool = concurrent.futures.ThreadPoolExecutor(n_parallel)
    try:
        futures = {pool.submit(train_one, job): job for job in jobs}
        for fut in concurrent.futures.as_completed(futures):
            job = futures[fut]
            rc = fut.result()
            bar.update(1)
            show()
            run_dir = _abs(job.run.run_dir)
            if rc != 0 or not (run_dir / "metrics.json").exists():
                why = f"exited with status {rc}" if rc else "stopped before finishing (interrupted?)"
                reason = f"train.py {why}; see {rel(run_dir / 'train.log')}"
                done["failed"].append((job, reason))
                tqdm.write(f"FAILED {job.run.name}: {reason}")
                continue
            try:
                # launch_wall_s: the launch that finished the run (a resumed run's earlier launches not counted)
                write_record(paths, preset, record_from_run(run_dir, preset)
                             | {"launch_wall_s": round(walls[id(job)], 1)})
            except (ValueError, OSError) as e:
                done["failed"].append((job, str(e)))
                tqdm.write(f"FAILED {job.run.name}: {e}")
                continue
            done["trained"].append(job)
            tqdm.write(f"finished {job.run.name} in {walls[id(job)]:.0f} s ({len(done['trained'])}/{len(jobs)})")
    finally:
        for proc in list(procs.values()):  # interrupted: stop the trainings we started (they resume later)
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return done


def reproduce(preset: str, manifests: list[Manifest], seeds: tuple[int, ...] | None = None, n_parallel: int = 1,
              shard_of: tuple[int, int] = (1, 1), dry_run: bool = False, paths: Paths = Paths(),
              data_root: str | None = None, train_script: Path = TRAIN_SCRIPT,
              threads: int | None = None) -> dict[str, list]:
    """Plan, skip what has a record, record what finished, train the rest. Returns run_jobs' summary
    plus "skipped" (done), "exported" (finished runs whose record was written now) and "pending" (runs
    still waiting for another run's record). Runs that wait for a record (weights_from) are planned
    again, and trained, once the runs they wait for have been recorded."""
    if not dry_run:  # temporary files of record and table writes that a crash interrupted (never committed)
        for directory in (paths.records(preset), paths.results / preset):
            sweep_temp_files(directory, older_than_s=STALE_TEMP_S)
    summary: dict[str, list] = {"skipped": [], "exported": [], "trained": [], "failed": [], "pending": []}
    seen: set[str] = set()
    while True:
        pending: list[str] = []
        records = load_records(paths, preset)
        jobs = shard(plan(preset, manifests, seeds, paths, data_root, records, pending), *shard_of)
        jobs = [j for j in jobs if j.run.identity not in seen]  # each job once, however many rounds
        seen |= {j.run.identity for j in jobs}
        todo = _triage(jobs, records, preset, paths, summary, dry_run, train_script, shard_of)
        summary["pending"] = pending
        for reason in pending:
            print(f"pending  {reason}", flush=True)
        if dry_run or not todo:
            if pending and not dry_run and jobs:
                continue  # runs recorded this round may be what the pending ones wait for
            return summary
        if not summary["trained"] and not summary["failed"]:  # once per invocation, before the first trainings
            if train_script == TRAIN_SCRIPT:  # train.py reads the dataset (tests' stand-in scripts do not)
                check_data_roots(todo)
            note = cache_note(todo[0].run.config)
            if note:
                print(note, flush=True)
        claim = claim_shard(paths.runs / preset, shard_of)
        try:
            result = run_jobs(todo, preset, n_parallel, paths, train_script, threads=threads)
        finally:
            claim.release()
        summary["trained"] += result["trained"]
        summary["failed"] += result["failed"]
        if not pending or not result["trained"]:
            return summary


def check_data_roots(jobs: list[Job]) -> None:
    """Raise ConfigError, before any training starts, when a job's dataset root (data.root, else
    $CITYSCAPES_DATASET, relative to the repository root where train.py runs) is unset or not a directory:
    otherwise every training fails alike, one after the other."""
    from data.frames import root_setting

    for root in dict.fromkeys(root_setting(job.run.config.data.root) for job in jobs):
        if root is None:
            raise ConfigError("no dataset root: pass --data-root PATH or set $CITYSCAPES_DATASET (e.g. "
                              "datasets/synthetic-cityscapes made by `python -m data.synthetic`); nothing was started")
        path = Path(root) if Path(root).is_absolute() else ROOT / root
        if not path.is_dir():
            raise ConfigError(f"dataset root {root} is not a directory (relative paths start at the repository "
                              "root): pass --data-root PATH or set $CITYSCAPES_DATASET; nothing was started")


def cache_note(cfg) -> str | None:
    """A one-line note when `cfg` would read its training frames from PNGs although a Tiny cache could serve
    them (data.cache auto, a fixed size, no random scaling, none built yet): the items are the same, the
    steps faster (1.2x on the protocol preset: results/perf/cpu-synthetic-protocol-loader.json)."""
    from data.cache import default_dir, split_dir
    from data.frames import DataError, resolve_root

    d = cfg.data
    if d.format != "cityscapes" or d.cache != "auto" or d.size is None or d.scale is not None or d.resident:
        return None
    try:
        root = resolve_root(d.root)
    except DataError:
        return None  # train.py says what is wrong with the root
    size = tuple(d.size)
    if split_dir(default_dir(root), size, d.train_split).exists():
        return None
    return (f"note: no Tiny cache of {root} at {size[0]}x{size[1]}: the trainings decode the PNGs every step; "
            f"`python -m data.cache {root} --size {size[0]}x{size[1]} --splits {d.train_split} {d.val_split}"
            + (f" {d.test_split}" if d.test_split else "") + "` makes the same items faster (not part of a run's "
            "identity)")


def _triage(jobs: list[Job], records: dict[str, Record], preset: str, paths: Paths, summary: dict, dry_run: bool,
            train_script: Path, shard_of: tuple[int, int]) -> list[Job]:
    """Sort `jobs` into summary's skipped / exported / failed; return the ones to train (new or resumed)."""
    todo, resumes, counts = [], 0, {"done": 0, "finished": 0}
    for job in jobs:
        state = status(job, records)
        counts[state] = counts.get(state, 0) + 1
        if dry_run:
            print(f"{state:9s} {', '.join(job.names)} seed {job.run.seed} [{job.run.identity}]\n"
                  f"          {shlex.join(job.command(train_script=train_script))}")
        if state == "done":
            summary["skipped"].append(job)
        elif state == "finished":
            if not dry_run:
                write_record(paths, preset, record_from_run(_abs(job.run.run_dir), preset))
            summary["exported"].append(job)
        elif state == "conflict":
            reason = (f"{rel(_abs(job.run.run_dir))} holds a finished run of a different config; move it away "
                      "or delete it to rerun")
            summary["failed"].append((job, reason))
            print(f"FAILED {job.run.name}: {reason}")
        else:
            todo.append(job)
            resumes += state == "resume"
    print(f"{preset}: {len(jobs)} runs in shard {shard_of[0]}/{shard_of[1]}: {counts['done']} done, "
          f"{counts['finished']} finished and recorded now, {len(todo) - resumes} to train, "
          f"{resumes} to resume", flush=True)
    return todo


# What a record keeps of `evaluate.py --official --out`: no machine paths (the command names the checkpoint).
OFFICIAL_KEYS = ("split", "frames", "file_size", "metrics", "full_resolution", "official", "instance_ap",
                 "grouping_s_per_frame")


def official_command(run_dir: Path, grouping: list[str], data_root: str | None = None,
                     python: str = "python") -> list[str]:
    """`python evaluate.py --checkpoint RUN/checkpoint.pt --official --grouping ... --out RUN/official.json`."""
    cmd = [python, "evaluate.py", "--checkpoint", rel(_abs(run_dir) / "checkpoint.pt"), "--official",
           "--grouping", ",".join(grouping), "--out", rel(_abs(run_dir) / "official.json"), "--workers", "0"]
    return cmd + (["--root", data_root] if data_root else [])


def needs_official(record: Record, grouping: list[str]) -> bool:
    have = record.data.get("official") or {}
    return "official" not in have or any(g not in (have.get("instance_ap") or {}) for g in grouping)


def evaluate_official_runs(preset: str, manifests: list[Manifest], seeds: tuple[int, ...] | None = None,
                           paths: Paths = Paths(), data_root: str | None = None, dry_run: bool = False,
                           shard_of: tuple[int, int] = (1, 1),
                           scored: list[str] | None = None) -> list[tuple[str, str]]:
    """Score every finished run of a manifest with `official:` by the official Cityscapes evaluators at full
    resolution (evaluate.py --official) and keep the result in its record under "official". Returns the
    (run, reason) of each run that could not be scored, and appends the name of each run scored now to
    `scored`; runs not trained yet are left to the trainer."""
    failed: list[tuple[str, str]] = []
    records = load_records(paths, preset)
    for manifest in manifests:
        if not manifest.official:
            continue
        grouping = manifest.official["grouping"]
        for run in shard(runs_of(manifest, preset, seeds, paths, data_root, records, []), *shard_of):
            record = records.get(run.identity)
            if record is None or not needs_official(record, grouping):
                continue
            run_dir = _abs(run.run_dir)
            cmd = official_command(run.run_dir, grouping, data_root, python=sys.executable)
            if dry_run:
                print(f"evaluate  {run.name} [{run.identity}]\n          {shlex.join(['python', *cmd[1:]])}")
                continue
            if not (run_dir / "checkpoint.pt").exists():
                failed.append((run.name, f"its record has no official scores and {rel(run_dir)} has no checkpoint "
                                         "to score (the run was trained elsewhere); copy its run directory here"))
                continue
            print(f"evaluate {run.name} (official, full resolution, grouping {','.join(grouping)})", flush=True)
            with open(run_dir / "evaluate.log", "a") as log:
                rc = subprocess.run(cmd, cwd=ROOT, env=job_env(0, 1, visible_gpus()), stdout=log,
                                    stderr=subprocess.STDOUT, preexec_fn=die_with_parent()).returncode
            if rc != 0:
                failed.append((run.name, f"evaluate.py exited with status {rc}; see {rel(run_dir / 'evaluate.log')}"))
                continue
            out = read_json(run_dir / "official.json")
            record.data["official"] = {"command": ["python", *cmd[1:]], "git_commit": git_commit()} | {
                k: out[k] for k in OFFICIAL_KEYS if k in out}
            write_json(record.path, record.stored())
            if scored is not None:
                scored.append(run.name)
    for name, reason in failed:
        print(f"FAILED {name}: {reason}", flush=True)
    return failed


def log_invocation(preset: str, argv: list[str], summary: dict, wall: float, n_parallel: int,
                   paths: Paths = Paths(), per_gpu: int | None = None) -> None:
    """Append one line per invocation to results/<preset>/reproduce-log.jsonl (the lab notebook's timing).
    An invocation that trained, recorded, scored and failed nothing only regenerated tables: it writes no
    line, so regenerating from the committed records on a fresh clone leaves `git status` clean."""
    if not any(summary.get(k) for k in ("trained", "exported", "scored", "failed")):
        return
    path = paths.results / preset / "reproduce-log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"command": ["python", "reproduce.py", *argv],
           "finished": datetime.datetime.now().isoformat(timespec="seconds"), "wall_s": round(wall, 1),
           "jobs": n_parallel, "per_gpu": per_gpu, "cpus": cpu_count(), "machine": platform.machine(),
           **{k: len(v) for k, v in summary.items()}}
    append_line(path, dumps(row))
