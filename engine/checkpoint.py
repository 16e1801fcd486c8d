"""Checkpoint files: atomic writes, RNG state capture, and loading with clear errors.

A checkpoint is one dict (see train.py) loadable with `torch.load(..., weights_only=True)`: only
tensors, numbers, strings, lists, tuples and dicts, so no pickled code is ever executed on load.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from infra.atomic import atomic_write_bytes
from infra.stop import deferred_signals


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written; the message names the file and the cause."""


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` atomically; on any error (a full disk: torch says "unexpected pos") the
    previous checkpoint stays as it was and a CheckpointError names the file. Ctrl-C or SIGTERM during the
    write is delivered once the new checkpoint is in place."""
    try:
        with deferred_signals():
            atomic_write_bytes(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot write checkpoint {path} ({type(e).__name__}: {e}); "
                              "the previous checkpoint, if any, is kept") from e


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint on the CPU with weights_only=True; errors (FileNotFoundError, CheckpointError)
    name the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    missing = [k for k in ("config", "model", "step") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing keys {missing})")
    return ckpt


def nonfinite_tensors(state: dict, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors in a (nested) state dict holding NaN or infinity."""
    bad = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            bad += nonfinite_tensors(value, f"{name}.")
    return bad


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states, in weights_only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
