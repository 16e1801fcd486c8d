"""Train the multi-task network of Kendall, Gal & Cipolla (CVPR 2018).

    python train.py --config configs/demo.yaml [--config override.yaml ...] [key=value ...]
    torchrun --nproc_per_node 4 train.py --config configs/paper_tiny.yaml

The run directory (`run_dir`, default runs/<config name>/<experiment identity>) holds config.yaml,
checkpoint.pt, metrics.jsonl (training logs) and, once finished, metrics.json (final validation metrics).
Running the same command again resumes an interrupted run; a finished run is not retrained. One
training at a time per run directory: a second one stops at once, naming the first (infra/lock.py).
Ctrl-C and SIGTERM keep the last checkpoint and exit with status 130 / 143; SIGUSR1 or SIGUSR2 (a scheduler's
preemption notice) writes a checkpoint at the next logging step and exits with status 138; errors are one line
("error: ...") with status 1. The training step itself is engine/step.py; the run directory (lock, log, resume
checks, checkpoints, metrics.json) is engine/rundir.py's RunDir; the loaders are data/loaders.py; the method
(`method.name`) is any entry of losses.METHODS.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from data.cityscapes import DataError, one_line
from data.loaders import eval_loader, make_loaders, training_root
from engine.build import build_parts
from engine.checkpoint import CheckpointError
from engine.config import Config, ConfigError, load_config
from engine.distributed import ReplicaMismatchError, any_process, init_distributed
from engine.rundir import RunDir
from engine.step import LossWindow, NonFiniteLossError, train_step
from evaluation import NonFiniteOutputError, evaluate_model
from infra.lock import LockHeld
from infra.stop import (
    PREEMPTED_STATUS,
    Preempted,
    Terminated,
    exit_status,
    preempt_signals,
    preemption_requested,
    stop_signals,
)
from models.pretrained import PretrainedWeightsMissing, check_initial_weights


def parse_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Return (config files, key=value overrides) from the command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="YAML preset; repeat to apply overrides in order")
    p.add_argument("overrides", nargs="*", help="dotted key=value, e.g. method.fixed.weights.semantic=0.89")
    args = p.parse_args(argv)
    return args.config, args.overrides


def train(cfg: Config, command: list[str] | None = None) -> dict:
    """Train (or resume) the run described by `cfg`, holding its run directory's lock; return its final
    metrics dict."""
    rank, world, device = init_distributed(cfg.device)
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {world} processes")
    if world > 1 and cfg.sync_bn and device.type != "cuda":
        raise ConfigError("sync_bn needs CUDA: SyncBatchNorm does not run with gloo on the CPU; set sync_bn=false")
    master = rank == 0
    with RunDir(cfg, command, rank, world) as run:
        if (final := run.finished()) is not None:
            return final
        if not run.checkpoint_path.exists():  # offline without the configured initial weights: stop before writing
            check_initial_weights(cfg.model)
        # An error here leaves no run directory behind (engine/rundir.py).
        root = training_root(cfg.data_root, cfg.data.synthetic_profile)
        if master:
            print(f"run directory: {run.path}\ndataset: {root}", flush=True)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        else:
            torch.backends.cudnn.benchmark = True
        ckpt = run.resume(root)
        step = ckpt["step"] if ckpt is not None else 0
        test_loader = eval_loader(cfg, root, cfg.data.test_split, rank, world) if cfg.data.test_split else None
        loader, val_loader, steps_per_epoch = make_loaders(cfg, root, rank, world, step, pin=device.type == "cuda",
                                                           device=device)

        # Model, method, optimiser, schedule, scaler (and DDP): the method's parameters live outside the network.
        parts = build_parts(cfg, device, steps_per_epoch, world, rank, pretrained=ckpt is None)
        step = run.start(parts, ckpt)  # the checkpoint's state and RNG, or config.yaml written; the log opened

        window = LossWindow()  # the losses since the last log point (check_finite=log: still unchecked on the device)
        bar = tqdm(total=cfg.optim.iterations, initial=step, disable=not master, dynamic_ncols=True, desc=cfg.name)
        tick, tick_step = time.perf_counter(), step
        batches = iter(loader)
        parts.model.train()
        while step < cfg.optim.iterations:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            result = train_step(parts, batch, step)
            step += 1
            window.add(step, result.losses)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.optim.iterations:
                n, now = step - tick_step, time.perf_counter()
                sums = {f"loss/{k}": v for k, v in window.take().items()}
                row = window_means(sums, n, world, device) | {k: float(v) for k, v in result.logs.items()} | {
                    "lr": parts.optimizer.param_groups[0]["lr"],
                    "images_per_s": n * cfg.optim.batch_size / (now - tick)}
                run.log.write(step, row)
                bar.set_postfix({k.split("/", 1)[1] if k.startswith("loss/") else k: f"{v:.3g}"
                                 for k, v in row.items() if k.startswith(("loss/", "sigma2/"))})
                tick, tick_step = now, step
            if cfg.val_every and step % cfg.val_every == 0 and step < cfg.optim.iterations:
                window.flush()
                val = evaluate_model(parts.model, val_loader, device, parts.autocast_dtype)
                run.log.write(step, {f"val/{k}": v for k, v in val.items()})
                parts.model.train()
            # A preemption signal: checkpoint at a logging step (the loss window is empty there, so the resumed run
            # logs what an uninterrupted one does), every process at the same step, then stop.
            preempted = (step % cfg.log_every == 0 and step < cfg.optim.iterations
                         and any_process(preemption_requested(), device))
            if step % cfg.ckpt_every == 0 or step == cfg.optim.iterations or preempted:
                window.flush()  # check_finite=log: a non-finite loss since the last check stops the run unsaved
                run.checkpoint(step)
            if preempted:
                raise Preempted(f"preempted at step {step}")
        bar.close()

        metrics = val_metrics = evaluate_model(parts.model, val_loader, device, parts.autocast_dtype)
        if test_loader is not None:  # the reported numbers come from the held-out split; val's stay for selection
            metrics = evaluate_model(parts.model, test_loader, device, parts.autocast_dtype)
        run.finish(step, metrics, val_metrics)
        return {"metrics": metrics, "model": parts.model, "method": parts.method, "replicas": run.replicas}


def window_means(sums: dict[str, float], n: int, world: int, device: torch.device) -> dict[str, float]:
    """Means over the logging window. Task losses are already averaged over processes; the total
    (this process's) is averaged here (one all-reduce at logging steps only)."""
    means = {k: v / n for k, v in sums.items()}
    if world > 1 and "loss/total" in means:
        total = torch.tensor(means["loss/total"], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        means["loss/total"] = float(total) / world
    return means


def main(argv: list[str] | None = None) -> dict:
    files, overrides = parse_args(argv)
    try:
        cfg = load_config(files, overrides)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    command = ["python", *sys.argv] if argv is None else ["python", "train.py", *argv]
    ckpt_path = cfg.resolved_run_dir / "checkpoint.pt"
    try:
        with stop_signals(), preempt_signals():
            return train(cfg, command)
    except Preempted as e:
        print(f"\n{e}: checkpoint written to {ckpt_path}; run the same command to resume", file=sys.stderr)
        raise SystemExit(PREEMPTED_STATUS) from None
    except (KeyboardInterrupt, Terminated) as e:
        why = "SIGTERM" if isinstance(e, Terminated) else "Ctrl-C"
        kept = f"last checkpoint kept: {ckpt_path}" if ckpt_path.exists() else "no checkpoint saved yet"
        print(f"\ninterrupted ({why}); {kept}; run the same command to resume", file=sys.stderr)
        raise SystemExit(exit_status(e)) from None
    except NonFiniteLossError as e:
        kept = f"last good checkpoint kept: {ckpt_path}" if ckpt_path.exists() else "no checkpoint saved yet"
        sys.exit(f"error: {e}; stopped without saving, {kept}")
    except (ConfigError, DataError, ReplicaMismatchError, LockHeld, CheckpointError, NonFiniteOutputError,
            PretrainedWeightsMissing, OSError) as e:
        sys.exit(f"error: {one_line(e)}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
