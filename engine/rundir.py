"""The run directory: its lock, config.yaml, the metrics.jsonl log, the experiment check on resume, provenance.

A run directory holds config.yaml (the resolved config), checkpoint.pt, metrics.jsonl (one JSON
object per logging step), .lock (held by the training that uses it) and, once finished, metrics.json
(final metrics and provenance).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import yaml

from engine.atomic import append_line, dumps, sweep_temp_files, write_text
from engine.config import Config, ConfigError, config_from_dict
from engine.lock import FileLock

LOCK_NAME = ".lock"

ROOT = Path(__file__).resolve().parents[1]


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
    """Hold the run directory's exclusive lock inside (engine.lock.LockHeld, naming the holder, if another
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


def repo_relative(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it, else as given (records name no machine)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def git_commit() -> str:
    """The repository's HEAD commit, with "-dirty" if tracked files are modified; "unknown" outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plain(value):
    """A method's state_dict as JSON values: tensors as (nested) lists, mappings and sequences element by
    element (extra state such as FAMO's Adam moments included), other values as they are or by repr."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _logged_step(line: str) -> float:
    """Step of a metrics.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def truncate_log(path: Path, step: int) -> None:
    """Keep only the lines of metrics.jsonl logged at or before `step` (the checkpoint a run resumes from).
    The kept lines go to a new file that replaces the old one atomically: an error on the way (a full
    disk) leaves the old log whole, never an empty or half-written one."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln if ln.endswith("\n") else ln + "\n" for ln in lines if _logged_step(ln) <= step]
    if kept != lines:
        write_text(path, "".join(kept))


class JsonlLog:
    """Appends one strict-JSON object per logging step to metrics.jsonl (rank 0), and to wandb if enabled."""

    def __init__(self, path: Path, enabled: bool, wandb_mode: str, cfg: Config, resume_step: int = 0):
        self.path, self.enabled, self.wandb = path, enabled, None
        if enabled:  # drop lines logged after the checkpoint we resume from
            truncate_log(path, resume_step)
        if enabled and wandb_mode != "disabled":
            import wandb

            run_dir = path.parent
            self.wandb = wandb.init(mode=wandb_mode, dir=str(run_dir), name=f"{cfg.name}/{run_dir.name}",
                                    config=cfg.to_dict(), resume="allow", id=wandb_run_id(cfg, run_dir))

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        append_line(self.path, dumps({"step": step, **row}))
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
