"""MultiTaskMetrics equals cityscapesscripts' evalPixelLevelSemanticLabeling on a tiny Cityscapes tree."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling import args as official_args
from cityscapesscripts.helpers.labels import name2label
from PIL import Image

from data.labels import CLASS_NAMES, ID_TO_TRAINID, TRAINID_TO_ID
from evaluation import MultiTaskMetrics
from evaluation.official import run_pixel_level, to_full_resolution, write_prediction_png

FRAMES = ("aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313")
H, W, BLOCK = 64, 128, 8
TRAIN_ID = name2label["train"].id  # absent from ground truth and prediction: NaN on both sides
BUS_ID = name2label["bus"].id  # only ever predicted: IoU 0 on both sides


def write_gt_tree(root: Path, split: str = "val", seed: int = 0) -> list[np.ndarray]:
    """labelIds and instanceIds PNGs in the Cityscapes layout, 8x8 blocks of random labels."""
    rng = np.random.default_rng(seed)
    ids = [lb for lb in range(34) if lb not in (TRAIN_ID, BUS_ID)]  # includes ignored ids (0, 4, 9, ...)
    gts = []
    for frame in FRAMES:
        blocks = rng.choice(ids, size=(H // BLOCK, W // BLOCK)).astype(np.uint8)
        label_ids = np.kron(blocks, np.ones((BLOCK, BLOCK), np.uint8))
        # Each block of an instance class is one object (id * 1000 + k); other classes keep the plain id.
        k = np.arange(blocks.size).reshape(blocks.shape)
        inst_blocks = np.where(np.isin(blocks, [24, 25, 26, 27, 32, 33]), blocks.astype(np.int32) * 1000 + k, blocks)
        instance_ids = np.kron(inst_blocks, np.ones((BLOCK, BLOCK), np.int32))
        folder = root / "gtFine" / split / frame.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_ids).save(folder / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(instance_ids.astype(np.uint16)).save(folder / f"{frame}_gtFine_instanceIds.png")
        gts.append(label_ids)
    return gts


def random_predictions(gts: list[np.ndarray], seed: int = 1) -> list[np.ndarray]:
    """trainIds: ground truth with about half of the 4x4 blocks replaced by random classes (never train)."""
    rng = np.random.default_rng(seed)
    classes = np.array([t for t in range(len(CLASS_NAMES)) if TRAINID_TO_ID[t] != TRAIN_ID])
    preds = []
    for gt in gts:
        train_ids = ID_TO_TRAINID[gt].astype(np.int64)
        noise = np.kron(rng.choice(classes, size=(H // 4, W // 4)), np.ones((4, 4), np.int64))
        keep = np.kron(rng.random((H // 4, W // 4)) < 0.5, np.ones((4, 4), bool)) & (train_ids != 255)
        preds.append(np.where(keep, train_ids, noise))
    return preds


def ours(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict:
    """MultiTaskMetrics on the same predictions, one update per frame."""
    m = MultiTaskMetrics()
    for gt, pred in zip(gts, preds):
        m.update({"semantic": torch.from_numpy(pred)[None]}, {"semantic": torch.from_numpy(ID_TO_TRAINID[gt])[None]})
    return m.compute()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    gts = write_gt_tree(root)
    preds = random_predictions(gts)
    pred_dir = root / "pred"
    for frame, pred in zip(FRAMES, preds):
        write_prediction_png(pred_dir, frame, pred)
    return root, gts, preds, pred_dir, run_pixel_level(root, "val", pred_dir)


def test_every_class_iou_equals_official(case):
    root, gts, preds, _, official = case
    mine = ours(gts, preds)
    assert official["frames"] == 3
    assert list(official["class_iou"]) == list(CLASS_NAMES)
    for name in CLASS_NAMES:
        a, b = official["class_iou"][name], mine[f"semantic/iou/{name}"]
        assert (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-9, name
    assert math.isnan(official["class_iou"]["train"])
    assert official["class_iou"]["bus"] == 0.0
    assert mine["semantic/miou"] == pytest.approx(official["iou_class"], abs=1e-9)
    assert 20 < official["iou_class"] < 90  # a real mix of right and wrong pixels


def test_instance_iou_matches_hand_computation(case):
    # iIoU of "car" by hand: TP and FN pixels of each GT car weigh avgClassSize / car size; FP are the
    # pixels predicted car whose ground truth is another evaluated class (not weighted).
    root, gts, preds, _, official = case
    car_id, car_train = name2label["car"].id, name2label["car"].trainId
    evaluated = np.array([not lb.ignoreInEval for lb in sorted(name2label.values(), key=lambda lb: lb.id)
                          if lb.id >= 0])
    tp_w = fn_w = fp = 0.0
    for frame, gt, pred in zip(FRAMES, gts, preds):
        inst = np.array(Image.open(root / "gtFine/val" / frame.split("_")[0] / f"{frame}_gtFine_instanceIds.png"))
        for obj in np.unique(inst[inst // 1000 == car_id]):
            mask = inst == obj
            weight = official_args.avgClassSize["car"] / mask.sum()
            tp_w += (pred[mask] == car_train).sum() * weight
            fn_w += (pred[mask] != car_train).sum() * weight
        fp += ((pred == car_train) & (gt != car_id) & evaluated[gt]).sum()
    assert official["class_iiou"]["car"] == pytest.approx(100 * tp_w / (tp_w + fp + fn_w), abs=1e-9)
    assert set(official["class_iiou"]) <= {"person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"}
    assert set(official["category_iiou"]) == {"human", "vehicle"}
    assert not math.isnan(official["iiou_class"]) and not math.isnan(official["iou_category"])


def test_subset_of_frames_and_env_isolation(case, monkeypatch, tmp_path):
    root, gts, preds, pred_dir, _ = case
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path / "elsewhere"))  # must not leak into the evaluator
    monkeypatch.chdir(tmp_path)
    one = run_pixel_level(root, "val", pred_dir, frames=[FRAMES[1]])
    assert one["frames"] == 1
    assert one["iou_class"] == pytest.approx(ours(gts[1:2], preds[1:2])["semantic/miou"], abs=1e-9)
    assert list(tmp_path.iterdir()) == []  # the evaluator wrote nothing into the working directory


def test_prediction_png_holds_label_ids(tmp_path):
    path = write_prediction_png(tmp_path, "aachen_000000_000019", np.array([[0, 13], [18, 10]]))
    assert path.name == "aachen_000000_000019_pred.png"
    assert np.array(Image.open(path)).tolist() == [[7, 26], [33, 23]]  # road, car, bicycle, sky
    with pytest.raises(ValueError, match="outside"):
        write_prediction_png(tmp_path, "x_1_2", np.array([[255]]))


def test_missing_prediction_or_ground_truth_is_named(case, tmp_path):
    root = case[0]
    with pytest.raises(FileNotFoundError, match="aachen_000000_000019"):
        run_pixel_level(root, "val", tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_000000_000000"):
        run_pixel_level(root, "val", case[3], frames=["no_such_000000_000000"])
    with pytest.raises(FileNotFoundError, match="test"):
        run_pixel_level(root, "test", case[3])


def test_full_resolution_rescales_vectors_and_disparity():
    outputs = {"semantic": torch.randn(1, 19, 4, 8), "instance": torch.ones(1, 2, 4, 8),
               "depth": torch.full((1, 1, 4, 8), 2.0)}
    full = to_full_resolution(outputs, (16, 64))  # x8 in width, x4 in height
    assert full["semantic"].shape == (1, 19, 16, 64)
    assert torch.all(full["instance"][:, 0] == 8.0) and torch.all(full["instance"][:, 1] == 4.0)
    assert torch.all(full["depth"] == 16.0)


def test_speed_benchmark_agrees_with_official(synthetic_root, capsys):
    from bench.eval import main as bench_main

    threads = torch.get_num_threads()
    try:
        result = bench_main(["--root", str(synthetic_root), "--frames", "3", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)  # the benchmark pins one thread for itself
    assert result["frames"] == 3 and result["max_diff"] < 1e-9
    assert "numbers identical" in capsys.readouterr().out
