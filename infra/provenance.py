"""Provenance: the repository's root and the commit a result was made with."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root (scripts run from here)


# What the runner itself writes (tables, records, logs): a modified file there says nothing about the code.
GENERATED = "results"


def git_commit(root: Path = ROOT) -> str:
    """The repository's HEAD commit, with "-dirty" if tracked files outside results/ are modified (the runner
    rewrites tables there between trainings; no training or measurement reads them). Outside git (a copy of
    the working tree on another machine): $MTL_GIT_COMMIT where the copier set it, else "unknown"."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=root)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                f":(exclude){GENERATED}"], capture_output=True, text=True, cwd=root).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("MTL_GIT_COMMIT") or "unknown"


def short_commit(commit: str) -> str:
    """12 hex digits, keeping the "-dirty" mark of a run from a modified tree."""
    return str(commit)[:12] + ("-dirty" if str(commit).endswith("-dirty") else "")


def repo_relative(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it, else as given (records name no machine)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
