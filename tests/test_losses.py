"""Per-task losses on tiny tensors with hand-computed values and gradients."""

import math

import pytest
import torch

from losses import task_losses
from tasks import METRICS, TASK_SPECS, TASKS


def test_task_specs_name_every_task_once():
    # the paper's three tasks are the default task list; the 2-task protocols' tasks follow them (tasks.py)
    assert TASKS == ("semantic", "instance", "depth") and tuple(TASK_SPECS) == (*TASKS, "seg7", "depth_abs")
    for name, spec in TASK_SPECS.items():
        assert spec.name == name and spec.kind in ("classification", "regression")
        assert len(spec.pixel_axes) == spec.channels
        assert all(m.task == name for m in spec.metrics)
        assert spec.accumulator().task == name
    assert TASK_SPECS["semantic"].channels == 19 and TASK_SPECS["instance"].pixel_axes == ("x", "y")
    assert set(METRICS) == {"semantic/miou", "semantic/pixel_acc", "instance/mean_error_px", "depth/mean_error_px",
                            "depth/rmse_px", "seg7/miou", "seg7/pixel_acc", "depth_abs/abs_err", "depth_abs/rel_err"}


def semantic_case():
    # 1 image, 2 classes, 2x2 pixels; logits per pixel (class 0, class 1) and targets:
    #   (0, 0)      -> target 0: CE = log 2
    #   (log 3, 0)  -> target 0: CE = -log(3/4) = log(4/3)
    #   (log 3, 0)  -> target 1: CE = -log(1/4) = log 4
    #   (100, -100) -> 255: ignored (its CE would be 200)
    l3 = math.log(3)
    logits = torch.tensor([[[[0.0, l3], [l3, 100.0]], [[0.0, 0.0], [0.0, -100.0]]]], requires_grad=True)
    target = torch.tensor([[[0, 0], [1, 255]]])
    return logits, target


def test_semantic_cross_entropy_ignores_255():
    logits, target = semantic_case()
    loss = task_losses({"semantic": logits}, {"semantic": target})["semantic"]
    # mean over the 3 valid pixels: (log 2 + log 4/3 + log 4) / 3 = log(32/3) / 3 = 0.789041...
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(math.log(32 / 3) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.789041, abs=1e-6)
    loss.backward()
    # d/dz = (softmax - onehot) / 3 on valid pixels, 0 on the ignored one.
    expected = torch.tensor([[[[-0.5, -0.25], [0.75, 0.0]], [[0.5, 0.25], [-0.75, 0.0]]]]) / 3
    torch.testing.assert_close(logits.grad, expected)


def test_instance_l1_is_sum_over_channels_mean_over_masked_pixels():
    # pred / target (dx, dy) per pixel; mask excludes pixel (1, 0), whose error is 1003.
    pred = torch.tensor([[[[1.0, 2.0], [1003.0, 4.0]], [[0.0, 0.5], [0.0, -1.0]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 2.0], [0.0, 0.5]], [[0.0, 0.0], [0.0, -2.0]]]])
    mask = torch.tensor([[[True, True], [False, True]]])
    loss = task_losses({"instance": pred}, {"instance": target, "instance_mask": mask})["instance"]
    # |1-0|+|0-0| = 1, |2-2|+|0.5-0| = 0.5, |4-0.5|+|-1+2| = 4.5  -> (1 + 0.5 + 4.5) / 3 = 2
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    loss.backward()
    # d/dpred = sign(pred - target) / 3 on masked pixels (sign(0) = 0), 0 elsewhere.
    expected = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]]) / 3
    torch.testing.assert_close(pred.grad, expected)


def test_depth_mae_is_pooled_over_the_batch():
    # Two images of 1x2 pixels. Valid errors: 0.5 (image 0), 1 and 3 (image 1).
    pred = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 4.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.5, 7.0]]], [[[1.0, 1.0]]]])
    mask = torch.tensor([[[True, False]], [[True, True]]])
    loss = task_losses({"depth": pred}, {"depth": target, "depth_mask": mask})["depth"]
    # (0.5 + 1 + 3) / 3 = 1.5 (a mean of per-image means would give 1.25)
    assert loss.item() == pytest.approx(1.5, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([[[[-1.0, 0.0]]], [[[-1.0, 1.0]]]]) / 3)


def test_task_without_valid_pixel_gives_zero_and_finite_gradient():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    reg = torch.randn(1, 2, 2, 2, requires_grad=True)
    depth = torch.randn(1, 1, 2, 2, requires_grad=True)
    none = torch.zeros(1, 2, 2, dtype=torch.bool)
    batch = {"semantic": torch.full((1, 2, 2), 255), "instance": torch.zeros(1, 2, 2, 2), "instance_mask": none,
             "depth": torch.zeros(1, 1, 2, 2), "depth_mask": none}
    losses = task_losses({"semantic": logits, "instance": reg, "depth": depth}, batch)
    for task, loss in losses.items():
        assert loss.item() == 0.0, task
        assert loss.requires_grad, task
    sum(losses.values()).backward()
    for x in (logits, reg, depth):
        assert torch.equal(x.grad, torch.zeros_like(x))


def test_masked_out_nonfinite_values_do_not_leak():
    pred = torch.tensor([[[[1.0, float("inf")]]]], requires_grad=True)
    target = torch.tensor([[[[0.0, 0.0]]]])
    loss = task_losses({"depth": pred}, {"depth": target, "depth_mask": torch.tensor([[[True, False]]])})["depth"]
    assert loss.item() == 1.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_bf16_outputs_give_float32_losses():
    logits, target = semantic_case()
    pred = torch.tensor([[[[0.5, 2.0]]]], dtype=torch.bfloat16, requires_grad=True)
    batch = {"semantic": target, "depth": torch.zeros(1, 1, 1, 2), "depth_mask": torch.ones(1, 1, 2, dtype=torch.bool)}
    losses = task_losses({"semantic": logits.detach().bfloat16(), "depth": pred}, batch)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert losses["depth"].item() == 1.25  # 0.5 and 2 are exact in bf16
    losses["depth"].backward()
    assert pred.grad.dtype == torch.bfloat16


def test_only_tasks_in_outputs_and_clear_errors():
    logits, target = semantic_case()
    assert list(task_losses({"semantic": logits}, {"semantic": target, "depth": torch.zeros(1)})) == ["semantic"]
    with pytest.raises(KeyError, match="depth_mask"):
        task_losses({"depth": torch.zeros(1, 1, 2, 2)}, {"depth": torch.zeros(1, 1, 2, 2)})
    with pytest.raises(ValueError, match="normals"):
        task_losses({"normals": torch.zeros(1, 3, 2, 2)}, {})
    with pytest.raises(ValueError, match="semantic: .*target shape"):
        task_losses({"semantic": logits}, {"semantic": torch.zeros(1, 4, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match="target shape"):
        task_losses({"instance": torch.zeros(1, 2, 2, 2)},
                    {"instance": torch.zeros(1, 1, 2, 2), "instance_mask": torch.ones(1, 2, 2, dtype=torch.bool)})
