"""The dataset tools: data.show pictures, the trivial-loss script, the loader benchmark helpers."""

import math

import cv2
import numpy as np

from bench.data import loader_rate, time_per_item
from bench.trivial_losses import trivial_losses
from data import show
from data.cityscapes import CityscapesMultiTask
from data.labels import TRAIN_PALETTE

ROAD, SKY, CAR = 7, 23, 26


def _frame(cityscapes_tree):
    labels = np.full((4, 8), ROAD, np.uint8)
    labels[0] = SKY
    inst = labels.astype(np.uint16)
    labels[2:4, 2:4], inst[2:4, 2:4] = CAR, 26000  # centroid (2.5, 2.5): |dx| + |dy| = 1 on each pixel
    png = np.full((4, 8), 257 * 2 - 1, np.uint16)  # d = 2
    png[0] = 0
    png[1, 0] = 0  # one invalid road pixel
    return cityscapes_tree.add(labels, inst, png)


def test_trivial_losses_by_hand(cityscapes_tree):
    _frame(cityscapes_tree)
    losses = trivial_losses(CityscapesMultiTask(cityscapes_tree.root, "train"))
    assert losses["semantic"] == math.log(19)
    assert losses["instance"] == 1.0
    # 8 sky pixels (valid at 0) and 23 valid ground/car pixels at d = 2: 46 / 31.
    assert losses["depth"] == 46 / 31


def test_show_renders_four_panels(cityscapes_tree, tmp_path, capsys):
    _frame(cityscapes_tree)
    out = tmp_path / "show.png"
    show.main([str(cityscapes_tree.root), "--split", "train", "--index", "0", "--out", str(out)])
    assert "aachen_000000_000019" in capsys.readouterr().out
    picture = cv2.imread(str(out))[..., ::-1]
    assert picture.shape == (8, 16, 3)
    # Top right: semantic colours from the official palette (road trainId 0 at the bottom row).
    assert picture[3, 8 + 7].tolist() == TRAIN_PALETTE[0].tolist()
    # Bottom left: instance vectors are black off instances, coloured on them.
    assert picture[4 + 1, 0].tolist() == [0, 0, 0] and picture[4 + 2, 2].any()


def test_benchmark_helpers_run(synthetic_root):
    data = CityscapesMultiTask(synthetic_root, "val", size=(32, 64), limit=2)
    assert time_per_item(lambda i: data[i], len(data), repeats=1) > 0
    assert loader_rate(data, workers=0, batch_size=2) > 0
