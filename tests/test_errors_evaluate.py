"""evaluate.py faults (issue 23): output paths are checked before any frame is scored, a write that still fails
loses no printed report, Ctrl-C is one line with status 130, and --device cuda without a GPU is one line."""

import pytest
import torch

import evaluate
import train

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "eval_batch_size=2", "optim.iterations=1",
        "data.train_frames=2", "data.val_frames=2"]


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("errors-evaluate") / "run"
    train.main([*TINY, f"data.root={synthetic_root}", f"run_dir={run}"])
    return run / "checkpoint.pt"


def _no_scoring(monkeypatch):
    """Fail the test if a frame is scored."""
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *a, **k: pytest.fail("scored before checking --out"))


@pytest.mark.parametrize("flag, target, match", [
    ("--out", "dir", "is a directory; give a file name"),
    ("--out", "under_file", "cannot write into"),
    ("--figures", "file", "is a file; give a folder"),
    ("--figures", "under_file", "cannot write into"),
])
def test_unwritable_outputs_are_refused_before_scoring(checkpoint, synthetic_root, tmp_path, monkeypatch, flag,
                                                       target, match):
    _no_scoring(monkeypatch)
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    path = {"dir": tmp_path / "dir", "file": tmp_path / "file", "under_file": tmp_path / "file" / "m.json"}[target]
    with pytest.raises(SystemExit, match=f"error: {flag} .*{match}"):
        evaluate.main(["--checkpoint", str(checkpoint), "--root", str(synthetic_root), flag, str(path)])
    assert (tmp_path / "file").read_text() == "x"


def test_a_write_that_fails_anyway_keeps_the_printed_report(checkpoint, synthetic_root, tmp_path, monkeypatch,
                                                            capsys):
    def full_disk(path, obj):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "write_json", full_disk)
    with pytest.raises(SystemExit, match=r"error: cannot write --out .*No space left on device.*printed above"):
        evaluate.main(["--checkpoint", str(checkpoint), "--root", str(synthetic_root), "--out",
                       str(tmp_path / "m.json")])
    assert "mIoU" in capsys.readouterr().out


def test_ctrl_c_in_evaluate_is_one_line_and_status_130(checkpoint, synthetic_root, tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_model", interrupted)
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(checkpoint), "--root", str(synthetic_root), "--out",
                       str(tmp_path / "m.json")])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_device_cuda_without_a_gpu_is_one_line(checkpoint, synthetic_root):
    with pytest.raises(SystemExit, match="error: --device cuda but no CUDA GPU is usable here"):
        evaluate.main(["--checkpoint", str(checkpoint), "--root", str(synthetic_root), "--device", "cuda"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_train_device_cuda_without_a_gpu_is_one_line(synthetic_root, tmp_path):
    with pytest.raises(SystemExit, match="error: device=cuda but no CUDA GPU is usable here"):
        train.main([*TINY, f"data.root={synthetic_root}", f"run_dir={tmp_path / 'run'}", "device=cuda"])
    assert not (tmp_path / "run").exists()
