"""The submitit launcher: profiles, sbatch options, the multi-node DDP environment, real failures, and the fault
test on submitit's local executor (scheduling: 102 light jobs with kills, preemptions and a killed driver;
training: real tiny trainings preempted mid-run, requeued and resumed bit for bit)."""

import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch
import yaml

import reproduce
from engine.config import ConfigError
from engine.distributed import scheduler_environment
from experiments import runner
from experiments.launchers import driver
from experiments.launchers.job import read_events
from experiments.launchers.profile import load_profile
from experiments.layout import Paths
from experiments.manifest import find_manifests
from experiments.plan import plan
from experiments.records import load_records

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- profiles and the environment


def test_profiles_load_and_the_command_line_overrides_them(tmp_path):
    p = load_profile("slurm", ["partition=gpu-preempt", "time_min=600", "account=proj42", "setup=[module load cuda]"])
    assert (p.executor, p.partition, p.time_min, p.account, p.gpus_per_node) == ("slurm", "gpu-preempt", 600,
                                                                                  "proj42", 1)
    assert p.setup == ["module load cuda"]
    assert load_profile("local").executor == "local" and load_profile("slurm-ddp").processes == 8
    for bad, message in [(["partiton=x"], "unknown launcher setting 'partiton'"),
                         (["time_min=soon"], "time_min expects int"), (["nodes=0"], "nodes must be at least 1"),
                         (["signal=HUP"], "signal must be USR1 or USR2"), (["time_min"], "expects KEY=VALUE")]:
        with pytest.raises(ConfigError, match=message):
            load_profile("slurm", bad)
    with pytest.raises(ConfigError, match="profile 'nope' not found.*local, slurm, slurm-ddp"):
        load_profile("nope")
    (tmp_path / "p.yaml").write_text("executor: local\nnodes: 2\n")
    with pytest.raises(ConfigError, match="runs on one node"):
        load_profile(str(tmp_path / "p.yaml"))


def test_sbatch_file_carries_the_profile_as_a_job_array():
    from submitit.slurm.slurm import _make_sbatch_string

    profile = load_profile("slurm", ["account=proj42", "qos=low", "array_parallelism=16"])
    text = _make_sbatch_string(command="python -m submitit.core._submit f", folder="/x/%j", map_count=40,
                               **driver.slurm_parameters(profile, "paper_tiny"))
    for line in ["--partition=gpu", "--time=240", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB",
                 "--account=proj42", "--qos=low", "--array=0-39%16", "--signal=USR2@120", "--ntasks-per-node=1",
                 f"--chdir={ROOT}", "--job-name=mtl-paper_tiny"]:
        assert f"#SBATCH {line}" in text or line == "--signal=USR2@120", line
    assert "export SUBMITIT_PREEMPT_SIGNAL=USR1" in text
    assert driver.pack_size(profile, 3) == 3 and driver.pack_size(load_profile("slurm", ["gpus_per_node=4"]), 2) == 8
    with pytest.raises(ValueError, match="gpus_per_node=0"):
        driver.pack_size(load_profile("local"), 2)
    with pytest.raises(ValueError, match="one DDP training"):
        driver.pack_size(load_profile("slurm-ddp"), 2)


def test_ddp_rank_world_and_master_come_from_slurm_through_submitit(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert scheduler_environment() == {}  # not a submitit job
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for var, value in dict(SLURM_JOB_ID="77", SLURM_NTASKS="8", SLURM_JOB_NUM_NODES="2", SLURM_NODEID="1",
                           SLURM_PROCID="5", SLURM_LOCALID="1", SLURM_JOB_NODELIST="gpu[07-08]").items():
        monkeypatch.setenv(var, value)
    env = scheduler_environment()
    assert {k: env[k] for k in ("MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")} == {
        "MASTER_ADDR": "gpu07", "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000  # the same on every node: seeded by the job id
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert scheduler_environment()["MASTER_PORT"] == env["MASTER_PORT"]
    monkeypatch.setenv("RANK", "3")  # torchrun inside the job sets its own: left alone
    assert scheduler_environment() == {}


# ----------------------------------------------------------------------------- light jobs (no torch in the job)

FAKE_TRAIN = textwrap.dedent("""\
    # Stands in for train.py without torch: the same command line, run directory, checkpoint-and-resume and
    # preemption contract (SIGUSR1: checkpoint, exit 138). The result chains every step, so a step skipped or
    # repeated by a wrong resume changes it.
    import json, os, signal, sys, time
    from pathlib import Path

    over = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a and not a.startswith("-"))
    run_dir = Path(over["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    steps, step_s = int(os.environ.get("FAKE_STEPS", "8")), float(os.environ.get("FAKE_STEP_S", "0.05"))
    spec = json.loads((Path(os.environ["FAKE_SPECS"]) / f"{run_dir.name}.json").read_text())

    def write(path, text):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    if (run_dir / "metrics.json").exists():
        print("already finished; not retraining")
        sys.exit(0)
    if ",".join(spec["config"]["tasks"]) == os.environ.get("FAKE_FAIL"):
        sys.exit("error: fake failure of " + spec["identity"])
    stop = []
    signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
    ckpt = run_dir / "checkpoint.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "acc": spec["seed"] + 1}
    print(f"resuming from step {state['step']}" if state["step"] else "start", flush=True)
    while state["step"] < steps:
        time.sleep(step_s)
        state["step"] += 1
        state["acc"] = (state["acc"] * 31 + state["step"]) % 1000003
        write(ckpt, json.dumps(state))
        if stop and state["step"] < steps:
            print(f"preempted at step {state['step']}", flush=True)
            sys.exit(138)
    value = state["acc"] / 1000.0
    metrics = {"semantic": {"semantic/miou": value}, "instance": {"instance/mean_error_px": value},
               "depth": {"depth/mean_error_px": value}}
    with open(run_dir / "finals.log", "a") as f:
        f.write("final\\n")
    write(run_dir / "metrics.jsonl", json.dumps({"step": steps, "weight/" + spec["config"]["tasks"][0]: 1.0}) + "\\n")
    write(run_dir / "metrics.json", json.dumps({
        "step": steps, "iterations": steps, "config": spec["config"], "identity": spec["identity"],
        "command": ["python", *sys.argv], "git_commit": "fake",
        "metrics": {k: v for t in spec["config"]["tasks"] for k, v in metrics[t].items()}}))
""")

class Driver:
    """`reproduce.py ... --launcher submitit` (with the fake trainer in place of train.py) in a forked child of the
    test process, in a session of its own, its output appended to `log`. A fresh interpreter would spend about
    5 CPU-seconds importing torch and the project before its first submission; the fork has them already."""

    def __init__(self, args: list[str], env: dict, log: Path, train_script: Path):
        self.returncode = None
        self.pid = os.fork()
        if self.pid:
            return
        code = 70
        try:  # the child: never returns into pytest
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 1), os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
            os.environ.clear()
            os.environ.update(env)
            os.chdir(ROOT)
            reproduce.launch = functools.partial(driver.launch, train_script=train_script)
            code = reproduce.main(args)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


LOCAL_PROFILE = """\
executor: local
time_min: 30
array_parallelism: {parallel}
signal_delay_s: 30
max_requeues: 6
max_lost: 4
poll_s: 0.1
"""


def light_setup(tmp_path: Path, seeds: int, parallel: int = 8):
    """A manifest of 3 single-task rows x `seeds` seeds on a tiny preset, the fake trainer, its specs (each run's
    resolved config, which the fake cannot compute without torch), a launcher profile and the environment."""
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    data = yaml.safe_load((ROOT / "configs" / "experiments" / "table1.yaml").read_text())
    data["rows"] = [r for r in data["rows"] if r["name"] in ("semantic-only", "instance-only", "depth-only")]
    data.update(title="Light", seeds=list(range(seeds)), curves=False)
    (configs / "experiments" / "light.yaml").write_text(yaml.safe_dump(data))
    (configs / "mini.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 1}\n")
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    specs = tmp_path / "specs"
    specs.mkdir()
    jobs = plan("mini", find_manifests(paths.manifests, ["light"]), paths=paths)
    for job in jobs:
        (specs / f"{job.run.identity}.json").write_text(json.dumps(
            {"config": job.run.config.to_dict(), "identity": job.run.identity, "seed": job.run.seed}))
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    (tmp_path / "local.yaml").write_text(LOCAL_PROFILE.format(parallel=parallel))
    env = dict(os.environ, FAKE_SPECS=str(specs), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    return paths, jobs, env


def dirs(paths: Paths) -> list[str]:
    return ["--configs-dir", str(paths.configs), "--runs-dir", str(paths.runs), "--results-dir", str(paths.results)]


def snapshot(paths: Paths, preset: str) -> dict[str, str]:
    """Tables and records (without their wall times) as text."""
    out = {p.name: p.read_text() for p in sorted((paths.results / preset).glob("*.md"))}
    out |= {p.name: p.read_text() for p in sorted((paths.results / preset).glob("*.json"))}
    for p in sorted(paths.records(preset).glob("*.json")):
        data = json.loads(p.read_text())
        data.pop("launch_wall_s", None), data.pop("wall_time_s", None)
        out[f"runs/{p.name}"] = json.dumps(data, sort_keys=True)
    return out


def local_reference(paths: Paths, tmp_path: Path, env: dict, monkeypatch, preset: str, **kw) -> dict[str, str]:
    """The same manifest through the local launcher, undisturbed; returns its tables and records, and moves
    its run directories to <tmp_path>/reference-runs (the runs and results directories are empty again)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    runner_kw = {"train_script": kw.pop("train_script")}
    monkeypatch.setattr(reproduce, "reproduce", lambda *a, **k: runner.reproduce(*a, **k, **runner_kw))
    args = [*kw.pop("args"), "--jobs", str(kw.pop("jobs", 2)), "--threads", "1", "--skip-overheads", "--yes",
            *dirs(paths)]
    assert reproduce.main(args) == 0
    ref = snapshot(paths, preset)
    assert ref, "the reference run wrote no table or record"
    shutil.move(paths.runs, tmp_path / "reference-runs")
    shutil.rmtree(paths.results)
    return ref


def test_a_real_failure_is_recorded_with_its_reason_and_not_requeued(tmp_path, monkeypatch, capsys):
    paths, jobs, env = light_setup(tmp_path, seeds=1, parallel=3)
    for k, v in (env | {"FAKE_FAIL": "depth", "FAKE_STEP_S": "0"}).items():
        monkeypatch.setenv(k, v)
    manifests = find_manifests(paths.manifests, ["light"])
    profile = load_profile(str(tmp_path / "local.yaml"))
    summary = driver.launch("mini", manifests, profile, paths=paths, train_script=tmp_path / "fake_train.py")
    depth = next(j for j in jobs if j.run.config.tasks == ("depth",))
    assert [(j.run.identity, why) for j, why in summary["failed"]] == [
        (depth.run.identity, f"error: fake failure of {depth.run.identity}")]
    assert len(summary["trained"]) == 2 and len(load_records(paths, "mini")) == 2
    events = driver.events_dir(paths, "mini", profile)
    assert [e["event"] for e in read_events(events, depth.run.identity)] == ["submitted", "started", "failed"]
    # Again: nothing is submitted; status names the failure; --retry-failed submits it once more.
    again = driver.launch("mini", manifests, profile, paths=paths, train_script=tmp_path / "fake_train.py")
    assert again["trained"] == [] and len(again["failed"]) == 1 and len(again["skipped"]) == 2
    assert len(read_events(events, depth.run.identity)) == 3
    assert reproduce.main(["status", "light", "--preset", "mini", "--profile", str(tmp_path / "local.yaml"),
                           *dirs(paths)]) == 0
    out = capsys.readouterr().out
    assert "mini: 3 runs: 2 done, 1 failed" in out and f"failed   light/depth-only seed 0 [{depth.run.identity}] " \
        f"error: fake failure of {depth.run.identity}" in out
    driver.launch("mini", manifests, profile, paths=paths, train_script=tmp_path / "fake_train.py",
                  retry_failed=True)
    assert [e["event"] for e in read_events(events, depth.run.identity)][3:] == ["submitted", "started", "failed"]


def test_a_job_that_ends_between_two_looks_of_the_driver_is_still_recorded(tmp_path, monkeypatch):
    """The driver reads each job's state once per round. A job that ended just after that read (the scheduler
    answered RUNNING, then ENDED) was dropped from the watch list by a second read: its run was never recorded
    (or, had the job died, never resubmitted), and the driver still exited 0: the record missing in one run of
    the scheduling fault test under load."""
    paths, jobs, env = light_setup(tmp_path, seeds=1)
    for k, v in (env | {"FAKE_STEP_S": "0"}).items():
        monkeypatch.setenv(k, v)
    profile = load_profile(str(tmp_path / "local.yaml"), ["poll_s=0.01"])
    events = driver.events_dir(paths, "mini", profile)
    job = jobs[0]
    identity = job.run.identity
    for event in ("submitted", "started"):
        driver.log_event(events, identity, event, job="1", executor="local")
    command = job.command(python=sys.executable, train_script=tmp_path / "fake_train.py")

    class EndsBetweenLooks:
        """RUNNING at the first look; the training then finishes and the job ends."""

        looks = 0

        def refresh(self, tracked):
            pass

        def state(self, tracked):
            self.looks += 1
            if self.looks == 1:
                return "RUNNING"
            if self.looks == 2:
                subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
            return "ENDED"

    summary = {"trained": [], "failed": []}
    driver._watch([driver.Tracked("1", [identity], "local")], [], {identity: job}, None, EndsBetweenLooks(), profile,
                  events, paths, "mini", tmp_path / "fake_train.py", None, 1, summary)
    assert summary["trained"] == [job] and summary["failed"] == []
    assert list(load_records(paths, "mini")) == [identity]
    # the fake job never logged its finish (as a job killed right after its training): the driver did
    assert [e["event"] for e in read_events(events, identity)] == ["submitted", "started", "finished"]


def test_the_driver_removes_what_a_killed_driver_left_of_a_record_write(tmp_path, monkeypatch):
    """A driver SIGKILLed while it wrote a record leaves the atomic write's temporary file; the next driver
    writes that record whole and then removes the file (seen once in the scheduling fault test: the record was
    complete, its temporary file stayed). A temporary file of a record not written yet stays."""
    paths, jobs, env = light_setup(tmp_path, seeds=1, parallel=3)
    for k, v in (env | {"FAKE_STEP_S": "0"}).items():
        monkeypatch.setenv(k, v)
    records = paths.records("mini")
    records.mkdir(parents=True)
    left = records / f".{jobs[0].run.identity}.json.k1ll3d0x.tmp"
    other = records / ".0123456789ab.json.k1ll3d0x.tmp"
    for p in (left, other):
        p.write_text('{"identity": "cut sh')
        os.utime(p, (time.time() - 5, time.time() - 5))
    profile = load_profile(str(tmp_path / "local.yaml"), ["poll_s=0.05"])
    summary = driver.launch("mini", find_manifests(paths.manifests, ["light"]), profile, paths=paths,
                            train_script=tmp_path / "fake_train.py")
    assert len(summary["trained"]) == 3 and len(load_records(paths, "mini")) == 3
    assert not left.exists() and other.exists()


SIGNALS = {"kill": signal.SIGKILL, "preempt": signal.SIGUSR1, "term": signal.SIGTERM}


def test_fault_scheduling_100_jobs_killed_preempted_and_a_killed_driver(tmp_path, monkeypatch):
    """102 light jobs through the submitit launcher (local executor). A seeded random third is interrupted at a
    random step, some twice: SIGKILL of the job (lost, resubmitted by the driver), the preemption signal or
    SIGTERM (checkpoint, requeue through submitit); the driver is SIGKILLed once and started again. Every run
    finishes exactly once and the records and tables equal those of an undisturbed local run."""
    paths, jobs, env = light_setup(tmp_path, seeds=34)
    script = tmp_path / "fake_train.py"
    ref = local_reference(paths, tmp_path, env | {"FAKE_STEP_S": "0"}, monkeypatch, "mini", train_script=script,
                          args=["light", "--preset", "mini"])
    ids = [j.run.identity for j in jobs]
    events = driver.events_dir(paths, "mini", load_profile(str(tmp_path / "local.yaml")))
    seed = int(os.environ.get("FAULT_TEST_SEED", "24"))  # another seed: other runs, kinds and moments
    rng = random.Random(seed)
    steps = int(env.get("FAKE_STEPS", "8"))
    actions = {}  # identity -> [(kind, at step)], in order
    for identity in rng.sample(ids, len(ids) // 3):
        n = 2 if rng.random() < 0.35 else 1
        actions[identity] = [(rng.choice(list(SIGNALS)), s) for s in sorted(rng.sample(range(1, steps - 1), n))]
    args = ["light", "--preset", "mini", "--launcher", "submitit", "--profile", str(tmp_path / "local.yaml"),
            "--skip-overheads", "--yes", *dirs(paths)]
    start = time.time()
    proc = Driver(args, env, tmp_path / "driver.log", script)
    sent = {k: 0 for k in SIGNALS}
    done = {i: 0 for i in actions}
    driver_killed = False
    try:
        while time.time() - start < 600:
            for identity, todo in actions.items():
                if done[identity] == len(todo):
                    continue
                kind, step = todo[done[identity]]
                try:
                    at = json.loads((paths.runs / "mini" / identity / "checkpoint.json").read_text())["step"]
                except (OSError, ValueError):
                    continue
                if at < step:
                    continue
                history = read_events(events, identity)
                starts = [e for e in history if e["event"] == "started"]
                if len(starts) != done[identity] + 1 or any(e["event"] == "finished" for e in history):
                    continue  # wait for the attempt this action aims at
                try:
                    os.kill(starts[-1]["pid"], SIGNALS[kind])
                    sent[kind] += 1
                except ProcessLookupError:
                    pass
                done[identity] += 1
            if not driver_killed and len(list(paths.records("mini").glob("*.json"))) >= len(ids) // 3:
                proc.kill()  # SIGKILL, the driver only: its jobs keep running
                driver_killed = True
                proc = Driver(args, env, tmp_path / "driver.log", script)
            if driver_killed and proc.poll() is not None:
                break
            time.sleep(0.03)
    finally:
        proc.kill()
    wall = time.time() - start
    assert proc.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert driver_killed

    records = load_records(paths, "mini")  # every record parses and names its identity
    assert sorted(records) == sorted(ids)
    assert not [p for p in paths.records("mini").iterdir() if p.suffix != ".json"]  # no temporary file left
    history = {i: read_events(events, i) for i in ids}
    count = {k: sum(e["event"] == k for h in history.values() for e in h)
             for k in ("submitted", "started", "requeued", "lost", "finished", "failed")}
    finals = {i: (paths.runs / "mini" / i / "finals.log").read_text().split() for i in ids}
    assert all(len(f) == 1 for f in finals.values()), "a run trained to its end more than once"
    assert all(sum(e["event"] == "finished" for e in h) == 1 for h in history.values())
    assert count["failed"] == 0
    got = snapshot(paths, "mini")
    differences = sorted(k for k in ref.keys() | got.keys() if ref.get(k) != got.get(k))
    print(f"\nfault test (scheduling, seed {seed}): runs {len(ids)}, interruptions {sum(sent.values())} "
          f"(SIGKILL {sent['kill']}, "
          f"preemption signal {sent['preempt']}, SIGTERM {sent['term']}) on {sum(1 for i in done if done[i])} runs, "
          f"{sum(1 for i in done if done[i] == 2)} of them twice; driver killed 1; submissions {count['submitted']}, "
          f"starts {count['started']}, requeues {count['requeued']}, lost and resubmitted {count['lost']}; "
          f"records {len(records)}; differences {len(differences)}; {wall:.0f} s")
    assert differences == [], [(k, ref.get(k), got.get(k)) for k in differences]
    assert sent["kill"] >= 5 and sent["preempt"] + sent["term"] >= 10 and count["requeued"] >= 10
    assert sum(sent.values()) >= len(ids) // 3


# ----------------------------------------------------------------------------- real trainings

TINY_PRESET = """\
model: {backbone: resnet18, aspp_channels: 8, head_channels: 8}
data: {size: [32, 64], num_workers: 0, train_frames: 4, val_frames: 2}
optim: {iterations: 12, batch_size: 2}
log_every: 1
ckpt_every: 100
eval_batch_size: 2
"""


def test_fault_training_real_runs_preempted_mid_run_resume_bit_for_bit(synthetic_root, tmp_path, monkeypatch):
    """5 tiny trainings through the submitit launcher (local executor), each sent the preemption signal mid-run:
    train.py checkpoints at that step (its only checkpoint before the end), the job requeues, the run resumes
    there and ends with the weights, records and table of an undisturbed local run."""
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    data = yaml.safe_load((ROOT / "configs" / "experiments" / "table1.yaml").read_text())
    data["rows"] = [r for r in data["rows"] if r["name"] == "depth-only"]
    data.update(seeds=[0, 1, 2, 3, 4], curves=False)
    (configs / "experiments" / "depth.yaml").write_text(yaml.safe_dump(data))
    (configs / "tiny.yaml").write_text(TINY_PRESET)
    (tmp_path / "local.yaml").write_text(LOCAL_PROFILE.format(parallel=5))
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    args = ["depth", "--preset", "tiny", "--data-root", str(synthetic_root)]
    env = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")
    ref = local_reference(paths, tmp_path, env, monkeypatch, "tiny", train_script=ROOT / "train.py", args=args, jobs=5)
    jobs = plan("tiny", find_manifests(paths.manifests, ["depth"]), paths=paths)
    assert len(jobs) == 5
    profile = load_profile(str(tmp_path / "local.yaml"))
    events = driver.events_dir(paths, "tiny", profile)
    preempted: dict[str, int] = {}

    launched = threading.Event()

    def preempt_each_once():  # until the launch returns: a fixed deadline ran out on a loaded machine
        while len(preempted) < len(jobs) and not launched.is_set():
            for job in jobs:
                i = job.run.identity
                log = paths.runs / "tiny" / i / "metrics.jsonl"
                starts = [e for e in read_events(events, i) if e["event"] == "started"]
                if i in preempted or not starts or not log.exists():
                    continue
                step = len(log.read_text().splitlines())
                if 1 <= step < 6:
                    try:
                        os.kill(starts[-1]["pid"], signal.SIGUSR1)
                    except ProcessLookupError:
                        continue
                    preempted[i] = step
            time.sleep(0.02)

    killer = threading.Thread(target=preempt_each_once, daemon=True)
    killer.start()
    start = time.time()
    summary = driver.launch("tiny", find_manifests(paths.manifests, ["depth"]), profile, paths=paths,
                            data_root=str(synthetic_root), threads=1)
    launched.set()
    killer.join(timeout=5)
    assert summary["failed"] == [] and len(summary["trained"]) == 5
    assert len(preempted) == 5, f"only {len(preempted)} runs were signalled mid-run"
    assert reproduce.main(["aggregate", "depth", "--preset", "tiny", *dirs(paths)]) == 0
    requeues = 0
    for job in jobs:
        i = job.run.identity
        history = [e["event"] for e in read_events(events, i)]
        log = (paths.runs / "tiny" / i / "train.log").read_text()
        at = int(log.split("preempted at step ")[1].split(":")[0])
        assert f"from step {at}" in log.split("preempted at step ")[1]  # resumed where it stopped
        assert 1 <= at < 12 and history.count("requeued") == 1 and history.count("finished") == 1, history
        requeues += history.count("requeued")
        a, b = (torch.load(d / "tiny" / i / "checkpoint.pt", weights_only=True)
                for d in (tmp_path / "reference-runs", paths.runs))
        assert a["step"] == b["step"] == 12
        for part in ("model", "method", "optimizer"):
            flat_a, flat_b = flatten(a[part]), flatten(b[part])
            assert flat_a.keys() == flat_b.keys()
            assert all(same(flat_a[k], flat_b[k]) for k in flat_a), f"{i}: {part} differs"
    got = snapshot(paths, "tiny")
    differences = sorted(k for k in ref.keys() | got.keys() if ref.get(k) != got.get(k))
    print(f"\nfault test (training): runs {len(jobs)}, preempted {len(preempted)} (at steps "
          f"{sorted(preempted.values())}), requeues {requeues}, records {len(load_records(paths, 'tiny'))}, "
          f"differences {len(differences)}; {time.time() - start:.0f} s")
    assert differences == [], [(k, ref.get(k), got.get(k)) for k in differences]


def flatten(state, prefix: str = "") -> dict:
    """{dotted key: tensor or plain value} of a (nested) state dict."""
    if isinstance(state, dict):
        return {k: v for key, value in state.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    if isinstance(state, (list, tuple)):
        return {k: v for n, value in enumerate(state) for k, v in flatten(value, f"{prefix}{n}.").items()}
    return {prefix: state}


def same(a, b) -> bool:
    """Bit for bit: tensors with torch.equal, anything else with ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b
