"""Every file the project writes goes through here: a temporary file beside the target, fsynced, renamed
over it, and the directory fsynced; strict JSON (NaN and infinities become null); results readable by
others (mode 0644); temporary files that an interrupted write left behind are swept away.

Torch-free, so checkpoints (engine/checkpoint.py), the run directory (engine/rundir.py), the data tools and
the result writers (experiments/, evaluate.py) share one implementation. `plain` is the one JSON normaliser.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path

MODE = 0o644  # results and checkpoints: readable by colleagues on a shared cluster
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what mkstemp(prefix=".<name>.", suffix=".tmp") makes


def fsync_directory(directory: Path) -> None:
    """Make a rename (or a new file) in `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported here (e.g. some network filesystems): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write, mode: int = MODE) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, then rename it over `path`.

    A crash (even SIGKILL) leaves either the old file or the new one, never a truncated file; an error
    while writing (e.g. a full disk) removes the temporary file and leaves the old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_text(path: Path, text: str, mode: int = MODE) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()), mode)


# A tensor with more elements than this (a tasks x n gradient state: MoCo, DB-MTL, ExcessMTL) is written as
# a summary (shape, dtype, norm), not listed: run records stay small.
PLAIN_MAX_ELEMENTS = 4096


def plain(obj):
    """`obj` as strict JSON values: every NaN or infinite float None, tensors and arrays (anything with
    `tolist`) as (nested) lists, tuples as lists, mappings and lists element by element (a key that JSON
    cannot hold by its repr), other values by repr (a method's extra state, e.g. FAMO's Adam moments).
    A tensor of more than PLAIN_MAX_ELEMENTS elements is summarised by its shape, dtype and norm."""
    if callable(getattr(obj, "numel", None)) and obj.numel() > PLAIN_MAX_ELEMENTS:
        return {"shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch."),
                "norm": plain(float(obj.detach().double().norm()))}
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if hasattr(obj, "tolist"):
        return plain(obj.tolist())
    if isinstance(obj, dict):
        return {k if k is None or isinstance(k, (str, int, float, bool)) else repr(k): plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return repr(obj)


def dumps(obj, **kwargs) -> str:
    """Strict JSON text of `obj` (NaN and infinities as null): what every JSON file of the project holds."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj) -> None:
    """Write `obj` as indented strict JSON with sorted keys, atomically."""
    write_text(path, dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: Path, text: str) -> None:
    """Append one line to a log (metrics.jsonl, train.log, ...) and fsync it. A crash can cut only this
    line short; readers skip a last line that does not parse."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, MODE)
    try:
        os.write(fd, (text.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_temp_files(directory: Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in `directory` (not recursive);
    only those older than `older_than_s` seconds, where another process may be writing there now.
    Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed, now = [], time.time()
    for p in directory.iterdir():
        if not _TEMP.match(p.name) or not p.is_file():
            continue
        try:
            if now - p.stat().st_mtime >= older_than_s:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:  # another process swept it first
            continue
    return removed
