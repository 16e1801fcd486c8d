"""Where presets, manifests, runs and results live, and how paths are written into results."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from infra.provenance import ROOT

TRAIN_SCRIPT = ROOT / "train.py"
PAPER_JSON = ROOT / "results" / "paper" / "kendall2018.json"


@dataclass(frozen=True)
class Paths:
    """Presets (configs/<preset>.yaml), manifests (configs/experiments/), run directories and results."""

    configs: Path = ROOT / "configs"
    runs: Path = ROOT / "runs"
    results: Path = ROOT / "results"

    @property
    def manifests(self) -> Path:
        return self.configs / "experiments"

    def records(self, preset: str) -> Path:
        """results/<preset>/runs: one JSON record per finished run (committed)."""
        return self.results / preset / "runs"


def rel(path: Path) -> str:
    """`path` relative to the repository root when inside it (commands read the same everywhere). A path through
    a link inside the repository (datasets/x -> /data/x) stays that path: it is read before links are resolved."""
    for candidate in (Path(os.path.abspath(path)), Path(path).resolve()):
        try:
            return candidate.relative_to(ROOT).as_posix()
        except ValueError:
            continue
    return str(Path(path).resolve())


def link(path: Path) -> str:
    """A Markdown link target: repository-root relative ("/results/..."), which GitHub resolves the same
    from README.md and from the generated file beside the image."""
    r = rel(path)
    return r if r.startswith("/") else "/" + r
