"""The training loop: optimiser groups, end to end, resume checks and the NaN stop. Exact resume after SIGKILL
and DDP through train.py (identical replicas, exact resume, the replica check) are in test_identity.py."""

import json
from pathlib import Path

import pytest
import torch

import engine.step
import train
from engine.build import build_optimizer, poly_schedule
from engine.config import load_config
from losses import StepContext, build_weighting, task_losses
from models import build_model
from tasks import TASK_KINDS

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
        losses = task_losses(model(batch["image"]), batch)
        return weighting(losses, StepContext.of(losses))[0]

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


def test_missing_dataset_root_exits_with_its_name(tmp_path):
    with pytest.raises(SystemExit, match=r"error: .*nodata: dataset root is not a directory"):
        train.main(["--config", str(ROOT / "configs" / "demo.yaml"), f"data.root={tmp_path / 'nodata'}",
                    f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
