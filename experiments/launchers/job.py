"""The body of one submitit job, run on the compute node: `python train.py ...` as a child, for one run or a
pack of runs (--per-gpu), and what happens when the scheduler takes the node back.

Torch-free (the job process only watches its children). Every run has an event log,
<events>/<identity>.jsonl (events: submitted, started, finished, preempted, failed, interrupted, lost,
duplicate), which the driver and `reproduce.py status` read.

Preemption: submitit calls `TrainJob.checkpoint` on its preemption signal (the profile's `signal`, sent by
SLURM before a time limit or by `scancel --signal`), and here on SIGTERM too. It forwards SIGUSR1 to the
trainings, which write a checkpoint at their next logging step and exit (train.py, infra/stop.py); then the
job requeues itself with the runs that have not finished, and they resume from their checkpoints exactly.
A real failure (train.py's one-line error: bad config, non-finite loss, missing data) is logged with its
reason and never requeued; so is a run preempted more than `max_requeues` times.

One job at a time per run: the job holds <events>/<identity>.lock (flock) while its training runs, and the
training inherits it, so a resubmitted job waits until an orphaned training of a killed job has exited.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from submitit.helpers import Checkpointable, DelayedSubmission

from infra.atomic import append_line, dumps
from infra.lock import FileLock, LockHeld
from infra.stop import PREEMPTED_STATUS

PR_SET_PDEATHSIG = 1  # linux/prctl.h
LOCK_WAIT_S = 60.0  # how long a job waits for an orphaned training of a killed job to exit
POLL_S = 0.2
GRACE_S = 90.0  # how long the trainings get to reach a checkpoint after a preemption signal (capped by the profile)


def die_with_parent():
    """A Popen `preexec_fn` (None where unsupported): the child gets SIGTERM when its parent dies, and
    exits at once if the parent is already gone. Only an async-signal-safe C call runs in the child."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(143)

    return preexec


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="milliseconds")


def log_event(events: Path, identity: str, event: str, **fields) -> None:
    """Append one event to a run's event log (one short line: O_APPEND keeps concurrent writers whole)."""
    events.mkdir(parents=True, exist_ok=True)
    append_line(events / f"{identity}.jsonl", dumps({"event": event, "time": now(), **fields}))


def read_events(events: Path, identity: str) -> list[dict]:
    """A run's events, oldest first; a line cut short by a crash is skipped."""
    path = events / f"{identity}.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "event" in row:
            out.append(row)
    return out


def job_id() -> str:
    """This job's id as the scheduler knows it ("local" outside a submitit job)."""
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID"):
        if os.environ.get(var):
            if var == "SLURM_ARRAY_JOB_ID":
                return f"{os.environ[var]}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
            return os.environ[var]
    return "local"


def global_rank() -> int:
    for var in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(var) and os.environ.get("SUBMITIT_EXECUTOR"):
            return int(os.environ[var])
    return 0


def failure_reason(log: Path, status: int) -> str:
    """train.py's own one-line error from the end of its log, else its exit status."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        tail = []
    errors = [ln.strip() for ln in tail if ln.strip().startswith(("error:", "config error:"))]
    return errors[-1] if errors else f"train.py exited with status {status}; see {log}"


class TrainJob(Checkpointable):
    """Train `runs` (dicts: identity, name, command (argv after `python`), run_dir (repository-relative)) side by
    side, one GPU of the job each in turn (CUDA_VISIBLE_DEVICES), `threads` CPU threads each."""

    def __init__(self, runs: list[dict], root: str, events: str, threads: int | None = None,
                 max_requeues: int = 20, grace_s: float = GRACE_S):
        self.runs, self.root, self.events = list(runs), root, events
        self.threads, self.max_requeues, self.grace_s = threads, max_requeues, grace_s
        self._children: dict[str, subprocess.Popen] = {}
        self._outcome: dict[str, str] = {}

    def __getstate__(self) -> dict:  # requeued: the plan, never the processes
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._children, self._outcome = {}, {}

    # ------------------------------------------------------------------ on the node

    def __call__(self) -> dict[str, str]:
        """Run every training to its end; returns {identity: finished | failed | preempted | ...}."""
        self._children, self._outcome, self._locks = {}, {}, {}
        self._master = global_rank() == 0  # DDP over several tasks: only rank 0 logs, locks and requeues
        self._starts: dict[str, float] = {}
        self._asked = False
        self._take_sigterm()
        events = Path(self.events)
        try:
            for slot, run in enumerate(self.runs):
                self._start(run, slot, events)
            while self._children:
                time.sleep(POLL_S)
                self._reap(events)
        finally:
            for proc in self._children.values():  # unwinding (requeue, error): stop what still runs
                proc.terminate()
            for proc in self._children.values():
                try:
                    proc.wait(timeout=self.grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
            for lock in self._locks.values():
                lock.release()
        return dict(self._outcome)

    def _take_sigterm(self) -> None:
        """SIGTERM (SLURM's preemption notice, or the local executor's) takes submitit's preemption path."""
        try:
            from submitit import JobEnvironment

            usr = signal.getsignal(JobEnvironment._usr_sig())
        except Exception:  # not inside a submitit job (a direct call): nothing to hand SIGTERM to
            return
        if callable(usr) and getattr(usr, "__name__", "") == "checkpoint_and_try_requeue":
            signal.signal(signal.SIGTERM, usr)

    def _claim(self, identity: str, events: Path) -> FileLock | None:
        """The run's job lock, waiting for an orphaned training of a killed job to exit; None if another
        live job holds it for longer."""
        events.mkdir(parents=True, exist_ok=True)
        lock = FileLock(events / f"{identity}.lock", f"the run {identity}")
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                return lock.acquire()
            except LockHeld:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)

    def _start(self, run: dict, slot: int, events: Path) -> None:
        identity, root = run["identity"], Path(self.root)
        run_dir = root / run["run_dir"]
        if (run_dir / "metrics.json").exists():  # finished by an earlier job: the driver records it
            self._outcome[identity] = "finished"
            return
        fds: tuple[int, ...] = ()
        if self._master:
            lock = self._claim(identity, events)
            if lock is None:
                log_event(events, identity, "duplicate", job=job_id(), pid=os.getpid())
                self._outcome[identity] = "duplicate"
                return
            if (run_dir / "metrics.json").exists():  # finished by the job that held the lock until now
                lock.release()
                self._outcome[identity] = "finished"
                return
            self._locks[identity], fds = lock, (lock.fd,)
            attempt = sum(e["event"] == "started" for e in read_events(events, identity)) + 1
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, *run["command"]]
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
        env.setdefault("WANDB_MODE", "disabled")
        gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
        if len(self.runs) > 1 and gpus:  # a pack: N trainings per GPU of the job
            env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        if self._master:
            append_line(run_dir / "train.log", f"=== {now()} launch (job {job_id()}): {shlex.join(cmd)}")
        with open(run_dir / "train.log", "a") as log:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=fds,
                                    preexec_fn=die_with_parent())
        self._children[identity], self._starts[identity] = proc, time.perf_counter()
        if self._master:
            log_event(events, identity, "started", job=job_id(), attempt=attempt, pid=os.getpid(), child=proc.pid,
                      host=socket.gethostname())

    def _reap(self, events: Path) -> None:
        """Log the trainings that ended."""
        for identity, proc in list(self._children.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self._children[identity]
            if identity in self._locks:
                self._locks.pop(identity).release()
            run = next(r for r in self.runs if r["identity"] == identity)
            run_dir = Path(self.root) / run["run_dir"]
            wall = round(time.perf_counter() - self._starts[identity], 1)
            if rc == 0 and (run_dir / "metrics.json").exists():
                outcome, fields = "finished", {"wall_s": wall}
            elif self._asked or rc == PREEMPTED_STATUS:
                outcome, fields = "preempted", {"status": rc}
            elif rc < 0 or rc >= 128 or rc == 0:  # stopped from outside (a signal), not an error of the run
                outcome, fields = "interrupted", {"status": rc}
            else:
                outcome, fields = "failed", {"status": rc, "reason": failure_reason(run_dir / "train.log", rc)}
            self._outcome[identity] = outcome
            if self._master:
                log_event(events, identity, outcome, job=job_id(), **fields)

    # ------------------------------------------------------------------ preemption (submitit's interface)

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission | None:
        """The scheduler's signal: every training checkpoints and stops; requeue the runs not finished."""
        self._asked = True
        events = Path(self.events)
        for proc in self._children.values():
            proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + self.grace_s
        while self._children and time.monotonic() < deadline:
            time.sleep(POLL_S)
            self._reap(events)
        for proc in self._children.values():  # too slow to reach a checkpoint: it keeps its last one
            proc.terminate()
        while self._children:
            time.sleep(POLL_S)
            self._reap(events)
        left = []
        for run in self.runs:
            if self._outcome.get(run["identity"], "preempted") not in ("preempted", "interrupted"):
                continue
            times = sum(e["event"] == "preempted" for e in read_events(events, run["identity"]))
            if times > self.max_requeues:
                reason = f"preempted {times} times (max_requeues={self.max_requeues}); not requeued again"
                log_event(events, run["identity"], "failed", job=job_id(), reason=reason)
                self._outcome[run["identity"]] = "failed"
                continue
            left.append(run)
        if not left:
            return None  # nothing to requeue (submitit ends the job)
        for run in left:
            log_event(events, run["identity"], "requeued", job=job_id())
        return DelayedSubmission(TrainJob(left, self.root, self.events, self.threads, self.max_requeues,
                                          self.grace_s))
