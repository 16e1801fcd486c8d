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


# Preemption (a scheduler about to take the machine back): SIGUSR1 or SIGUSR2 asks the training to write a
# checkpoint at its next logging step and exit with PREEMPTED_STATUS; the launcher then requeues it and the
# run resumes from that checkpoint exactly (experiments/launchers/).
PREEMPT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
PREEMPTED_STATUS = 128 + signal.SIGUSR1  # 138
_preempt = threading.Event()


class Preempted(BaseException):
    """The training stopped at a checkpoint because a preemption signal asked it to."""


def preemption_requested() -> bool:
    """Whether a preemption signal arrived in this process."""
    return _preempt.is_set()


@contextlib.contextmanager
def preempt_signals():
    """SIGUSR1 / SIGUSR2 set the preemption flag inside (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: _preempt.set()) for s in PREEMPT_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
