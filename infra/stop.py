"""Stopping from outside: Ctrl-C (SIGINT) and SIGTERM unwind like exceptions and end with honest exit statuses.

Inside `stop_signals()`, SIGTERM raises `Terminated`; Ctrl-C raises KeyboardInterrupt as usual. Both
unwind through the `finally` blocks (the log is closed, the run directory's lock released, a half-written
checkpoint's temporary file removed), and the entry point turns them into a message and exit status
130 (SIGINT) or 143 (SIGTERM), the shell's convention, so `train.py && evaluate.py` or a scheduler never
mistakes an interrupted run for a finished one.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGINT_STATUS, SIGTERM_STATUS = 128 + signal.SIGINT, 128 + signal.SIGTERM  # 130, 143


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so `except Exception` does not swallow it)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_signals():
    """SIGTERM raises Terminated inside (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status(interruption: BaseException) -> int:
    """130 for Ctrl-C (KeyboardInterrupt), 143 for SIGTERM (Terminated)."""
    return SIGTERM_STATUS if isinstance(interruption, Terminated) else SIGINT_STATUS


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold Ctrl-C and SIGTERM back inside (e.g. while a checkpoint is written: torch.save turns an
    exception raised in its write into an "unexpected pos" RuntimeError) and deliver the first one
    after the block, to the handler that was in place. Main thread only; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if received:
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(received[0])
