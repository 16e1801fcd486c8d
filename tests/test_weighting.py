"""Loss weighting: hand-computed totals and gradients for every form, registry and option errors."""

import math

import pytest
import torch
from config import Config, WeightingConfig

import losses as losses_pkg
from losses import WEIGHTINGS, Weighting, build_weighting, build_weighting_from_config

LOG2 = math.log(2)  # s = log 2, i.e. sigma^2 = 2, exp(-s) = 0.5
KINDS = {"semantic": "classification", "depth": "regression"}


def three(value: float = 3.0) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(value, requires_grad=True) for t in KINDS}


def run(weighting, losses):
    total, logs = weighting(losses)
    total.backward()
    grads_l = {t: v.grad.item() for t, v in losses.items()}
    grads_s = {t: p.grad.item() for t, p in weighting.log_vars.items()}
    return total.item(), logs, grads_l, grads_s


def test_eq10_hand_computed():
    w = build_weighting("uncertainty", KINDS, init_log_var=LOG2)
    total, logs, dl, ds = run(w, three())
    # classification: exp(-s) L + s/2   = 0.5 * 3 + log2/2  = 1.5 + 0.346574 = 1.846574
    # regression:     exp(-s)/2 L + s/2 = 0.25 * 3 + log2/2 = 0.75 + 0.346574 = 1.096574
    assert total == pytest.approx(1.5 + 0.75 + LOG2, abs=1e-6)
    assert total == pytest.approx(2.943147, abs=1e-6)
    # d/dL = exp(-s) (0.5) or exp(-s)/2 (0.25)
    assert dl == pytest.approx({"semantic": 0.5, "depth": 0.25})
    # d/ds = -exp(-s) L + 1/2 = -1.5 + 0.5 = -1 ; -exp(-s)/2 L + 1/2 = -0.75 + 0.5 = -0.25
    assert ds == pytest.approx({"semantic": -1.0, "depth": -0.25})
    assert logs == pytest.approx({"weight/semantic": 0.5, "sigma2/semantic": 2.0, "log_var/semantic": LOG2,
                                  "weight/depth": 0.25, "sigma2/depth": 2.0, "log_var/depth": LOG2})
    assert all(type(v) is float for v in logs.values())


def test_eq10_is_the_default_form_with_s0_zero():
    w = build_weighting("uncertainty", KINDS)
    assert w.form == "eq10"
    total, logs, dl, ds = run(w, three())
    # s = 0: 1 * 3 + 0 and 0.5 * 3 + 0
    assert total == pytest.approx(4.5)
    # d/ds = -exp(0) 3 + 1/2 = -2.5 and -exp(0)/2 3 + 1/2 = -1
    assert ds == pytest.approx({"semantic": -2.5, "depth": -1.0})
    assert logs["weight/semantic"] == 1.0 and logs["weight/depth"] == 0.5 and logs["sigma2/depth"] == 1.0


def test_gal_hand_computed():
    w = build_weighting("uncertainty", KINDS, form="gal", init_log_var=LOG2)
    total, logs, dl, ds = run(w, three())
    # exp(-s) L + s for every task: 1.5 + log 2 = 2.193147 each
    assert total == pytest.approx(2 * (1.5 + LOG2), abs=1e-6)
    assert total == pytest.approx(4.386294, abs=1e-6)
    assert dl == pytest.approx({"semantic": 0.5, "depth": 0.5})
    assert ds == pytest.approx({"semantic": -0.5, "depth": -0.5})  # -1.5 + 1
    assert logs["weight/depth"] == pytest.approx(0.5) and logs["sigma2/semantic"] == pytest.approx(2.0)


def test_libmtl_hand_computed_with_its_default_init():
    w = build_weighting("uncertainty", KINDS, form="libmtl")
    assert all(p.item() == -0.5 for p in w.log_vars.values())
    total, logs, dl, ds = run(w, three())
    # exp(-s)/2 L + s/2 with s = -0.5: e^0.5 = 1.6487213
    #   term = 1.5 * 1.6487213 - 0.25 = 2.2230819 ; d/dL = 0.8243606 ; d/ds = -2.4730819 + 0.5
    assert total == pytest.approx(2 * 2.2230819, abs=1e-6)
    assert dl == pytest.approx({"semantic": 0.8243606, "depth": 0.8243606}, abs=1e-6)
    assert ds == pytest.approx({"semantic": -1.9730819, "depth": -1.9730819}, abs=1e-6)
    assert logs["sigma2/semantic"] == pytest.approx(0.6065307, abs=1e-6)  # e^-0.5
    assert logs["log_var/depth"] == -0.5
    # An explicit init overrides the form's default.
    assert build_weighting("uncertainty", KINDS, form="libmtl", init_log_var=1.0).log_vars["depth"].item() == 1.0


@pytest.mark.parametrize("form, kind, optimum", [
    ("eq10", "regression", 1.0),  # d/ds (e^-s L/2 + s/2) = 0  ->  sigma^2 = L
    ("eq10", "classification", 2.0),  # d/ds (e^-s L + s/2) = 0  ->  sigma^2 = 2 L
    ("gal", "classification", 1.0),  # d/ds (e^-s L + s) = 0  ->  sigma^2 = L
])
def test_sigma2_converges_to_the_loss_scale(form, kind, optimum):
    w = build_weighting("uncertainty", {"depth": kind}, form=form)
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    loss = torch.tensor(5.0)
    for _ in range(500):
        opt.zero_grad()
        w({"depth": loss})[0].backward()
        opt.step()
    assert w({"depth": loss})[1]["sigma2/depth"] == pytest.approx(optimum * 5.0, rel=1e-3)


def test_log_variances_are_float32_parameters_and_learn():
    w = build_weighting("uncertainty", {"semantic": "classification", "instance": "regression",
                                        "depth": "regression"})
    params = list(w.parameters())
    assert len(params) == 3 and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    losses = {"semantic": torch.tensor(2.0, dtype=torch.bfloat16), "instance": torch.tensor(40.0),
              "depth": torch.tensor(0.1)}
    total, _ = w(losses)
    assert total.dtype == torch.float32
    total.backward()
    assert all(p.grad is not None and p.grad.item() != 0 for p in params)
    before = [p.item() for p in params]
    torch.optim.SGD(params, lr=0.01).step()
    assert all(p.item() != b for p, b in zip(params, before))


def test_fixed_weights():
    w = build_weighting("fixed", {"semantic": "classification", "instance": "regression", "depth": "regression"},
                        weights={"semantic": 2.0, "depth": 0.1})
    assert list(w.parameters()) == []
    losses = {"semantic": torch.tensor(3.0, requires_grad=True), "instance": torch.tensor(4.0, requires_grad=True),
              "depth": torch.tensor(10.0, requires_grad=True)}
    total, logs = w(losses)
    assert total.item() == pytest.approx(2 * 3 + 4 + 0.1 * 10)  # instance absent from weights: 1
    total.backward()
    assert [losses[t].grad.item() for t in ("semantic", "instance", "depth")] == pytest.approx([2.0, 1.0, 0.1])
    assert logs == {"weight/semantic": 2.0, "weight/instance": 1.0, "weight/depth": 0.1}


def test_fixed_single_task_and_weights_for_untrained_tasks():
    w = build_weighting("fixed", {"depth": "regression"})
    total, logs = w({"depth": torch.tensor(0.7)})
    assert total.item() == pytest.approx(0.7) and logs == {"weight/depth": 1.0}
    with pytest.raises(ValueError, match=r"\['semantic'\].*not trained"):
        build_weighting("fixed", {"depth": "regression"}, weights={"semantic": 1.0})


def test_errors_name_the_cause():
    with pytest.raises(ValueError, match="'gradnorm'.*fixed.*uncertainty"):
        build_weighting("gradnorm", KINDS)
    with pytest.raises(ValueError, match=r"\['temperature'\].*valid options are \['form', 'init_log_var'\]"):
        build_weighting("uncertainty", KINDS, temperature=2.0)
    with pytest.raises(ValueError, match="'eq7'.*eq10.*gal.*libmtl"):
        build_weighting("uncertainty", KINDS, form="eq7")
    with pytest.raises(ValueError, match="ordinal.*classification.*regression"):
        build_weighting("uncertainty", {"depth": "ordinal"})
    w = build_weighting("uncertainty", KINDS)
    with pytest.raises(ValueError, match="losses are for tasks"):
        w({"semantic": torch.tensor(1.0)})


def test_build_from_config():
    w = build_weighting_from_config(Config())
    assert isinstance(w, WEIGHTINGS["uncertainty"]) and w.form == "eq10"
    assert w.tasks == {"semantic": "classification", "instance": "regression", "depth": "regression"}
    assert all(p.item() == 0.0 for p in w.parameters())
    cfg = Config(tasks=("semantic",), weighting=WeightingConfig(name="fixed", weights={"semantic": 0.5}))
    assert build_weighting_from_config(cfg).weights == {"semantic": 0.5}
    cfg = Config(weighting=WeightingConfig(name="uncertainty", weights={"semantic": 0.5}))
    with pytest.raises(ValueError, match="weighting.weights.*'uncertainty' does not use it"):
        build_weighting_from_config(cfg)


def test_per_task_gradient_hook_is_explicit_and_pluggable(monkeypatch):
    w = build_weighting("uncertainty", KINDS)
    assert w.requires_task_grads is False
    with pytest.raises(NotImplementedError):
        w.backward(three(), [])

    class EqualGrads(Weighting):
        """A toy per-task-gradient method: the sum of the task gradients, written into .grad."""

        requires_task_grads = True

        def backward(self, losses, shared_params):
            grads = [torch.autograd.grad(loss, shared_params, retain_graph=True) for loss in losses.values()]
            for p, *g in zip(shared_params, *grads):
                p.grad = sum(g)
            return {f"weight/{t}": 1.0 for t in losses}

    monkeypatch.setitem(WEIGHTINGS, "equal", EqualGrads)  # one registry line adds a method
    method = losses_pkg.build_weighting("equal", KINDS)
    x = torch.tensor(2.0, requires_grad=True)
    logs = method.backward({"semantic": 3 * x, "depth": x * x}, [x])
    assert x.grad.item() == pytest.approx(3 + 4) and logs == {"weight/semantic": 1.0, "weight/depth": 1.0}
