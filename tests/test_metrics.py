"""MultiTaskMetrics on hand-computed cases: IoU edge cases, ignore pixels, empty masks, accumulation."""

import math

import pytest
import torch
import torch.nn.functional as F

from data.labels import CLASS_NAMES, NUM_CLASSES
from evaluation import MultiTaskMetrics

NAMES = ("a", "b", "c", "d")


def logits(pred: list) -> torch.Tensor:
    """(1, 4, H, W) logits whose argmax is `pred`."""
    return F.one_hot(torch.tensor([pred]), 4).permute(0, 3, 1, 2).float()


def sem_batch(gt: list) -> dict:
    return {"semantic": torch.tensor([gt])}


def same(a: dict, b: dict) -> bool:
    """Dict equality where NaN equals NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_semantic_hand_computed():
    # Valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (0,2); the 255 pixel (predicted 2) counts nowhere.
    # IoU a = 1/(3+1-1) = 1/3, b = 2/(2+3-2) = 2/3, c (only predicted) = 0, d (nowhere) = NaN.
    m = MultiTaskMetrics(4, NAMES)
    m.update({"semantic": logits([[0, 1, 1], [2, 1, 2]])}, sem_batch([[0, 0, 1], [255, 1, 0]]))
    r = m.compute()
    assert r["semantic/iou/a"] == pytest.approx(100 / 3)
    assert r["semantic/iou/b"] == pytest.approx(200 / 3)
    assert r["semantic/iou/c"] == 0.0
    assert math.isnan(r["semantic/iou/d"])
    assert r["semantic/miou"] == pytest.approx((100 / 3 + 200 / 3 + 0) / 3)  # d left out of the mean
    assert r["semantic/pixel_acc"] == pytest.approx(60.0)  # 3 of 5 valid pixels
    assert m.accumulators["semantic"].confusion.tolist() == [[1, 1, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert set(r) == {"semantic/miou", "semantic/pixel_acc"} | {f"semantic/iou/{n}" for n in NAMES}


def test_integer_prediction_map_equals_logits():
    gt, pred = [[0, 0, 1], [255, 1, 0]], [[0, 1, 1], [2, 1, 2]]
    a, b = MultiTaskMetrics(4, NAMES), MultiTaskMetrics(4, NAMES)
    a.update({"semantic": logits(pred)}, sem_batch(gt))
    b.update({"semantic": torch.tensor([pred])}, sem_batch(gt))
    assert same(a.compute(), b.compute())


def test_accumulates_over_the_split_not_mean_of_batches():
    # Batch 1: gt 0000, pred 0000 -> mIoU 100. Batch 2: gt 0111, pred 1111 -> IoU a 0, b 3/4 -> 37.5.
    # Whole split: conf [[4,1],[0,3]] -> IoU a 4/5, b 3/4 -> 77.5 (the mean of batches would be 68.75).
    gts, preds = [[[0, 0, 0, 0]], [[0, 1, 1, 1]]], [[[0, 0, 0, 0]], [[1, 1, 1, 1]]]
    m = MultiTaskMetrics(4, NAMES)
    for g, p in zip(gts, preds):
        m.update({"semantic": logits(p)}, sem_batch(g))
    assert m.compute()["semantic/miou"] == pytest.approx(77.5)
    whole = MultiTaskMetrics(4, NAMES)
    whole.update({"semantic": logits([preds[0][0] + preds[1][0]])}, sem_batch([gts[0][0] + gts[1][0]]))
    assert same(whole.compute(), m.compute())


def test_regression_errors_pixel_weighted():
    # Instance: batch 1 has one masked pixel with |dx|+|dy| = 3+1; batch 2 three pixels with error 1.
    # Whole split: (4 + 3) / 4 = 1.75 (the mean of batch means would be 2.5). Unmasked pixels are ignored.
    m = MultiTaskMetrics()
    b1 = {"instance": torch.zeros(1, 2, 1, 2), "instance_mask": torch.tensor([[[True, False]]])}
    o1 = {"instance": torch.tensor([[[[3.0, 50.0]], [[-1.0, 50.0]]]])}
    b2 = {"instance": torch.ones(1, 2, 1, 3), "instance_mask": torch.ones(1, 1, 3, dtype=torch.bool)}
    o2 = {"instance": torch.tensor([[[[2.0, 1.0, 1.0]], [[1.0, 0.0, 2.0]]]])}
    m.update(o1, b1)
    m.update(o2, b2)
    assert m.compute() == {"instance/mean_error_px": 1.75}


def test_depth_mean_and_rmse():
    # Masked errors 1, -2, 2 -> mean |e| = 5/3, RMSE = sqrt(9/3); the unmasked error of 100 is ignored.
    m = MultiTaskMetrics()
    batch = {"depth": torch.tensor([[[[1.0, 2.0, 3.0, 4.0]]]]),
             "depth_mask": torch.tensor([[[True, True, True, False]]])}
    m.update({"depth": torch.tensor([[[[2.0, 0.0, 5.0, 104.0]]]])}, batch)
    r = m.compute()
    assert r["depth/mean_error_px"] == pytest.approx(5 / 3)
    assert r["depth/rmse_px"] == pytest.approx(math.sqrt(3))
    assert set(r) == {"depth/mean_error_px", "depth/rmse_px"}  # only the scored task


def test_empty_masks_give_nan():
    m = MultiTaskMetrics()
    batch = {"instance": torch.zeros(1, 2, 2, 2), "instance_mask": torch.zeros(1, 2, 2, dtype=torch.bool),
             "depth": torch.zeros(1, 1, 2, 2), "depth_mask": torch.zeros(1, 2, 2, dtype=torch.bool),
             "semantic": torch.full((1, 2, 2), 255)}
    m.update({"instance": torch.ones(1, 2, 2, 2), "depth": torch.ones(1, 1, 2, 2),
              "semantic": torch.zeros(1, NUM_CLASSES, 2, 2)}, batch)
    r = m.compute()
    for key in ("instance/mean_error_px", "depth/mean_error_px", "depth/rmse_px", "semantic/miou",
                "semantic/pixel_acc", "semantic/iou/road"):
        assert math.isnan(r[key]), key


def test_default_class_names_and_reset():
    m = MultiTaskMetrics()
    gt = torch.arange(NUM_CLASSES).view(1, 1, NUM_CLASSES)
    m.update({"semantic": gt.clone()}, {"semantic": gt})
    r = m.compute()
    assert [k.split("/", 2)[2] for k in r if k.startswith("semantic/iou/")] == list(CLASS_NAMES)
    assert r["semantic/miou"] == 100.0
    m.reset()
    assert m.compute() == {}


@pytest.mark.parametrize("outputs, batch, match", [
    ({"semantic": torch.zeros(1, 4, 2, 2)}, {"semantic": torch.zeros(1, 2, 3, dtype=torch.long)}, "shape"),
    ({"semantic": torch.zeros(1, 4, 1, 1)}, {"semantic": torch.tensor([[[7]]])}, "outside"),
    ({"semantic": torch.zeros(1, 4, 1, 1)}, {"semantic": torch.tensor([[[4]]])}, "outside"),
    ({"semantic": torch.zeros(1, 4, 1, 1)}, {"semantic": torch.tensor([[[-1]]])}, "outside"),
    ({"semantic": torch.zeros(1, 4, 1, 1)}, {"semantic": torch.tensor([[[254]]])}, "outside"),
    ({"semantic": torch.tensor([[[9]]])}, {"semantic": torch.tensor([[[0]]])}, "outside"),
    ({"semantic": torch.tensor([[[-1]]])}, {"semantic": torch.tensor([[[0]]])}, "outside"),
    ({"semantic": torch.zeros(1, 3, 1, 1)}, {"semantic": torch.tensor([[[0]]])}, "channels"),
    ({"depth": torch.zeros(1, 1, 1, 1)}, {"depth": torch.zeros(1, 1, 1, 1)}, "depth_mask"),
    ({"normals": torch.zeros(1, 1, 1, 1)}, {}, "valid tasks"),
])
def test_bad_input_is_named(outputs, batch, match):
    with pytest.raises((ValueError, KeyError), match=match):
        MultiTaskMetrics(4, NAMES).update(outputs, batch)


def _ddp_worker(rank: int, init_file: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    m = MultiTaskMetrics(4, NAMES)
    # Rank 0 sees the first batch of the accumulation test, rank 1 the second, plus depth only on rank 1.
    if rank == 0:
        m.update({"semantic": logits([[0, 0, 0, 0]])}, sem_batch([[0, 0, 0, 0]]))
    else:
        m.update({"semantic": logits([[1, 1, 1, 1]]), "depth": torch.zeros(1, 1, 1, 4)},
                 {"semantic": torch.tensor([[[0, 1, 1, 1]]]), "depth": torch.ones(1, 1, 1, 4),
                  "depth_mask": torch.ones(1, 1, 4, dtype=torch.bool)})
    m.all_reduce()
    results[rank] = m.compute()
    dist.destroy_process_group()


def test_all_reduce_merges_two_processes(tmp_path):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), results), nprocs=2)
        r0, r1 = results[0], results[1]
    assert same(r0, r1)
    assert r0["semantic/miou"] == pytest.approx(77.5)
    assert r0["depth/mean_error_px"] == 1.0


def test_all_reduce_is_a_no_op_without_distributed():
    m = MultiTaskMetrics(4, NAMES)
    m.update({"semantic": logits([[0, 1]])}, sem_batch([[0, 0]]))
    before = m.compute()
    m.all_reduce()
    assert same(m.compute(), before)
