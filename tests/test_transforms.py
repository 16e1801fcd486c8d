"""Augmentation keeps every target consistent with the image: flip, scale, crop, jitter."""

import numpy as np
import pytest
import torch

from data.cityscapes import CityscapesMultiTask, build_item, read_sample
from data.transforms import Augment, Geometry, Sample, apply_geometry, hflip, normalize

ROAD, SKY, CAR, PERSON = 7, 23, 26, 24


def _frame(cityscapes_tree):
    """32x64 frame: three irregular instances, road with disparity 1 px, sky (no disparity) on top."""
    labels = np.full((32, 64), ROAD, np.uint8)
    labels[:8] = SKY
    inst = labels.astype(np.uint16)
    png = np.full((32, 64), 257, np.uint16)
    png[:8] = 0
    png[20:24, 40:50] = 0  # a hole
    shapes = {
        26000: (CAR, np.s_[10:20, 5:25], 513),  # d = 2
        26001: (CAR, np.s_[14:30, 30:36], 769),  # d = 3
        24000: (PERSON, np.s_[9:26, 52:55], 1025),  # d = 4
    }
    for iid, (label, region, p) in shapes.items():
        labels[region], inst[region], png[region] = label, iid, p
    labels[19, 5:15] = inst[19, 5:15] = ROAD  # cut a notch so the car is not a rectangle
    png[19, 5:15] = 257
    paths = cityscapes_tree.add(labels, inst, png)
    return paths, inst


def _expected_centroids(inst):
    """Centroids computed here with plain numpy, independently of data.targets."""
    out = {}
    for iid in (26000, 26001, 24000):
        ys, xs = np.nonzero(inst == iid)
        out[iid] = (xs.mean(), ys.mean())
    return out


def _sample(cityscapes_tree):
    _frame(cityscapes_tree)
    data = CityscapesMultiTask(cityscapes_tree.root, "train")
    sample = read_sample(data.frames[0])
    sample.image = sample.image[..., ::-1]  # BGR -> RGB, as the loader does
    return normalize(sample)


def _assert_samples_equal(a: Sample, b: Sample):
    for key in ("image", "label_ids", "instance_ids", "disparity"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert a.disparity_scale == b.disparity_scale
    assert a.centroids.keys() == b.centroids.keys()
    for k in a.centroids:
        np.testing.assert_allclose(a.centroids[k], b.centroids[k], atol=1e-9)


def test_flip_twice_is_identity_for_every_key(cityscapes_tree):
    sample = _sample(cityscapes_tree)
    _assert_samples_equal(hflip(hflip(sample)), sample)
    item = build_item(sample)
    flipped = build_item(hflip(sample))
    twice = build_item(hflip(hflip(sample)))
    for key in item:
        assert torch.equal(twice[key], item[key]), key
    # One flip mirrors every map and negates dx only.
    for key in ("image", "semantic", "instance_mask", "depth", "depth_mask"):
        assert torch.equal(flipped[key], item[key].flip(-1)), key
    # (W - 1 - cx) - x' and -(cx - x) agree up to float32 rounding.
    torch.testing.assert_close(flipped["instance"][0], -item["instance"][0].flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped["instance"][1], item["instance"][1].flip(-1), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "geometry",
    [
        Geometry(size=(32, 64), crop=None, flip=True),
        Geometry(size=(45, 90), crop=(7, 13, 24, 40), flip=False),  # scale 1.4, crop inside
        Geometry(size=(64, 128), crop=(20, 50, 32, 32), flip=True),  # scale 2, crop inside
        Geometry(size=(22, 45), crop=(-5, -9, 32, 64), flip=True),  # scale 0.7, crop bigger: padded
    ],
)
def test_vectors_point_at_transformed_centroids(cityscapes_tree, geometry):
    sample = _sample(cityscapes_tree)
    inst = sample.instance_ids
    expected = _expected_centroids(inst)
    h1, w1 = geometry.size
    out = apply_geometry(sample, geometry)
    item = build_item(out)
    top, left, ch, cw = geometry.crop or (0, 0, h1, w1)
    assert item["semantic"].shape == (ch, cw)
    mask = item["instance_mask"].numpy()
    assert mask.any()
    ys, xs = np.nonzero(mask)
    dx, dy = item["instance"].numpy()[:, ys, xs]
    ids = out.instance_ids[ys, xs]
    for iid, (cx, cy) in expected.items():
        # Pixel-centre mapping to the resized grid, then the crop offset, then the mirror.
        ex = (cx + 0.5) * w1 / 64 - 0.5 - left
        ey = (cy + 0.5) * h1 / 32 - 0.5 - top
        if geometry.flip:
            ex = cw - 1 - ex
        sel = ids == iid
        np.testing.assert_allclose(xs[sel] + dx[sel], ex, atol=1e-4)
        np.testing.assert_allclose(ys[sel] + dy[sel], ey, atol=1e-4)


def test_disparity_is_multiplied_by_the_horizontal_scale(cityscapes_tree):
    sample = _sample(cityscapes_tree)
    item = build_item(apply_geometry(sample, Geometry(size=(48, 96), crop=(4, 20, 32, 64), flip=True)))
    semantic, depth, valid = item["semantic"].numpy(), item["depth"].numpy()[0], item["depth_mask"].numpy()
    # Road had d = 1, car 26000 d = 2, car 26001 d = 3, the person d = 4: x 96 / 64 = 1.5.
    road = (semantic == 0) & valid
    assert road.any() and np.all(depth[road] == 1.5)
    values = set(np.unique(depth[valid]).tolist())
    assert values == {0.0, 1.5, 3.0, 4.5, 6.0}  # 0 = sky
    assert np.all(depth[semantic == 10] == 0) and np.all(valid[semantic == 10])


def test_crop_fill_values(cityscapes_tree):
    sample = _sample(cityscapes_tree)
    # 32x64 image inside a 40x80 window at offset (-3, -7): a 3-row top and 7-column left border.
    item = build_item(apply_geometry(sample, Geometry(size=(32, 64), crop=(-3, -7, 40, 80))))
    pad = np.ones((40, 80), bool)
    pad[3:35, 7:71] = False
    assert torch.all(item["semantic"][pad] == 255)
    assert not item["instance_mask"][pad].any() and not item["depth_mask"][pad].any()
    assert torch.all(item["instance"][:, pad] == 0) and torch.all(item["depth"][0][pad] == 0)
    assert torch.all(item["image"][:, pad] == 0)  # the mean colour after normalisation
    inner = build_item(sample)
    for key in item:
        assert torch.equal(item[key][..., 3:35, 7:71], inner[key]) or key == "instance", key
    # Vectors inside are the originals: the crop only shifted centroids and pixels alike.
    torch.testing.assert_close(item["instance"][:, 3:35, 7:71], inner["instance"], atol=1e-5, rtol=0)


def test_random_augmentation_is_reproducible_and_consistent(cityscapes_tree):
    _, inst = _frame(cityscapes_tree)
    aug = Augment(flip=True, scale=(0.7, 2.0), crop=(24, 40), jitter=True)
    data = CityscapesMultiTask(cityscapes_tree.root, "train", augment=aug)
    torch.manual_seed(3)
    first = [data[0] for _ in range(6)]
    torch.manual_seed(3)
    again = [data[0] for _ in range(6)]
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len({a["image"].sum().item() for a in first}) > 1  # draws differ between items
    for item in first:
        assert item["image"].shape == (3, 24, 40)
        mask = item["instance_mask"].numpy()
        ys, xs = np.nonzero(mask)
        votes = np.stack([xs + item["instance"][0].numpy()[mask], ys + item["instance"][1].numpy()[mask]], 1)
        # Every pixel of one instance votes for the same point: at most three distinct points.
        assert len(np.unique(np.round(votes, 3), axis=0)) <= 3


def test_jitter_touches_the_image_only_and_true_means_flip(cityscapes_tree):
    _frame(cityscapes_tree)
    plain = CityscapesMultiTask(cityscapes_tree.root, "train")[0]
    torch.manual_seed(0)
    jittered = CityscapesMultiTask(cityscapes_tree.root, "train", augment=Augment(flip=False, jitter=True))[0]
    assert not torch.equal(jittered["image"], plain["image"])
    for key in plain:
        if key != "image":
            assert torch.equal(jittered[key], plain[key]), key
    flips = CityscapesMultiTask(cityscapes_tree.root, "train", augment=True)
    torch.manual_seed(0)
    seen = {bool(torch.equal(flips[0]["semantic"], plain["semantic"])) for _ in range(12)}
    assert seen == {True, False}  # some items flipped, some not; nothing else changes shape
    with pytest.raises(TypeError, match="augment"):
        CityscapesMultiTask(cityscapes_tree.root, "train", augment="flip")
