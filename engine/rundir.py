"""The run directory: config.yaml, the metrics.jsonl log, the experiment check on resume, provenance.

A run directory holds config.yaml (the resolved config), checkpoint.pt, metrics.jsonl (one JSON
object per logging step) and, once finished, metrics.json (final metrics and provenance).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import yaml

from engine.config import Config, ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parents[1]


def check_same_experiment(cfg: Config, saved: dict, run_dir: Path) -> None:
    """Refuse to resume or reuse a run directory that holds a different experiment."""
    old = config_from_dict(saved)
    if old.identity() != cfg.identity():
        raise ConfigError(f"{run_dir} holds a run with a different config (differs in "
                          f"{', '.join(cfg.differences(old))}); choose another run_dir or delete that one")


def write_config(run_dir: Path, cfg: Config) -> None:
    """config.yaml: the resolved config, loadable with --config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


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


class JsonlLog:
    """Appends one JSON object per logging step to metrics.jsonl (rank 0), and to wandb if enabled."""

    def __init__(self, path: Path, enabled: bool, wandb_mode: str, cfg: Config, resume_step: int = 0):
        self.path, self.enabled, self.wandb = path, enabled, None
        if enabled and path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [ln for ln in path.read_text().splitlines(keepends=True) if _logged_step(ln) <= resume_step]
            path.write_text("".join(kept))
        if enabled and wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(mode=wandb_mode, dir=str(path.parent), name=cfg.name, config=cfg.to_dict(),
                                    resume="allow", id=f"{cfg.name}-{cfg.identity()}")

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
