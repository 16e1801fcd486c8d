"""Exclusive locks on files (fcntl.flock): one training per run directory, one runner per shard.

The lock belongs to an open file descriptor, so the kernel releases it when the process ends however
it ends (even SIGKILL): a stale lock file never blocks anyone. The file holds who took the lock (pid,
host, start time, command) so that a second process can name the holder in its error.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


def holder_info(command: list[str] | None = None) -> dict:
    """What a lock file says about its holder."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": list(command) if command is not None else ["python", *sys.argv]}


def describe(info: dict) -> str:
    """'pid 123 on host h since 2026-01-01T12:00:00: python train.py ...' (from a lock file's contents)."""
    if not info:
        return "another process"
    command = " ".join(str(c) for c in info.get("command", []))
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('since', '?')}" \
           + (f": {command}" if command else "")


def read_holder(path: Path) -> dict:
    """The holder recorded in a lock file ({} if unreadable)."""
    try:
        info = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class FileLock:
    """An exclusive, non-blocking flock on `path` (created if missing), held until `release()` or exit.

    `acquire()` raises LockHeld naming the holder when another process has it.
    """

    def __init__(self, path: Path, what: str, command: list[str] | None = None):
        self.path, self.what, self.command, self.fd = Path(path), what, command, None

    def acquire(self) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"{self.what} is in use by {describe(read_holder(self.path))} "
                           f"(lock file {self.path}); wait for it to finish or stop it") from None
        # Ours now: record who we are (the lock, not the contents, is what excludes others).
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info(self.command)).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on `path` right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    return False
