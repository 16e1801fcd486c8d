"""Train the multi-task network of Kendall, Gal & Cipolla (CVPR 2018).

    python train.py --config configs/demo.yaml [--config override.yaml ...] [key=value ...]
    torchrun --nproc_per_node 4 train.py --config configs/paper_tiny.yaml

The run directory (`run_dir`, default runs/<config name>/<experiment identity>) holds config.yaml,
checkpoint.pt, metrics.jsonl (training logs) and, once finished, metrics.json (final validation metrics).
Running the same command again resumes an interrupted run; a finished run is not retrained. One
training at a time per run directory: a second one stops at once, naming the first (infra/lock.py).
Ctrl-C and SIGTERM keep the last checkpoint and exit with status 130 / 143; SIGUSR1 or SIGUSR2 (a scheduler's
preemption notice) writes a checkpoint at the next logging step and exits with status 138; errors are one line
("error: ...") with status 1. The training step itself is engine/step.py; the method (`method.name`) is
any entry of losses.METHODS.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from data.cityscapes import CityscapesMultiTask, DataError, one_line, resolve_root
from data.npy import NpyTwoTask
from data.resident import ResidentLoader, ResidentSplit
from data.sampler import ResumableSampler, SeededItems
from data.synthetic.profile import profile_problem, read_marker
from data.transforms import Augment
from engine.build import build_parts
from engine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    nonfinite_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from engine.config import IDENTITY_SCHEMA, Config, ConfigError, load_config
from engine.distributed import ReplicaMismatchError, any_process, check_replicas, init_distributed
from engine.rundir import JsonlLog, check_same_experiment, locked_run_dir, read_final, write_config
from engine.step import LossWindow, NonFiniteLossError, train_step
from evaluation import NonFiniteOutputError, evaluate_model
from infra.atomic import plain, write_json
from infra.lock import LockHeld
from infra.provenance import git_commit, repo_relative
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
from tasks import METRICS


def parse_args(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Return (config files, key=value overrides) from the command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="YAML preset; repeat to apply overrides in order")
    p.add_argument("overrides", nargs="*", help="dotted key=value, e.g. method.fixed.weights.semantic=0.89")
    args = p.parse_args(argv)
    return args.config, args.overrides


def make_loaders(cfg: Config, root: Path, rank: int, world: int, start_step: int, pin: bool,
                 device: torch.device | None = None) -> tuple[DataLoader | ResidentLoader, DataLoader, int]:
    """(training loader from `start_step` on, this process's shard of the val split, steps per epoch). With
    `data.resident` the training batches come from the split kept on `device` (data/resident.py)."""
    d = cfg.data
    augment = Augment(flip=d.flip, scale=d.scale, crop=d.crop, jitter=d.jitter)
    if d.format == "npy":  # the 2-task protocols' preprocessed layout (data/npy.py)
        train_set = NpyTwoTask(root, d.train_split, d.size, augment=d.flip, limit=d.train_frames)
        val_set = NpyTwoTask(root, d.val_split, d.size, augment=False, limit=d.val_frames)
    else:
        train_set = CityscapesMultiTask(root, d.train_split, size=d.size, augment=augment, limit=d.train_frames,
                                        cache=d.cache)
        val_set = CityscapesMultiTask(root, d.val_split, size=d.size, augment=False, limit=d.val_frames,
                                      cache=d.cache)
    for key, split, data in (("train_frames", d.train_split, train_set), ("val_frames", d.val_split, val_set)):
        asked = getattr(d, key)
        if asked is not None and len(data) < asked:  # the config (and the identity) would claim more frames
            raise ConfigError(f"data.{key}={asked} but split {split!r} of {root} has only {len(data)} frames; "
                              f"set data.{key}={len(data)} or null (all frames)")
    per_rank_batch = cfg.optim.batch_size // world
    try:
        sampler = ResumableSampler(len(train_set), per_rank_batch, cfg.seed, rank, world, start_step=start_step)
    except ValueError as e:  # fewer frames than one batch
        raise ConfigError(f"split {d.train_split!r} of {root}: {e} (optim.batch_size={cfg.optim.batch_size}, "
                          f"data.train_frames={d.train_frames})") from e
    if d.resident:
        built = time.perf_counter()
        resident = ResidentSplit(train_set, device or torch.device("cpu"))
        if rank == 0:
            print(f"resident training split: {len(train_set)} frames, {resident.nbytes / 2**30:.2f} GiB on "
                  f"{resident.device}, built in {time.perf_counter() - built:.1f} s", flush=True)
        loader = ResidentLoader(resident, per_rank_batch, cfg.seed, rank, world, start_step)
    else:
        loader = DataLoader(SeededItems(train_set, cfg.seed), batch_size=per_rank_batch, sampler=sampler,
                            num_workers=d.num_workers, pin_memory=pin, drop_last=True, persistent_workers=False)
    return loader, eval_loader(cfg, root, d.val_split, rank, world, val_set), sampler.steps_per_epoch


def eval_loader(cfg: Config, root: Path, split: str, rank: int, world: int,
                dataset: CityscapesMultiTask | None = None) -> DataLoader:
    """This process's shard of an evaluation split (val for selection, data.test_split for the scores)."""
    d = cfg.data
    dataset = dataset or CityscapesMultiTask(root, split, size=d.size, augment=False, limit=d.val_frames,
                                             cache=d.cache)
    return DataLoader(Subset(dataset, range(rank, len(dataset), world)), batch_size=cfg.eval_batch_size,
                      num_workers=d.num_workers)


def train(cfg: Config, command: list[str] | None = None) -> dict:
    """Train (or resume) the run described by `cfg`, holding its run directory's lock; return its final
    metrics dict."""
    rank, world, device = init_distributed(cfg.device)
    if cfg.optim.batch_size % world:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is not divisible by {world} processes")
    if world > 1 and cfg.sync_bn and device.type != "cuda":
        raise ConfigError("sync_bn needs CUDA: SyncBatchNorm does not run with gloo on the CPU; set sync_bn=false")
    master = rank == 0
    with contextlib.ExitStack() as stack:
        held = None  # rank 0 takes the lock; every process learns whether it got it
        try:
            stack.enter_context(locked_run_dir(cfg.resolved_run_dir, command, enabled=master))
        except LockHeld as e:
            held = str(e)
        if world > 1:
            box = [held]
            dist.broadcast_object_list(box, src=0)
            held = box[0]
        if held:
            raise LockHeld(held)
        return _train(cfg, command, rank, world, device)


def _train(cfg: Config, command: list[str] | None, rank: int, world: int, device: torch.device) -> dict:
    master = rank == 0
    run_dir = cfg.resolved_run_dir
    ckpt_path, final_path = run_dir / "checkpoint.pt", run_dir / "metrics.json"
    if final_path.exists():
        final = read_final(final_path)
        check_same_experiment(cfg, final["config"], run_dir)
        if master:
            print(f"{run_dir}: already finished ({final_path}); not retraining")
        return final
    if not ckpt_path.exists():  # offline without the configured initial weights: stop before anything is written
        check_initial_weights(cfg.model)
    root = resolve_root(cfg.data_root).resolve()  # an error here leaves no run directory behind (locked_run_dir)
    if cfg.data.synthetic_profile is not None and (problem := profile_problem(root, cfg.data.synthetic_profile)):
        raise DataError(problem)
    if master:
        print(f"run directory: {run_dir}\ndataset: {root}", flush=True)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        check_same_experiment(cfg, ckpt["config"], run_dir)
        bad = nonfinite_tensors({k: v for k, v in ckpt.items() if k in ("model", "method") and isinstance(v, dict)})
        if bad:
            raise CheckpointError(f"{ckpt_path} holds non-finite values ({', '.join(bad[:3])}"
                                  f"{' ...' if len(bad) > 3 else ''}); not resumed: move it away to start again")
        trained_on = ckpt.get("data_root")
        if trained_on is not None and trained_on != str(root):  # data.root is not part of the identity
            raise ConfigError(f"{run_dir} was trained on {trained_on} but this run reads {root}; resume with "
                              f"data.root={trained_on}, or choose another run_dir")
    step = ckpt["step"] if ckpt is not None else 0
    # Training time of the whole run: a resume adds to what its checkpoint had spent (None: a checkpoint written
    # before the time was kept; the record then says its wall time covers only the last invocation).
    wall_before = 0.0 if ckpt is None else ckpt.get("wall_time_s")
    test_loader = eval_loader(cfg, root, cfg.data.test_split, rank, world) if cfg.data.test_split else None
    loader, val_loader, steps_per_epoch = make_loaders(cfg, root, rank, world, step, pin=device.type == "cuda",
                                                       device=device)

    # Model, method, optimiser, schedule, scaler (and DDP): the method's parameters live outside the network.
    parts = build_parts(cfg, device, steps_per_epoch, world, rank, pretrained=ckpt is None)
    if ckpt is not None:  # resume
        parts.load_state_dict(ckpt)
        set_rng_state(ckpt["rng"][rank] if rank < len(ckpt["rng"]) else ckpt["rng"][0])
        if master:
            print(f"resuming {run_dir} from step {step}")
    elif master:
        write_config(run_dir, cfg)
    started = time.perf_counter()

    window = LossWindow()  # the losses since the last log point (check_finite=log: still unchecked on the device)

    def checkpoint() -> dict:
        """Check that every process holds the same, finite weights, then save (rank 0) with every process's
        RNG. Non-finite weights (e.g. a too large lr) are never saved: the last good checkpoint stays."""
        window.flush()  # check_finite=log: a non-finite loss since the last check stops the run before saving
        bad = nonfinite_tensors({"model": parts.model.state_dict(), "method": parts.method.state_dict()})
        if world > 1:  # BatchNorm statistics may differ per process: every process must agree to stop
            everyone: list = [None] * world
            dist.all_gather_object(everyone, bad)
            bad = sorted({name for names in everyone for name in names})
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise NonFiniteLossError(f"non-finite weights at step {step} ({', '.join(bad[:3])}{more})")
        replicas = check_replicas(parts.model, parts.method, step)
        states = [rng_state()]
        if world > 1:  # each process resumes its own RNG stream
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        if master:
            save_checkpoint(ckpt_path, {"config": cfg.to_dict(), **parts.state_dict(), "rng": states, "step": step,
                                        "data_root": str(root), "wall_time_s": None if wall_before is None
                                        else wall_before + time.perf_counter() - started})
        return replicas

    log = JsonlLog(run_dir / "metrics.jsonl", enabled=master, wandb_mode=cfg.wandb, cfg=cfg, resume_step=step)
    bar = tqdm(total=cfg.optim.iterations, initial=step, disable=not master, dynamic_ncols=True, desc=cfg.name)
    tick, tick_step = time.perf_counter(), step
    replicas = {"processes": world, "identical": None}
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
                "lr": parts.optimizer.param_groups[0]["lr"], "images_per_s": n * cfg.optim.batch_size / (now - tick)}
            log.write(step, row)
            bar.set_postfix({k.split("/", 1)[1] if k.startswith("loss/") else k: f"{v:.3g}"
                             for k, v in row.items() if k.startswith(("loss/", "sigma2/"))})
            tick, tick_step = now, step
        if cfg.val_every and step % cfg.val_every == 0 and step < cfg.optim.iterations:
            window.flush()
            val = evaluate_model(parts.model, val_loader, device, parts.autocast_dtype)
            log.write(step, {f"val/{k}": v for k, v in val.items()})
            parts.model.train()
        # A preemption signal: checkpoint at a logging step (the loss window is empty there, so the resumed run
        # logs what an uninterrupted one does), every process at the same step, then stop.
        preempted = (step % cfg.log_every == 0 and step < cfg.optim.iterations
                     and any_process(preemption_requested(), device))
        if step % cfg.ckpt_every == 0 or step == cfg.optim.iterations or preempted:
            replicas = checkpoint()
        if preempted:
            raise Preempted(f"preempted at step {step}")
    bar.close()

    metrics = val_metrics = evaluate_model(parts.model, val_loader, device, parts.autocast_dtype)
    if test_loader is not None:  # the reported numbers come from the held-out split; val's stay for selection
        metrics = evaluate_model(parts.model, test_loader, device, parts.autocast_dtype)
    if master:
        log.write_final(step, {f"val/{k}": v for k, v in val_metrics.items()})
        elapsed = time.perf_counter() - started
        commit = git_commit()
        final = {
            "step": step, "iterations": cfg.optim.iterations, "metrics": metrics, "config": cfg.to_dict(),
            "identity": cfg.identity(), "identity_schema": IDENTITY_SCHEMA, "command": command or sys.argv,
            "git_commit": commit, "replicas": replicas, "data_root": str(root),
            "wall_time_s": elapsed if wall_before is None else wall_before + elapsed,  # the whole run's training
            "method_state": plain(dict(parts.method.state_dict()))}
        if cfg.data.test_split:  # the protocol's provenance (docs/comparisons.md); older runs' keys unchanged
            dtype = parts.autocast_dtype
            final |= {"score_split": cfg.data.test_split, "selection_split": cfg.data.val_split,
                      "val_metrics": val_metrics, "data_root": repo_relative(root),
                      "data_profile": (read_marker(root) or {}).get("profile"),
                      "precision": "float32" if dtype is None else str(dtype).removeprefix("torch."),
                      "dirty": commit.endswith("-dirty"), "wall_time_complete": wall_before is not None}
        write_json(final_path, final)
        print(final_report(run_dir, step, metrics), flush=True)
    log.close()
    return {"metrics": metrics, "model": parts.model, "method": parts.method, "replicas": replicas}


def final_report(run_dir: Path, step: int, metrics: dict) -> str:
    """What a finished training prints: where its results are and the headline metrics."""
    lines = [f"finished {run_dir} at step {step}: metrics in {run_dir / 'metrics.json'}"]
    lines += [f"  {m.title:<34} {metrics[key]:.{m.digits}f}" for key, m in METRICS.items() if key in metrics]
    return "\n".join(lines)


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
