"""`python -m data.npy convert --depth png`: the raw 16-bit disparity PNG value / 65535, the value range reported
for the MTAN authors' preprocessed files (docs/protocols.md, "Depth")."""

from __future__ import annotations

import numpy as np
import pytest

from data import npy


def _tree(cityscapes_tree):
    labels = np.full((64, 128), 7, np.uint8)
    disparity = np.zeros((64, 128), np.uint16)
    disparity[:, :64] = 257
    disparity[:, 64:96] = 1  # p = 1: zero disparity (infinitely far), valid in the PNG encoding
    disparity[:, 96:] = 32257  # the largest PNG value reported for Cityscapes in lorenmt/mtan issue #25
    for split in ("train", "val"):
        cityscapes_tree.add(labels, disparity=disparity, split=split)
    return cityscapes_tree.root


def test_png_depth_is_the_raw_value_over_65535(cityscapes_tree, tmp_path, capsys):
    root = _tree(cityscapes_tree)
    assert npy.main(["convert", str(root), str(tmp_path / "png"), "--size", "32x64", "--depth", "png"]) == 0
    depth = np.load(tmp_path / "png" / "train" / "depth" / "0.npy")
    assert depth.shape == (32, 64, 1) and depth.dtype == np.float32
    assert depth[0, 0, 0] == pytest.approx(257 / 65535) and depth[0, 40, 0] == pytest.approx(1 / 65535)
    assert depth[0, 60, 0] == pytest.approx(0.4922, abs=5e-5)  # issue #25's maximum of the MTAN files
    # the default stays the disparity in pixels at the output width; p = 1 (zero disparity) is then 0 = masked
    assert npy.main(["convert", str(root), str(tmp_path / "px"), "--size", "32x64"]) == 0
    px = np.load(tmp_path / "px" / "train" / "depth" / "0.npy")
    assert px[0, 0, 0] == pytest.approx(0.5) and px[0, 40, 0] == 0.0


def test_an_unknown_depth_unit_is_a_one_line_error(cityscapes_tree, tmp_path):
    with pytest.raises(npy.DataError, match="--depth must be one of pixels, png"):
        npy.convert(_tree(cityscapes_tree), tmp_path / "x", size=(32, 64), depth_units="metres")
    assert not (tmp_path / "x").exists()
