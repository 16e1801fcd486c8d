"""Reproduce the paper's Table 1 and Figure 2 sweeps: plan, train what is missing, aggregate.

    python reproduce.py {table1,sweep,all} --preset NAME [--seeds 0,1,2] [--jobs N] [--shard i/n] [--dry-run]
    python reproduce.py aggregate --preset NAME

An experiment is a small YAML override in configs/table1/ or configs/sweep/ applied on top of the
preset configs/NAME.yaml. Each (experiment, seed) trains with train.py in runs/NAME/<experiment>/seed<k>.
A run is skipped when it is finished (its metrics.json exists) or when results/NAME/runs/ already holds
a result with the same config hash (trained elsewhere, or as another experiment with the same resolved
config: a sweep endpoint is the single-task Table 1 row). An interrupted run is resumed by running
train.py again on its run directory. Each finished run is copied as a small JSON (metrics, config,
command, git commit, sigma^2 curves) to results/NAME/runs/<experiment>-seed<k>.json, which is committed,
so results accumulate across machines and days. Aggregation writes results/NAME/table1.{json,md},
results/NAME/figure2{a,b}.{json,md,png} and results/NAME/curves/<experiment>.png.

--jobs N runs N trainings at a time: one GPU each where GPUs exist, otherwise the CPU cores split
between them. By default one per GPU, else one single-threaded training per core (on two cores that
measured about 1.4x the throughput of one two-threaded training). --shard i/n (1 <= i <= n) runs only
every n-th run of the list from the i-th on, for several machines sharing one filesystem.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import math
import os
import platform
import queue
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import plots
from atomic_write import write_json
from config import Config, ConfigError, load_config
from tasks import TASKS

ROOT = Path(__file__).resolve().parent
TRAIN_SCRIPT = ROOT / "train.py"
PAPER_JSON = ROOT / "results" / "paper" / "kendall2018.json"
PARTS = ("table1", "sweep")
DEFAULT_SEEDS = {"table1": (0, 1, 2), "sweep": (0,)}
# Paper column -> (task, key in metrics.json); the paper reports these three on Tiny CityScapes.
COLUMNS = {
    "semantic_miou_pct": ("semantic", "semantic/miou"),
    "instance_mean_error_px": ("instance", "instance/mean_error_px"),
    "depth_mean_error_px": ("depth", "depth/mean_error_px"),
}
COLUMN_DIGITS = {"semantic_miou_pct": 2, "instance_mean_error_px": 3, "depth_mean_error_px": 3}
# Figure 2 panels: the two tasks swept (the second is always depth, the x axis).
FIGURES = {"figure2a": ("semantic", "depth"), "figure2b": ("instance", "depth")}
RESULT_KEYS = ("step", "iterations", "metrics", "config", "config_hash", "command", "git_commit", "wall_time_s",
               "weighting")


@dataclass(frozen=True)
class Paths:
    """Where presets and experiments are read and runs and results are written."""

    configs: Path = ROOT / "configs"
    runs: Path = ROOT / "runs"
    results: Path = ROOT / "results"


@dataclass(frozen=True)
class Experiment:
    """One experiment file: configs/<part>/<name>.yaml."""

    name: str
    part: str
    path: Path

    @property
    def figure(self) -> str | None:
        """figure2a / figure2b for a sweep point (from its file name), else None."""
        prefix = self.name.split("-", 1)[0]
        return f"figure{prefix[3:]}" if self.part == "sweep" and prefix.startswith("fig") else None


@dataclass
class Run:
    """One (experiment, seed) resolved on a preset."""

    experiment: Experiment
    seed: int
    config: Config
    files: list[Path]
    overrides: list[str]
    run_dir: Path

    @cached_property
    def config_hash(self) -> str:
        return self.config.hash()


@dataclass
class Job:
    """One training: the first run of a config hash, plus the other experiments that are the same run."""

    run: Run
    aliases: list[Run] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [self.run.experiment.name, *(a.experiment.name for a in self.aliases)]

    def command(self, python: str = sys.executable, train_script: Path = TRAIN_SCRIPT) -> list[str]:
        """The train.py command line (run from the repository root)."""
        return train_command(self.run, python, train_script)


def train_command(run: Run, python: str = "python", train_script: Path = TRAIN_SCRIPT) -> list[str]:
    """`python train.py --config PRESET --config EXPERIMENT seed=K run_dir=...` for one run."""
    args = [python, _rel(train_script)]
    for f in run.files:
        args += ["--config", _rel(f)]
    return args + run.overrides


# ----------------------------------------------------------------------------- planning

def _rel(path: Path) -> str:
    """`path` relative to the repository root when inside it (commands read the same everywhere)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _link(path: Path) -> str:
    """A Markdown link target: repository-root relative ("/results/..."), which GitHub resolves the same from
    README.md and from the generated file beside the image."""
    rel = _rel(path)
    return rel if rel.startswith("/") else "/" + rel


def preset_file(preset: str, paths: Paths = Paths()) -> Path:
    """configs/<preset>.yaml, or an error listing the presets there."""
    path = paths.configs / f"{preset}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in paths.configs.glob("*.yaml"))
        raise ConfigError(f"preset {preset!r} not found ({path}); valid presets: {', '.join(valid)}")
    return path


def experiments(part: str, paths: Paths = Paths()) -> list[Experiment]:
    """The experiment files of `part` (table1 | sweep), sorted by name."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; valid parts: {', '.join(PARTS)}")
    found = [Experiment(p.stem, part, p) for p in sorted((paths.configs / part).glob("*.yaml"))]
    for e in found:
        if part == "sweep" and e.figure not in FIGURES:
            raise ConfigError(f"{e.path}: sweep files must be named {' or '.join(f[-2:] for f in FIGURES)}-..."
                              f" (fig2a-... or fig2b-...) so the runner knows their figure")
    return found


def runs_of(preset: str, part: str, seeds, paths: Paths = Paths(), data_root: str | None = None) -> list[Run]:
    """Every (experiment, seed) of `part` on `preset`, with its resolved config."""
    base = preset_file(preset, paths)
    out = []
    for exp in experiments(part, paths):
        for seed in seeds:
            run_dir = paths.runs / preset / exp.name / f"seed{seed}"
            overrides = [f"seed={seed}", f"run_dir={_rel(run_dir)}"]
            if data_root:
                overrides.append(f"data.root={data_root}")  # not part of the config hash
            cfg = load_config([base, exp.path], overrides)
            out.append(Run(exp, seed, cfg, [base, exp.path], overrides, run_dir))
    return out


def plan(preset: str, parts, seeds: dict[str, tuple[int, ...]], paths: Paths = Paths(),
         data_root: str | None = None) -> list[Job]:
    """One job per distinct config hash, in a fixed order (parts as given, then file name, then seed)."""
    jobs: dict[str, Job] = {}
    for part in parts:
        for run in runs_of(preset, part, seeds[part], paths, data_root):
            h = run.config_hash
            if h in jobs:
                jobs[h].aliases.append(run)
            else:
                jobs[h] = Job(run)
    return list(jobs.values())


def shard(jobs: list, i: int, n: int) -> list:
    """The i-th of n deterministic, disjoint slices of `jobs` (1 <= i <= n): every n-th from the i-th."""
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: need 1 <= i <= n")
    return jobs[i - 1::n]


# ----------------------------------------------------------------------------- results

def read_json(path: Path) -> dict:
    """A JSON object from `path`; a corrupt or foreign file is an error naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def results_dir(preset: str, paths: Paths = Paths()) -> Path:
    return paths.results / preset / "runs"


def result_index(preset: str, paths: Paths = Paths()) -> dict[str, dict]:
    """config hash -> result dict for every results/<preset>/runs/*.json."""
    index = {}
    for path in sorted(results_dir(preset, paths).glob("*.json")):
        data = read_json(path)
        if "config_hash" not in data or "metrics" not in data:
            raise ValueError(f"{path}: not a run result (needs config_hash and metrics)")
        index.setdefault(data["config_hash"], data)
    return index


def result_from_run(run_dir: Path) -> dict:
    """The small JSON kept for a finished run: metrics.json's fields plus the sigma^2 / weight curves."""
    final = read_json(run_dir / "metrics.json")
    missing = [k for k in ("metrics", "config_hash", "config") if k not in final]
    if missing:
        raise ValueError(f"{run_dir / 'metrics.json'}: missing keys {missing}")
    result = {k: final[k] for k in RESULT_KEYS if k in final}
    result["run_dir"] = _rel(run_dir)
    log = run_dir / "metrics.jsonl"
    if log.exists():
        curves = plots.read_curves(log)
        if len(curves) > 1:
            result["curves"] = plots.thin(curves)
    return result


def export(job: Job, preset: str, source: dict, paths: Paths = Paths()) -> list[Path]:
    """Write results/<preset>/runs/<experiment>-seed<k>.json for the job and its aliases (missing ones only)."""
    written = []
    for run in [job.run, *job.aliases]:
        out = results_dir(preset, paths) / f"{run.experiment.name}-seed{run.seed}.json"
        if out.exists() and read_json(out).get("config_hash") == run.config_hash:
            continue
        write_json(out, {**source, "preset": preset, "experiment": run.experiment.name, "seed": run.seed})
        written.append(out)
    return written


def status(job: Job, index: dict[str, dict]) -> str:
    """done (result kept) | finished (metrics.json only) | resume (checkpoint) | new | conflict."""
    run = job.run
    if run.config_hash in index:
        return "done"
    final = run.run_dir / "metrics.json"
    if final.exists():
        return "finished" if read_json(final).get("config_hash") == run.config_hash else "conflict"
    return "resume" if (run.run_dir / "checkpoint.pt").exists() else "new"


# ----------------------------------------------------------------------------- running

def visible_gpus() -> list[str]:
    """GPU ids this process may use (CUDA_VISIBLE_DEVICES order), empty without CUDA."""
    import torch  # only here: planning and aggregation do not need it

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(count)]
    return ids[:count]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def job_env(slot: int, n_parallel: int, gpus: list[str], threads: int | None = None) -> dict[str, str]:
    """Environment of the training in `slot`: its own GPU, and its share of the CPU cores (or `threads`)."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    env.setdefault("WANDB_MODE", "disabled")
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    threads = threads or max(1, cpu_count() // n_parallel)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)  # torch's intra-op threads follow OMP
    return env


def run_jobs(jobs: list[Job], preset: str, n_parallel: int = 1, paths: Paths = Paths(),
             train_script: Path = TRAIN_SCRIPT, gpus: list[str] | None = None,
             threads: int | None = None) -> dict[str, list]:
    """Train `jobs` (none of them done), `n_parallel` at a time; export each result as it finishes.

    Each training's output is appended to <run_dir>/train.log after a header line naming the
    command. Returns {"trained": [Job], "failed": [(Job, reason)]}.
    """
    gpus = visible_gpus() if gpus is None else gpus
    slots: queue.Queue[int] = queue.Queue()
    for s in range(n_parallel):
        slots.put(s)
    procs: dict[int, subprocess.Popen] = {}
    walls: dict[int, float] = {}

    def train_one(job: Job) -> int:
        slot = slots.get()
        try:
            cmd = job.command(train_script=train_script)
            job.run.run_dir.mkdir(parents=True, exist_ok=True)
            with open(job.run.run_dir / "train.log", "a") as log:
                stamp = datetime.datetime.now().isoformat(timespec="seconds")
                log.write(f"=== {stamp} launch: {shlex.join(cmd)}\n")
                log.flush()
                # Same process group as this runner: stopping the runner's group stops its trainings.
                print(f"start    {job.run.experiment.name} seed {job.run.seed}", flush=True)
                start = time.perf_counter()
                proc = subprocess.Popen(cmd, cwd=ROOT, env=job_env(slot, n_parallel, gpus, threads),
                                        stdout=log, stderr=subprocess.STDOUT)
                procs[id(job)] = proc
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
            name = f"{job.run.experiment.name} seed {job.run.seed}"
            if rc != 0 or not (job.run.run_dir / "metrics.json").exists():
                why = f"exited with status {rc}" if rc else "stopped before finishing (interrupted?)"
                reason = f"train.py {why}; see {_rel(job.run.run_dir / 'train.log')}"
                done["failed"].append((job, reason))
                print(f"FAILED {name}: {reason}", flush=True)
                continue
            try:
                # launch_wall_s: the launch that finished the run (a resumed run's earlier launches not counted)
                export(job, preset, result_from_run(job.run.run_dir) | {"launch_wall_s": round(walls[id(job)], 1)},
                       paths)
            except (ValueError, OSError) as e:
                done["failed"].append((job, str(e)))
                print(f"FAILED {name}: {e}", flush=True)
                continue
            done["trained"].append(job)
            print(f"finished {name} in {walls[id(job)]:.0f} s ({len(done['trained'])}/{len(jobs)})", flush=True)
    finally:
        for proc in list(procs.values()):  # interrupted: stop the trainings we started (they resume later)
            proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
    return done


def reproduce(preset: str, parts, seeds: dict[str, tuple[int, ...]], n_parallel: int = 1,
              shard_of: tuple[int, int] = (1, 1), dry_run: bool = False, paths: Paths = Paths(),
              data_root: str | None = None, train_script: Path = TRAIN_SCRIPT,
              threads: int | None = None) -> dict[str, list]:
    """Plan, skip what is done, export what finished, train the rest. Returns run_jobs' summary
    plus "skipped" (done) and "exported" (finished runs whose result JSON was written now)."""
    jobs = shard(plan(preset, parts, seeds, paths, data_root), *shard_of)
    index = result_index(preset, paths)
    summary: dict[str, list] = {"skipped": [], "exported": [], "trained": [], "failed": []}
    todo, resumes = [], 0
    for job in jobs:
        state = status(job, index)
        line = f"{state:9s} {', '.join(job.names)} seed {job.run.seed} [{job.run.config_hash}]"
        if dry_run:
            print(f"{line}\n          {shlex.join(job.command(train_script=train_script))}")
        if state == "done":
            if not dry_run:
                export(job, preset, _strip(index[job.run.config_hash]), paths)  # aliases may lack their copy
            summary["skipped"].append(job)
        elif state == "finished":
            if not dry_run:
                export(job, preset, result_from_run(job.run.run_dir), paths)
            summary["exported"].append(job)
        elif state == "conflict":
            reason = (f"{_rel(job.run.run_dir)} holds a finished run of a different config; move it away "
                      "or delete it to rerun")
            summary["failed"].append((job, reason))
            print(f"FAILED {job.run.experiment.name} seed {job.run.seed}: {reason}")
        else:
            todo.append(job)
            resumes += state == "resume"
    counts = {k: len(v) for k, v in summary.items() if k != "trained"}
    print(f"{preset}: {len(jobs)} runs in shard {shard_of[0]}/{shard_of[1]}: {counts['skipped']} done, "
          f"{counts['exported']} finished and exported now, {len(todo) - resumes} to train, {resumes} to resume",
          flush=True)
    if dry_run or not todo:
        return summary
    result = run_jobs(todo, preset, n_parallel, paths, train_script, threads=threads)
    summary["trained"] = result["trained"]
    summary["failed"] += result["failed"]
    return summary


def _strip(result: dict) -> dict:
    """A kept result without its per-experiment keys (to copy it under another experiment's name)."""
    return {k: v for k, v in result.items() if k not in ("preset", "experiment", "seed")}


# ----------------------------------------------------------------------------- aggregation

def load_paper(path: Path = PAPER_JSON) -> dict:
    """The paper's numbers (a copy of the authors' tables, see results/paper/)."""
    return read_json(path)


def summarize(values: list[float]) -> dict:
    """mean, sample standard deviation (n - 1; None for one value), n and the values themselves."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": list(values)}


def task_weight(cfg: Config, task: str) -> float:
    """A task's fixed weight: 0 when the task is absent, 1 when present but unnamed (as `fixed` does)."""
    return cfg.weighting.weights.get(task, 1.0) if task in cfg.tasks else 0.0


def paper_table1_row(cfg: Config, rows: list[dict]) -> dict | None:
    """The paper's Table 1 row that `cfg` is (same tasks and weights, or same uncertainty tasks)."""
    for row in rows:
        if cfg.weighting.name == "uncertainty" and set(row.get("uncertainty", ())) == set(cfg.tasks):
            return row
        if cfg.weighting.name == "fixed" and "weights" in row:
            active = {t for t, w in row["weights"].items() if w > 0}
            if active == set(cfg.tasks) and all(abs(task_weight(cfg, t) - w) < 1e-3
                                                for t, w in row["weights"].items()):
                return row
    return None


def paper_figure2_row(cfg: Config, figure: dict, tasks: tuple[str, str]) -> dict | None:
    """The paper's Figure 2 point that `cfg` is, as {column: value}, or None."""
    if cfg.weighting.name != "fixed" or not set(cfg.tasks) <= set(tasks):
        return None
    cols = figure["row_columns"]
    for values in figure["rows"]:
        row = dict(zip(cols, values))
        if all(abs(task_weight(cfg, t) - row[f"w_{t}"]) < 1e-6 for t in tasks):
            return row
    return None


def collect(runs: list[Run], index: dict[str, dict]) -> dict:
    """For one experiment's runs (one per seed): found results, missing seeds and provenance."""
    found = {r.seed: index[r.config_hash] for r in runs if r.config_hash in index}
    cfg = runs[0].config
    ours = {}
    for col, (task, key) in COLUMNS.items():
        if task not in cfg.tasks:
            continue
        values = [res["metrics"][key] for res in found.values() if key in res["metrics"]]
        ours[col] = summarize(values) if values else None
    commands = {r.seed: found[r.seed].get("command") for r in runs if r.seed in found}
    return {
        "experiment": runs[0].experiment.name,
        "tasks": list(cfg.tasks),
        "weighting": {"name": cfg.weighting.name, "weights": {t: task_weight(cfg, t) for t in cfg.tasks}}
        if cfg.weighting.name == "fixed" else {"name": cfg.weighting.name, "form": cfg.weighting.form},
        "seeds": sorted(found),
        "missing_seeds": sorted(r.seed for r in runs if r.seed not in found),
        "ours": ours,
        "config_hash": {str(r.seed): r.config_hash for r in runs},
        "git_commit": {str(s): res.get("git_commit") for s, res in sorted(found.items())},
        "command": {str(s): c for s, c in sorted(commands.items())},
        "planned_command": train_command(runs[0]),
        "final_weights": _final_weights(found),
    }


def _final_weights(found: dict[int, dict]) -> dict[str, float] | None:
    """Mean over seeds of the last logged effective weight of each task (uncertainty runs)."""
    per_task: dict[str, list[float]] = {}
    for res in found.values():
        for key, series in (res.get("curves") or {}).items():
            if key.startswith("weight/") and series and math.isfinite(series[-1]):
                per_task.setdefault(key.split("/", 1)[1], []).append(series[-1])
    return {t: statistics.fmean(v) for t, v in per_task.items()} or None


def _group(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by experiment, in file-name order."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.experiment.name, []).append(r)
    return list(groups.values())


def table1(preset: str, seeds, index: dict[str, dict], paper: dict, paths: Paths = Paths()) -> dict:
    """Table 1 rows (paper order, then any extra experiments) with our mean/std beside the paper's numbers."""
    rows = paper["table1"]["rows"]
    out = []
    for runs in _group(runs_of(preset, "table1", seeds, paths)):
        row = collect(runs, index)
        match = paper_table1_row(runs[0].config, rows)
        row["paper_row"] = match["name"] if match else None
        row["paper"] = {c: match.get(c) for c in row["ours"]} if match else {c: None for c in row["ours"]}
        out.append(row)
    order = {r["name"]: i for i, r in enumerate(rows)}
    out.sort(key=lambda r: order.get(r["paper_row"], len(order)))
    return {"preset": preset, "title": f"Table 1 on preset {preset}", "columns": list(COLUMNS),
            "std": "sample standard deviation over seeds (n - 1)", "paper_caption": paper["table1"]["caption"],
            "generated_by": f"python reproduce.py aggregate --preset {preset}", "rows": out}


def figure2(name: str, preset: str, seeds, table1_seeds, index: dict[str, dict], paper: dict,
            paths: Paths = Paths()) -> dict:
    """One Figure 2 sweep: each point's metrics against the depth weight, ours beside the paper's."""
    tasks = FIGURES[name]
    fig = paper[name]
    columns = [c for c in COLUMNS if COLUMNS[c][0] in tasks]
    points = []
    for runs in _group([r for r in runs_of(preset, "sweep", seeds, paths) if r.experiment.figure == name]):
        point = collect(runs, index)
        cfg = runs[0].config
        match = paper_figure2_row(cfg, fig, tasks)
        point["x"] = task_weight(cfg, "depth")
        point["paper"] = {c: match.get(c) if match else None for c in columns}
        point["ours"] = {c: point["ours"].get(c) for c in columns}  # a task absent here is None
        points.append(point)
    points.sort(key=lambda p: p["x"])
    learned = None
    for runs in _group(runs_of(preset, "table1", table1_seeds, paths)):
        cfg = runs[0].config
        if cfg.weighting.name == "uncertainty" and set(cfg.tasks) == set(tasks):
            learned = collect(runs, index)
            learned["ours"] = {c: learned["ours"].get(c) for c in columns}
            learned["paper"] = {c: fig["learned"].get(c) for c in columns}
            w = learned["final_weights"]
            learned["x"] = w["depth"] / (w["depth"] + w[tasks[0]]) if w and set(tasks) <= set(w) else None
    return {"preset": preset, "figure": name, "title": f"{fig['caption'].split(',')[0]}: {tasks[0]} + depth",
            "ours_label": f"ours ({preset})", "paper_label": "paper (Tiny CityScapes)",
            "tasks": list(tasks), "x": "depth weight (fixed weights sum to 1)", "columns": columns,
            "std": "sample standard deviation over seeds (n - 1)", "paper_caption": fig["caption"],
            "generated_by": f"python reproduce.py aggregate --preset {preset}", "points": points, "learned": learned}


def fmt_cell(summary: dict | None, col: str, applicable: bool = True) -> str:
    """'mean ± std' (std only over several seeds), 'missing' without results, '—' where not applicable."""
    if not applicable:
        return "—"
    if summary is None:
        return "missing"
    d = COLUMN_DIGITS[col]
    text = f"{summary['mean']:.{d}f}"
    return text + (f" ± {summary['std']:.{d}f}" if summary["std"] is not None else "")


def fmt_paper(value, col: str, applicable: bool = True) -> str:
    return "—" if not applicable or value is None else f"{value:g}"


def _seeds_cell(row: dict) -> str:
    text = ",".join(map(str, row["seeds"])) or "none"
    return text + (f" (missing {','.join(map(str, row['missing_seeds']))})" if row["missing_seeds"] else "")


def _weights_cell(row: dict) -> str:
    w = row["weighting"]
    if w["name"] == "fixed":
        return " / ".join(f"{w['weights'][t]:.3g}" if t in w["weights"] else "—" for t in TASKS)
    return " / ".join(w["name"] if t in row["tasks"] else "—" for t in TASKS)


def _provenance(rows: list[dict]) -> list[str]:
    """One line per row: seeds, config hashes, git commits and the exact command."""
    lines = ["", "### Provenance", ""]
    for row in rows:
        if row is None:
            continue
        commits = sorted({c for c in row["git_commit"].values() if c})
        seed = next(iter(row["command"]), None)
        cmd = shlex.join(row["command"][seed]) if seed is not None else shlex.join(row["planned_command"]) + \
            "  (not run yet)"
        hashes = ", ".join(f"seed{s}: {h}" for s, h in row["config_hash"].items())
        lines.append(f"- **{row['experiment']}**: seeds {_seeds_cell(row)}; config hash {hashes}; "
                     f"git commit {', '.join(commits) or '—'}; command (seed {seed if seed is not None else 0}): "
                     f"`{cmd}`")
    return lines


def table1_markdown(t: dict) -> str:
    """Table 1 as Markdown: our mean ± std beside the paper's number for each metric."""
    head = ["Experiment", "Weights (sem / inst / depth)"]
    for col in t["columns"]:
        head += [f"{plots.COLUMN_LABELS[col]} ours", "paper"]
    head.append("Seeds")
    lines = [f"## {t['title']}", "", f"Generated by `{t['generated_by']}`. Ours: mean ± {t['std']}; "
             "'missing': not run yet; '—': task not trained. Paper: Kendall et al. 2018, Table 1 (Tiny CityScapes).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t["rows"]:
        cells = [row["paper_row"] or row["experiment"], _weights_cell(row)]
        for col in t["columns"]:
            ok = COLUMNS[col][0] in row["tasks"]
            cells += [fmt_cell(row["ours"].get(col), col, ok), fmt_paper(row["paper"].get(col), col, ok)]
        cells.append(_seeds_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    if t.get("curves"):
        links = ", ".join(f"[{name}]({link})" for name, link in t["curves"].items())
        lines += ["", f"Learned sigma^2 and effective task weights over training (the paper's Appendix B): {links}."]
    return "\n".join(lines + _provenance(t["rows"])) + "\n"


def figure2_markdown(f: dict) -> str:
    """A Figure 2 sweep as Markdown: one line per weight pair plus the learned-uncertainty result."""
    first = f["tasks"][0]
    head = [f"w_{first}", "w_depth"]
    for col in f["columns"]:
        head += [f"{plots.COLUMN_LABELS[col]} ours", "paper"]
    head.append("Seeds")
    lines = [f"## {f['title']}", "", f"Generated by `{f['generated_by']}`. Ours: mean ± {f['std']}; "
             f"'missing': not run yet; '—': task not trained. Paper: {f['paper_caption']}.", "",
             f"![{f['figure']}]({f['image']})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in f["points"]:
        cells = [f"{1 - p['x']:g}", f"{p['x']:g}"]
        for col in f["columns"]:
            ok = COLUMNS[col][0] in p["tasks"]
            cells += [fmt_cell(p["ours"].get(col), col, ok), fmt_paper(p["paper"].get(col), col, ok)]
        lines.append("| " + " | ".join(cells + [_seeds_cell(p)]) + " |")
    lr = f["learned"]
    if lr is not None:
        x = f"learned {lr['x']:.3g}" if lr["x"] is not None else "learned"
        cells = ["learned", x]
        for col in f["columns"]:
            cells += [fmt_cell(lr["ours"].get(col), col), fmt_paper(lr["paper"].get(col), col)]
        lines.append("| " + " | ".join(cells + [_seeds_cell(lr)]) + " |")
        lines += ["", f"'learned': {lr['experiment']} (Table 1), its relative depth weight at the end of training "
                  "(mean over seeds) in the w_depth column."]
    return "\n".join(lines + _provenance([*f["points"], lr])) + "\n"


def uncertainty_figures(preset: str, seeds, index: dict[str, dict], paths: Paths = Paths()) -> list[Path]:
    """Appendix B figure (sigma^2 and effective weights over training) for each uncertainty experiment."""
    written = []
    for runs in _group(runs_of(preset, "table1", seeds, paths)):
        if runs[0].config.weighting.name != "uncertainty":
            continue
        curves = {f"seed{r.seed}": index[r.config_hash]["curves"] for r in runs
                  if "curves" in index.get(r.config_hash, {})}
        if curves:
            name = runs[0].experiment.name
            out = paths.results / preset / "curves" / f"{name}.png"
            written.append(plots.plot_uncertainty(curves, out, title=f"{name} on {preset}"))
    return written


def aggregate(preset: str, seeds: dict[str, tuple[int, ...]], paths: Paths = Paths(),
              paper: dict | None = None) -> list[Path]:
    """Write table1.{json,md}, figure2{a,b}.{json,md,png} and the uncertainty curves for `preset`."""
    paper = paper or load_paper()
    index = result_index(preset, paths)
    out_dir = paths.results / preset
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = uncertainty_figures(preset, seeds["table1"], index, paths)
    t1 = table1(preset, seeds["table1"], index, paper, paths)
    t1["curves"] = {p.stem: _link(p) for p in curves}
    write_json(out_dir / "table1.json", t1)
    (out_dir / "table1.md").write_text(table1_markdown(t1))
    written = [*curves, out_dir / "table1.json", out_dir / "table1.md"]
    used = {h for r in t1["rows"] for h in r["config_hash"].values()}
    for name in FIGURES:
        f = figure2(name, preset, seeds["sweep"], seeds["table1"], index, paper, paths)
        f["image"] = _link(out_dir / f"{name}.png")
        write_json(out_dir / f"{name}.json", f)
        (out_dir / f"{name}.md").write_text(figure2_markdown(f))
        written += [out_dir / f"{name}.json", out_dir / f"{name}.md", plots.plot_figure2(f, out_dir / f"{name}.png")]
        used |= {h for p in [*f["points"], f["learned"]] if p for h in p["config_hash"].values()}
    unused = sorted(set(index) - used)
    if unused:
        print(f"note: {len(unused)} result(s) in {_rel(results_dir(preset, paths))} match no current experiment "
              f"and seed (other seeds, or configs changed since): {', '.join(unused)}")
    return written


# ----------------------------------------------------------------------------- command line

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=[*PARTS, "all", "aggregate"])
    p.add_argument("--preset", required=True, help="configs/NAME.yaml, e.g. synthetic-cpu or paper_tiny")
    p.add_argument("--seeds", type=parse_seeds, help="comma-separated (default: 0,1,2 for table1, 0 for the sweep)")
    p.add_argument("--jobs", type=int, default=None,
                   help="trainings at a time (default: one per GPU, else one per CPU core, each with one thread)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per training (default: cores / jobs). On a busy machine keep it at 1: "
                        "two-thread torch measured up to 25x slower when the other core was taken")
    p.add_argument("--shard", type=parse_shard, default=(1, 1), help="run only shard i of n (1-based)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    p.add_argument("--data-root", help="dataset root passed to train.py as data.root (default: $CITYSCAPES_DATASET)")
    p.add_argument("--configs-dir", type=Path, default=Paths.configs, help="presets, table1/, sweep/")
    p.add_argument("--runs-dir", type=Path, default=Paths.runs, help="run directories (default: runs)")
    p.add_argument("--results-dir", type=Path, default=Paths.results, help="kept results (default: results)")
    args = p.parse_args(argv)
    paths = Paths(args.configs_dir.resolve(), args.runs_dir.resolve(), args.results_dir.resolve())
    seeds = {part: args.seeds or DEFAULT_SEEDS[part] for part in PARTS}
    start = time.time()
    try:
        if args.what == "aggregate":
            for path in aggregate(args.preset, seeds, paths):
                print(_rel(path))
            return 0
        parts = PARTS if args.what == "all" else (args.what,)
        n_parallel = args.jobs or len(visible_gpus()) or cpu_count()
        if n_parallel < 1:
            raise ValueError("--jobs must be at least 1")
        summary = reproduce(args.preset, parts, seeds, n_parallel, args.shard, args.dry_run, paths, args.data_root,
                            threads=args.threads)
        if args.dry_run:
            return 0
        wall = time.time() - start
        log_invocation(args.preset, argv if argv is not None else sys.argv[1:], summary, wall, n_parallel, paths)
        for path in aggregate(args.preset, seeds, paths):
            print(_rel(path))
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for job, reason in summary["failed"]:
        print(f"failed: {job.run.experiment.name} seed {job.run.seed}: {reason}", file=sys.stderr)
    print(f"trained {len(summary['trained'])}, skipped {len(summary['skipped'])}, failed {len(summary['failed'])} "
          f"in {wall:.0f} s")
    return 1 if summary["failed"] else 0


def log_invocation(preset: str, argv: list[str], summary: dict, wall: float, n_parallel: int,
                   paths: Paths = Paths()) -> None:
    """Append one line per invocation to results/<preset>/reproduce-log.jsonl (the lab notebook's timing)."""
    path = paths.results / preset / "reproduce-log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"command": ["python", "reproduce.py", *argv],
           "finished": datetime.datetime.now().isoformat(timespec="seconds"), "wall_s": round(wall, 1),
           "jobs": n_parallel, "cpus": cpu_count(), "machine": platform.machine(),
           **{k: len(v) for k, v in summary.items()}}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    # SIGTERM (e.g. from a job scheduler) unwinds like Ctrl-C, so run_jobs stops the trainings it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
