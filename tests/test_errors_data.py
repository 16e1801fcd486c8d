"""Dataset errors are one line naming the file (issue 23): the data tools' bad paths and counts, a city folder
that cannot be listed (it used to be skipped silently), a corrupt image read in a DataLoader worker, and more
frames asked for than a split holds."""

import os
import shutil
from pathlib import Path

import pytest

import evaluate
import train
from data import cache as data_cache
from data import check as data_check
from data import show as data_show
from data.cityscapes import CityscapesMultiTask, DataError
from data.synthetic import cli as synthetic_cli

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=2", "optim.iterations=1"]


def one_line_exit(call) -> str:
    """Run `call`, expect a non-zero exit with a one-line message; return it."""
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code not in (0, None)
    text = str(e.value.code)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("args, match", [(["--train", "-5"], "--train: must be 0 or more, got -5"),
                                         (["--val", "-1"], "--val: must be 0 or more"),
                                         (["--workers", "0"], "--workers: must be at least 1")])
def test_synthetic_refuses_negative_counts(args, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        synthetic_cli.main(["--out", str(tmp_path / "ds"), "--size", "32x64", *args])
    assert e.value.code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_synthetic_out_that_is_a_file_is_one_line(tmp_path):
    out = tmp_path / "file"
    out.write_text("keep me")
    msg = one_line_exit(lambda: synthetic_cli.main(["--out", str(out), "--train", "1", "--val", "0", "--size",
                                                    "32x64", "--workers", "1"]))
    assert msg.startswith(f"error: --out {out}") and out.read_text() == "keep me"


def test_show_path_errors_are_one_line(synthetic_root, tmp_path, capsys):
    msg = one_line_exit(lambda: data_show.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "a.png")]))
    assert "dataset root is not a directory" in msg
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = one_line_exit(lambda: data_show.main([str(synthetic_root), "--out", str(blocker / "a.png")]))
    assert msg.startswith("error: ")
    with pytest.raises(SystemExit) as e:
        data_show.main([str(synthetic_root), "--out", str(tmp_path)])
    assert e.value.code == 2 and "is a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        data_show.main([str(synthetic_root), "--out", str(tmp_path / "a.png"), "--size", "axb"])
    assert e.value.code == 2 and "size must be HxW" in capsys.readouterr().err


def test_cache_out_that_is_a_file_is_one_line(synthetic_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    msg = one_line_exit(lambda: data_cache.main([str(synthetic_root), "--size", "32x64", "--out", str(blocker),
                                                 "--workers", "1", "--quiet"]))
    assert msg.startswith("error: ") and blocker.read_text() == "x"


def test_a_city_folder_that_cannot_be_listed_is_an_error(synthetic_root, tmp_path, monkeypatch, capsys):
    """As root, chmod cannot make a folder unreadable: the listing itself fails here, as it does for a user
    without permission. Training, evaluation and data.check used to skip the folder's frames."""
    city = next(p for p in sorted((synthetic_root / "leftImg8bit" / "train").iterdir()) if p.is_dir())
    real = os.scandir

    def scandir(path="."):
        if Path(path) == city:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=f"{city}: cannot list this city folder"):
        CityscapesMultiTask(synthetic_root, "train", cache="off")
    assert data_check.main([str(synthetic_root), "--split", "train", "--stats-split", ""]) != 0
    seen = capsys.readouterr()
    assert "cannot list this city folder" in seen.out + seen.err


def test_a_corrupt_image_read_in_a_worker_is_one_line_naming_it(synthetic_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("cache"))
    images = sorted((root / "leftImg8bit").glob("*/*/*.png"))
    for image in images:
        image.write_bytes(image.read_bytes()[:200])  # truncated: cv2 cannot decode it
    msg = one_line_exit(lambda: train.main([*TINY, f"data.root={root}", f"run_dir={tmp_path / 'run'}",
                                            "data.num_workers=1", "data.cache=off"]))
    assert "cannot decode the PNG" in msg and "_leftImg8bit.png" in msg and "DataLoader worker" not in msg


def test_more_frames_than_the_split_holds_is_refused(synthetic_root, tmp_path):
    msg = one_line_exit(lambda: train.main([*TINY, f"data.root={synthetic_root}", f"run_dir={tmp_path / 'run'}",
                                            "data.train_frames=1000"]))
    assert "data.train_frames=1000 but split 'train'" in msg and "has only 4 frames" in msg
    assert not (tmp_path / "run").exists()


def test_evaluate_corrupt_image_in_a_worker_is_one_line(synthetic_root, tmp_path):
    run = tmp_path / "run"
    train.main([*TINY, f"data.root={synthetic_root}", f"run_dir={run}"])
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root, ignore=shutil.ignore_patterns("cache"))
    for image in (root / "leftImg8bit" / "val").glob("*/*.png"):
        image.write_bytes(image.read_bytes()[:200])
    msg = one_line_exit(lambda: evaluate.main(["--checkpoint", str(run / "checkpoint.pt"), "--root", str(root),
                                               "--workers", "1"]))
    assert "cannot decode the PNG" in msg
