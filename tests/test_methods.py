"""Methods: hand-computed totals and gradients (uncertainty forms, fixed), DWA against its definition and
TorchJD, the gradient-space methods on small matrices, the registry and option errors."""

import math

import pytest
import torch
from torchjd.aggregation import PCGrad as TorchJDPCGrad
from torchjd.scalarization import DWA as TorchJDDWA

from engine.config import build_method, load_config
from losses import METHODS, StepContext, build_weighting

LOG2 = math.log(2)  # s = log 2, i.e. sigma^2 = 2, exp(-s) = 0.5
KINDS = {"semantic": "classification", "depth": "regression"}
CTX = StepContext.of()  # the context of a call outside a training run


def three(value: float = 3.0) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(value, requires_grad=True) for t in KINDS}


def run(weighting, losses):
    total, logs = weighting(losses, StepContext.of(losses))
    total.backward()
    grads_l = {t: v.grad.item() for t, v in losses.items()}
    grads_s = {t: p.grad.item() for t, p in weighting.log_vars.items()}
    return total.item(), {k: float(v) for k, v in logs.items()}, grads_l, grads_s


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


def test_eq10_is_the_default_form_with_s0_zero():
    w = build_weighting("uncertainty", KINDS)
    assert w.options.form == "eq10"
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
        w({"depth": loss}, StepContext.of({"depth": loss}))[0].backward()
        opt.step()
    sigma2 = w({"depth": loss}, StepContext.of({"depth": loss}))[1]["sigma2/depth"]
    assert float(sigma2) == pytest.approx(optimum * 5.0, rel=1e-3)


def test_log_variances_are_float32_parameters_and_learn():
    w = build_weighting("uncertainty", {"semantic": "classification", "instance": "regression",
                                        "depth": "regression"})
    params = list(w.parameters())
    assert len(params) == 3 and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    losses = {"semantic": torch.tensor(2.0, dtype=torch.bfloat16), "instance": torch.tensor(40.0),
              "depth": torch.tensor(0.1)}
    total, _ = w(losses, StepContext.of(losses))
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
    total, logs = w(losses, StepContext.of(losses))
    assert total.item() == pytest.approx(2 * 3 + 4 + 0.1 * 10)  # instance absent from weights: 1
    total.backward()
    assert [losses[t].grad.item() for t in ("semantic", "instance", "depth")] == pytest.approx([2.0, 1.0, 0.1])
    assert logs == {"weight/semantic": 2.0, "weight/instance": 1.0, "weight/depth": 0.1}


def test_fixed_single_task_and_weights_for_untrained_tasks():
    w = build_weighting("fixed", {"depth": "regression"})
    total, logs = w({"depth": torch.tensor(0.7)}, StepContext.of({"depth": 0.7}))
    assert total.item() == pytest.approx(0.7) and logs == {"weight/depth": 1.0}
    with pytest.raises(ValueError, match=r"\['semantic'\].*not trained"):
        build_weighting("fixed", {"depth": "regression"}, weights={"semantic": 1.0})


def test_fixed_weights_must_be_finite_and_not_negative():
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and >= 0"):
            build_weighting("fixed", KINDS, weights={"depth": bad})


def test_errors_name_the_cause():
    with pytest.raises(ValueError, match="'gradsurgery'.*dwa.*fixed.*uncertainty"):
        build_weighting("gradsurgery", KINDS)
    with pytest.raises(ValueError, match=r"\['temperature'\].*valid options are \['form', 'init_log_var'\]"):
        build_weighting("uncertainty", KINDS, temperature=2.0)
    with pytest.raises(ValueError, match="'eq7'.*eq10.*gal.*libmtl"):
        build_weighting("uncertainty", KINDS, form="eq7")
    with pytest.raises(ValueError, match="ordinal.*classification.*regression"):
        build_weighting("uncertainty", {"depth": "ordinal"})
    w = build_weighting("uncertainty", KINDS)
    with pytest.raises(ValueError, match="losses are for tasks"):
        w({"semantic": torch.tensor(1.0)}, StepContext.of({"semantic": 1.0}))
    with pytest.raises(ValueError, match="space must be"):
        build_weighting("pcgrad", KINDS, space="outputs")


def test_build_from_config():
    w = build_method(load_config([]))
    assert isinstance(w, METHODS["uncertainty"]) and w.options.form == "eq10"
    assert w.tasks == {"semantic": "classification", "instance": "regression", "depth": "regression"}
    assert all(p.item() == 0.0 for p in w.parameters())
    cfg = load_config([], ["tasks=[semantic]", "method.name=fixed", "method.fixed.weights={semantic: 0.5}"])
    assert build_method(cfg).weights == {"semantic": 0.5}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_builds_with_defaults_and_has_a_kind(name):
    cls = METHODS[name]
    assert cls.kind in ("loss", "gradient") and cls.__doc__
    m = build_weighting(name, KINDS)
    assert m.tasks == KINDS
    assert m.describe(name, m.options, tuple(KINDS)).startswith(name.split("-")[0])


# ----------------------------------------------------------------------------- DWA

def ctx(step: int, losses: dict) -> StepContext:
    return StepContext(step=step, epoch=0, steps_per_epoch=2, iterations=10,
                       losses={t: torch.as_tensor(v) for t, v in losses.items()})


def test_dwa_weights_follow_the_definition():
    # Period averages (semantic, depth): epoch 0: (4, 2); epoch 1: (2, 2). Then
    # r = (2/4, 2/2) = (0.5, 1); lambda = 2 softmax(r / T) with T = 2.
    w = build_weighting("dwa", KINDS)
    for epoch, values in enumerate([(4.0, 2.0), (2.0, 2.0)]):
        for step in range(2):
            losses = dict(zip(KINDS, values))
            _, logs = w({t: torch.tensor(v) for t, v in losses.items()}, ctx(2 * epoch + step, losses))
            assert [float(v) for v in logs.values()] == [1.0, 1.0]  # uniform during the first two periods
        w.end_epoch(ctx(2 * epoch + 1, {}))
    ones = {"semantic": 1.0, "depth": 1.0}
    total, logs = w({t: torch.tensor(v) for t, v in ones.items()}, ctx(4, ones))
    e1, e2 = math.exp(0.25), math.exp(0.5)
    expected = [2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)]
    assert [float(v) for v in logs.values()] == pytest.approx(expected, abs=1e-6)
    assert sum(float(v) for v in logs.values()) == pytest.approx(2.0)  # weights sum to K
    assert float(total) == pytest.approx(sum(expected), abs=1e-6)


def test_dwa_temperature_and_window():
    hot = build_weighting("dwa", KINDS, temperature=100.0)
    w = build_weighting("dwa", KINDS, window=1)  # a period per iteration
    for step, values in enumerate([(4.0, 2.0), (2.0, 2.0)]):
        losses = dict(zip(KINDS, values))
        for m in (w, hot):
            m({t: torch.tensor(v) for t, v in losses.items()}, ctx(step, losses))
            m.after_step(ctx(step, losses))
        hot.end_period()
    _, logs = w({t: torch.tensor(1.0) for t in KINDS}, ctx(2, {t: 1.0 for t in KINDS}))
    _, hot_logs = hot({t: torch.tensor(1.0) for t in KINDS}, ctx(2, {t: 1.0 for t in KINDS}))
    assert float(logs["weight/depth"]) > float(logs["weight/semantic"])  # depth fell more slowly
    assert abs(float(hot_logs["weight/depth"]) - 1) < abs(float(logs["weight/depth"]) - 1)  # larger T: flatter


def test_dwa_equals_torchjd_and_keeps_the_process_averaged_losses():
    """Same weights as torchjd.scalarization.DWA at every step, read as gradients (no private API). Our
    method is given this process's losses (`local`) but keeps the history of the averaged ones
    (`ctx.losses`); TorchJD is given the averaged ones."""
    ours, theirs = build_weighting("dwa", KINDS), TorchJDDWA(temperature=2.0)
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        for step in range(3):
            averaged = (torch.rand(2, generator=g) + 0.5).requires_grad_()
            local = {t: (torch.rand((), generator=g) + 0.5).requires_grad_() for t in KINDS}
            total, _ = ours(local, ctx(3 * epoch + step, dict(zip(KINDS, averaged.detach()))))
            total.backward()
            theirs(averaged).backward()
            ours_w = torch.stack([local[t].grad for t in KINDS])
            torch.testing.assert_close(ours_w, averaged.grad, rtol=0, atol=0)
        ours.end_epoch(ctx(3 * epoch + 2, {}))
        theirs.step()
    assert not torch.equal(ours_w, torch.ones(2))  # the history is in use by the last epoch


def test_dwa_state_round_trips():
    w = build_weighting("dwa", KINDS)
    for step in range(5):
        losses = {"semantic": 1.0 + step, "depth": 2.0}
        w({t: torch.tensor(v) for t, v in losses.items()}, ctx(step, losses))
        if step % 2:
            w.end_epoch(ctx(step, {}))
    again = build_weighting("dwa", KINDS)
    again.load_state_dict(w.state_dict())
    assert set(w.state_dict()) == {"loss_sum", "count", "history", "periods"}
    torch.testing.assert_close(again.weights(), w.weights(), rtol=0, atol=0)
    assert int(again.count) == 1 and int(again.periods) == 2


# ----------------------------------------------------------------------------- gradient-space methods

def test_gradient_mean_is_the_mean_row_and_logs_its_weights():
    J = torch.tensor([[1.0, 2.0, -3.0], [3.0, 0.0, 1.0]])
    m = build_weighting("gradient-mean", KINDS)
    torch.testing.assert_close(m.aggregate(J, CTX), torch.tensor([2.0, 1.0, -1.0]))
    assert {k: float(v) for k, v in m.logs().items()} == {"weight/semantic": 0.5, "weight/depth": 0.5}


def test_pcgrad_removes_the_conflicting_component():
    # g1 = (1, 0), g2 = (-1, 1): g1.g2 = -1 < 0. Projections: g1' = g1 - (g1.g2/|g2|^2) g2 = (0.5, 0.5),
    # g2' = g2 - (g2.g1/|g1|^2) g1 = (0, 1). PCGrad returns g1' + g2' = (0.5, 1.5), which has a
    # non-negative inner product with both task gradients.
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    g = build_weighting("pcgrad", KINDS).aggregate(J, CTX)
    torch.testing.assert_close(g, torch.tensor([0.5, 1.5]))
    assert (J @ g >= 0).all()
    # Without conflict it is the plain sum.
    torch.testing.assert_close(build_weighting("pcgrad", KINDS).aggregate(torch.eye(2), CTX), torch.ones(2))


def test_pcgrad_is_exactly_torchjd_on_a_random_matrix():
    J = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    tasks = {"semantic": "classification", "instance": "regression", "depth": "regression"}
    torch.manual_seed(5)
    ours = build_weighting("pcgrad", tasks).aggregate(J, CTX)
    torch.manual_seed(5)
    theirs = TorchJDPCGrad()(J)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_aggregate_checks_the_matrix_shape():
    with pytest.raises(ValueError, match=r"J must be \(tasks=2, n\)"):
        build_weighting("pcgrad", KINDS).aggregate(torch.zeros(3, 4), CTX)
