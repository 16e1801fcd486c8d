"""Train the multi-task network of Kendall, Gal & Cipolla (CVPR 2018).

    python train.py --config configs/demo.yaml [--config override.yaml ...] [key=value ...]
    torchrun --nproc_per_node 4 train.py --config configs/paper_tiny.yaml

The run directory (`run_dir`, default runs/<config name>) holds config.yaml, checkpoint.pt,
metrics.jsonl (training logs) and, once finished, metrics.json (final validation metrics).
Running the same command again resumes an interrupted run; a finished run is not retrained.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from atomic_write import write_json
from checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from config import Config, ConfigError, config_from_dict, load_config
from data.cityscapes import CityscapesMultiTask, DataError
from data.sampler import ResumableSampler, SeededItems
from data.transforms import Augment
from evaluate import evaluate_model
from losses import build_weighting_from_config, task_losses
from models import build_model


class NonFiniteLossError(RuntimeError):
    """A task loss or the total became NaN or infinite."""


# ----------------------------------------------------------------------------- set-up

def parse_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Return (config files, key=value overrides) from the command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="YAML preset; repeat to apply overrides in order")
    p.add_argument("overrides", nargs="*", help="dotted key=value, e.g. weighting.weights.semantic=0.89")
    args = p.parse_args(argv)
    return args.config, args.overrides


def init_distributed(cfg: Config) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun one process per GPU (or CPU process with gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world, torch.device("cuda", local_rank)
    return rank, world, torch.device("cpu")


def make_datasets(cfg: Config) -> tuple[CityscapesMultiTask, CityscapesMultiTask]:
    d = cfg.data
    augment = Augment(flip=d.flip, scale=d.scale, crop=d.crop, jitter=d.jitter)
    train = CityscapesMultiTask(cfg.data_root, d.train_split, size=d.size, augment=augment, limit=d.train_frames)
    val = CityscapesMultiTask(cfg.data_root, d.val_split, size=d.size, augment=False, limit=d.val_frames)
    return train, val


def build_optimizer(cfg: Config, model: torch.nn.Module, weighting: torch.nn.Module) -> torch.optim.SGD:
    """Paper SGD (Appendix A); weight decay only on conv/linear weights, never on norms, biases
    or the weighting's log-variances, which get their own learning-rate multiplier."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    o = cfg.optim
    groups = [{"params": decay, "weight_decay": o.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    weighting_params = list(weighting.parameters())
    if weighting_params:
        groups.append({"params": weighting_params, "weight_decay": 0.0, "lr": o.lr * cfg.weighting.lr_mult})
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)


def poly_schedule(optimizer: torch.optim.Optimizer, iterations: int, power: float):
    """lr = base_lr * (1 - step / iterations) ** power, stepped every iteration."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - min(step, iterations) / iterations) ** power)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def check_same_experiment(cfg: Config, saved: dict, run_dir: Path) -> None:
    """Refuse to resume a run directory that holds a different experiment."""
    old = config_from_dict(saved)
    if old.hash() != cfg.hash():
        a, b = _flatten(old.to_dict()), _flatten(cfg.to_dict())
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith(("name", "run_dir")))
        raise ConfigError(f"{run_dir} holds a run with a different config (differs in {', '.join(diff)}); "
                          f"choose another run_dir or delete that one")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "weights":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


# ----------------------------------------------------------------------------- training

def train(cfg: Config, command: list[str] | None = None) -> dict:
    """Train (or resume) the run described by `cfg`; return its final metrics dict."""
    rank, world, device = init_distributed(cfg)
    master = rank == 0
    run_dir = cfg.resolved_run_dir
    ckpt_path, final_path = run_dir / "checkpoint.pt", run_dir / "metrics.json"
    if final_path.exists():
        final = json.loads(final_path.read_text())
        check_same_experiment(cfg, final["config"], run_dir)
        if master:
            print(f"{run_dir}: already finished ({final_path}); not retraining")
        return final
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {world} processes")
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)

    # Model, loss weighting, optimiser. The weighting's parameters live outside the network.
    model = build_model(cfg).to(device)
    if world > 1 and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    try:
        weighting = build_weighting_from_config(cfg).to(device)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    optimizer = build_optimizer(cfg, model, weighting)
    scheduler = poly_schedule(optimizer, cfg.optim.iterations, cfg.optim.poly_power)
    dtype = cfg.autocast_dtype(device.type)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    step, started = 0, time.perf_counter()
    if ckpt_path.exists():  # resume
        ckpt = load_checkpoint(ckpt_path)
        check_same_experiment(cfg, ckpt["config"], run_dir)
        model.load_state_dict(ckpt["model"])
        weighting.load_state_dict(ckpt["weighting"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        step = ckpt["step"]
        if master:
            print(f"resuming {run_dir} from step {step}")
    elif master:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model

    train_set, val_set = make_datasets(cfg)
    per_rank_batch = cfg.optim.batch_size // world
    sampler = ResumableSampler(len(train_set), per_rank_batch, cfg.seed, rank, world, start_step=step)
    loader = DataLoader(SeededItems(train_set, cfg.seed), batch_size=per_rank_batch, sampler=sampler,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda", drop_last=True,
                        persistent_workers=False)
    val_loader = DataLoader(Subset(val_set, range(rank, len(val_set), world)), batch_size=cfg.eval_batch_size,
                            num_workers=cfg.data.num_workers)

    def checkpoint() -> None:
        states = [rng_state()]
        if world > 1:  # each process resumes its own RNG stream
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        if master:
            save_checkpoint(ckpt_path, {
                "config": _plain(cfg.to_dict()), "model": model.state_dict(), "weighting": weighting.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": states, "step": step})

    log = JsonlLog(run_dir / "metrics.jsonl", enabled=master, wandb_mode=cfg.wandb, cfg=cfg, resume_step=step)
    bar = tqdm(total=cfg.optim.iterations, initial=step, disable=not master, dynamic_ncols=True, desc=cfg.name)
    sums: dict[str, float] = {}
    tick, tick_step = time.perf_counter(), step
    batches = iter(loader)
    model.train()
    while step < cfg.optim.iterations:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = net(batch["image"])  # {task: (B, C, H, W)}
        losses = task_losses(outputs, batch)  # {task: scalar}, float32
        if weighting.requires_task_grads:  # methods like PCGrad combine per-task gradients below
            total, logs = sum(losses.values()), {}
        else:
            total, logs = weighting(losses)
        values = torch.stack([*losses.values(), total]).detach().float()
        if world > 1:  # every process must see a non-finite loss anywhere, and logs show the global mean
            dist.all_reduce(values)
            values /= world
        values = values.cpu().tolist()  # one sync per step
        if not all(math.isfinite(v) for v in values):
            bad = [t for t, v in zip([*losses, "total"], values) if not math.isfinite(v)]
            raise NonFiniteLossError(f"non-finite {bad[0]} loss ({dict(zip([*losses, 'total'], values))}) at step "
                                     f"{step + 1}; stopped without saving, last good checkpoint kept: {ckpt_path}")
        optimizer.zero_grad(set_to_none=True)
        if weighting.requires_task_grads:
            logs = weighting.backward(losses, model.shared_parameters())
        else:
            scaler.scale(total).backward()
        if world > 1:  # the weighting is outside DDP: average its gradients by hand
            for p in weighting.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        if cfg.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *weighting.parameters()], cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1

        for key, v in zip([*(f"loss/{t}" for t in losses), "loss/total"], values):
            sums[key] = sums.get(key, 0.0) + v
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.optim.iterations:
            n = step - tick_step
            now = time.perf_counter()
            row = {k: v / n for k, v in sums.items()} | logs | {
                "lr": optimizer.param_groups[0]["lr"], "images_per_s": n * cfg.optim.batch_size / (now - tick)}
            log.write(step, row)
            bar.set_postfix({k.split("/", 1)[1] if k.startswith("loss/") else k: f"{v:.3g}"
                             for k, v in row.items() if k.startswith(("loss/", "sigma2/"))})
            sums, tick, tick_step = {}, now, step
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.optim.iterations:
            log.write(step, {f"val/{k}": v for k, v in evaluate_model(model, val_loader, device, dtype).items()})
            model.train()
        if step % cfg.ckpt_every == 0 or step == cfg.optim.iterations:
            checkpoint()
    bar.close()

    metrics = evaluate_model(model, val_loader, device, dtype)
    if master:
        log.write(step, {f"val/{k}": v for k, v in metrics.items()})
        write_json(final_path, {
            "step": step, "iterations": cfg.optim.iterations, "metrics": metrics, "config": _plain(cfg.to_dict()),
            "config_hash": cfg.hash(), "command": command or sys.argv, "git_commit": git_commit(),
            "wall_time_s": time.perf_counter() - started,  # this invocation only (after a resume: since it)
            "weighting": {k: v.tolist() for k, v in weighting.state_dict().items()}})
    log.close()
    return {"metrics": metrics, "model": model, "weighting": weighting}


def _plain(obj):
    """Tuples -> lists so config.yaml and JSON read back the same on every platform."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _logged_step(line: str) -> float:
    """Step of a metrics.jsonl line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class JsonlLog:
    """Appends one JSON object per logging step to metrics.jsonl (rank 0), and to wandb if enabled."""

    def __init__(self, path: Path, enabled: bool, wandb_mode: str, cfg: Config, resume_step: int = 0):
        self.path, self.enabled, self.wandb = path, enabled, None
        if enabled and path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [ln for ln in path.read_text().splitlines(keepends=True) if _logged_step(ln) <= resume_step]
            path.write_text("".join(kept))
        if enabled and wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(mode=wandb_mode, dir=str(path.parent), name=cfg.name, config=cfg.to_dict(),
                                    resume="allow", id=f"{cfg.name}-{cfg.hash()}")

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def main(argv: list[str] | None = None) -> dict:
    files, overrides = parse_args(argv)
    try:
        cfg = load_config(files, overrides)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    command = ["python", *sys.argv] if argv is None else ["python", "train.py", *argv]
    try:
        return train(cfg, command)
    except (NonFiniteLossError, ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
