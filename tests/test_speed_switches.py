"""Speed switches that change when and where the numbers are computed, not the numbers (issue 13): the
deferred finiteness check (check_finite), torch.compile (compile), the device-resident training split
(data.resident) and packing several trainings per GPU (reproduce.py --per-gpu, bench/packing.py). None of
them is part of the experiment identity; each is checked against the default path on the CPU."""

import contextlib
import json
import math

import pytest
import torch

import engine.step
import train
from engine.config import ConfigError, load_config
from engine.step import LossWindow, NonFiniteLossError

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true"]


def tiny_args(root, run_dir, *extra):
    return [*TINY, f"data.root={root}", f"run_dir={run_dir}", *extra]


@pytest.mark.parametrize("override", ["check_finite=log", "compile=default", "compile=reduce-overhead",
                                      "data.resident=true"])
def test_switches_are_validated_and_not_part_of_the_identity(override):
    assert load_config([], [override]).identity() == load_config([], []).identity()
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        load_config([], [f"{key}={'7' if key == 'data.resident' else 'bogus'}"])


def test_resident_split_refuses_random_crops_scales_and_jitter():
    for extra in ("data.crop=[16,32]", "data.scale=[0.5,1.0]", "data.jitter=true", "data.size=null"):
        with pytest.raises(ConfigError, match="data.resident"):
            load_config([], ["data.resident=true", extra])


# ----------------------------------------------------------------------------- check_finite

def test_loss_window_names_the_first_non_finite_step_and_task():
    w = LossWindow()
    w.add(1, {"semantic": torch.tensor(1.0), "depth": torch.tensor(2.0)})
    w.add(2, {"semantic": torch.tensor(3.0), "depth": torch.tensor(4.0)})
    assert w.take() == {"semantic": 4.0, "depth": 6.0} and w.sums == {}
    w.add(3, {"semantic": torch.tensor(1.0), "depth": torch.tensor(math.inf)})
    w.add(4, {"semantic": torch.tensor(math.nan), "depth": torch.tensor(1.0)})
    with pytest.raises(NonFiniteLossError, match=r"non-finite depth loss .* at step 3 .*steps 3-4"):
        w.flush()
    w2 = LossWindow()  # check_finite=step hands over floats: summed at once
    w2.add(1, {"depth": 1.5})
    assert w2.pending == [] and w2.take() == {"depth": 1.5}


def _poison_at(monkeypatch, call: int):
    real, calls = engine.step.task_losses, []

    def poisoned(outputs, batch):
        losses = real(outputs, batch)
        calls.append(1)
        if len(calls) == call:
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setattr(engine.step, "task_losses", poisoned)


@pytest.mark.parametrize("nan_step, log_every, ckpt_every, window, saved", [
    (5, 3, 4, "5-6", 4),  # caught at the next log point (step 6); the checkpoint of step 4 stays
    (3, 6, 2, "3-4", 2),  # caught before the checkpoint of step 4, before any log point: step 2's stays
])
def test_deferred_check_stops_at_the_next_check_and_keeps_the_last_good_checkpoint(
        synthetic_root, tmp_path, monkeypatch, nan_step, log_every, ckpt_every, window, saved):
    run = tmp_path / "run"
    _poison_at(monkeypatch, nan_step)
    with pytest.raises(SystemExit) as e:
        train.main(tiny_args(synthetic_root, run, "optim.iterations=8", f"ckpt_every={ckpt_every}",
                             f"log_every={log_every}", "check_finite=log"))
    message = str(e.value.code)
    assert "\n" not in message and message.startswith("error: non-finite depth loss")
    assert f"at step {nan_step} (check_finite=log: found when checking steps {window} together)" in message
    assert "last good checkpoint kept" in message and not (run / "metrics.json").exists()
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == saved
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_deferred_check_with_a_gradient_space_method_stops_at_the_nan_step(synthetic_root, tmp_path, monkeypatch):
    """Gradient-space methods still check J every step: the NaN loss gives a NaN row of J, caught before
    the update, so the step is named exactly."""
    run = tmp_path / "run"
    _poison_at(monkeypatch, 3)
    with pytest.raises(SystemExit, match=r"non-finite depth gradient at step 3"):
        train.main(tiny_args(synthetic_root, run, "optim.iterations=6", "ckpt_every=2", "log_every=4",
                             "check_finite=log", "method.name=gradient-mean"))
    assert torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"] == 2


@pytest.mark.parametrize("method", ["uncertainty", "gradient-mean"])
def test_deferred_check_logs_the_same_losses_and_weights(synthetic_root, tmp_path, method):
    out = {}
    for mode in ("step", "log"):
        run = tmp_path / mode
        train.main(tiny_args(synthetic_root, run, "optim.iterations=4", "log_every=2", f"check_finite={mode}",
                             f"method.name={method}"))
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out[mode] = ([{k: v for k, v in r.items() if k.startswith("loss/")} for r in rows],
                     torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])
    assert out["step"][0] == out["log"][0] and any(out["log"][0])
    assert all(torch.equal(out["step"][1][k], out["log"][1][k]) for k in out["step"][1])


# ----------------------------------------------------------------------------- compile

def _steps(overrides, steps=2):
    from bench.train import random_batch
    from engine.build import build_parts
    from engine.step import train_step

    cfg = load_config([], [*TINY, "deterministic=false", *overrides])
    parts = build_parts(cfg, torch.device("cpu"), steps_per_epoch=10)
    parts.model.train()
    batch = random_batch(2, 32, 64, torch.device("cpu"))
    losses = [train_step(parts, batch, i).losses for i in range(steps)]
    return losses, parts


def _same_steps(compiled, eager):
    for a, b in zip(compiled[0], eager[0]):
        for key in b:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    state = compiled[1].model.state_dict()
    assert not any("_orig_mod" in k for k in state) and state.keys() == eager[1].model.state_dict().keys()
    for k, v in eager[1].model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(state[k], v, rtol=1e-3, atol=1e-5), k


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the aot_eager backend: dynamo's graph capture and AOTAutograd's joint graph, as with
    inductor, but no code generation (inductor takes about 2 minutes per model on this 2-core CPU)."""
    import engine.build

    real = torch.compile
    monkeypatch.setattr(engine.build.torch, "compile", lambda net, mode=None: real(net, mode=mode,
                                                                                   backend="aot_eager"))
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("method", ["uncertainty", "gradient-mean"])
def test_compiled_step_matches_eager(aot_eager, method):
    compiled = _steps(["compile=default", f"method.name={method}"])
    assert type(compiled[1].net).__name__ == "OptimizedModule"
    _same_steps(compiled, _steps([f"method.name={method}"]))


def test_compiled_training_writes_checkpoints_that_load_into_eager_models(aot_eager, synthetic_root, tmp_path):
    from models import build_model

    train.main(tiny_args(synthetic_root, tmp_path / "c", "optim.iterations=2", "compile=reduce-overhead"))
    ckpt = torch.load(tmp_path / "c" / "checkpoint.pt", map_location="cpu", weights_only=True)
    build_model(load_config([], TINY)).load_state_dict(ckpt["model"])  # strict: same keys, no _orig_mod.
    train.main(tiny_args(synthetic_root, tmp_path / "e", "optim.iterations=2"))
    eager = torch.load(tmp_path / "e" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["model"].keys() == eager["model"].keys()


def test_step_benchmark_times_compiled_and_deferred_variants(aot_eager):
    from bench.train import main as bench_train

    result = bench_train([*TINY, "compile=default", "--steps", "2", "--warmup", "1", "--rounds", "1", "--peak-n",
                          "128", "--no-baseline", "--variant", "deferred", "check_finite=log"])
    assert set(result["variants"]) == {"config", "deferred"} and result["gflop_per_step"] > 0


@pytest.mark.skipif(not __import__("os").environ.get("TEST_INDUCTOR"),
                    reason="inductor's CPU code generation takes about 2 minutes for the smallest model on this "
                           "2-core machine with a cold cache (19 s warm); set TEST_INDUCTOR=1 to run it")
def test_inductor_compiled_step_matches_eager():
    """The real compile=default (inductor) on the smallest config; slow, opt-in (TEST_INDUCTOR=1)."""
    try:
        _same_steps(_steps(["compile=default"]), _steps([]))
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- data.resident

@pytest.fixture(scope="module")
def train_cache(synthetic_root, tmp_path_factory):
    from data.cache import write_split

    out = tmp_path_factory.mktemp("cache")
    for split in ("train", "val"):
        write_split(synthetic_root, split, (32, 64), out, progress=False)
    return out


def _batches(cfg, root, steps, rank=0, world=1, start_step=0):
    from data.loaders import make_loaders

    loader, _, spe = make_loaders(cfg, root, rank, world, start_step, pin=False, device=torch.device("cpu"))
    it = iter(loader)
    return [next(it) for _ in range(steps)], spe


@pytest.mark.parametrize("cache", ["off", "built"])
@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_resident_batches_equal_the_loaders_flips_included(synthetic_root, train_cache, cache, rank, world):
    cache = "off" if cache == "off" else str(train_cache)
    common = [*TINY, f"data.root={synthetic_root}", f"data.cache={cache}", "data.flip=true", "seed=3"]
    if world == 2:
        common.append("optim.batch_size=2")  # one item per process: 2 steps per epoch of the 4 frames
    steps = 8
    expected, spe = _batches(load_config([], common), synthetic_root, steps, rank, world)
    got, spe2 = _batches(load_config([], [*common, "data.resident=true"]), synthetic_root, steps, rank, world)
    assert spe == spe2
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    split = _split(load_config([], [*common, "data.resident=true"]), synthetic_root)  # the flips drawn: both
    flips = [split.flip_of(3, e, i) for e in range(4) for i in range(4)]  # ways, so both paths ran
    assert any(flips) and not all(flips)
    # resumed in the middle of an epoch (step 3 of 2 per epoch x ...): the same batches as uninterrupted
    resumed, _ = _batches(load_config([], [*common, "data.resident=true"]), synthetic_root, 5, rank, world,
                          start_step=3)
    for a, b in zip(got[3:], resumed):
        assert all(torch.equal(a[k], b[k]) for k in a)


def _split(cfg, root):
    from data.cityscapes import CityscapesMultiTask
    from data.resident import ResidentSplit
    from data.transforms import Augment

    ds = CityscapesMultiTask(root, "train", size=cfg.data.size, augment=Augment(flip=cfg.data.flip),
                             cache=cfg.data.cache)
    return ResidentSplit(ds, torch.device("cpu"))


def test_negating_x_is_not_the_cpu_flip_which_is_why_the_flipped_x_is_stored(synthetic_root):
    """The CPU path rebuilds x from the mirrored centroid; plain negation differs from it in the last bit
    (14 % of the x components of 20 synthetic frames at 128x256, at most 7.6e-6 px): the resident split
    stores the CPU path's flipped x and must equal it."""
    cfg = load_config([], [*TINY, f"data.root={synthetic_root}", "data.cache=off"])
    split = _split(cfg, synthetic_root)
    for i in range(len(split.dataset)):
        cpu = split.dataset.fixed_item(i, flip=True)["instance"]
        assert torch.equal(split.flipped_x[i], cpu[0])
        negated = -split.arrays["instance"][i, 0].flip(-1)
        assert torch.allclose(negated, cpu[0], atol=1e-4)  # equal up to rounding


def test_resident_training_gives_the_same_weights(synthetic_root, tmp_path):
    out = {}
    for resident in ("false", "true"):
        run = tmp_path / resident
        train.main(tiny_args(synthetic_root, run, "optim.iterations=3", "data.cache=off", f"data.resident={resident}"))
        out[resident] = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(out["false"][k], out["true"][k]) for k in out["false"])


def test_step_benchmark_with_the_resident_split(synthetic_root):
    from bench.train import main as bench_train

    result = bench_train([*TINY, f"data.root={synthetic_root}", "--loader", "--steps", "2", "--warmup", "1",
                          "--rounds", "1", "--peak-n", "128", "--variant", "resident", "data.resident=true"])
    assert set(result["variants"]) == {"config", "naive", "resident"}
    assert result["variants"]["naive"]["overrides"][-1] == "data.resident=false"


# ----------------------------------------------------------------------------- packing

def test_packing_benchmark_runs_n_trainings_at_once_and_reports_runs_per_hour(synthetic_root, tmp_path,
                                                                               monkeypatch):
    import experiments.runner
    from bench.packing import main as packing
    from bench.perf_table import render

    monkeypatch.setattr(experiments.runner, "visible_gpus", lambda: [])
    out = tmp_path / "perf" / "packing-cpu.json"
    result = packing([*TINY, f"data.root={synthetic_root}", "optim.iterations=2", "--n", "1,2", "--threads", "1",
                      "--out", str(out), "--work", str(tmp_path)])
    rows = {r["n"]: r for r in result["packing"]}
    assert set(rows) == {1, 2} and len(rows[2]["run_wall_s"]) == 2 and rows[2]["threads_each"] == 1
    for r in rows.values():  # wall_s is rounded to 0.1 s: on a run of a few seconds that alone is over 1 %
        low, high = (r["n"] * 3600 / (r["wall_s"] + d) for d in (0.05, -0.05))
        assert low - 0.01 <= r["runs_per_hour"] <= high + 0.01
    assert rows[1]["runs_per_gpu_hour"] is None and all(rows[2]["images_per_s"])
    assert json.loads(out.read_text())["device"].startswith("cpu")
    assert "| 2 | 1 |" in render(out.parent) and not list(tmp_path.glob("packing-*"))  # temporary runs removed


# ----------------------------------------------------------------------------- under DDP

@contextlib.contextmanager
def _aot_eager_compile():
    """torch.compile with the aot_eager backend (inductor is too slow here), inside a DDP case's process."""
    import engine.build

    real = torch.compile
    engine.build.torch.compile = lambda net, mode=None: real(net, mode=mode, backend="aot_eager")
    try:
        yield
    finally:
        engine.build.torch.compile = real


def test_two_process_ddp_switches_train_like_the_default(synthetic_root, tmp_path):
    """2 gloo processes, gradient-space method (the harder case: no_sync and the Jacobian inside): with
    check_finite=log and data.resident=true (each process gathers its shard's batches) both replicas hold
    the default run's weights bit for bit; compiled after the DDP wrap (compile=default), identical replicas
    within float tolerance of the eager run. One reference run serves both, and the three runs share one
    process group start-up (suite time)."""
    from test_identity import ddp_case, run_ddp_cases

    common = ["optim.iterations=4", "ckpt_every=2", "device=cpu", "data.cache=off", "method.name=gradient-mean"]
    run_ddp_cases([
        ddp_case("default", tiny_args(synthetic_root, tmp_path / "a" / "run", *common), tmp_path / "a"),
        ddp_case("check_finite=log, data.resident=true", tiny_args(
            synthetic_root, tmp_path / "b" / "run", *common, "check_finite=log", "data.resident=true"), tmp_path / "b"),
        ddp_case("compile=default", tiny_args(synthetic_root, tmp_path / "c" / "run", *common, "compile=default"),
                 tmp_path / "c", patch=_aot_eager_compile)])
    a = torch.load(tmp_path / "a" / "rank0.pt", weights_only=True)
    for r in (0, 1):
        b = torch.load(tmp_path / "b" / f"rank{r}.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c0, c1 = (torch.load(tmp_path / "c" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(c0[k], c1[k]) for k in c0)
    for k in a:
        torch.testing.assert_close(c0[k], a[k], rtol=1e-3, atol=1e-5, msg=k)
