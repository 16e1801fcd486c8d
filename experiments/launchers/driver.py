"""The submitit launcher's driver: plan as the local launcher does, submit what is missing as jobs (SLURM job
arrays, or submitit's local executor), watch them, record each run once it finishes, resubmit jobs that died
without a word; and `status`, read from the jobs and the records.

The driver holds no state of its own: the run directories, the records and the runs' event logs
(<folder>/runs/<identity>.jsonl, see job.py) say everything, so it can be stopped (Ctrl-C, SIGKILL, a logout)
and started again with the same command: the jobs keep running, finished runs are recorded, and only runs
with neither a record nor a live job are submitted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from experiments.launchers.job import TrainJob, log_event, read_events
from experiments.launchers.profile import Profile
from experiments.layout import ROOT, TRAIN_SCRIPT, Paths, rel
from experiments.manifest import Manifest
from experiments.plan import Job, plan
from experiments.records import load_records, record_from_run, write_record
from experiments.runner import STALE_TEMP_S, _abs, _triage
from infra.atomic import sweep_temp_files

ALIVE_SLURM = {"PENDING", "RUNNING", "REQUEUED", "PREEMPTED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
               "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "UNKNOWN"}


def job_folder(paths: Paths, preset: str, profile: Profile) -> Path:
    """submitit's job files and logs (pickles, stdout/stderr per job): the profile's folder, else
    runs/<preset>/submitit."""
    return Path(profile.folder).resolve() if profile.folder else paths.runs / preset / "submitit"


def events_dir(paths: Paths, preset: str, profile: Profile) -> Path:
    return job_folder(paths, preset, profile) / "runs"


def pack_size(profile: Profile, per_gpu: int | None) -> int:
    """Runs per job: --per-gpu N puts N trainings on each GPU of a job (N x gpus_per_node), else one."""
    if per_gpu is None:
        return 1
    if per_gpu < 1:
        raise ValueError(f"--per-gpu must be at least 1, got {per_gpu}")
    if profile.gpus_per_node < 1:
        raise ValueError(f"--per-gpu {per_gpu} packs trainings onto each GPU of a job, and launcher profile "
                         f"{profile.name} asks for gpus_per_node={profile.gpus_per_node}")
    if profile.processes > 1:
        raise ValueError(f"--per-gpu packs single-process trainings; launcher profile {profile.name} runs one DDP "
                         f"training over {profile.processes} processes per job")
    return per_gpu * profile.gpus_per_node


def slurm_parameters(profile: Profile, preset: str) -> dict:
    """SlurmExecutor parameters (sbatch options) of a profile."""
    params = {"job_name": f"mtl-{preset}", "time": profile.time_min, "nodes": profile.nodes,
              "ntasks_per_node": profile.tasks_per_node, "signal_delay_s": profile.signal_delay_s,
              "array_parallelism": profile.array_parallelism,
              "setup": [f"export SUBMITIT_PREEMPT_SIGNAL={profile.signal}", *profile.setup],
              "additional_parameters": {"chdir": str(ROOT)}}
    optional = {"partition": profile.partition, "gpus_per_node": profile.gpus_per_node or None,
                "cpus_per_task": profile.cpus_per_task, "account": profile.account, "qos": profile.qos,
                "mem": f"{profile.mem_gb:g}GB" if profile.mem_gb else None}
    return params | {k: v for k, v in optional.items() if v is not None}


def make_executor(profile: Profile, folder: Path, preset: str):
    """A submitit executor for the profile (the preemption signal exported to the jobs)."""
    import submitit

    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = profile.signal  # the job processes read it at import
    submitit.JobEnvironment.USR_SIG = profile.signal  # and sbatch's --signal line, written here
    if profile.executor == "slurm":
        executor = submitit.SlurmExecutor(folder / "%j", max_num_timeout=profile.max_timeouts)
        executor.update_parameters(**slurm_parameters(profile, preset))
    elif profile.executor == "local":
        executor = submitit.LocalExecutor(folder / "%j", max_num_timeout=profile.max_timeouts)
        executor.update_parameters(timeout_min=profile.time_min, gpus_per_node=profile.gpus_per_node,
                                   tasks_per_node=profile.tasks_per_node, signal_delay_s=profile.signal_delay_s,
                                   setup=profile.setup or ())
    else:
        executor = submitit.DebugExecutor(folder / "%j")
    return executor


def run_spec(job: Job, train_script: Path) -> dict:
    """What the job body needs of a planned job: the same train.py command the local launcher runs."""
    cmd = job.command(python="python", train_script=train_script)
    return {"identity": job.run.identity, "name": job.run.name, "command": cmd[1:],
            "run_dir": rel(_abs(job.run.run_dir))}


# ----------------------------------------------------------------------------- the jobs' states


@dataclass
class Tracked:
    """A submitted job of this driver (or of an earlier one, found in the event logs)."""

    job_id: str
    identities: list[str]
    executor: str  # slurm | local | debug: where to ask whether it still runs
    handle: object = None  # the submitit Job when submitted by this driver


def submitted(event: dict, identities: list[str] | None = None) -> Tracked:
    """The job of a `submitted` event."""
    return Tracked(str(event["job"]), identities or [], event.get("executor", "slurm"))


def _pid_alive(job_id: str) -> bool:
    """A local executor's job: its controller process (the job id is its pid) still runs."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


class Jobs:
    """Liveness of submitted jobs, asked of the scheduler (sacct) or of the local processes."""

    def __init__(self, profile: Profile, folder: Path):
        self.profile, self.folder = profile, folder
        self._slurm_states: dict[str, str] = {}

    def refresh(self, tracked: list[Tracked]) -> None:
        """One sacct call for every SLURM job; nothing to do for local ones."""
        job_ids = sorted({t.job_id for t in tracked if t.executor == "slurm"})
        if not job_ids:
            return
        import submitit

        for jid in job_ids:
            submitit.SlurmJob(self.folder / "%j", jid)  # registers the id with the shared watcher
        watcher = submitit.SlurmJob.watcher
        watcher.update()
        self._slurm_states = {jid: watcher.get_state(jid, mode="cache") for jid in job_ids}

    def state(self, tracked: Tracked) -> str:
        """PENDING | RUNNING | ENDED."""
        if tracked.executor == "slurm":
            state = self._slurm_states.get(tracked.job_id, "UNKNOWN").split()[0]
            return state if state in ("PENDING", "RUNNING") else "RUNNING" if state in ALIVE_SLURM else "ENDED"
        if tracked.executor == "debug":
            return "ENDED"  # a debug job runs inside the driver, at submission
        process = getattr(tracked.handle, "_process", None)
        if process is not None:
            return "RUNNING" if process.poll() is None else "ENDED"
        return "RUNNING" if _pid_alive(tracked.job_id) else "ENDED"


def last_submission(events: list[dict]) -> tuple[dict | None, list[dict]]:
    """(the last `submitted` event, the events after it)."""
    for i in range(len(events) - 1, -1, -1):
        if events[i]["event"] == "submitted":
            return events[i], events[i + 1:]
    return None, events


def run_state(events: list[dict], job_state: str | None) -> tuple[str, str]:
    """(queued | running | failed | lost | new, detail) of a run without a record, from its events and its
    last job's state (None: never submitted)."""
    sub, after = last_submission(events)
    failed = [e for e in after if e["event"] == "failed"]
    if failed:
        return "failed", failed[-1].get("reason", "")
    if sub is None:
        return "new", ""
    if job_state in ("PENDING", "RUNNING"):
        started = any(e["event"] == "started" for e in after)
        kind = "running" if job_state == "RUNNING" and started else "queued"
        requeues = sum(e["event"] == "requeued" for e in events)
        return kind, f"job {sub['job']}" + (f", requeued {requeues}x" if requeues else "")
    return "lost", f"job {sub['job']} ended without finishing"


# ----------------------------------------------------------------------------- launching


def launch(preset: str, manifests: list[Manifest], profile: Profile, seeds: tuple[int, ...] | None = None,
           paths: Paths = Paths(), data_root: str | None = None, per_gpu: int | None = None,
           threads: int | None = None, wait: bool = True, retry_failed: bool = False,
           train_script: Path = TRAIN_SCRIPT) -> dict[str, list]:
    """Submit every planned run without a record or a live job; with `wait`, watch until each has finished
    (recorded) or failed. Returns reproduce()'s summary plus "in_flight" (runs still queued or running)."""
    started = time.time()
    size = pack_size(profile, per_gpu)
    folder = job_folder(paths, preset, profile)
    events = events_dir(paths, preset, profile)
    for directory in (paths.records(preset), paths.results / preset):
        sweep_temp_files(directory, older_than_s=STALE_TEMP_S)
    summary: dict[str, list] = {"skipped": [], "exported": [], "trained": [], "failed": [], "pending": [],
                                "in_flight": []}
    executor = None
    jobs = Jobs(profile, folder)
    seen: set[str] = set()
    with contextlib.chdir(ROOT):  # the job processes start here (train.py's command is repository-relative)
        while True:
            pending: list[str] = []
            records = load_records(paths, preset)
            planned = plan(preset, manifests, seeds, paths, data_root, records, pending)
            planned = [j for j in planned if j.run.identity not in seen]
            seen |= {j.run.identity for j in planned}
            _note_finishes_of_ended_jobs(planned, records, events, jobs)  # before _triage records them
            todo = _triage(planned, records, preset, paths, summary, False, train_script, (1, 1))
            summary["pending"] = pending
            for reason in pending:
                print(f"pending  {reason}", flush=True)
            by_id = {j.run.identity: j for j in todo}
            tracked, to_submit = _classify(todo, events, jobs, profile, retry_failed, summary)
            if to_submit and executor is None:
                executor = make_executor(profile, folder, preset)
            backlog = [to_submit[i:i + size] for i in range(0, len(to_submit), size)]
            trained_before = len(summary["trained"])
            if not wait:
                while backlog:
                    tracked += _submit(executor, backlog, profile, events, train_script, threads, size,
                                       limit=len(backlog))
                summary["in_flight"] = [by_id[i] for t in tracked for i in t.identities]
                print(f"{preset}: {len(summary['in_flight'])} runs queued or running; `reproduce.py status` shows "
                      f"them, and the same command records them once they finish", flush=True)
                return summary
            _watch(tracked, backlog, by_id, executor, jobs, profile, events, paths, preset, train_script, threads,
                   size, summary)
            if not pending or len(summary["trained"]) == trained_before:
                sweep_superseded_temp_files(paths.records(preset), started)
                return summary


def _note_finishes_of_ended_jobs(planned: list[Job], records: dict, events: Path, jobs: Jobs) -> None:
    """Runs finished but not recorded (a driver stopped before recording them): where the job that trained
    one has ended without logging its `finished` event, log it (a live job logs its own)."""
    done = [j.run.identity for j in planned
            if j.run.identity not in records and (_abs(j.run.run_dir) / "metrics.json").exists()]
    subs = {i: last_submission(read_events(events, i))[0] for i in done}
    jobs.refresh([submitted(s) for s in subs.values() if s])
    for identity, sub in subs.items():
        if sub is not None and jobs.state(submitted(sub)) == "ENDED":
            _note_finish(events, identity)


def sweep_superseded_temp_files(directory: Path, before: float) -> list[Path]:
    """Remove the temporary files of record writes that a killed driver (or runner) left, once their record has
    been written whole since: those made before this driver started (`before`) whose record now exists. Called
    as the driver returns: a write begun before its start is long over (a record takes milliseconds to write),
    so such a file is debris. (The start-up sweep leaves temporary files for an hour: another shard's runner
    may be writing there.)"""
    removed = []
    for p in sorted(directory.glob(".*.tmp")) if directory.is_dir() else []:
        target = directory / p.name[1:].rsplit(".", 2)[0]  # .<identity>.json.<8 chars>.tmp
        try:
            if target.suffix == ".json" and target.is_file() and p.stat().st_mtime < before:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            continue
    return removed


def _classify(todo: list[Job], events: Path, jobs: Jobs, profile: Profile, retry_failed: bool,
              summary: dict) -> tuple[list[Tracked], list[Job]]:
    """Runs with a live job are watched; failed ones reported (resubmitted with retry_failed); lost ones
    resubmitted up to max_lost times; new ones submitted."""
    history = {j.run.identity: read_events(events, j.run.identity) for j in todo}
    subs = {i: last_submission(h)[0] for i, h in history.items()}
    jobs.refresh([submitted(s) for s in subs.values() if s])
    tracked: dict[str, Tracked] = {}
    to_submit = []
    for job in todo:
        identity = job.run.identity
        sub = subs[identity]
        live = jobs.state(submitted(sub)) if sub else None
        state, detail = run_state(history[identity], live)
        if state in ("queued", "running"):
            tracked.setdefault(sub["job"], submitted(sub, [])).identities.append(identity)
        elif state == "failed" and not retry_failed:
            summary["failed"].append((job, detail))
            print(f"FAILED {job.run.name}: {detail} (--retry-failed submits it again)", flush=True)
        elif state == "lost" and not _note_lost(job, events, profile, summary, sub):
            continue
        else:
            to_submit.append(job)
    return list(tracked.values()), to_submit


def _note_lost(job: Job, events: Path, profile: Profile, summary: dict, sub: dict | None) -> bool:
    """Log a job that died without finishing its run; False (recorded as failed) past max_lost."""
    identity = job.run.identity
    history = read_events(events, identity)
    if any(e["event"] == "lost" for e in last_submission(history)[1]):
        return True  # logged by an earlier driver that stopped before resubmitting it
    lost = sum(e["event"] == "lost" for e in history)
    if lost >= profile.max_lost:
        reason = f"its jobs died without finishing {lost + 1} times (max_lost={profile.max_lost}); see train.log"
        log_event(events, identity, "failed", job=sub["job"] if sub else None, reason=reason)
        summary["failed"].append((job, reason))
        print(f"FAILED {job.run.name}: {reason}", flush=True)
        return False
    log_event(events, identity, "lost", job=sub["job"] if sub else None)
    print(f"lost     {job.run.name}: job {sub['job'] if sub else '?'} ended without finishing; resubmitting",
          flush=True)
    return True


def _submit(executor, backlog: list[list[Job]], profile: Profile, events: Path, train_script: Path,
            threads: int | None, size: int, limit: int) -> list[Tracked]:
    """Submit up to `limit` packs from the front of `backlog` (SLURM: one job array)."""
    packs, backlog[:] = backlog[:limit], backlog[limit:]
    if not packs:
        return []
    threads = threads or (max(1, profile.cpus_per_task // size) if profile.cpus_per_task else None)
    grace = max(10.0, profile.signal_delay_s - 15.0)
    bodies = [TrainJob([run_spec(j, train_script) for j in pack], str(ROOT), str(events), threads,
                       profile.max_requeues, grace) for pack in packs]
    handles = []
    with executor.batch() if profile.executor == "slurm" and len(bodies) > 1 else contextlib.nullcontext():
        for body in bodies:
            handles.append(executor.submit(body))
    tracked = []
    for handle, pack in zip(handles, packs):
        for j in pack:
            log_event(events, j.run.identity, "submitted", job=str(handle.job_id), executor=profile.executor)
            print(f"submit   {j.run.name} [{j.run.identity}] as job {handle.job_id}", flush=True)
        tracked.append(Tracked(str(handle.job_id), [j.run.identity for j in pack], profile.executor, handle))
    if profile.executor == "debug":
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.result()  # a debug job runs here and now
    return tracked


def _watch(tracked: list[Tracked], backlog: list[list[Job]], by_id: dict[str, Job], executor, jobs: Jobs,
           profile: Profile, events: Path, paths: Paths, preset: str, train_script: Path, threads: int | None,
           size: int, summary: dict) -> None:
    """Until every run is recorded or failed: record finished runs, resubmit lost ones, keep `array_parallelism`
    local jobs running (SLURM throttles its arrays itself)."""
    n_runs, n_done = sum(len(p) for p in backlog) + sum(len(t.identities) for t in tracked), 0
    while tracked or backlog:
        room = len(backlog) if profile.executor == "slurm" else max(0, profile.array_parallelism - len(tracked))
        tracked += _submit(executor, backlog, profile, events, train_script, threads, size, room)
        jobs.refresh(tracked)
        for t in tracked:
            # The job's state is read once per round: a job that ends after this read is handled in the next
            # round. (Reading it again below dropped a job that ended in between, and with it its runs: never
            # recorded, nor resubmitted when the job had died.)
            ended = jobs.state(t) == "ENDED"
            for identity in list(t.identities):
                job = by_id[identity]
                if (_abs(job.run.run_dir) / "metrics.json").exists():
                    if not ended and not _finished_event(events, identity):
                        continue  # train.py wrote its final metrics and is exiting; the job logs it next
                    _record(job, events, paths, preset, summary)
                    n_done += 1
                    print(f"finished {job.run.name} ({n_done}/{n_runs})", flush=True)
                    t.identities.remove(identity)
                    continue
                history = read_events(events, identity)
                state, detail = run_state(history, None if ended else "RUNNING")
                if state == "failed":
                    summary["failed"].append((job, detail))
                    print(f"FAILED {job.run.name}: {detail}", flush=True)
                    t.identities.remove(identity)
                elif ended:
                    t.identities.remove(identity)
                    if _note_lost(job, events, profile, summary, last_submission(history)[0]):
                        backlog.append([job])
        tracked[:] = [t for t in tracked if t.identities]  # an ended job's runs were each recorded, failed or lost
        if tracked or backlog:
            time.sleep(profile.poll_s)


def _finished_event(events: Path, identity: str) -> dict | None:
    sub, after = last_submission(read_events(events, identity))
    return next((e for e in reversed(after) if e["event"] == "finished"), None)


def _note_finish(events: Path, identity: str) -> None:
    """A run whose training finished (metrics.json written whole) in a job that ended before it could log so
    (killed at that moment): the driver logs the `finished` event for it, so that every finished run has one."""
    history = read_events(events, identity)
    if not any(e["event"] == "finished" for e in history):
        sub = last_submission(history)[0]
        log_event(events, identity, "finished", job=sub["job"] if sub else None, noted_by="driver")


def _record(job: Job, events: Path, paths: Paths, preset: str, summary: dict) -> None:
    """The run's record, as the local launcher writes it (launch_wall_s: the job that finished it)."""
    record = record_from_run(_abs(job.run.run_dir), preset)
    finished = _finished_event(events, job.run.identity)
    if finished is None:  # _watch records a run without its job's `finished` event once the job has ended
        _note_finish(events, job.run.identity)
    if finished and "wall_s" in finished:
        record["launch_wall_s"] = finished["wall_s"]
    write_record(paths, preset, record)
    summary["trained"].append(job)


# ----------------------------------------------------------------------------- status


def status(preset: str, manifests: list[Manifest], profile: Profile, seeds: tuple[int, ...] | None = None,
           paths: Paths = Paths(), data_root: str | None = None) -> dict[str, list[tuple[Job, str]]]:
    """{done | finished | queued | running | failed | lost | new | pending: [(job, detail)]} from the records,
    the run directories, the event logs and the scheduler. Changes nothing."""
    events = events_dir(paths, preset, profile)
    records = load_records(paths, preset)
    pending: list[str] = []
    planned = plan(preset, manifests, seeds, paths, data_root, records, pending)
    history = {j.run.identity: read_events(events, j.run.identity) for j in planned}
    subs = {i: last_submission(h)[0] for i, h in history.items()}
    jobs = Jobs(profile, job_folder(paths, preset, profile))
    jobs.refresh([submitted(s) for s in subs.values() if s])
    out: dict[str, list] = {k: [] for k in ("done", "finished", "running", "queued", "failed", "lost", "new")}
    for job in planned:
        identity = job.run.identity
        if identity in records:
            out["done"].append((job, rel(records[identity].path)))
        elif (_abs(job.run.run_dir) / "metrics.json").exists():
            out["finished"].append((job, "finished, not recorded yet: rerun the launch command to record it"))
        else:
            sub = subs[identity]
            live = jobs.state(submitted(sub)) if sub else None
            state, detail = run_state(history[identity], live)
            out[state].append((job, detail))
    out["pending"] = [(None, reason) for reason in pending]
    return out


def print_status(preset: str, result: dict, file=None) -> None:
    """One line of counts, then a line per run that is not done."""
    file = file or sys.stdout
    counts = ", ".join(f"{len(v)} {k}" for k, v in result.items() if v)
    print(f"{preset}: {sum(len(v) for v in result.values())} runs: {counts or 'nothing planned'}", file=file)
    for state in ("running", "queued", "failed", "lost", "finished", "pending"):
        for job, detail in result.get(state, []):
            name = f"{job.run.name} [{job.run.identity}]" if job else ""
            print(f"  {state:8s} {name} {detail}".rstrip(), file=file)
