"""The one training step (engine/step.py) for both kinds of method: gradient-space maths against the
loss-space path, head gradients, autocast with fp16 (scaler) and bf16, overflow, hooks and context,
seeded method randomness."""

import math
from dataclasses import dataclass

import pytest
import torch

from bench.train import random_batch
from engine.build import build_parts
from engine.config import load_config
from engine.step import NonFiniteLossError, all_finite, train_step
from losses import METHODS, LossMethod
from losses.base import Weighting
from tasks import TASKS

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "device=cpu", "optim.lr=0.01"]
THIRD = "method.fixed.weights={semantic: 0.3333333333333333, instance: 0.3333333333333333, depth: 0.3333333333333333}"
CPU = torch.device("cpu")


def parts(*overrides, steps_per_epoch: int = 2):
    return build_parts(load_config([], [*TINY, *overrides]), CPU, steps_per_epoch)


@pytest.fixture(scope="module")
def batch():
    return random_batch(2, 32, 64, CPU)


def shared_grad(p) -> torch.Tensor:
    return torch.cat([q.grad.flatten() for q in p.model.shared_parameters()])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.mark.parametrize("space", ["parameters", "features"])
def test_gradient_mean_equals_fixed_weights_of_one_third(batch, space):
    """Jacobian descent with the mean aggregator is, for the shared parameters, the same update as
    fixed weights 1/K; each head gets its own task's gradient (TorchJD's convention), i.e. K times
    the 1/K-weighted one."""
    g = parts("method.name=gradient-mean", f"method.gradient-mean.space={space}")
    f = parts("method.name=fixed", THIRD)
    train_step(g, batch, 0)
    train_step(f, batch, 0)
    torch.testing.assert_close(shared_grad(g), shared_grad(f), rtol=1e-4, atol=1e-6)
    for task in TASKS:
        for qg, qf in zip(g.model.task_parameters(task), f.model.task_parameters(task)):
            torch.testing.assert_close(qg.grad, 3 * qf.grad, rtol=1e-4, atol=1e-6)
    for qg, qf in zip(g.model.shared_parameters(), f.model.shared_parameters()):  # the optimiser moved both alike
        torch.testing.assert_close(qg, qf, rtol=1e-4, atol=1e-6)


def test_gradient_space_heads_get_their_own_tasks_gradient(batch):
    p = parts("method.name=pcgrad")
    reference = parts("method.name=pcgrad")  # same initial weights (seeded)
    train_step(p, batch, 0)
    outputs = reference.model(batch["image"])
    from losses import task_losses

    losses = task_losses(outputs, batch)
    for task in TASKS:
        head = reference.model.task_parameters(task)
        expected = torch.autograd.grad(losses[task], head, retain_graph=True)
        for q, e in zip(p.model.task_parameters(task), expected):
            torch.testing.assert_close(q.grad, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_autocast_works_for_both_kinds(batch, amp):
    loss_space = parts("method.name=fixed", THIRD, f"amp={amp}")
    grad_space = parts("method.name=gradient-mean", f"amp={amp}")
    full = parts("method.name=fixed", THIRD, "amp=off")
    for p in (loss_space, grad_space, full):
        before = [q.detach().clone() for q in p.model.parameters()]
        result = train_step(p, batch, 0)
        assert all(math.isfinite(v) for v in result.losses.values())
        assert all(torch.isfinite(q).all() for q in p.model.parameters())
        assert any(not torch.equal(q, b) for q, b in zip(p.model.parameters(), before))
    assert loss_space.scaler.is_enabled() == grad_space.scaler.is_enabled() == (amp == "fp16")
    if amp == "fp16":  # the loss was scaled (2^16) and the gradient unscaled before use
        assert grad_space.scaler.get_scale() == loss_space.scaler.get_scale() == 65536.0
    # Both kinds see the same low-precision gradient; neither is off by the scale.
    a, b = shared_grad(grad_space), shared_grad(loss_space)
    assert cos(a, b) > 0.999 and 0.99 < float(a.norm() / b.norm()) < 1.01
    assert 0.5 < float(a.norm() / shared_grad(full).norm()) < 2


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(batch):
    p = parts("method.name=pcgrad", "amp=fp16")
    p.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)  # scaled fp16 gradients overflow
    before = [q.detach().clone() for q in p.model.shared_parameters()]
    train_step(p, batch, 0)
    assert all(torch.equal(q, b) for q, b in zip(p.model.shared_parameters(), before))
    assert p.scaler.get_scale() == 2.0 ** 99


def test_non_finite_gradient_without_scaler_is_an_error(batch):
    p = parts("method.name=pcgrad")
    p.model.backbone.conv1.weight.register_hook(lambda g: g * math.inf)
    with pytest.raises(NonFiniteLossError, match="non-finite .* gradient at step 1"):
        train_step(p, batch, 0)


def test_all_finite_is_exact_when_the_sum_overflows():
    """J's finite check is one sum, with the elementwise check only when the sum is not finite: finite
    values whose sum overflows are finite, and one NaN or infinity anywhere is caught."""
    big = torch.full((3, 1000), 3e38)
    assert not torch.isfinite(big.sum()) and all_finite(big)
    for bad in (math.nan, math.inf, -math.inf):
        J = torch.ones(3, 1000)
        J[2, 999] = bad
        assert not all_finite(J)
        big[1, 5] = bad
        assert not all_finite(big)
        big[1, 5] = 3e38
    assert all_finite(torch.zeros(0))


def test_aggregate_of_the_wrong_shape_is_an_error(batch, monkeypatch):
    p = parts("method.name=gradient-mean")
    monkeypatch.setattr(p.method, "aggregate", lambda J, ctx: J[0, :10])
    with pytest.raises(RuntimeError, match="aggregate returned shape"):
        train_step(p, batch, 0)


@dataclass
class ProbeOptions:
    scale: float = 1.0


class Probe(LossMethod):
    """A toy stateful loss-space method recording what the step gives it."""

    Options = ProbeOptions
    seen: list = []

    def weigh(self, losses, ctx):
        draw = float(torch.rand(()))  # a method's random numbers: seeded from (seed, step)
        self.seen.append(("forward", ctx.step, ctx.epoch, {t: float(v) for t, v in ctx.losses.items()}, draw))
        return Weighting({t: self.options.scale for t in self.tasks})

    def after_step(self, ctx):
        buffers = [b.clone() for b in self._model.buffers()]
        again = ctx.recompute_losses()
        assert all(torch.equal(a, b) for a, b in zip(buffers, self._model.buffers()))  # BN stats untouched
        self.seen.append(("after", ctx.step, {t: float(v) for t, v in again.items()}))

    def end_epoch(self, ctx):
        self.seen.append(("epoch", ctx.step, ctx.epoch))


def test_hooks_context_and_seeded_randomness(batch, monkeypatch):
    monkeypatch.setitem(METHODS, "probe", Probe)
    Probe.seen = []
    p = parts("method.name=probe", "seed=7", steps_per_epoch=2)
    p.method._model = p.model
    rng = torch.get_rng_state()
    for step in range(4):
        result = train_step(p, batch, step)
    assert torch.equal(torch.get_rng_state(), rng)  # the step leaves torch's global RNG alone
    forwards = [s for s in Probe.seen if s[0] == "forward"]
    assert [(s[1], s[2]) for s in forwards] == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert forwards[3][3] == {t: v for t, v in result.losses.items() if t != "total"}
    assert [s[1:] for s in Probe.seen if s[0] == "epoch"] == [(1, 0), (3, 1)]
    afters = [s for s in Probe.seen if s[0] == "after"]
    assert [s[1] for s in afters] == [0, 1, 2, 3] and all(set(s[2]) == set(TASKS) for s in afters)
    assert afters[0][2]["depth"] != forwards[0][3]["depth"]  # recomputed under the updated weights
    # Random draws depend on (seed, step) only: the same on a second run, different across steps.
    draws = [s[4] for s in forwards]
    Probe.seen = []
    q = parts("method.name=probe", "seed=7", steps_per_epoch=2)
    q.method._model = q.model
    torch.manual_seed(123)  # whatever the global RNG holds
    for step in range(4):
        train_step(q, batch, step)
    assert [s[4] for s in Probe.seen if s[0] == "forward"] == draws and len(set(draws)) == 4
