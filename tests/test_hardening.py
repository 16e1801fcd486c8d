"""Issue 12, hardening: the run-directory lock, no network at run time, finite checkpoints, durable logs,
validated inputs, one-line errors and honest exit codes. One test (or a few) per case of the issue."""

import contextlib
import errno
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import engine.checkpoint
import engine.step
import evaluate
import infra.atomic
import reproduce
import train
from data.cityscapes import CityscapesMultiTask, DataError
from engine.config import ConfigError, config_from_dict, load_config, load_yaml
from engine.rundir import JsonlLog, truncate_log, wandb_run_id
from experiments import plots, runner
from experiments.layout import Paths
from experiments.manifest import list_manifests
from infra.lock import FileLock

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true",
        "data.train_frames=4", "data.val_frames=2"]


def tiny(root, run_dir, *extra):
    return [*TINY, f"data.root={root}", f"run_dir={run_dir}", *extra]


def strict_loads(text: str):
    """json.loads that refuses NaN / Infinity (what strict JSON readers do)."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


# ----------------------------------------------------------------------------- one finished run, checked many ways

@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory):
    """A 2-step run whose dataset root comes from $CITYSCAPES_DATASET; its run directory held a stale temporary
    file of an interrupted checkpoint write before it started. Records which files went through the atomic
    writer (os.replace targets) and what train.py printed."""
    run = tmp_path_factory.mktemp("finished") / "run"
    run.mkdir()
    (run / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"x" * 100)
    replaced, real_replace = [], os.replace
    mp = pytest.MonkeyPatch()
    mp.setenv("CITYSCAPES_DATASET", str(synthetic_root))
    mp.setattr(infra.atomic.os, "replace", lambda a, b: (replaced.append(Path(b).name), real_replace(a, b))[1])
    args = [*TINY, f"run_dir={run}", "optim.iterations=2", "ckpt_every=1"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            train.main(args)
    finally:
        mp.undo()
    return run, replaced, out.getvalue(), args


def test_stale_temp_files_are_swept_at_start(finished):
    run, *_ = finished
    assert not list(run.glob("*.tmp"))


def test_results_are_written_atomically_and_readable_by_others(finished):
    run, replaced, *_ = finished
    assert {"config.yaml", "checkpoint.pt", "metrics.json"} <= set(replaced)
    for name in ("config.yaml", "checkpoint.pt", "metrics.json", "metrics.jsonl"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name


def test_metrics_files_are_strict_json_and_record_the_dataset_root(finished, synthetic_root):
    run, *_ = finished
    final = strict_loads((run / "metrics.json").read_text())
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_loads(line)
    assert final["data_root"] == str(Path(synthetic_root).resolve())  # it came from $CITYSCAPES_DATASET


def test_train_prints_its_run_directory_and_final_metrics(finished):
    run, _, out, _ = finished
    assert f"run directory: {run}" in out
    assert f"finished {run} at step 2" in out and "semantic mIoU (%)" in out


def test_a_second_training_on_a_held_run_directory_stops_naming_the_holder(finished, synthetic_root, tmp_path):
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    with FileLock(run_dir / ".lock", "run directory", ["python", "train.py", "seed=0"]):
        with pytest.raises(SystemExit, match=rf"error: run directory .*busy is in use by pid {os.getpid()} on host "
                                             r".*python train\.py seed=0"):
            train.main(tiny(synthetic_root, run_dir, "optim.iterations=1"))
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "config.yaml").exists()
    # The finished run's lock was released: a new process may use it (and finds it finished).
    with FileLock(finished[0] / ".lock", "run directory"):
        pass


# ----------------------------------------------------------------------------- finite checkpoints

def test_non_finite_weights_are_never_checkpointed(synthetic_root, tmp_path):
    """lr 1e38 makes the log-variances infinite after one step while the losses are still finite."""
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"non-finite weights at step 1 .*method\.log_vars"):
        train.main(tiny(synthetic_root, run, "optim.lr=1.0e+38", "optim.iterations=3", "ckpt_every=1"))
    assert not (run / "checkpoint.pt").exists()


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train.main(tiny(synthetic_root, run, "optim.iterations=1"))
    return run / "checkpoint.pt"


def _edited(checkpoint, tmp_path, edit) -> Path:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    edit(ckpt)
    out = tmp_path / "edited.pt"
    torch.save(ckpt, out)
    return out


def test_evaluate_refuses_non_finite_weights(checkpoint, synthetic_root, tmp_path):
    def poison(ckpt):
        name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.ndim > 1)
        ckpt["model"][name] = ckpt["model"][name] * float("nan")

    bad = _edited(checkpoint, tmp_path, poison)
    with pytest.raises(SystemExit, match="error: .*non-finite weights"):
        evaluate.main(["--checkpoint", str(bad), "--root", str(synthetic_root), "--workers", "0"])


def test_evaluate_refuses_non_finite_outputs(checkpoint, synthetic_root, tmp_path):
    def negative_variance(ckpt):  # finite numbers that make BatchNorm output NaN
        name = next(k for k in ckpt["model"] if k.endswith("running_var"))
        ckpt["model"][name] = -torch.ones_like(ckpt["model"][name])

    bad = _edited(checkpoint, tmp_path, negative_variance)
    with pytest.raises(SystemExit, match="error: .*output holds NaN or infinity"):
        evaluate.main(["--checkpoint", str(bad), "--root", str(synthetic_root), "--workers", "0", "--limit", "1"])


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_evaluate_limit_must_be_positive(checkpoint, limit, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(checkpoint), "--limit", limit])
    assert e.value.code == 2 and "--limit" in capsys.readouterr().err


def test_evaluate_out_is_strict_json_written_atomically(checkpoint, synthetic_root, tmp_path, monkeypatch):
    out, replaced, real = tmp_path / "eval.json", [], os.replace
    monkeypatch.setattr(infra.atomic.os, "replace", lambda a, b: (replaced.append(Path(b).name), real(a, b))[1])
    evaluate.main(["--checkpoint", str(checkpoint), "--root", str(synthetic_root), "--workers", "0", "--limit", "1",
                   "--out", str(out)])
    strict_loads(out.read_text())  # with one frame some class IoUs are NaN: written as null
    assert "eval.json" in replaced
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_evaluate_refuses_a_saved_config_with_an_invalid_output_stride(checkpoint, tmp_path):
    bad = _edited(checkpoint, tmp_path, lambda c: c["config"]["model"].update(output_stride=4))
    with pytest.raises(SystemExit, match="error: .*output_stride must be 8 or 16"):
        evaluate.main(["--checkpoint", str(bad)])


# ----------------------------------------------------------------------------- interruptions

def _interrupt_at(monkeypatch, call: int, action):
    real, calls = engine.step.task_losses, []

    def interrupting(outputs, batch):
        calls.append(1)
        if len(calls) == call:
            action()
        return real(outputs, batch)

    monkeypatch.setattr(engine.step, "task_losses", interrupting)


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("how,status", [("ctrl-c", 130), ("sigterm", 143)])
def test_ctrl_c_and_sigterm_keep_the_checkpoint_and_exit_non_zero(synthetic_root, tmp_path, monkeypatch, capsys,
                                                                   how, status):
    def refuse(*_):  # what happens if train.py does not handle SIGTERM itself: the test fails, pytest lives
        raise RuntimeError("SIGTERM not handled by train.py")

    previous = signal.signal(signal.SIGTERM, refuse)
    try:
        action = _raise_keyboard_interrupt if how == "ctrl-c" else lambda: os.kill(os.getpid(), signal.SIGTERM)
        _interrupt_at(monkeypatch, 3, action)
        run = tmp_path / "run"
        with pytest.raises(SystemExit) as e:
            try:
                train.main(tiny(synthetic_root, run, "optim.iterations=6", "ckpt_every=2"))
            except KeyboardInterrupt:  # would end the whole pytest session
                pytest.fail("Ctrl-C escaped train.main")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == status
    assert "interrupted" in capsys.readouterr().err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (run / "metrics.json").exists()


# ----------------------------------------------------------------------------- durability

def test_resume_does_not_rewrite_metrics_jsonl_in_place(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss/total": 1.0}) + "\n" for s in range(1, 6)))
    before = log.read_text()
    # A write error while cutting the log back to the checkpoint's step leaves the whole old log.
    monkeypatch.setattr(infra.atomic.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        truncate_log(log, 3)
    assert log.read_text() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    old = tmp_path / "old-inode"
    os.link(log, old)  # an in-place rewrite would change this link's contents too
    truncate_log(log, 3)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2, 3]
    assert old.read_text() == before


def test_atomic_writes_fsync_the_directory(tmp_path, monkeypatch):
    kinds, real = [], os.fsync
    monkeypatch.setattr(infra.atomic.os, "fsync", lambda fd: (kinds.append(stat.S_ISDIR(os.fstat(fd).st_mode)),
                                                                real(fd))[1])
    infra.atomic.write_json(tmp_path / "x.json", {"a": 1})
    assert kinds == [False, True]  # the file, then its directory after the rename


def test_json_is_strict_everywhere(tmp_path):
    infra.atomic.write_json(tmp_path / "x.json", {"a": math.nan, "b": [math.inf, 1.0]})
    assert strict_loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.0]}
    log = JsonlLog(tmp_path / "metrics.jsonl", enabled=True, wandb_mode="disabled", cfg=load_config())
    log.write(1, {"val/semantic/iou/train": math.nan})
    assert strict_loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "val/semantic/iou/train": None}


def test_disk_full_while_writing_a_checkpoint_is_one_line_and_keeps_the_previous_one(synthetic_root, tmp_path,
                                                                                      monkeypatch):
    real, calls = torch.save, []

    def full(obj, f):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                               "data/3: file write failed, unexpected pos 1234 vs 5678")
        return real(obj, f)

    monkeypatch.setattr(engine.checkpoint.torch, "save", full)
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"^error: cannot write checkpoint .*unexpected pos.*previous checkpoint"):
        train.main(tiny(synthetic_root, run, "optim.iterations=2", "ckpt_every=1"))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not list(run.glob(".*.tmp"))


# ----------------------------------------------------------------------------- one-line errors

def test_no_dataset_root_is_one_line_and_leaves_no_run_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CITYSCAPES_DATASET"} | {"PYTHONPATH": str(ROOT)}
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "train.py", "--config", "configs/demo.yaml", f"run_dir={run}"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: no dataset root")
    assert "Traceback" not in done.stderr
    assert not run.exists()


@pytest.mark.parametrize("root", [None, "no/such/dataset"])
def test_reproduce_without_a_dataset_root_starts_no_training(tmp_path, monkeypatch, capsys, root):
    """The runner checks the dataset root before the first training: unset or missing, it stops with one line
    and exit 2, and no run directory is made (before, each of the manifest's trainings failed alike in turn)."""
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "tiny.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 1}\n")
    (configs / "experiments" / "two.yaml").write_text(yaml.safe_dump({
        "title": "Two rows", "seeds": [0, 1], "columns": ["semantic/miou"],
        "rows": [{"name": n, "config": {"tasks": ["semantic"], "optim": {"lr": lr}}}
                 for n, lr in (("a", 0.1), ("b", 0.2))]}))
    runs = tmp_path / "runs"
    args = ["two", "--preset", "tiny", "--jobs", "1", "--configs-dir", str(configs), "--runs-dir", str(runs),
            "--results-dir", str(tmp_path / "results")] + (["--data-root", root] if root else [])
    assert reproduce.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nothing was started" in err[0]
    assert ("no dataset root" if root is None else f"dataset root {root} is not a directory") in err[0]
    assert not any(runs.rglob("train.log"))


def test_a_failed_start_leaves_no_orphan_run_directory(synthetic_root, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match="error: .*no such split directory"):
        train.main(tiny(synthetic_root, run, "data.val_split=nosuchsplit"))
    assert not run.exists()


def test_corrupt_checkpoint_or_metrics_json_on_resume_is_one_line(synthetic_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^error: cannot read checkpoint .*checkpoint\.pt"):
        train.main(tiny(synthetic_root, run))
    (run / "metrics.json").write_text('{"step": 3, "metr')
    with pytest.raises(SystemExit, match=r"^error: cannot read .*metrics\.json"):
        train.main(tiny(synthetic_root, run))


@pytest.mark.parametrize("override,match", [
    ("tasks=[semantc]", r"unknown task\(s\) \['semantc'\]"),
    ("ckpt_every=0", "ckpt_every must be at least 1"),
    ("log_every=0", "log_every must be at least 1"),
    ("eval_batch_size=0", "eval_batch_size must be at least 1"),
    ("val_every=-1", "val_every must be >= 0"),
    ("data.val_frames=0", "data.val_frames must be at least 1"),
    ("data.train_frames=-1", "data.train_frames must be at least 1"),
    ("optim.momentum=-0.9", r"optim.momentum must be in \[0, 1\)"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay must be >= 0"),
    ("optim.grad_clip=0", "optim.grad_clip must be positive"),
    ("model.output_stride=4", "model.output_stride must be 8 or 16"),
    ("method.fixed.weights.semantic=-1", r"fixed weights must be finite and >= 0"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
])
def test_invalid_numeric_options_are_refused_at_load_time(override, match, tmp_path):
    extra = ["method.name=fixed"] if override.startswith("method.fixed") else []
    with pytest.raises(ConfigError, match=match):
        load_config([], [*extra, override])
    with pytest.raises(SystemExit, match="config error: .*" + match):
        train.main([*TINY, "optim.iterations=1", f"run_dir={tmp_path / 'run'}", *extra, override])
    assert not (tmp_path / "run").exists()


def test_sync_bn_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        load_config([], ["sync_bn=true", "device=cpu"])


def test_too_few_training_frames_for_one_batch(synthetic_root, tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*fewer than one batch.*optim.batch_size=2"):
        train.main(tiny(synthetic_root, tmp_path / "run", "data.train_frames=1"))


def test_a_saved_config_is_validated():
    d = load_config().to_dict()
    d["model"]["output_stride"] = 4
    with pytest.raises(ConfigError, match="output_stride"):
        config_from_dict(d)


def test_duplicate_yaml_keys_are_refused(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("optim:\n  lr: 0.01\n  iterations: 5\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: key 'lr' given twice .*line 2 and line 4"):
        load_config([f])


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    f = tmp_path / "lr.yaml"
    f.write_text("optim: {lr: 1e-3, weight_decay: 5E-4}\n")
    cfg = load_config([f], ["optim.poly_power=1e0"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.poly_power) == (1e-3, 5e-4, 1.0)
    assert load_yaml("a: e5\nb: 1e5\n") == {"a": "e5", "b": 1e5}


# ----------------------------------------------------------------------------- data

def _labels_with_instance(instance_value: int):
    label = np.full((8, 16), 7, np.uint8)  # road
    inst = label.astype(np.uint16)
    label[2:5, 3:7] = 26  # car
    inst[2:5, 3:7] = instance_value
    return label, inst


@pytest.mark.parametrize("bad", [7001, 60001, 250])  # road (no instances), an unknown class, an unknown plain id
def test_instance_ids_of_non_instance_or_unknown_classes_are_refused(cityscapes_tree, bad):
    label, inst = _labels_with_instance(bad)
    cityscapes_tree.add(label, inst)
    data = CityscapesMultiTask(cityscapes_tree.root, "train")
    with pytest.raises(DataError, match=rf"instanceIds.png: instance ids {bad}"):
        data[0]
    from data.check import main as check

    cityscapes_tree.add(*_labels_with_instance(26001), split="val")
    assert check([str(cityscapes_tree.root)]) == 1


def test_data_check_fails_when_a_split_is_missing(cityscapes_tree, capsys):
    from data.check import main as check

    cityscapes_tree.add(*_labels_with_instance(26001))  # train only
    assert check([str(cityscapes_tree.root)]) == 1
    out = capsys.readouterr().out
    assert "val" in out and "no such split directory" in out and out.rstrip().endswith("FAILED")
    cityscapes_tree.add(*_labels_with_instance(26001), split="val")
    assert check([str(cityscapes_tree.root)]) == 0


# ----------------------------------------------------------------------------- no network at run time

def test_albumentations_never_asks_the_package_index(tmp_path):
    """Without NO_ALBUMENTATIONS_UPDATE in the environment: no DNS query, no connection."""
    script = textwrap.dedent("""
        import socket
        calls = []
        def blocked(*a, **k):
            calls.append(a)
            raise OSError("network blocked by the test")
        socket.getaddrinfo = blocked
        socket.socket.connect = blocked
        import numpy as np
        import data.transforms as t
        t.jitter(np.zeros((4, 4, 3), np.uint8), np.random.default_rng(0))
        print(len(calls))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


# ----------------------------------------------------------------------------- run directories, wandb, presets

def test_default_run_directories_are_unique_per_experiment():
    a, b = load_config([ROOT / "configs" / "demo.yaml"]), load_config([ROOT / "configs" / "demo.yaml"], ["seed=1"])
    assert a.resolved_run_dir != b.resolved_run_dir
    assert a.resolved_run_dir == Path("runs") / "demo" / a.identity()
    assert load_config([ROOT / "configs" / "demo.yaml"], ["log_every=5"]).resolved_run_dir == a.resolved_run_dir


def test_demo_preset_leaves_the_dataset_root_to_the_environment():
    assert load_config([ROOT / "configs" / "demo.yaml"]).data.root is None
    assert "data.root=$(DATA)" in (ROOT / "Makefile").read_text()  # make demo passes it


def test_wandb_run_ids_differ_per_run_directory(tmp_path):
    cfg = load_config()
    assert wandb_run_id(cfg, tmp_path / "a") != wandb_run_id(cfg, tmp_path / "b")
    assert wandb_run_id(cfg, tmp_path / "a") == wandb_run_id(cfg, tmp_path / "a")  # a resume continues its run


# ----------------------------------------------------------------------------- runner

RUNNER_PRESET = "model: {backbone: resnet18}\noptim: {iterations: 1}\n"
SLEEPER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    run_dir = Path([a for a in sys.argv if a.startswith("run_dir=")][0].split("=", 1)[1])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pid").write_text(str(os.getpid()))
    time.sleep(120)
""")


@pytest.fixture
def mini(tmp_path):
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    data = yaml.safe_load((ROOT / "configs" / "experiments" / "table1.yaml").read_text())
    data["rows"] = [r for r in data["rows"] if r["name"] in ("depth-only", "semantic-only")]
    data["seeds"] = [0]
    (configs / "experiments" / "t.yaml").write_text(yaml.safe_dump(data))
    (configs / "mini.yaml").write_text(RUNNER_PRESET)
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    return Paths(configs, tmp_path / "runs", tmp_path / "results"), script


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_killing_the_runner_stops_its_trainings(mini):
    paths, script = mini
    code = textwrap.dedent(f"""
        import sys
        from experiments import runner
        from experiments.layout import Paths
        from experiments.manifest import list_manifests
        from pathlib import Path
        paths = Paths(Path({str(paths.configs)!r}), Path({str(paths.runs)!r}), Path({str(paths.results)!r}))
        runner.reproduce("mini", list_manifests(paths.manifests), None, 1, paths=paths,
                         train_script=Path({str(script)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not list(paths.runs.rglob("pid")) and time.time() < deadline:
            time.sleep(0.05)
        pid_file = list(paths.runs.rglob("pid"))
        assert pid_file, "the runner did not start its training"
        child = int(pid_file[0].read_text())
        proc.kill()  # SIGKILL to the runner alone, not its process group
        proc.wait()
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.05)
        alive = _alive(child)
        if alive:
            os.kill(child, signal.SIGKILL)
        assert not alive, "the training outlived its runner"
    finally:
        proc.kill()


def test_overlapping_shards_are_refused(mini, monkeypatch):
    paths, _ = mini
    script = paths.configs.parent / "quick.py"  # were anything launched, it would end at once
    script.write_text(SLEEPER.replace("time.sleep(120)", "sys.exit(3)"))
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    lock_dir = paths.runs / "mini"
    lock_dir.mkdir(parents=True)
    manifests = list_manifests(paths.manifests)
    with FileLock(lock_dir / ".shard-1-of-2.lock", "shard 1/2", ["python", "reproduce.py", "--shard", "1/2"]):
        with pytest.raises(ValueError, match=r"--shard 1/3 overlaps shard 1/2, which pid \d+ .*--shard 1/2"):
            runner.reproduce("mini", manifests, None, 1, (1, 3), paths=paths, train_script=script)
        with pytest.raises(RuntimeError, match="shard 1/2 .* is in use"):
            runner.reproduce("mini", manifests, None, 1, (1, 2), paths=paths, train_script=script)
    assert not list(paths.runs.rglob("pid"))  # nothing was launched


def test_the_runner_sweeps_stale_temporary_files_from_results(mini):
    paths, _ = mini
    records = paths.records("mini")
    records.mkdir(parents=True)
    stale, fresh = records / ".abc.json.k2j4h5g6.tmp", records / ".def.json.a1b2c3d4.tmp"
    for f in (stale, fresh):
        f.write_text("{")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    runner.reproduce("mini", list_manifests(paths.manifests), None, 1, paths=paths, dry_run=False,
                     train_script=Path("/nonexistent"), shard_of=(99, 99))  # shard 99/99: no job
    assert not stale.exists() and fresh.exists()  # a fresh one may be another runner's write in progress


# ----------------------------------------------------------------------------- figures and plots

def test_figure_grid_has_no_empty_cell_a_legend_colour_bars_and_one_disparity_scale():
    from evaluation.figures import frame_figure

    h, w = 8, 16
    torch.manual_seed(0)
    item = {"image": torch.zeros(3, h, w), "semantic": torch.randint(0, 19, (h, w)),
            "instance": torch.randn(2, h, w), "instance_mask": torch.rand(h, w) > 0.5,
            "depth": torch.rand(1, h, w) * 4, "depth_mask": torch.rand(h, w) > 0.2}
    outputs = {"semantic": torch.randn(19, h, w), "instance": torch.randn(2, h, w), "depth": torch.rand(1, h, w) * 9}
    fig = frame_figure(item, outputs, "frame")
    grid, bars = fig.axes[:8], fig.axes[8:]
    for ax in grid:
        assert ax.images or ax.get_legend() is not None or ax.texts, ax.get_title()
    legend = grid[4].get_legend()
    assert legend is not None and "road" in [t.get_text() for t in legend.get_texts()]
    disparity = [ax.images[0] for ax in grid if "disparity" in ax.get_title()]
    assert len(disparity) == 2 and disparity[0].get_clim() == disparity[1].get_clim()
    assert disparity[0].get_clim()[1] == pytest.approx(float(outputs["depth"].max()))
    assert len(bars) == 2  # one colour bar per disparity panel


def test_plots_curves_on_a_missing_file_is_one_line(tmp_path, capsys):
    assert plots.main(["curves", str(tmp_path / "nothing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training log not found") and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- cityscapesscripts not needed to train

def test_the_label_table_is_cityscapesscripts_own():
    from cityscapesscripts.helpers.labels import labels

    from data.labels import _LABELS

    assert [tuple(lb) for lb in _LABELS] == [tuple(lb) for lb in labels]


def test_train_and_data_tools_import_without_cityscapesscripts():
    script = textwrap.dedent("""
        import sys
        class Missing:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "cityscapesscripts":
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, Missing())
        import train, data.check, data.show  # noqa
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
