"""Training faults (issue 23): Ctrl-C while a checkpoint is written, honest messages about the checkpoint kept,
what a resume checks (finite values, the same dataset, an intact log), no duplicate validation line after a
failed final write, and wandb's mode."""

import io
import json
import os
import shutil
import signal
import sys
import types
from pathlib import Path

import pytest
import torch

import engine.rundir
import infra.atomic
import train
from engine.checkpoint import save_checkpoint

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true",
        "data.train_frames=4", "data.val_frames=2", "optim.iterations=2", "ckpt_every=1"]


def args_for(root, run, *extra):
    return [*TINY, f"data.root={root}", f"run_dir={run}", *extra]


@pytest.fixture(scope="module")
def finished(synthetic_root, tmp_path_factory):
    """A finished 2-step run (checkpoint at steps 1 and 2) to copy from."""
    run = tmp_path_factory.mktemp("errors-training") / "run"
    train.main(args_for(synthetic_root, run))
    return run


@pytest.fixture
def unfinished(finished, tmp_path):
    """A copy of the finished run without metrics.json: the next train.py call resumes it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "metrics.json").unlink()
    return run


class _InterruptingFile(io.FileIO):
    """A checkpoint's temporary file that receives Ctrl-C in the middle of torch.save's writes."""

    writes = 0

    def write(self, b):
        _InterruptingFile.writes += 1
        if _InterruptingFile.writes == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(b)


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler for the test: a test run started in the background (`pytest ... &`) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_checkpoint_writes(monkeypatch):
    real = os.fdopen

    def fdopen(fd, mode="r", *a, **k):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "checkpoint.pt" in name and "b" in mode:
            _InterruptingFile.writes = 0
            return _InterruptingFile(fd, "wb")
        return real(fd, mode, *a, **k)

    monkeypatch.setattr(infra.atomic.os, "fdopen", fdopen)


def test_ctrl_c_while_a_checkpoint_is_written_is_delivered_after_it(tmp_path, monkeypatch, ctrl_c_raises):
    """torch.save turns an exception raised inside its writes into 'unexpected pos' (a RuntimeError): the
    signal is held back until the new checkpoint is in place, then it is an ordinary Ctrl-C."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(10)})
    _interrupt_checkpoint_writes(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.ones(100000)})
    assert torch.load(path, weights_only=True)["step"] == 2  # whole: written before the interruption counted
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_ctrl_c_during_a_training_checkpoint_exits_130_with_a_checkpoint(synthetic_root, tmp_path, monkeypatch,
                                                                         capsys, ctrl_c_raises):
    _interrupt_checkpoint_writes(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main(args_for(synthetic_root, run))
    assert e.value.code == 130
    assert "interrupted (Ctrl-C); last checkpoint kept" in capsys.readouterr().err
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 1
    monkeypatch.undo()
    train.main(args_for(synthetic_root, run))  # resumes
    assert (run / "metrics.json").exists()


def test_non_finite_stop_without_a_checkpoint_does_not_claim_one(synthetic_root, tmp_path):
    with pytest.raises(SystemExit) as e:
        train.main(args_for(synthetic_root, tmp_path / "run", "optim.lr=1.0e+38", "optim.iterations=3"))
    assert "non-finite weights at step 1" in str(e.value.code)
    assert "no checkpoint saved yet" in str(e.value.code) and "last good checkpoint kept" not in str(e.value.code)


def test_a_non_finite_checkpoint_is_not_resumed(unfinished, synthetic_root):
    ckpt = torch.load(unfinished / "checkpoint.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name][...] = float("nan")
    torch.save(ckpt, unfinished / "checkpoint.pt")
    with pytest.raises(SystemExit, match=rf"error: .*checkpoint\.pt holds non-finite values \(model\.{name}"):
        train.main(args_for(synthetic_root, unfinished))
    assert not (unfinished / "metrics.json").exists()


def test_resuming_on_another_dataset_root_is_refused(unfinished, synthetic_root, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(synthetic_root, other)
    with pytest.raises(SystemExit, match=f"was trained on {synthetic_root.resolve()} but this run reads {other}"):
        train.main(args_for(other, unfinished))
    train.main(args_for(synthetic_root, unfinished))  # the same root resumes
    assert (unfinished / "metrics.json").exists()


def test_a_damaged_middle_line_of_the_log_is_reported(unfinished, synthetic_root):
    log = unfinished / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[0] = '{"step": 1, "loss/tot\n'
    log.write_text("".join(lines))
    with pytest.raises(SystemExit, match=r"metrics\.jsonl:1 is damaged .* and is not the last line"):
        train.main(args_for(synthetic_root, unfinished))
    assert log.read_text() == "".join(lines)  # nothing dropped


def test_a_failed_final_write_then_a_rerun_logs_validation_once(synthetic_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = engine.rundir.write_json

    def full_disk(path, obj):
        if Path(path).name == "metrics.json":
            raise OSError(28, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(engine.rundir, "write_json", full_disk)
    with pytest.raises(SystemExit, match="No space left on device"):
        train.main(args_for(synthetic_root, run))
    monkeypatch.undo()
    train.main(args_for(synthetic_root, run))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum(any(k.startswith("val/") for k in r) for r in rows) == 1
    assert [r["step"] for r in rows] == [1, 2, 2]


def _fake_wandb(monkeypatch) -> list:
    calls = []
    fake = types.SimpleNamespace(init=lambda **k: calls.append((k, os.environ.get("WANDB_ERROR_REPORTING")))
                                 or types.SimpleNamespace(log=lambda *a, **k: None, finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return calls


@pytest.mark.parametrize("configured, env, mode", [("disabled", "offline", "offline"), ("offline", "disabled", None),
                                                   ("offline", None, "offline"), ("online", "dryrun", "offline")])
def test_wandb_mode_honours_the_environment_and_offline_reports_nothing(configured, env, mode, tmp_path,
                                                                        monkeypatch):
    from engine.config import load_config
    from engine.rundir import JsonlLog

    calls = _fake_wandb(monkeypatch)
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    cfg = load_config([], [f"wandb={configured}"])
    JsonlLog(tmp_path / "metrics.jsonl", True, cfg.wandb, cfg).close()
    if mode is None:
        assert calls == []
    else:
        assert calls[0][0]["mode"] == mode
        assert calls[0][1] == "false"  # wandb's error reports (Sentry) would go out over the network


def test_an_invalid_wandb_mode_in_the_environment_is_one_line(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(SystemExit, match="WANDB_MODE='sometimes' in the environment; expected one of"):
        train.main(args_for(synthetic_root, tmp_path / "run"))

