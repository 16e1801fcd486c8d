"""The training loop: optimiser groups, end to end, exact resume after SIGKILL, NaN stop, and DDP through
train.py for a stateful loss-space method and a gradient-space method (identical replicas, exact resume,
the replica check)."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import engine.step
import train
from engine.build import build_optimizer, poly_schedule
from engine.config import load_config
from losses import build_weighting, task_losses
from models import build_model
from tasks import TASK_KINDS, TASKS

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true"]


def tiny_args(root, run_dir, *extra):
    return [*TINY, f"data.root={root}", f"run_dir={run_dir}", *extra]


def _weights(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["model"] | {f"method.{k}": v for k, v in ckpt["method"].items()}


def test_optimizer_groups_put_log_variances_apart_without_decay():
    cfg = load_config([], TINY + ["method.lr_mult=2.0"])
    model = build_model(cfg)
    weighting = build_weighting("uncertainty", {t: TASK_KINDS[t] for t in cfg.tasks})
    opt = build_optimizer(cfg, model, weighting)
    ids = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in ids for p in model.parameters())
    for p in weighting.parameters():
        assert ids[id(p)]["weight_decay"] == 0.0 and ids[id(p)]["lr"] == pytest.approx(2 * cfg.optim.lr)
    for name, p in model.named_parameters():  # decay on conv weights only: never norms or biases
        assert ids[id(p)]["weight_decay"] == (1e-4 if p.ndim > 1 else 0.0), name
    assert not set(map(id, weighting.parameters())) & set(map(id, model.parameters()))
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9


def test_one_step_lowers_the_loss_and_moves_log_variances(synthetic_root):
    from data.cityscapes import CityscapesMultiTask

    torch.manual_seed(0)
    cfg = load_config([], TINY + ["optim.lr=0.01"])
    ds = CityscapesMultiTask(synthetic_root, "train", size=(32, 64))
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    model = build_model(cfg)
    weighting = build_weighting("uncertainty", {t: TASK_KINDS[t] for t in cfg.tasks})
    opt = build_optimizer(cfg, model, weighting)
    model.eval()  # fixed BN statistics so the two evaluations see the same function

    def total():
        return weighting(task_losses(model(batch["image"]), batch))[0]

    before = total()
    opt.zero_grad()
    before.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weighting.parameters())
    s_before = [p.detach().clone() for p in weighting.parameters()]
    opt.step()
    with torch.no_grad():
        assert total() < before
    assert all(not torch.equal(a, b) for a, b in zip(s_before, weighting.parameters()))


def test_poly_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = poly_schedule(opt, 10, 0.9)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5 ** 0.9) and opt.param_groups[0]["lr"] == 0.0


def test_train_end_to_end_and_not_retrained(synthetic_root, tmp_path):
    run = tmp_path / "run"
    train.main(tiny_args(synthetic_root, run, "optim.iterations=4", "ckpt_every=2"))
    final = json.loads((run / "metrics.json").read_text())
    assert final["step"] == 4
    assert final["identity"] == load_config([], tiny_args(synthetic_root, run, "optim.iterations=4")).identity()
    assert final["replicas"] == {"processes": 1, "identical": True}
    assert {"semantic/miou", "instance/mean_error_px", "depth/mean_error_px"} <= set(final["metrics"])
    assert final["command"][:2] == ["python", "train.py"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss/total" in x] == [1, 2, 3, 4]
    assert {"sigma2/semantic", "weight/depth", "lr", "images_per_s"} <= set(lines[0])
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["config"]["run_dir"] == str(run)
    mtime = (run / "checkpoint.pt").stat().st_mtime_ns
    train.main(tiny_args(synthetic_root, run, "optim.iterations=4", "ckpt_every=2"))  # finished: nothing to do
    assert (run / "checkpoint.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("method", ["famo", "nash-mtl"])
def test_metrics_json_holds_a_method_state_with_extra_state(synthetic_root, tmp_path, method):
    """FAMO's Adam moments and Nash-MTL's solver state are extra state (a dict, not a tensor): the final
    metrics.json must still be written (it used to end the run with an AttributeError after training),
    and a finished checkpoint without metrics.json is evaluated and written on the next call."""
    run = tmp_path / "run"
    args = tiny_args(synthetic_root, run, "optim.iterations=2", f"method.name={method}",
                     *([f"method.{method}.space=features"] if method == "nash-mtl" else []))
    train.main(args)
    final = json.loads((run / "metrics.json").read_text())
    assert "_extra_state" in final["method_state"]
    (run / "metrics.json").unlink()
    train.main(args)
    again = json.loads((run / "metrics.json").read_text())
    assert again["step"] == 2 and again["metrics"] == final["metrics"]


def test_resume_refuses_a_different_experiment(synthetic_root, tmp_path):
    run = tmp_path / "run"
    train.main(tiny_args(synthetic_root, run, "optim.iterations=1"))
    with pytest.raises(SystemExit, match="different config.*optim.lr"):
        train.main(tiny_args(synthetic_root, run, "optim.iterations=1", "optim.lr=0.1"))
    (run / "metrics.json").unlink()  # an unfinished run is checked the same way before resuming
    with pytest.raises(SystemExit, match="different config.*model.head_channels"):
        train.main(tiny_args(synthetic_root, run, "optim.iterations=1", "model.head_channels=4"))


def test_nan_loss_stops_cleanly_and_keeps_last_checkpoint(synthetic_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real, calls = engine.step.task_losses, []

    def poisoned(outputs, batch):
        losses = real(outputs, batch)
        calls.append(1)
        if len(calls) == 3:
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setattr(engine.step, "task_losses", poisoned)
    with pytest.raises(SystemExit, match=r"non-finite depth loss .* at step 3.*last good checkpoint kept"):
        train.main(tiny_args(synthetic_root, run, "optim.iterations=6", "ckpt_every=2"))
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 2 and not (run / "metrics.json").exists()
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


KILLER = """
import os, signal, sys
import engine.step
import train
real, calls = engine.step.task_losses, []
def killing(outputs, batch):
    calls.append(1)
    if len(calls) == int(os.environ["KILL_AT_CALL"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(outputs, batch)
engine.step.task_losses = killing
train.main(sys.argv[1:])
"""


def test_resume_after_sigkill_gives_identical_weights(synthetic_root, tmp_path, capsys):
    """Killed between checkpoints (step 5 of 8, last checkpoint at 4), then resumed: the final
    weights equal those of an uninterrupted run bit for bit. Only the killed run is a process of its own;
    the uninterrupted run and the resume run here, on one thread like it (suite time: one torch import)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    common = ["optim.iterations=8", "ckpt_every=2", "data.flip=true", "data.scale=[0.8,1.2]", "data.crop=[24,48]"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run([sys.executable, str(script), *tiny_args(synthetic_root, broken, *common)], cwd=ROOT,
                            env=env | {"KILL_AT_CALL": "6"}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert torch.load(broken / "checkpoint.pt", weights_only=True)["step"] == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train.main(tiny_args(synthetic_root, whole, *common))
        capsys.readouterr()
        train.main(tiny_args(synthetic_root, broken, *common))
    finally:
        torch.set_num_threads(threads)
    assert "resuming" in capsys.readouterr().out
    a, b = _weights(whole / "checkpoint.pt"), _weights(broken / "checkpoint.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(x)["step"] for x in (broken / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s <= 8] == sorted(steps)  # no duplicated lines after the resume


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stop(Exception):
    """Raised by both processes at the same step to interrupt a DDP run after a checkpoint."""


def _ddp_worker(rank, world, port, args, out, stop_at=None, perturb_at=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    real = train.train_step

    def step(parts, batch, i):
        if stop_at is not None and i + 1 == stop_at:
            raise Stop
        result = real(parts, batch, i)
        if perturb_at is not None and i + 1 == perturb_at and rank == 1:  # one replica drifts
            with torch.no_grad():
                next(parts.model.parameters()).add_(1e-3)
        return result

    train.train_step = step
    try:
        result = train.main(args)
    except Stop:
        return
    except SystemExit as e:
        (Path(out) / f"rank{rank}.exit").write_text(str(e.code))
        return
    finally:
        train.train_step = real  # the next case of the same process trains with the real step
    # Parameters and the method's state must agree; BatchNorm running statistics stay per process (no sync_bn).
    state = {k: v.detach() for k, v in result["model"].named_parameters()}
    state |= {f"method.{k}": v for k, v in result["method"].state_dict().items()}
    torch.save(state, Path(out) / f"rank{rank}.pt")


def ddp_case(name, args, out, stop_at=None, perturb_at=None, patch=None) -> dict:
    """One train.py run of a run_ddp_cases() process group: stopped before step `stop_at`, replica 1 perturbed
    after step `perturb_at`, and trained inside the context manager `patch` (a module-level function)."""
    return {"name": name, "args": args, "out": str(out), "stop_at": stop_at, "perturb_at": perturb_at,
            "patch": patch}


def _ddp_cases_worker(rank, world, ports, cases):
    """Runs the cases one after the other, each in its own process group (train.main destroys it at the end).
    After a stopped case rank 0 notes the step of the checkpoint it left and whether metrics.json exists."""
    for port, case in zip(ports, cases):
        try:
            with case["patch"]() if case["patch"] else contextlib.nullcontext():
                _ddp_worker(rank, world, port, case["args"], case["out"], case["stop_at"], case["perturb_at"])
        except Exception as e:
            raise RuntimeError(f"DDP case {case['name']!r} failed on rank {rank}: {e!r}") from e
        if case["stop_at"] is not None and rank == 0:
            run = _run_dir(case["args"])
            step = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
            (Path(case["out"]) / "stopped.json").write_text(json.dumps(
                {"checkpoint_step": step, "metrics_json": (run / "metrics.json").exists()}))


def _run_dir(args) -> Path:
    return Path([a for a in args if a.startswith("run_dir=")][-1].removeprefix("run_dir="))


def run_ddp_cases(cases: list[dict]) -> None:
    """All `cases` in one spawned pair of gloo processes (one start-up, torch imported once per process)."""
    for case in cases:
        Path(case["out"]).mkdir(parents=True, exist_ok=True)
    ports = set()
    while len(ports) < len(cases):
        ports.add(_free_port())
    mp.spawn(_ddp_cases_worker, args=(2, sorted(ports), cases), nprocs=2, join=True)


# Replica identity and exact resume under DDP, one method of each kind:
DDP_METHODS = {
    "uncertainty": ["method.name=uncertainty"],  # loss-space with learnable state outside DDP: gradients all-reduced
    # dwa (loss-space with state) is not repeated here for suite time: its replica identity under DDP is in
    # test_method_zoo, its exact resume in test_method_zoo's resume test.
    "pcgrad": ["method.name=pcgrad"],  # gradient-space, random task order: seeded from (seed, step) on both processes
    "features": ["method.name=gradient-mean", "method.gradient-mean.space=features"],  # J of the features: gathered
}
THIRD = "method.fixed.weights={semantic: 0.3333333333333333, instance: 0.3333333333333333, " \
        "depth: 0.3333333333333333}"


@pytest.fixture(scope="module")
def ddp(synthetic_root, tmp_path_factory) -> Path:
    """Every DDP case of this file, trained once in one process group; the tests below read the results.
    Under xdist the tests that use it are one group (xdist_group "ddp-train"), so one worker trains them."""
    base = tmp_path_factory.mktemp("ddp-train")
    cases = []
    for name, method in DDP_METHODS.items():  # 2 processes x batch 1 on 4 frames: 2 steps per epoch
        common = ["optim.iterations=6", "ckpt_every=2", "device=cpu", *method]
        whole, broken = base / name / "whole", base / name / "broken"
        cases += [ddp_case(f"{name}: whole run", tiny_args(synthetic_root, whole / "run", *common), whole),
                  ddp_case(f"{name}: stopped at step 5", tiny_args(synthetic_root, broken / "run", *common), broken,
                           stop_at=5),
                  ddp_case(f"{name}: resumed", tiny_args(synthetic_root, broken / "run", *common), broken)]
    common = ["optim.iterations=1", "ckpt_every=1", "device=cpu", "data.flip=false"]
    for space in ("parameters", "features"):
        cases.append(ddp_case(f"gradient-mean, {space}", tiny_args(
            synthetic_root, base / f"jd-{space}" / "run", *common, "method.name=gradient-mean",
            f"method.gradient-mean.space={space}"), base / f"jd-{space}"))
    cases.append(ddp_case("fixed 1/3", tiny_args(synthetic_root, base / "loss" / "run", *common, "method.name=fixed",
                                                 THIRD), base / "loss"))
    cases.append(ddp_case("replica 1 perturbed", tiny_args(synthetic_root, base / "differ" / "run",
                                                           "optim.iterations=4", "ckpt_every=2", "device=cpu"),
                          base / "differ", perturb_at=1))
    run_ddp_cases(cases)
    return base


@pytest.mark.xdist_group("ddp-train")
@pytest.mark.parametrize("method", list(DDP_METHODS))
def test_two_process_gloo_ddp_identical_replicas_and_exact_resume(ddp, method):
    """2 processes x batch 1 on 4 frames: 2 steps per epoch. The whole run (6 steps) against one stopped at
    step 5 (after the checkpoint at 4) and resumed: identical replicas and identical final weights."""
    whole, broken = ddp / method / "whole", ddp / method / "broken"
    assert json.loads((broken / "stopped.json").read_text()) == {"checkpoint_step": 4, "metrics_json": False}
    for run in (whole, broken):
        r0, r1 = (torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1))
        assert r0.keys() == r1.keys()
        for k in r0:
            assert torch.equal(r0[k], r1[k]), k
        assert json.loads((run / "run" / "metrics.json").read_text())["replicas"] == {"processes": 2,
                                                                                      "identical": True}
    a, b = (torch.load(run / "rank0.pt", weights_only=True) for run in (whole, broken))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if method == "uncertainty":  # the log-variances trained
        start = build_weighting("uncertainty", {t: TASK_KINDS[t] for t in TASKS}).state_dict()  # the paper's tasks
        assert all(not torch.equal(a[f"method.{k}"], v) for k, v in start.items())


@pytest.mark.xdist_group("ddp-train")
@pytest.mark.parametrize("space", ["parameters", "features"])
def test_two_process_gradient_mean_is_ddp_averaged_like_the_loss_space_mean(ddp, space):
    """Under DDP the gradient-space mean must give the shared parameters the same update as the loss-space
    mean (fixed weights 1/3), whose gradients DDP averages over processes: J is reduced, not rank 0's own."""
    a, b = (torch.load(ddp / run / "rank0.pt", weights_only=True) for run in (f"jd-{space}", "loss"))
    shared = [k for k in a if k.startswith(("backbone.", "aspp."))]
    assert len(shared) > 50
    for k in shared:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.xdist_group("ddp-train")
def test_two_process_replicas_that_differ_stop_the_run(ddp):
    for r in (0, 1):
        assert "DDP replicas differ at step 2" in (ddp / "differ" / f"rank{r}.exit").read_text()
    assert not (ddp / "differ" / "run" / "checkpoint.pt").exists()
    assert not (ddp / "differ" / "run" / "metrics.json").exists()


def test_missing_dataset_root_exits_with_its_name(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*nodata: dataset root is not a directory"):
        train.main(["--config", str(ROOT / "configs" / "demo.yaml"), f"data.root={tmp_path / 'nodata'}",
                    f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
