"""Exact targets on hand-built frames: trainIds, centroid vectors, disparity, sky, instance classes."""

import numpy as np
import pytest
import torch

from data.cityscapes import CityscapesMultiTask
from data.targets import (
    centroid_vectors,
    decode_disparity,
    depth_target,
    instance_centroids,
    instance_mask,
    map_coordinate,
    train_ids,
)

# Label ids (cityscapesscripts): unlabeled 0, ego vehicle 1, road 7, sidewalk 8, building 11,
# sky 23, person 24, rider 25, car 26, truck 27, bus 28, caravan 29, trailer 30, train 31,
# motorcycle 32, bicycle 33.
ROAD, SKY, PERSON, CAR, CARAVAN, TRAILER = 7, 23, 24, 26, 29, 30


def test_train_ids_follow_the_label_table(cityscapes_tree):
    ids = np.array([[0, 1, 7, 8, 11, 23, 24, 25, 26, 29, 30, 31, 32, 33, 9, 17]], np.uint8)
    # By hand from the Cityscapes table: trainIds road 0, sidewalk 1, building 2, pole 5, sky 10,
    # person 11, rider 12, car 13, train 16, motorcycle 17, bicycle 18; the rest ignored.
    expected = [255, 255, 0, 1, 2, 10, 11, 12, 13, 255, 255, 16, 17, 18, 255, 5]
    assert train_ids(ids).tolist() == [expected]
    cityscapes_tree.add(np.repeat(ids, 2, axis=0))
    item = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    assert item["semantic"].dtype == torch.int64
    assert item["semantic"].tolist() == [expected, expected]


def test_instance_mask_keeps_the_eight_evaluated_classes_only():
    ids = np.array([[26001, 24000, 25002, 27000, 28000, 31000, 32000, 33000],
                    [29000, 30000, 26, 24, 7, 0, 23, 33]], np.uint16)  # fmt: skip
    # Caravan (29xxx) and trailer (30xxx) have instances but are not evaluated; groups (plain 26,
    # 24) and stuff are not individual objects.
    assert instance_mask(ids).tolist() == [[True] * 8, [False] * 8]


def test_centroid_vectors_at_file_resolution(cityscapes_tree):
    labels = np.full((4, 8), ROAD, np.uint8)
    inst = labels.astype(np.uint16)
    # An L-shaped car: pixels (x, y) = (1,1) (2,1) (3,1) (1,2): centroid (7/4, 5/4).
    for x, y in [(1, 1), (2, 1), (3, 1), (1, 2)]:
        labels[y, x], inst[y, x] = CAR, 26000
    # A person on (6,2) and (6,3): centroid (6, 2.5). A caravan next to it: no vectors.
    for x, y in [(6, 2), (6, 3)]:
        labels[y, x], inst[y, x] = PERSON, 24001
    labels[3, 7], inst[3, 7] = CARAVAN, 29000
    assert instance_centroids(inst) == {26000: (1.75, 1.25), 24001: (6.0, 2.5)}
    cityscapes_tree.add(labels, inst)
    item = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    dx, dy = item["instance"].numpy()
    expected = {(1, 1): (0.75, 0.25), (2, 1): (-0.25, 0.25), (3, 1): (-1.25, 0.25), (1, 2): (0.75, -0.75),
                (6, 2): (0.0, 0.5), (6, 3): (0.0, -0.5)}  # fmt: skip
    mask = item["instance_mask"].numpy()
    assert sorted(zip(*np.nonzero(mask.T))) == sorted(expected)
    for (x, y), (ex, ey) in expected.items():
        assert (dx[y, x], dy[y, x]) == (ex, ey)
    assert not dx[~mask].any() and not dy[~mask].any()


def test_centroid_vectors_after_resizing_use_pixel_centres(cityscapes_tree):
    labels = np.full((8, 16), ROAD, np.uint8)
    inst = labels.astype(np.uint16)
    # Car on x = 2..5, y = 2..3 plus (6, 3): 9 pixels, centroid (34/9, 23/9) at file resolution.
    labels[2:4, 2:6], inst[2:4, 2:6] = CAR, 26000
    labels[3, 6], inst[3, 6] = CAR, 26000
    cityscapes_tree.add(labels, inst)
    item = CityscapesMultiTask(cityscapes_tree.root, "train", size=(4, 8))[0]
    # Halving: x_out = (x + 0.5) * 8 / 16 - 0.5; output pixel x samples file pixel 2x + 1.
    cx, cy = (34 / 9 + 0.5) / 2 - 0.5, (23 / 9 + 0.5) / 2 - 0.5
    # File pixels (3, 3), (5, 3) are car -> output (1, 1), (2, 1); nothing else is sampled from it.
    mask = item["instance_mask"].numpy()
    assert sorted(zip(*np.nonzero(mask.T))) == [(1, 1), (2, 1)]
    dx, dy = item["instance"].numpy()
    np.testing.assert_allclose([dx[1, 1], dy[1, 1]], [cx - 1, cy - 1], atol=1e-6)
    np.testing.assert_allclose([dx[1, 2], dy[1, 2]], [cx - 2, cy - 1], atol=1e-6)


def test_map_coordinate_and_centroid_table():
    assert map_coordinate(0.5, 2, 1) == 0.0  # two pixels' centres average to the single new centre
    assert map_coordinate(-0.5, 10, 20) == -0.5  # the image edge stays the edge
    assert map_coordinate(3.0, 16, 8) == 1.25
    inst = np.array([[0, 26000], [26000, 24000]], np.uint16)
    vectors, mask = centroid_vectors(inst, {26000: (0.5, 0.5)})
    assert mask.tolist() == [[False, True], [True, False]]  # 24000 has no centroid: masked out
    assert vectors[:, 0, 1].tolist() == [-0.5, 0.5] and vectors[:, 1, 0].tolist() == [0.5, -0.5]
    assert not vectors[:, 1, 1].any()


def test_disparity_decode_and_scaling(cityscapes_tree):
    p = np.array([0, 1, 257, 641, 65535], np.uint16)
    d, valid = decode_disparity(p)
    assert d.tolist() == [0.0, 0.0, 1.0, 2.5, 65534 / 256] and valid.tolist() == [False, True, True, True, True]
    # 2x2 blocks of one value each so that nearest-neighbour halving is unambiguous.
    png = np.kron(np.array([[0, 1, 257, 641], [513, 65535, 0, 257]], np.uint16), np.ones((2, 2), np.uint16))
    labels = np.full(png.shape, ROAD, np.uint8)
    cityscapes_tree.add(labels, disparity=png)
    full = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    assert full["depth"].shape == (1, 4, 8) and full["depth"].dtype == torch.float32
    assert full["depth"][0, ::2, ::2].tolist() == [[0.0, 0.0, 1.0, 2.5], [2.0, 65534 / 256, 0.0, 1.0]]
    assert full["depth_mask"][::2, ::2].tolist() == [[False, True, True, True], [True, True, False, True]]
    half = CityscapesMultiTask(cityscapes_tree.root, "train", size=(2, 4))[0]
    # Halving the width halves disparity; p = 0 stays invalid (nearest neighbour, never blended).
    assert half["depth"][0].tolist() == [[0.0, 0.0, 0.5, 1.25], [1.0, 65534 / 512, 0.0, 0.5]]
    assert half["depth_mask"].tolist() == [[False, True, True, True], [True, True, False, True]]
    wide = CityscapesMultiTask(cityscapes_tree.root, "train", size=(4, 16))[0]
    # Doubling the width: file column x = 4, 5 (p = 257, d = 1) lands on columns 8..11, times 2.
    assert wide["depth"][0, 0, 8:12].tolist() == [2.0, 2.0, 2.0, 2.0]


def test_sky_is_valid_at_zero_and_invalid_pixels_are_masked(cityscapes_tree):
    labels = np.array([[SKY, SKY, ROAD, ROAD]], np.uint8)
    png = np.array([[0, 500, 0, 257]], np.uint16)
    depth, mask = depth_target(png, labels, scale=0.5)
    assert depth.tolist() == [[0.0, 0.0, 0.0, 0.5]]
    assert mask.tolist() == [[True, True, False, True]]
    cityscapes_tree.add(np.repeat(labels, 2, axis=0), disparity=np.repeat(png, 2, axis=0))
    item = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    assert item["depth"][0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert item["depth_mask"][0].tolist() == [True, True, False, True]


@pytest.mark.parametrize("instance_id, evaluated", [(26000, True), (32003, True), (CARAVAN * 1000, False),
                                                    (TRAILER * 1000 + 1, False), (CAR, False), (PERSON, False)])
def test_loader_instance_mask_excludes_caravan_trailer_and_groups(cityscapes_tree, instance_id, evaluated):
    labels = np.full((2, 4), ROAD, np.uint8)
    inst = labels.astype(np.uint16)
    labels[:, 1:3] = instance_id // 1000 if instance_id >= 1000 else instance_id
    inst[:, 1:3] = instance_id
    cityscapes_tree.add(labels, inst)
    item = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    assert item["instance_mask"].tolist() == [[False, evaluated, evaluated, False]] * 2
    expected_dx = [0.0, 0.5, -0.5, 0.0] if evaluated else [0.0] * 4
    assert item["instance"][0].tolist() == [expected_dx] * 2


def test_item_types_and_frame_records(synthetic_root):
    data = CityscapesMultiTask(synthetic_root, "val", size=(32, 64), limit=2)
    assert len(data) == 2
    item = data[0]
    shapes = {k: (v.dtype, tuple(v.shape)) for k, v in item.items()}
    assert shapes == {
        "image": (torch.float32, (3, 32, 64)),
        "semantic": (torch.int64, (32, 64)),
        "instance": (torch.float32, (2, 32, 64)),
        "instance_mask": (torch.bool, (32, 64)),
        "depth": (torch.float32, (1, 32, 64)),
        "depth_mask": (torch.bool, (32, 64)),
    }
    frame = data.frames[0]
    assert frame.name == "frankfurt_000000_000019" and frame.city == "frankfurt"
    assert frame.label_ids.name == "frankfurt_000000_000019_gtFine_labelIds.png"
    assert [f.image for f in data.frames] == sorted(f.image for f in data.frames)
