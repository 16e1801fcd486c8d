"""The method zoo: every registered method's maths on hand-computed cases or its defining property,
exact agreement with TorchJD where TorchJD computes it, and a few training steps of every method
under fp32 and bf16 with its state restored exactly from a checkpoint."""

import io
import math

import pytest
import torch
import torchjd.aggregation as A
import torchjd.scalarization as S

from bench.train import random_batch
from engine.build import build_parts
from engine.config import load_config
from engine.step import train_step
from losses import METHODS, build_weighting, method_lines
from losses.base import StepContext
from losses.gradnorm import gradnorm_targets
from losses.nash_mtl import SolverFailure

TASKS = {"semantic": "classification", "instance": "regression", "depth": "regression"}
TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "device=cpu", "optim.lr=0.01"]
CPU = torch.device("cpu")
CTX = StepContext.of()  # the context of a call outside a training run


def jacobian(seed: int = 0, n: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(3, n, generator=g)
    J[1] -= 1.5 * J[0]  # make tasks 0 and 1 conflict
    return J


def test_at_least_thirty_two_methods_are_registered_and_listed():
    assert len(METHODS) >= 32
    lines = method_lines()
    assert [line.split()[0] for line in lines] == list(METHODS)
    assert all(line.split()[1] in ("loss-space", "gradient-space") for line in lines)


# ----------------------------------------------------------------------------- same as TorchJD

TORCHJD_AGGREGATORS = {
    "gradient-mean": A.Mean, "pcgrad": A.PCGrad, "mgda": A.MGDA, "mgda-ub": A.MGDA,
    "cagrad": lambda: A.CAGrad(c=0.4), "imtl-g": A.IMTLG, "aligned-mtl": A.AlignedMTL,
    "nash-mtl": lambda: A.NashMTL(n_tasks=3), "upgrad": A.UPGrad, "graddrop": A.GradDrop,
    "gradvac": A.GradVac, "dualproj": A.DualProj, "config": A.ConFIG,
    "fairgrad": lambda: A.FairGrad(alpha=1.0), "excess-mtl": lambda: A.ExcessMTL(robust_step_size=1e-2),
    "pcd": A.PCD, "rgw": A.Random,
    "cr-mogm": lambda: A.GramianWeightedAggregator(A.CRMOGMWeighting(A.MGDAWeighting(), alpha=0.9)),
}


@pytest.mark.parametrize("name", sorted(TORCHJD_AGGREGATORS))
def test_gradient_method_is_exactly_torchjd(name):
    """Our integration returns what TorchJD's aggregator returns on the same Jacobians (three calls in a
    row, so stateful aggregators are compared through their state too; same RNG seed for random ones)."""
    ours, theirs = build_weighting(name, TASKS), TORCHJD_AGGREGATORS[name]()
    for seed in range(3):
        J = jacobian(seed)
        torch.manual_seed(seed)
        a = ours.aggregate(J, CTX)
        torch.manual_seed(seed)
        b = theirs(J)
        assert a.shape == (J.shape[1],)
        assert torch.equal(a, b), name


def losses_of(values) -> dict[str, torch.Tensor]:
    return {t: torch.tensor(float(v), requires_grad=True) for t, v in zip(TASKS, values)}


@pytest.mark.parametrize("name, scalarizer", [("rlw", S.Random), ("gls", S.GeometricMean),
                                              ("imtl-l", lambda: S.IMTLL(3)), ("famo", lambda: S.FAMO(3))])
def test_loss_method_is_exactly_torchjd(name, scalarizer):
    ours, theirs = build_weighting(name, TASKS), scalarizer()
    if name == "imtl-l":  # non-trivial scales in both
        with torch.no_grad():
            ours.scalarizer.log_scale.copy_(torch.tensor([0.3, -0.2, 0.1]))
            theirs.log_scale.copy_(torch.tensor([0.3, -0.2, 0.1]))
    for step, values in enumerate([(2.0, 8.0, 0.5), (1.5, 7.0, 0.45), (1.2, 6.9, 0.3)]):
        losses = losses_of(values)
        torch.manual_seed(step)
        total, _ = ours(losses, StepContext(step, 0, 10, 10, {t: v.detach() for t, v in losses.items()}))
        torch.manual_seed(step)
        expected = theirs(torch.tensor(values))
        assert torch.equal(total.detach(), expected.detach()), name
        if name == "famo":  # the logits' Adam step from the losses after the step
            after = [0.9 * v for v in values]
            after[step % 3] = values[step % 3]
            ours.after_step(StepContext(step, 0, 10, 10, {}, recompute_losses=lambda a=after: dict(zip(TASKS,
                                                                                          map(torch.tensor, a)))))
            theirs.update(torch.tensor(after))
            assert torch.equal(ours.scalarizer._w, theirs._w)


# ----------------------------------------------------------------------------- defining properties

def test_mgda_is_the_min_norm_point_of_the_convex_hull():
    J = jacobian(1)
    m = build_weighting("mgda", TASKS, epsilon=1e-6, max_iters=10_000)
    g = m.aggregate(J, CTX)
    w = torch.tensor([float(m.logs()[f"weight/{t}"]) for t in TASKS])
    assert w.min() >= 0 and float(w.sum()) == pytest.approx(1.0, abs=1e-5)
    # Optimality: <g, g_k - g> >= 0 for every vertex g_k of the hull ...
    assert bool(((J @ g) - g @ g >= -1e-3).all())
    # ... so no convex combination (a dense random sample) is shorter.
    combos = torch.distributions.Dirichlet(torch.ones(3)).sample((5000,)) @ J
    assert float(g.norm()) <= float(combos.norm(dim=1).min()) + 1e-3
    # Two orthogonal unit gradients: the midpoint.
    two = build_weighting("mgda", {"semantic": "classification", "depth": "regression"})
    torch.testing.assert_close(two.aggregate(torch.eye(2), CTX), torch.tensor([0.5, 0.5]), atol=1e-3, rtol=0)


def test_mgda_ub_is_mgda_on_the_shared_features():
    assert build_weighting("mgda-ub", TASKS).options.space == "features"
    assert build_weighting("mgda", TASKS).options.space == "parameters"


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_never_conflict_with_a_task(name):
    """<g, g_k> >= 0 for every task, up to TorchJD's regularisation of the (normalised) Gramian by 1e-4,
    which admits cosines of about -1e-3; the mean gradient of these Jacobians conflicts far more."""
    def cosines(J, g):
        return (J @ g) / (J.norm(dim=1) * g.norm())

    for seed in range(5):
        J = jacobian(seed)
        g = build_weighting(name, TASKS).aggregate(J, CTX)
        assert float(cosines(J, g).min()) > -2e-3, (name, seed, cosines(J, g))
    assert float(cosines(jacobian(0), jacobian(0).mean(0)).min()) < -0.1


def test_pcgrad_and_gradvac_with_beta_0_remove_only_the_conflicting_component():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # cosine < 0
    pair = {"semantic": "classification", "depth": "regression"}
    expected = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    for name, options in [("pcgrad", {}), ("gradvac", {"beta": 0.0})]:
        torch.testing.assert_close(build_weighting(name, pair, **options).aggregate(torch.stack([g1, g2]), CTX),
                                   expected)


def test_gradvac_keeps_its_moving_average_across_a_checkpoint():
    a = build_weighting("gradvac", TASKS)
    for seed in range(2):
        a.aggregate(jacobian(seed), CTX)
    b = build_weighting("gradvac", TASKS)
    b.load_state_dict(a.state_dict())
    torch.manual_seed(5)
    ga = a.aggregate(jacobian(7), CTX)
    torch.manual_seed(5)
    assert torch.equal(ga, b.aggregate(jacobian(7), CTX))
    fresh = build_weighting("gradvac", TASKS)
    torch.manual_seed(5)
    assert not torch.equal(ga, fresh.aggregate(jacobian(7), CTX))  # the state matters


def test_cagrad_with_c_0_is_the_mean():
    J = jacobian(2)
    torch.testing.assert_close(build_weighting("cagrad", TASKS, c=0.0).aggregate(J, CTX), J.mean(0), atol=1e-4,
                               rtol=1e-4)


def test_imtl_g_projects_equally_on_every_task_direction():
    J = jacobian(3)
    g = build_weighting("imtl-g", TASKS).aggregate(J, CTX)
    projections = (J / J.norm(dim=1, keepdim=True)) @ g
    torch.testing.assert_close(projections, projections.mean().expand(3), rtol=1e-4, atol=1e-5)


def test_config_has_equal_cosine_with_every_task():
    J = jacobian(4)
    g = build_weighting("config", TASKS).aggregate(J, CTX)
    cosines = torch.nn.functional.cosine_similarity(J, g.expand_as(J), dim=1)
    assert float(cosines.min()) > 0
    torch.testing.assert_close(cosines, cosines.mean().expand(3), rtol=1e-4, atol=1e-5)


def test_aligned_mtl_equalises_orthogonal_gradients_to_the_smallest_norm():
    J = torch.diag(torch.tensor([3.0, 2.0, 1.0]))  # orthogonal, norms 3, 2, 1
    g = build_weighting("aligned-mtl", TASKS).aggregate(J, CTX)
    # The aligned system is orthogonal with every norm the smallest singular value (1); g combines it
    # with equal weights, so every coordinate is the same.
    torch.testing.assert_close(g, g[0].expand(3))
    assert float(g[0]) > 0


def test_graddrop_keeps_one_sign_per_coordinate():
    J = torch.tensor([[1.0, -2.0, 3.0, -1.0], [2.0, -1.0, -3.0, 2.0], [0.5, -0.5, 1.0, 1.0]])
    torch.manual_seed(0)
    g = build_weighting("graddrop", TASKS).aggregate(J, CTX)
    torch.testing.assert_close(g[:2], J[:, :2].sum(0))  # one sign only: nothing dropped
    for j in (2, 3):
        pos, neg = J[:, j].clamp(min=0).sum(), J[:, j].clamp(max=0).sum()
        assert float(g[j]) in (pytest.approx(float(pos)), pytest.approx(float(neg)))


def test_nash_mtl_solves_the_bargaining_equation():
    """The paper's Eq. (G alpha = 1 / alpha, G = J J^T): for orthogonal gradients of norms 3 and 4,
    alpha = (1/3, 1/4) (Nash-MTL normalises G internally; the normalisation cancels in the solution)."""
    pair = {"semantic": "classification", "depth": "regression"}
    m = build_weighting("nash-mtl", pair, max_norm=0.0, optim_niter=200)
    J = torch.tensor([[3.0, 0.0], [0.0, 4.0]])
    m.aggregate(J, CTX)
    alpha = torch.tensor([float(m.logs()[f"weight/{t}"]) for t in pair])
    torch.testing.assert_close(alpha, torch.tensor([1 / 3, 1 / 4]), rtol=1e-3, atol=0)
    G = J @ J.T
    torch.testing.assert_close(G @ alpha, 1 / alpha, rtol=1e-3, atol=0)
    assert int(m.solver_failures) == 0


def test_nash_mtl_solver_failures_are_counted_or_fatal(monkeypatch):
    import cvxpy

    def failing(self, *args, **kwargs):
        raise cvxpy.SolverError("injected")

    monkeypatch.setattr(cvxpy.Problem, "solve", failing)
    counted = build_weighting("nash-mtl", TASKS)
    counted.aggregate(jacobian(0), CTX)
    assert int(counted.solver_failures) >= 1 and float(counted.logs()["nash/solver_failures"]) >= 1
    fatal = build_weighting("nash-mtl", TASKS, on_solver_failure="error")
    with pytest.raises(SolverFailure, match="injected"):
        fatal.aggregate(jacobian(0), CTX)


def test_nash_mtl_needs_ecos(monkeypatch):
    import cvxpy

    monkeypatch.setattr(cvxpy, "installed_solvers", lambda: ["CLARABEL", "SCS"])
    with pytest.raises(RuntimeError, match="ECOS"):
        build_weighting("nash-mtl", TASKS)


def test_rlw_weights_are_random_positive_and_sum_to_one():
    m = build_weighting("rlw", TASKS)
    draws = []
    for seed in range(3):
        torch.manual_seed(seed)
        losses = losses_of((2.0, 8.0, 0.5))
        _, logs = m(losses, StepContext.of(losses))
        w = torch.stack([logs[f"weight/{t}"] for t in TASKS])
        assert bool((w > 0).all()) and float(w.sum()) == pytest.approx(1.0)
        draws.append(w)
    assert not torch.equal(draws[0], draws[1])


def test_gls_and_scale_invariant_hand_computed():
    losses = losses_of((1.0, 4.0, 16.0))
    total, logs = build_weighting("gls", TASKS)(losses, StepContext.of(losses))
    assert float(total.detach()) == pytest.approx(4.0)  # (1 * 4 * 16)^(1/3)
    assert [float(logs[f"weight/{t}"]) for t in TASKS] == pytest.approx([4 / 3, 1 / 3, 1 / 12])  # total / (K L)
    total, logs = build_weighting("scale-invariant", TASKS)(losses, StepContext.of(losses))
    assert float(total.detach()) == pytest.approx(math.log(64.0))
    assert [float(logs[f"weight/{t}"]) for t in TASKS] == pytest.approx([1.0, 0.25, 1 / 16])  # 1 / L


def test_imtl_l_scales_each_loss_to_one():
    m = build_weighting("imtl-l", TASKS)
    losses = losses_of((2.0, 8.0, 0.5))
    total, _ = m(losses, StepContext.of(losses))
    assert float(total.detach()) == pytest.approx(10.5)  # s = 0: the plain sum
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        m(detached := {t: v.detach() for t, v in losses.items()}, StepContext.of(detached))[0].backward()
        opt.step()
    scaled = torch.exp(m.scalarizer.log_scale.detach()) * torch.tensor([2.0, 8.0, 0.5])
    torch.testing.assert_close(scaled, torch.ones(3), rtol=1e-3, atol=1e-3)


def test_famo_raises_the_weight_of_the_task_that_improved_least():
    m = build_weighting("famo", TASKS)
    before = (2.0, 8.0, 0.5)
    losses = losses_of(before)
    m(losses, StepContext(0, 0, 10, 10, {t: v.detach() for t, v in losses.items()}))
    after = {"semantic": torch.tensor(1.0), "instance": torch.tensor(4.0), "depth": torch.tensor(0.49)}  # depth ~stuck
    m.after_step(StepContext(0, 0, 10, 10, {}, recompute_losses=lambda: after))
    z = torch.softmax(m.scalarizer._w.detach(), 0)
    assert int(z.argmax()) == 2
    assert m.optimizer_parameters() == []  # only FAMO's own Adam moves the logits


def test_gradnorm_targets_hand_computed():
    norms, weights = torch.tensor([1.0, 2.0, 3.0]), torch.ones(3)
    losses, initial = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([2.0, 2.0, 1.0])  # L/L0 = 1, .5, .5
    targets = gradnorm_targets(norms, weights, losses, initial, alpha=1.5)
    # Gbar = 2; r = (1, .5, .5) / mean = (1.5, .75, .75)
    torch.testing.assert_close(targets, 2.0 * torch.tensor([1.5, 0.75, 0.75]) ** 1.5)
    torch.testing.assert_close(gradnorm_targets(norms, weights, losses, initial, alpha=0.0), torch.full((3,), 2.0))


def test_gradnorm_trains_the_weights_on_the_norm_gap_and_renormalises():
    W = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # task k's loss: (x_k . W)^2
    m = build_weighting("gradnorm", TASKS, alpha=0.0)
    losses = {t: (x[i] @ W) ** 2 for i, t in enumerate(TASKS)}
    ctx = StepContext(0, 0, 10, 10, {t: v.detach() for t, v in losses.items()}, last_shared=[W])
    total, logs = m(losses, ctx)
    assert float(total) == pytest.approx(sum(float(v) for v in losses.values()))  # w = 1: the sum
    norms = torch.stack([torch.autograd.grad(v, W, retain_graph=True)[0].norm() for v in losses.values()])
    torch.testing.assert_close(torch.stack([logs[f"gradnorm/norm/{t}"] for t in TASKS]), norms)
    total.backward()
    # alpha = 0: target = mean norm; dL_grad/dw_k = sign(w_k n_k - mean) n_k
    expected = torch.sign(norms - norms.mean()) * norms
    torch.testing.assert_close(m.weights.grad, expected)
    with torch.no_grad():
        m.weights -= 0.1 * m.weights.grad
    m.after_step(ctx)
    assert float(m.weights.sum()) == pytest.approx(3.0)


def test_dwa_weights_sum_to_k_and_follow_the_temperature():
    for temperature in (1.0, 2.0, 100.0):
        m = build_weighting("dwa", TASKS, temperature=temperature)
        m.history.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.5, 1.0, 0.9]]))
        m.periods.fill_(2)
        w = m.weights()
        assert float(w.sum()) == pytest.approx(3.0)
        expected = 3 * torch.softmax(torch.tensor([0.5, 1.0, 0.9]) / temperature, 0)
        torch.testing.assert_close(w, expected)
    assert float(w.max() - w.min()) < 0.01  # a large temperature is nearly uniform


# ----------------------------------------------------------------------------- end to end

def parts(*overrides):
    return build_parts(load_config([], [*TINY, *overrides]), CPU, steps_per_epoch=2)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # as checkpoints are loaded


# Methods that pair the gradients of two steps (a moving average or the previous batch's J) need J of the
# shared parameters: the shared features of two batches are different variables.
PARAMETERS_ONLY = {"db-mtl", "moco", "sdmgrad", "modo", "auto-lambda"}


def space_options(name: str) -> list[str]:
    """Gradient-space methods take J of the shared features here (cheaper), except mgda and PARAMETERS_ONLY."""
    if METHODS[name].kind != "gradient" or name == "mgda" or name in PARAMETERS_ONLY:
        return []
    return [f"method.{name}.space=features"]


@pytest.mark.parametrize("name, amp", [(name, amp) for name in sorted(METHODS) for amp in ["off", "bf16"]
                                        if amp == "bf16" or name not in PARAMETERS_ONLY])
def test_every_method_trains_and_resumes_exactly(name, amp):
    """Three steps move the weights and stay finite; a run restored from the checkpoint after two steps
    takes a third step bit-identical to the uninterrupted one (method state included). Gradient-space
    methods take J of the shared features here (cheaper; their maths is the same for any J, and the
    parameters path is tested in test_step.py), except mgda and the methods that need the parameters'
    J (PARAMETERS_ONLY), which keep their default (parameters) and run under bf16 only (a parameters-space
    step costs about 10 s here; their fp32 step is in the DDP test below)."""
    batch = random_batch(2, 32, 64, CPU)
    options = space_options(name)
    a = parts(f"method.name={name}", f"amp={amp}", *options)
    before = [q.detach().clone() for q in a.model.parameters()]
    for step in range(2):
        train_step(a, batch, step)
    saved = roundtrip(a.state_dict())
    b = parts(f"method.name={name}", f"amp={amp}", *options)
    b.load_state_dict(saved)
    ra, rb = train_step(a, batch, 2), train_step(b, batch, 2)
    assert all(math.isfinite(v) for v in ra.losses.values())
    assert ra.losses == rb.losses
    assert any(not torch.equal(q, p) for q, p in zip(a.model.parameters(), before))
    for qa, qb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(qa, qb), name
    sa, sb = a.method.state_dict(), b.method.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if isinstance(sa[k], torch.Tensor):
            assert torch.equal(sa[k], sb[k]), (name, k)


# ----------------------------------------------------------------------------- DDP

DDP_CASES = [(name, space_options(name)) for name in METHODS] + [("pcgrad", ["method.pcgrad.space=parameters"])]


def _ddp_worker(rank: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from engine.distributed import replica_digest

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    digests = {}
    for name, options in DDP_CASES:
        p = build_parts(load_config([], [*TINY, f"method.name={name}", *options]), CPU, steps_per_epoch=2,
                        world=2, rank=rank)
        batch = random_batch(2, 32, 64, CPU)
        batch["image"] = batch["image"] + rank  # each process its own data: local losses and J differ
        batch["depth"] = batch["depth"] * (1 + rank)
        for step in range(3):
            train_step(p, batch, step)
        digests[" ".join([name, *options])] = replica_digest(p.model, p.method)
    gathered = [None, None]
    dist.all_gather_object(gathered, digests)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def test_every_method_keeps_identical_replicas_under_two_process_ddp(tmp_path):
    """Two gloo processes with different data train every method three steps: parameters and method
    state (FAMO's logits and Adam moments, GradNorm's weights, Nash-MTL's solver state, ...) must be
    identical bit for bit on both."""
    import torch.multiprocessing as mp

    out = tmp_path / "digests.pt"
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    rank0, rank1 = torch.load(out, weights_only=True)
    assert len(rank0) == len(DDP_CASES)
    differ = [case for case in rank0 if rank0[case] != rank1[case]]
    assert not differ, f"replicas differ for {differ}"
