"""Overheads of every method of a benchmark manifest, measured in one run: step time relative to fixed
weights, peak memory, backward and forward passes per step.

    python -m bench.methods --preset synthetic-cpu [--manifest benchmark] [--methods a,b] [--steps 5] [--rounds 3]

Each row of the manifest is resolved on the preset exactly as reproduce.py trains it (same model,
method options, batch size, input size, autocast) and stepped with `engine.step.train_step` on a
random batch. Times: the rows take turns, `--rounds` rounds of `--steps` steps each after `--warmup`,
so machine noise spreads over all rows alike; the median step time of each row is divided by the
reference row's (`fixed`) from the same run; on a GPU every step is synchronised. Passes are counted
with hooks: a backward "through the encoder" computes the first convolution's gradient; one
"reaching the features" computes the gradient of the ASPP output (the heads' input); a forward is a
call of the ASPP. Peak memory: on a GPU torch.cuda.max_memory_allocated over the steps; on the CPU the
peak resident memory the steps add to a fresh process (the peak VmHWM, reset before the first step,
minus the resident size then), measured in one child process per row.

Writes results/<preset>/<manifest>-overheads.json (with the command, device and git commit), which
`reproduce.py aggregate` puts into the benchmark table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.train import build as build_config
from engine.config import ConfigError
from engine.distributed import pick_device
from engine.step import StepParts, train_step
from experiments.layout import Paths, rel
from experiments.manifest import find_manifests
from experiments.plan import Pending, resolve
from infra.atomic import write_json
from infra.provenance import git_commit

REFERENCE = "fixed"


class PassCounter:
    """Counts backward passes through the encoder / reaching the features, and forwards, of a model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.encoder = self.features = self.forwards = 0
        model.backbone.conv1.weight.register_hook(self._encoder)
        model.aspp.register_forward_hook(self._forward)

    def _encoder(self, grad):
        self.encoder += 1

    def _features(self, grad):
        self.features += 1

    def _forward(self, module, inputs, output):
        self.forwards += 1
        if output.requires_grad:
            output.register_hook(self._features)


def build(run, device: torch.device) -> tuple[StepParts, dict]:
    return build_config(run.config, device)


def step(parts: StepParts, batch: dict, i: int, device: torch.device) -> float:
    """Seconds of one training step (synchronised on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_step(parts, batch, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _status_mib(key: str) -> float:
    """VmRSS / VmHWM (peak) of this process in MiB, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def cpu_peak_memory(run, steps: int, threads: int, queue) -> None:
    """In a fresh process: MiB of peak resident memory the training steps add (child of measure_memory)."""
    torch.set_num_threads(threads)
    parts, batch = build(run, torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident size
    before = _status_mib("VmRSS")
    for i in range(steps):
        train_step(parts, batch, i)
    queue.put(_status_mib("VmHWM") - before)


def measure_memory(run, steps: int, threads: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=cpu_peak_memory, args=(run, steps, threads, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"memory measurement of {run.row.name} failed (exit code {child.exitcode})")
    return queue.get()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True)
    p.add_argument("--manifest", default="benchmark")
    p.add_argument("--methods", help="comma-separated method names (default: every row); the reference "
                                     f"row '{REFERENCE}' is always measured")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--out", help="default: results/<preset>/<manifest>-overheads.json")
    p.add_argument("--configs-dir", type=Path, default=Paths.configs, help="presets and experiments/ manifests")
    args = p.parse_args(argv)
    paths = Paths(configs=args.configs_dir.resolve())
    try:
        if min(args.steps, args.rounds) < 1 or args.warmup < 0:
            raise ConfigError("--steps and --rounds must be >= 1 and --warmup >= 0")
        (manifest,) = find_manifests(paths.manifests, [args.manifest])
        rows = [r for r in manifest.rows if r.name not in (manifest.baselines or {}).values()]
        # lr=None: each row at its own learning rate, not the one its lr grid will choose (a step takes the same
        # time at any lr, and the grid's records need not exist yet).
        runs = [resolve(manifest, r, 0, args.preset, paths, lr=None) for r in rows]
        if args.methods:
            wanted = set(args.methods.split(","))
            runs = [r for r in runs if r.row.name == REFERENCE or r.config.method.name in wanted]
        if REFERENCE not in {r.row.name for r in runs}:
            raise ConfigError(f"manifest {manifest.name} has no row {REFERENCE!r} to compare step times with")
    except (ConfigError, Pending) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = pick_device(runs[0].config.device)
    built = {}
    for run in runs:
        parts, batch = build(run, device)
        counter = PassCounter(parts.model)
        for i in range(args.warmup):
            train_step(parts, batch, i)
        counter.encoder = counter.features = counter.forwards = 0
        built[run.row.name] = (run, parts, batch, counter)
        print(f"built {run.row.name}", file=sys.stderr)
    times: dict[str, list[float]] = {name: [] for name in built}
    peaks: dict[str, float] = {}
    for r in range(args.rounds):
        for name, (_, parts, batch, _) in built.items():
            if device.type == "cuda" and r == 0:
                torch.cuda.reset_peak_memory_stats()
            times[name] += [step(parts, batch, args.warmup + r * args.steps + i, device) for i in range(args.steps)]
            if device.type == "cuda" and r == 0:
                peaks[name] = torch.cuda.max_memory_allocated() / 2**20
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    if device.type == "cpu":
        for name, (run, *_) in built.items():
            peaks[name] = measure_memory(run, args.warmup + 1, threads)
    n_steps = args.rounds * args.steps
    reference = statistics.median(times[REFERENCE])
    rows = {}
    for name, (run, _, _, counter) in built.items():
        median = statistics.median(times[name])
        rows[name] = {"method": run.config.method.name, "step_time_s": round(median, 4),
                      "step_time_rel": round(median / reference, 3), "peak_memory_mib": round(peaks[name], 1),
                      "backward_passes": counter.encoder / n_steps,
                      "backward_passes_to_features": counter.features / n_steps,
                      "forward_passes": counter.forwards / n_steps}
        print(f"{name:<16} {median:7.3f} s/step  x{median / reference:5.2f}  {peaks[name]:8.1f} MiB  "
              f"backward {counter.encoder / n_steps:g} (to features {counter.features / n_steps:g})  "
              f"forward {counter.forwards / n_steps:g}")
    out = Path(args.out) if args.out else paths.results / args.preset / f"{manifest.name}-overheads.json"
    cpu = f"CPU ({platform.processor() or platform.machine()}, {threads} thread{'s' * (threads > 1)})"
    where = torch.cuda.get_device_name() if device.type == "cuda" else cpu
    command = shlex.join(["python", "-m", "bench.methods", *(argv if argv is not None else sys.argv[1:])])
    write_json(out, {
        "command": command, "device": where, "torch": torch.__version__, "git_commit": git_commit(),
        "preset": args.preset, "manifest": manifest.name, "file": rel(out), "reference": f"the '{REFERENCE}' row",
        "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup,
        "memory": ("peak GPU memory allocated (torch.cuda.max_memory_allocated)" if device.type == "cuda" else
                   "peak resident memory the steps add to a fresh process (CPU)"),
        "rows": rows})
    print(rel(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
