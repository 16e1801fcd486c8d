"""Loader errors name the offending file and say what is wrong with it."""

import re

import cv2
import numpy as np
import pytest

from data import check
from data.cityscapes import CityscapesMultiTask, DataError

ROAD = 7


def _good(cityscapes_tree, **kwargs):
    labels = np.full((4, 8), ROAD, np.uint8)
    return cityscapes_tree.add(labels, disparity=np.full((4, 8), 257, np.uint16), **kwargs)


def test_missing_disparity_file_is_named(cityscapes_tree):
    paths = _good(cityscapes_tree)
    paths["disparity"].unlink()
    with pytest.raises(DataError, match=re.escape(str(paths["disparity"]))):
        CityscapesMultiTask(cityscapes_tree.root, "train")


def test_file_vanishing_after_start_is_named(cityscapes_tree):
    paths = _good(cityscapes_tree)
    data = CityscapesMultiTask(cityscapes_tree.root, "train")
    paths["instance_ids"].unlink()
    with pytest.raises(DataError, match=re.escape(f"{paths['instance_ids']}: file is missing")):
        data[0]


def test_truncated_png_is_named(cityscapes_tree):
    paths = _good(cityscapes_tree)
    raw = paths["label_ids"].read_bytes()
    paths["label_ids"].write_bytes(raw[: len(raw) // 2])
    data = CityscapesMultiTask(cityscapes_tree.root, "train")
    with pytest.raises(DataError, match=re.escape(f"{paths['label_ids']}: cannot decode the PNG (truncated")):
        data[0]


def test_unknown_label_id_is_named(cityscapes_tree):
    labels = np.full((4, 8), ROAD, np.uint8)
    labels[1, 2] = 200
    labels[2, 2] = 34
    paths = cityscapes_tree.add(labels)
    with pytest.raises(DataError, match=re.escape(f"{paths['label_ids']}: unknown label ids [34, 200]")):
        CityscapesMultiTask(cityscapes_tree.root, "train")[0]


def test_mismatched_sizes_are_named(cityscapes_tree):
    paths = _good(cityscapes_tree)
    cv2.imwrite(str(paths["disparity"]), np.full((4, 6), 257, np.uint16))
    message = f"{paths['disparity']}: size (4, 6) differs from the image's (4, 8)"
    with pytest.raises(DataError, match=re.escape(message)):
        CityscapesMultiTask(cityscapes_tree.root, "train")[0]


def test_wrong_bit_depth_is_named(cityscapes_tree):
    paths = _good(cityscapes_tree)
    cv2.imwrite(str(paths["disparity"]), np.full((4, 8), 3, np.uint8))
    with pytest.raises(DataError, match=re.escape(f"{paths['disparity']}: expected 16-bit")):
        CityscapesMultiTask(cityscapes_tree.root, "train")[0]


def test_root_and_split_errors(cityscapes_tree, monkeypatch):
    _good(cityscapes_tree)
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(DataError, match="CITYSCAPES_DATASET is not set"):
        CityscapesMultiTask(None, "train")
    monkeypatch.setenv("CITYSCAPES_DATASET", str(cityscapes_tree.root))
    assert len(CityscapesMultiTask(None, "train")) == 1
    with pytest.raises(DataError, match=r"no such split directory \(splits found: \['train'\]\)"):
        CityscapesMultiTask(None, "val")
    with pytest.raises(DataError, match="dataset root is not a directory"):
        CityscapesMultiTask(cityscapes_tree.root / "nowhere", "train")


def test_check_tool_reports_problems_and_exits_non_zero(cityscapes_tree, capsys):
    _good(cityscapes_tree)
    bad = _good(cityscapes_tree, name="bochum_000000_000019")
    _good(cityscapes_tree, split="val", name="frankfurt_000000_000019")  # both splits training reads
    assert check.main([str(cityscapes_tree.root)]) == 0
    out = capsys.readouterr().out
    assert "train: 2 frames in 2 cities, disparity valid on 100.0% of pixels" in out and out.endswith("OK\n")
    bad["disparity"].write_bytes(b"not a png")
    bad["label_ids"].unlink()
    assert check.main([str(cityscapes_tree.root)]) == 1
    out = capsys.readouterr().out
    assert f"{bad['label_ids']}: file is missing" in out
    assert "FAILED" in out
    bad["label_ids"].write_bytes(b"")
    assert check.main([str(cityscapes_tree.root), "--split", "train"]) == 1
    assert f"{bad['label_ids']}: cannot decode" in capsys.readouterr().out
