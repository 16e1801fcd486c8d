"""The run directory (`RunDir`): its lock, config.yaml, the metrics.jsonl log, the checks before a resume,
checkpoints with RNG state, the finite and replica checks, and the final metrics.json.

A run directory holds config.yaml (the resolved config), checkpoint.pt, metrics.jsonl (one JSON
object per logging step), .lock (held by the training that uses it) and, once finished, metrics.json
(final metrics and provenance); metrics.csv copies metrics.jsonl for spreadsheets (engine.scalarlogs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch.distributed as dist
import yaml

from data.synthetic.profile import read_marker
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    nonfinite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from engine.config import IDENTITY_SCHEMA, Config, ConfigError, config_from_dict
from engine.distributed import check_replicas
from engine.scalarlogs import ScalarLogs
from engine.step import NonFiniteLossError, StepParts
from infra.atomic import append_line, dumps, plain, sweep_temp_files, write_json, write_text
from infra.lock import FileLock, LockHeld
from infra.provenance import git_commit, repo_relative
from tasks import METRICS

LOCK_NAME = ".lock"


def check_same_experiment(cfg: Config, saved: dict, run_dir: Path) -> None:
    """Refuse to resume or reuse a run directory that holds a different experiment."""
    old = config_from_dict(saved)
    if old.identity() != cfg.identity():
        raise ConfigError(f"{run_dir} holds a run with a different config (differs in "
                          f"{', '.join(cfg.differences(old))}); choose another run_dir or delete that one")


def write_config(run_dir: Path, cfg: Config) -> None:
    """config.yaml: the resolved config, loadable with --config."""
    write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


@contextlib.contextmanager
def locked_run_dir(run_dir: Path, command: list[str] | None = None, enabled: bool = True):
    """Hold the run directory's exclusive lock inside (infra.lock.LockHeld, naming the holder, if another
    process has it); sweep the temporary files that interrupted writes left there. A directory created
    here that is left holding nothing but its lock (the run failed before writing anything) is removed
    again, so a failed start leaves no orphan run directory. `enabled=False` (DDP ranks > 0) does nothing."""
    if not enabled:
        yield
        return
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_NAME, f"run directory {run_dir}", command)
    try:
        lock.acquire()
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        sweep_temp_files(run_dir)
        yield
    finally:
        empty = created and {p.name for p in run_dir.iterdir()} <= {LOCK_NAME}
        if empty:
            (run_dir / LOCK_NAME).unlink(missing_ok=True)
        lock.release()
        if empty:
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def read_final(path: Path) -> dict:
    """A finished run's metrics.json; a corrupt one is an error naming it (not a traceback)."""
    try:
        final = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} ({e}); move it away to re-evaluate the run's checkpoint") from e
    if not isinstance(final, dict) or not isinstance(final.get("config"), dict):
        raise ConfigError(f"{path} is not a finished run's metrics.json (no config); move it away to "
                          "re-evaluate the run's checkpoint")
    return final


def wandb_run_id(cfg: Config, run_dir: Path) -> str:
    """wandb's run id: the experiment's name and identity plus a hash of the run directory's absolute path,
    so the same config trained in two run directories gives two wandb runs, and a resume continues its own."""
    where = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
    return f"{cfg.name}-{cfg.identity()}-{where}"


WANDB_MODES = {"disabled": "disabled", "offline": "offline", "online": "online", "dryrun": "offline", "run": "online"}


def wandb_mode_of(configured: str) -> str:
    """The wandb mode to use: $WANDB_MODE when set (wandb's own variable, so a cluster's setting wins), else
    the config's `wandb`."""
    env = os.environ.get("WANDB_MODE")
    if not env:
        return configured
    if env not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={env!r} in the environment; expected one of {', '.join(WANDB_MODES)}")
    return WANDB_MODES[env]


def _logged_step(line: str) -> float:
    """Step of a metrics.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def truncate_log(path: Path, step: int, drop=lambda row: False) -> None:
    """Keep only the lines of metrics.jsonl logged at or before `step` (the checkpoint a run resumes from),
    and of those not the ones `drop(row)` picks. The kept lines go to a new file that replaces the old one
    atomically: an error on the way (a full disk) leaves the old log whole, never an empty or half-written
    one. A damaged line other than the last (which a crash may cut short) is an error naming it."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    for i, line in enumerate(lines[:-1], 1):
        if line.strip() and _logged_step(line) == math.inf:
            raise ConfigError(f"{path}:{i} is damaged (not a JSON object with a step) and is not the last line; "
                              "repair or delete that line, then run again")
    kept = [ln if ln.endswith("\n") else ln + "\n" for ln in lines
            if _logged_step(ln) <= step and not drop(json.loads(ln))]
    if kept != lines:
        write_text(path, "".join(kept))


class JsonlLog:
    """Appends one strict-JSON object per logging step to metrics.jsonl (rank 0), the same numbers to metrics.csv
    (and TensorBoard when installed; engine.scalarlogs), and to wandb if enabled."""

    def __init__(self, path: Path, enabled: bool, wandb_mode: str, cfg: Config, resume_step: int = 0):
        self.path, self.enabled, self.wandb = path, enabled, None
        if enabled:  # drop lines logged after the checkpoint we resume from
            truncate_log(path, resume_step)
        self.scalars = ScalarLogs(path, enabled, resume_step)  # metrics.csv (+ TensorBoard if installed)
        wandb_mode = wandb_mode_of(wandb_mode)
        if enabled and wandb_mode != "disabled":
            if wandb_mode == "offline":  # no network at all: wandb's error reports (Sentry) go out even offline
                os.environ["WANDB_ERROR_REPORTING"] = "false"
            import wandb

            run_dir = path.parent
            self.wandb = wandb.init(mode=wandb_mode, dir=str(run_dir), name=f"{cfg.name}/{run_dir.name}",
                                    config=cfg.to_dict(), resume="allow", id=wandb_run_id(cfg, run_dir))

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        append_line(self.path, dumps({"step": step, **row}))
        self.scalars.write(step, row)
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def write_final(self, step: int, row: dict) -> None:
        """The final validation line: replaces one an earlier attempt logged at the same step (its metrics.json
        write failed, then the run was started again), so validation is never logged twice."""
        if self.enabled:
            truncate_log(self.path, step, drop=lambda r: r.get("step") == step and any(k in r for k in row))
        self.write(step, row)

    def close(self) -> None:
        self.scalars.close()
        if self.wandb is not None:
            self.wandb.finish()


class RunDir:
    """One training's run directory, held for the length of a `with` block: its lock, config.yaml, the
    metrics.jsonl log, the checks before a resume, checkpoints with every process's RNG state (after the finite
    and replica checks) and, at the end, metrics.json.

        with RunDir(cfg, command, rank, world) as run:
            if (final := run.finished()) is not None: return final
            ckpt = run.resume(root)            # None: a fresh start
            ...build the parts...
            run.start(parts, ckpt)             # load the checkpoint's state and RNG, or write config.yaml
            ... run.log.write(step, row) ... run.checkpoint(step) ...
            run.finish(step, metrics, val_metrics)

    Rank 0 takes the lock and writes every file; under DDP every process learns whether the lock was taken
    (one broadcast) and takes part in the checks' collectives."""

    def __init__(self, cfg: Config, command: list[str] | None = None, rank: int = 0, world: int = 1):
        self.cfg, self.command, self.rank, self.world = cfg, command, rank, world
        self.master = rank == 0
        self.path = cfg.resolved_run_dir
        self.checkpoint_path, self.final_path = self.path / "checkpoint.pt", self.path / "metrics.json"
        self.root: Path | None = None  # the dataset root the run trains on (set by `resume`)
        self.parts = None
        self.log: JsonlLog | None = None
        self.replicas = {"processes": world, "identical": None}  # the last checkpoint's replica check
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunDir:
        held = None  # rank 0 takes the lock; every process learns whether it got it
        try:
            self._stack.enter_context(locked_run_dir(self.path, self.command, enabled=self.master))
        except LockHeld as e:
            held = str(e)
        if self.world > 1:
            box = [held]
            dist.broadcast_object_list(box, src=0)
            held = box[0]
        if held:
            raise LockHeld(held)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def finished(self) -> dict | None:
        """A finished run's metrics.json (checked to hold this experiment), or None while it is not finished."""
        if not self.final_path.exists():
            return None
        final = read_final(self.final_path)
        check_same_experiment(self.cfg, final["config"], self.path)
        if self.master:
            print(f"{self.path}: already finished ({self.final_path}); not retraining")
        return final

    def resume(self, root: Path) -> dict | None:
        """The checkpoint to resume from, checked (same experiment, finite weights, same data root `root`), or
        None when there is none. The run trains on `root` from here on."""
        self.root = root
        if not self.checkpoint_path.exists():
            return None
        ckpt = load_checkpoint(self.checkpoint_path)
        check_same_experiment(self.cfg, ckpt["config"], self.path)
        bad = nonfinite_tensors({k: v for k, v in ckpt.items() if k in ("model", "method") and isinstance(v, dict)})
        if bad:
            raise CheckpointError(f"{self.checkpoint_path} holds non-finite values ({', '.join(bad[:3])}"
                                  f"{' ...' if len(bad) > 3 else ''}); not resumed: move it away to start again")
        trained_on = ckpt.get("data_root")
        if trained_on is not None and trained_on != str(root):  # data.root is not part of the identity
            raise ConfigError(f"{self.path} was trained on {trained_on} but this run reads {root}; resume with "
                              f"data.root={trained_on}, or choose another run_dir")
        return ckpt

    def start(self, parts: StepParts, ckpt: dict | None) -> int:
        """Start training `parts`: from `ckpt` (its state and this process's RNG) or afresh (config.yaml
        written); open the log. Returns the step training starts from."""
        self.parts, step = parts, 0 if ckpt is None else ckpt["step"]
        # Training time of the whole run: a resume adds to what its checkpoint had spent (None: a checkpoint
        # written before the time was kept; the record then says its wall time covers only the last invocation).
        self._wall_before = 0.0 if ckpt is None else ckpt.get("wall_time_s")
        if ckpt is not None:
            parts.load_state_dict(ckpt)
            set_rng_state(ckpt["rng"][self.rank] if self.rank < len(ckpt["rng"]) else ckpt["rng"][0])
            if self.master:
                print(f"resuming {self.path} from step {step}")
        elif self.master:
            write_config(self.path, self.cfg)
        self._started = time.perf_counter()
        self.log = JsonlLog(self.path / "metrics.jsonl", enabled=self.master, wandb_mode=self.cfg.wandb,
                            cfg=self.cfg, resume_step=step)
        return step

    def _wall_time(self) -> float | None:
        spent = time.perf_counter() - self._started
        return None if self._wall_before is None else self._wall_before + spent

    def checkpoint(self, step: int) -> dict:
        """Check that every process holds the same, finite weights, then save (rank 0) with every process's
        RNG. Non-finite weights (e.g. a too large lr) are never saved: the last good checkpoint stays."""
        parts = self.parts
        bad = nonfinite_tensors({"model": parts.model.state_dict(), "method": parts.method.state_dict()})
        if self.world > 1:  # BatchNorm statistics may differ per process: every process must agree to stop
            everyone: list = [None] * self.world
            dist.all_gather_object(everyone, bad)
            bad = sorted({name for names in everyone for name in names})
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise NonFiniteLossError(f"non-finite weights at step {step} ({', '.join(bad[:3])}{more})")
        self.replicas = check_replicas(parts.model, parts.method, step)
        states = [rng_state()]
        if self.world > 1:  # each process resumes its own RNG stream
            states = [None] * self.world
            dist.all_gather_object(states, rng_state())
        if self.master:
            save_checkpoint(self.checkpoint_path, {"config": self.cfg.to_dict(), **parts.state_dict(), "rng": states,
                                                   "step": step, "data_root": str(self.root),
                                                   "wall_time_s": self._wall_time()})
        return self.replicas

    def finish(self, step: int, metrics: dict, val_metrics: dict) -> None:
        """Log the final validation, write metrics.json (atomically: the final metrics and the provenance) and
        print where it is, then close the log."""
        cfg, root = self.cfg, self.root
        if self.master:
            self.log.write_final(step, {f"val/{k}": v for k, v in val_metrics.items()})
            elapsed = time.perf_counter() - self._started
            commit = git_commit()
            final = {
                "step": step, "iterations": cfg.optim.iterations, "metrics": metrics, "config": cfg.to_dict(),
                "identity": cfg.identity(), "identity_schema": IDENTITY_SCHEMA,
                "command": self.command or sys.argv, "git_commit": commit, "replicas": self.replicas,
                "data_root": str(root),
                "wall_time_s": elapsed if self._wall_before is None else self._wall_before + elapsed,
                "method_state": plain(dict(self.parts.method.state_dict()))}
            if cfg.data.test_split:  # the protocol's provenance (docs/comparisons.md); older runs' keys unchanged
                dtype = self.parts.autocast_dtype
                final |= {"score_split": cfg.data.test_split, "selection_split": cfg.data.val_split,
                          "val_metrics": val_metrics, "data_root": repo_relative(root),
                          "data_profile": (read_marker(root) or {}).get("profile"),
                          "precision": "float32" if dtype is None else str(dtype).removeprefix("torch."),
                          "dirty": commit.endswith("-dirty"), "wall_time_complete": self._wall_before is not None}
            write_json(self.final_path, final)
            print(final_report(self.path, step, metrics), flush=True)
        self.log.close()


def final_report(run_dir: Path, step: int, metrics: dict) -> str:
    """What a finished training prints: where its results are and the headline metrics."""
    lines = [f"finished {run_dir} at step {step}: metrics in {run_dir / 'metrics.json'}"]
    lines += [f"  {m.title:<34} {metrics[key]:.{m.digits}f}" for key, m in METRICS.items() if key in metrics]
    return "\n".join(lines)
