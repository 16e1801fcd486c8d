"""The methods added for the field's recent comparisons (FairGrad, STCH, DB-MTL, ExcessMTL, PCD, MoCo,
SDMGrad, MoDo, Auto-Lambda, RGW, CR-MOGM): each one's maths on a small case worked out by hand (or by an
independent few-line computation in the test), state that survives a checkpoint, and solver failures
that are counted instead of crashing. Training under fp32/bf16 and DDP: tests/test_method_zoo.py."""

import io
import math

import pytest
import torch

from losses import build_weighting
from losses.base import StepContext
from losses.torchjd_state import SolverFailure

PAIR = {"semantic": "classification", "depth": "regression"}
TASKS = {"semantic": "classification", "instance": "regression", "depth": "regression"}
CTX = StepContext.of()  # the context of a call outside a training run


def ctx(losses, epoch: int = 0) -> StepContext:
    return StepContext(0, epoch, 10, 100, {t: torch.tensor(float(v)) for t, v in losses.items()})


def weights(method, tasks=PAIR) -> list[float]:
    return [float(method.logs()[f"weight/{t}"]) for t in tasks]


def roundtrip(method, name, tasks=PAIR, **options):
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    fresh = build_weighting(name, tasks, **options)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


ORTHOGONAL = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # task gradients of norms 3 and 4


# ----------------------------------------------------------------------------- FairGrad

@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_fairgrad_orthogonal_gradients(alpha):
    """G w = w^(-1/alpha) with G = diag(9, 16): a^2 w = w^(-1/alpha), so w = a^(-2 alpha / (1 + alpha))
    (alpha = 1: w = 1/a and g is the sum of the unit gradients)."""
    m = build_weighting("fairgrad", PAIR, alpha=alpha)
    g = m.aggregate(ORTHOGONAL, CTX)
    expected = [3.0 ** (-2 * alpha / (1 + alpha)), 4.0 ** (-2 * alpha / (1 + alpha))]
    assert weights(m) == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(g, torch.tensor([3 * expected[0], 4 * expected[1]]), rtol=1e-4, atol=0)
    if alpha == 1.0:
        torch.testing.assert_close(g, torch.ones(2), rtol=1e-4, atol=0)
    assert int(m.solver_failures) == 0


def test_fairgrad_alpha_0_is_the_mean():
    torch.testing.assert_close(build_weighting("fairgrad", PAIR, alpha=0.0).aggregate(ORTHOGONAL, CTX),
                               torch.tensor([1.5, 2.0]))


def test_fairgrad_solver_failures_are_counted_or_fatal(monkeypatch):
    """A least_squares that returns a point far from the solution: counted, the step uses the last good
    weights (uniform at the first step); with on_solver_failure: error the run stops."""
    import torchjd.aggregation._fairgrad as fairgrad_module

    good = build_weighting("fairgrad", PAIR)
    good.aggregate(ORTHOGONAL, CTX)

    class Result:
        x = [5.0, 5.0]

    monkeypatch.setattr(fairgrad_module, "least_squares", lambda *a, **k: Result())
    m = build_weighting("fairgrad", PAIR)
    torch.testing.assert_close(m.aggregate(ORTHOGONAL, CTX), torch.tensor([1.5, 2.0]))  # uniform 1/2
    assert int(m.solver_failures) == 1 and float(m.logs()["fairgrad/solver_failures"]) == 1
    torch.testing.assert_close(good.aggregate(ORTHOGONAL, CTX), torch.ones(2), rtol=1e-4, atol=0)  # last good weights
    assert int(good.solver_failures) == 1
    fatal = build_weighting("fairgrad", PAIR, on_solver_failure="error")
    with pytest.raises(SolverFailure, match="residual"):
        fatal.aggregate(ORTHOGONAL, CTX)


# ----------------------------------------------------------------------------- STCH

def test_stch_warmup_nadir_and_smooth_max_hand_computed():
    m = build_weighting("stch", TASKS, mu=1.0, warmup_epochs=1)

    def step(values, epoch):
        losses = {t: torch.tensor(v, requires_grad=True) for t, v in zip(TASKS, values)}
        total, logs = m(losses, ctx(dict(zip(TASKS, values)), epoch))
        return float(total.detach()), [float(logs[f"weight/{t}"]) for t in TASKS]

    # Warm-up epoch 0: sum log L, weights 1/L; nothing recorded.
    total, w = step((2.0, 8.0, 0.5), 0)
    assert total == pytest.approx(math.log(8.0)) and w == pytest.approx([0.5, 0.125, 2.0])
    # Nadir epoch 1: the same objective; the losses are averaged: z = (2, 4, 0.75).
    step((1.0, 4.0, 1.0), 1)
    step((3.0, 4.0, 0.5), 1)
    # Epoch 2: f = log(L / z) = log(1/2), log(1/2), log(2/3); total = K mu log sum exp(f / mu).
    total, w = step((1.0, 2.0, 0.5), 2)
    s = 0.5 + 0.5 + 2 / 3
    assert total == pytest.approx(3 * math.log(s), rel=1e-6)
    # d total / d L_k = K softmax(f)_k / L_k
    assert w == pytest.approx([3 * 0.5 / s / 1.0, 3 * 0.5 / s / 2.0, 3 * (2 / 3) / s / 0.5], rel=1e-5)
    assert m.nadir.tolist() == pytest.approx([2.0, 4.0, 0.75])
    assert roundtrip(m, "stch", TASKS, mu=1.0, warmup_epochs=1).nadir.tolist() == pytest.approx([2.0, 4.0, 0.75])


def test_stch_small_mu_tends_to_the_worst_task():
    m = build_weighting("stch", PAIR, mu=0.01, warmup_epochs=0)
    m.nadir.copy_(torch.tensor([1.0, 1.0]))
    losses = {"semantic": torch.tensor(2.0, requires_grad=True), "depth": torch.tensor(1.0, requires_grad=True)}
    total, logs = m(losses, ctx({"semantic": 2.0, "depth": 1.0}, epoch=1))
    assert float(total.detach()) == pytest.approx(2 * math.log(2.0), rel=1e-3)  # K max_k log L_k
    assert float(logs["weight/depth"]) < 1e-20 < float(logs["weight/semantic"])


# ----------------------------------------------------------------------------- DB-MTL

def test_db_mtl_hand_computed():
    """log-gradients g_k / L_k with L = (1, 2): rows (3, 0) and (0, 2). Step 1: h = 0.1 of them
    (beta 0.9, zero start): norms 0.3, 0.2, alpha = (1, 1.5), g = (0.3, 0.3). Step 2, same J:
    h = 0.1 x + 0.9 h = 0.19 of them: g = (0.57, 0.57)."""
    m = build_weighting("db-mtl", PAIR)
    c = ctx({"semantic": 1.0, "depth": 2.0})
    torch.testing.assert_close(m.aggregate(ORTHOGONAL, c), torch.tensor([0.3, 0.3]))
    assert float(m.logs()["db_mtl/alpha/depth"]) == pytest.approx(1.5, rel=1e-6)
    fresh = roundtrip(m, "db-mtl")
    torch.testing.assert_close(m.aggregate(ORTHOGONAL, c), torch.tensor([0.57, 0.57]))
    torch.testing.assert_close(fresh.aggregate(ORTHOGONAL, c), torch.tensor([0.57, 0.57]))
    with pytest.raises(ValueError, match="space: parameters"):
        build_weighting("db-mtl", PAIR, space="features")


# ----------------------------------------------------------------------------- ExcessMTL

def test_excess_mtl_hand_computed():
    """J = diag(1, 2). Step 1: accumulated squares J^2, excess E_k = sum g^2 / sqrt(sum g^2) = (1, 2),
    the baseline; w = softmax(log(1/2, 1/2) + eta E). Step 2, same J: E = |g| / sqrt(2) = (0.707, 1.414),
    over the baseline: (0.707, 0.707), an equal step for both, so the weights do not change."""
    J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    m = build_weighting("excess-mtl", PAIR, robust_step_size=0.5)
    m.aggregate(J, CTX)
    expected = [1 / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    assert weights(m) == pytest.approx(expected, rel=1e-5)
    fresh = roundtrip(m, "excess-mtl", robust_step_size=0.5)
    m.aggregate(J, CTX)
    assert weights(m) == pytest.approx(expected, rel=1e-5)
    fresh.aggregate(J, CTX)
    assert weights(fresh) == pytest.approx(expected, rel=1e-5)  # the accumulator and baseline came back


# ----------------------------------------------------------------------------- PCD

def test_pcd_hand_computed_and_primary_option():
    """Orthogonal g1 = (2, 0), g2 = (0, 3); at the first step the normalised gradients are the unit
    vectors. d = argmin ||d - e1||^2 s.t. d_2 >= tau: d = (1, tau), rescaled to ||g1|| = 2."""
    J = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    tau = 0.5
    g = build_weighting("pcd", PAIR, tau=tau).aggregate(J, CTX)
    torch.testing.assert_close(g, torch.tensor([1.0, tau]) * 2 / math.hypot(1, tau), rtol=1e-5, atol=1e-6)
    # depth primary: d = (tau, 1) rescaled to ||g2|| = 3.
    g = build_weighting("pcd", PAIR, tau=tau, primary="depth").aggregate(J, CTX)
    torch.testing.assert_close(g, torch.tensor([tau, 1.0]) * 3 / math.hypot(1, tau), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="instance"):
        build_weighting("pcd", PAIR, primary="instance")


def test_pcd_solver_failures_are_counted(monkeypatch):
    import torchjd.aggregation._pcd as pcd_module

    def failing(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(pcd_module, "_solve_qp", failing)
    m = build_weighting("pcd", PAIR)
    torch.testing.assert_close(m.aggregate(ORTHOGONAL, CTX), torch.tensor([1.5, 2.0]))  # uniform fallback
    assert int(m.solver_failures) == 1 and float(m.logs()["pcd/solver_failures"]) == 1
    with pytest.raises(SolverFailure, match="injected"):
        build_weighting("pcd", PAIR, on_solver_failure="error").aggregate(ORTHOGONAL, CTX)


@pytest.mark.parametrize("name", ["excess-mtl", "sdmgrad", "modo", "cr-mogm"])
def test_solver_failures_of_the_other_stateful_methods_are_counted_or_fatal(name, monkeypatch):
    """The TorchJD weighting raises inside the method's own call path (for SDMGrad and MoDo, on the
    double-sampled matrix): the failure is counted and logged, the step applies the last good weights, the
    method's state is what it was before the failed call, and on_solver_failure: error stops the run."""
    m = build_weighting(name, PAIR)
    m.aggregate(ORTHOGONAL, CTX)
    good = m.applied_weights.clone()
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in m.jd_state.items()}

    def failing(self, *args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(type(m.jd_weighting), "forward", failing)
    J = torch.tensor([[1.0, 2.0], [-3.0, 1.0]])
    torch.testing.assert_close(m.aggregate(J, CTX), good @ J)
    assert int(m.solver_failures) == 1 and float(m.logs()[f"{m.log_prefix}/solver_failures"]) == 1
    assert m.jd_state.keys() == before.keys()
    for k, v in before.items():
        assert (torch.equal(m.jd_state[k], v) if isinstance(v, torch.Tensor) else m.jd_state[k] == v), k
    with pytest.raises(SolverFailure, match="injected"):
        build_weighting(name, PAIR, on_solver_failure="error").aggregate(ORTHOGONAL, CTX)


# ----------------------------------------------------------------------------- MoCo

@pytest.mark.parametrize("update", ["projection", "softmax"])
def test_moco_hand_computed(update):
    """J = diag(3, 4), L = (1, 2): the normalised gradients g_k / ||g_k|| L_k are (1, 0) and (0, 2).
    Step 1: y = 0.5 of them; Y Y^T = diag(0.25, 1); lambda - 0.1 Y Y^T lambda = (0.4875, 0.45);
    projected onto the simplex (+0.03125 each): (0.51875, 0.48125); g = Y^T lambda."""
    m = build_weighting("moco", PAIR, lambda_update=update)
    g = m.aggregate(ORTHOGONAL, ctx({"semantic": 1.0, "depth": 2.0}))
    if update == "projection":
        lam = [0.51875, 0.48125]
    else:
        e = [math.exp(0.4875), math.exp(0.45)]
        lam = [e[0] / sum(e), e[1] / sum(e)]
    assert weights(m) == pytest.approx(lam, rel=1e-6)
    torch.testing.assert_close(g, torch.tensor([0.5 * lam[0], 1.0 * lam[1]]))
    # Step 2 from a checkpoint equals step 2 in place (y and lambda saved).
    fresh = roundtrip(m, "moco", lambda_update=update)
    c = ctx({"semantic": 1.0, "depth": 2.0})
    assert torch.equal(m.aggregate(ORTHOGONAL, c), fresh.aggregate(ORTHOGONAL, c))


# ----------------------------------------------------------------------------- MoDo and SDMGrad

def test_modo_hand_computed_and_double_sampling():
    """J = diag(1, 2), G = diag(1, 4), gamma 0.1, rho 0: lambda - 0.1 G lambda = (0.45, 0.3), projected
    (+0.125 each): (0.575, 0.425); g = J^T lambda = (0.575, 0.85). With sampling: previous, the second
    step's matrix is J_prev J^T."""
    J1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    m = build_weighting("modo", PAIR, gamma=0.1, rho=0.0)
    torch.testing.assert_close(m.aggregate(J1, CTX), torch.tensor([0.575, 0.85]))
    J2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    m.aggregate(J2, CTX)
    A = J1 @ J2.T  # [[1, 1], [2, 2]] (not symmetric: two batches)
    lam = torch.tensor([0.575, 0.425])
    step = lam - 0.1 * (A @ lam)  # (0.475, 0.375): sum 0.85, +0.075 each
    assert weights(m) == pytest.approx((step + (1 - step.sum()) / 2).tolist(), rel=1e-6)
    same = build_weighting("modo", PAIR, gamma=0.1, rho=0.0, sampling="same")
    same.aggregate(J1, CTX)
    same.aggregate(J2, CTX)
    assert weights(same) != pytest.approx(weights(m))
    with pytest.raises(ValueError, match="sampling: same"):
        build_weighting("modo", PAIR, space="features")


@pytest.mark.parametrize(("n_iter", "expected"), [(1, (5 / 6, 1 / 6)), (2, (1.15 / 1.3, 0.15 / 1.3))])
def test_sdmgrad_hand_computed(n_iter, expected):
    """J = diag(1, 2), sampling: same, lr 1, momentum 0.5, lambda 0.3. A = J J^T / s^2 with s = (1 + 2) / 2:
    A = diag(4/9, 16/9). From w = (1/2, 1/2): v = A (w + 0.3 w~) = 0.65 (4/9, 16/9) = (0.2889, 1.1556);
    w - v = (0.2111, -0.6556), sum -4/9, shifted by 13/18 onto the simplex: w = (14/15, 1/15), inside it.
    Output (w + 0.15) / 1.3 = (5/6, 1/6). Second iteration: v = v/2 + A (w + 0.15) = (0.6259, 0.9630),
    w - v = (0.3074, -0.8963), shifted (1.1019, -0.1019), projected to the vertex (1, 0): (1.15, 0.15) / 1.3."""
    m = build_weighting("sdmgrad", PAIR, sampling="same", lr=1.0, n_iter=n_iter)
    g = m.aggregate(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), CTX)
    assert weights(m) == pytest.approx(expected, abs=1e-6)
    torch.testing.assert_close(g, torch.tensor([expected[0], 2 * expected[1]]), rtol=1e-6, atol=1e-6)


def test_sdmgrad_follows_its_inner_iterations():
    """An independent loop of the paper's inner problem on A = J J^T (sampling: same): momentum SGD on
    w with gradient A_n (w + lambda w~), each step projected onto the simplex."""
    J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    m = build_weighting("sdmgrad", PAIR, sampling="same")
    g = m.aggregate(J, CTX)
    A = J @ J.T
    A = A / (A.diagonal().sqrt().mean() ** 2 + 1e-8)
    w, v, lam, uniform = torch.tensor([0.5, 0.5]), None, 0.3, torch.tensor([0.5, 0.5])
    for _ in range(20):
        grad = A @ (w + lam * uniform)
        v = grad if v is None else 0.5 * v + grad
        y = w - 10.0 * v  # projection of a 2-vector onto the simplex: shift, then clip
        y = y + (1 - y.sum()) / 2
        w = y.clamp(0, 1) / y.clamp(0, 1).sum()
    final = (w + lam * uniform) / (1 + lam)
    assert weights(m) == pytest.approx(final.tolist(), abs=1e-6)
    torch.testing.assert_close(g, final @ J)


# ----------------------------------------------------------------------------- Auto-Lambda

def test_auto_lambda_meta_step_hand_computed():
    """Step 1: no previous batch, g = 0.1 (g_1 + g_2). Step 2: the meta-gradient is
    -<sum of this batch's gradients, each previous gradient> = -((2, -1) . e_k) = (-2, 1); Adam's first
    step moves each weight by lr against the gradient's sign."""
    J1, J2 = torch.eye(2), torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    m = build_weighting("auto-lambda", PAIR)
    torch.testing.assert_close(m.aggregate(J1, CTX), torch.tensor([0.1, 0.1]))
    fresh = roundtrip(m, "auto-lambda")
    g = m.aggregate(J2, CTX)
    assert weights(m) == pytest.approx([0.1 + 1e-4, 0.1 - 1e-4], rel=1e-5)
    torch.testing.assert_close(g, torch.tensor([2 * (0.1 + 1e-4), -(0.1 - 1e-4)]))
    assert torch.equal(fresh.aggregate(J2, CTX), g)  # J_prev and Adam's state came back
    assert m.optimizer_parameters() == []
    # Semantic primary: the depth weight gets a zero meta-gradient and stays.
    p = build_weighting("auto-lambda", PAIR, primary="semantic")
    p.aggregate(J1, CTX)
    p.aggregate(J2, CTX)
    assert weights(p) == pytest.approx([0.1 + 1e-4, 0.1], rel=1e-5)


# ----------------------------------------------------------------------------- RGW and CR-MOGM

def test_rgw_weights_are_a_random_convex_combination():
    m = build_weighting("rgw", TASKS)
    J = torch.eye(3)
    torch.manual_seed(0)
    g = m.aggregate(J, CTX)
    torch.manual_seed(0)
    expected = torch.softmax(torch.randn(3), 0)
    torch.testing.assert_close(g, expected)
    assert float(g.sum()) == pytest.approx(1.0)


def test_rgw_applies_its_logged_weights_and_they_are_symmetric_on_average():
    """g = w @ J with the weights it logs, positive and summing to 1, drawn anew each step; softmax of an
    i.i.d. normal draw is exchangeable, so over 4000 steps each task's mean weight is 1/3 (standard error
    about 0.004) and each task gets the largest weight about a third of the time."""
    m = build_weighting("rgw", TASKS)
    J = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, -1.0]])
    torch.manual_seed(1)
    draws = []
    for _ in range(4000):
        g = m.aggregate(J, CTX)
        w = torch.tensor(weights(m, TASKS))
        torch.testing.assert_close(g, w @ J)
        draws.append(w)
    w = torch.stack(draws)
    assert bool((w > 0).all()) and torch.allclose(w.sum(1), torch.ones(len(w)))
    assert len({tuple(x.tolist()) for x in w}) == len(w)
    torch.testing.assert_close(w.mean(0), torch.full((3,), 1 / 3), atol=0.015, rtol=0)
    share = torch.bincount(w.argmax(1), minlength=3) / len(w)
    torch.testing.assert_close(share, torch.full((3,), 1 / 3), atol=0.03, rtol=0)


def test_cr_mogm_averages_the_mgda_weights():
    """Step 1, J = I: MGDA's weights (1/2, 1/2), taken as they are. Step 2, J = diag(1, 2): MGDA's
    weights are proportional to 1/||g_k||^2: (0.8, 0.2); averaged: 0.9 (0.5, 0.5) + 0.1 (0.8, 0.2)."""
    m = build_weighting("cr-mogm", PAIR)
    m.aggregate(torch.eye(2), CTX)
    assert weights(m) == pytest.approx([0.5, 0.5], abs=2e-3)
    fresh = roundtrip(m, "cr-mogm")
    m.aggregate(torch.diag(torch.tensor([1.0, 2.0])), CTX)
    assert weights(m) == pytest.approx([0.53, 0.47], abs=2e-3)
    fresh.aggregate(torch.diag(torch.tensor([1.0, 2.0])), CTX)
    assert weights(fresh) == weights(m)


# ----------------------------------------------------------------------------- large method state

def test_a_tasks_by_n_state_is_summarised_in_the_record_and_hashed_in_the_replica_digest():
    """MoCo keeps a tasks x n tensor: the run record's method_state gives its shape, dtype and norm (not
    millions of numbers); the replica digest still tells two states apart by their bytes."""
    from engine.distributed import replica_digest
    from infra.atomic import PLAIN_MAX_ELEMENTS, plain

    J = torch.ones(2, PLAIN_MAX_ELEMENTS)
    a, b = build_weighting("moco", PAIR), build_weighting("moco", PAIR)
    c = ctx({"semantic": 1.0, "depth": 2.0})
    a.aggregate(J, c)
    b.aggregate(J, c)
    record = plain(dict(a.state_dict()))
    assert record["_extra_state"]["y"]["shape"] == [2, PLAIN_MAX_ELEMENTS]
    assert record["_extra_state"]["y"]["dtype"] == "float32" and record["_extra_state"]["y"]["norm"] > 0
    assert record["lambd"] == pytest.approx(a.lambd.tolist())  # small tensors are listed as before
    model = torch.nn.Linear(1, 1)
    assert replica_digest(model, a) == replica_digest(model, b)
    b.y[1, -1] += 1e-3
    assert replica_digest(model, a) != replica_digest(model, b)
