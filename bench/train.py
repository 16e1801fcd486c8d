"""Training step speed, memory and model FLOP utilisation (MFU) of a config, next to a naive baseline.

    python -m bench.train --config configs/paper_tiny.yaml [key=value ...] [--steps 20] [--warmup 5]
        [--rounds 2] [--loader] [--variant NAME key=value ...] [--no-baseline] [--json results/perf/X.json]
    python -m bench.train --config configs/demo.yaml --variant bf16 amp=bf16 --variant bf16-cl amp=bf16 \\
        channels_last=true
    python -m bench.train --config configs/paper_tiny.yaml --warmup 10 --variant compiled compile=default \\
        --variant graphs compile=reduce-overhead --variant deferred check_finite=log

Times `engine.step.train_step`, the step train.py runs, on parts built by the same
`engine.build.build_parts`, for several variants of the config in one process, taking turns in
`--rounds` rounds so that load from other processes hits them alike:

- `config`: the config as given (its `amp`, `channels_last`, ...);
- `naive`: the same model and method in float32, NCHW, eager (amp=off, channels_last=false, compile=none,
  check_finite=step): the baseline the issue asks the tuned step to beat (leave out with --no-baseline);
- one per `--variant NAME key=value ...` (overrides on top of the config). `compile=...` variants compile
  during the --warmup steps (give enough of them: one per graph break and mode); `data.resident=true`
  variants draw their batches on the device with --loader.

Per variant: images/s (GPU: synchronised at the end of each round), step time p50/p90 (GPU: CUDA
events between consecutive steps, so host stalls count), the fraction of the time spent waiting for
data (with --loader: each variant reads batches through train.py's own loaders and the wait is the
host time blocked in `next()` plus the copy to the device; without it one random batch of the
sample dict's shapes is reused and the wait is 0), peak memory (GPU: the allocator's peak during the
variant's rounds less what the other variants hold; CPU: the process's peak resident set, all
variants together), FLOPs of one step counted with torch.utils.flop_counter.FlopCounterMode
(forward, backward and optimiser; matmuls and convolutions, 2 FLOPs per multiply-add), achieved
TFLOP/s = FLOPs per step / mean step time, and MFU against the device's peak: `mfu` against the
peak of the precision the variant computes in (bf16 / fp16 tensor cores, TF32 for float32
convolutions on GPU, float32), `mfu_bf16` against the bf16 peak (the hardware's limit). GPU peaks
come from the table PEAK_TFLOPS (datasheet, dense); on the CPU the peaks are measured in the same
run (the best of square matmuls in float32 and bfloat16 with the same threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.perf_table import model_label
from engine.build import build_parts, random_batch  # noqa: F401 (re-exported)
from engine.build import random_batch_parts as build
from engine.config import load_config
from engine.distributed import pick_device
from engine.step import train_step
from infra.atomic import write_json
from infra.provenance import git_commit

# Dense (no structured sparsity) peak TFLOP/s from NVIDIA's datasheets: bf16 (= fp16) and TF32 on
# tensor cores, plain float32 on CUDA cores. The H200 has the H100 SXM's compute (more memory).
PEAK_TFLOPS = {
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
}


def gpu_peaks(name: str) -> tuple[str, dict[str, float]] | tuple[None, None]:
    """(table row, peaks) for a CUDA device name such as "NVIDIA H100 80GB HBM3"; (None, None) if unknown."""
    if "H200" in name:
        return "H200", PEAK_TFLOPS["H200"]
    if "H100" in name:
        row = "H100 PCIe" if "PCIe" in name else "H100 SXM"
        return row, PEAK_TFLOPS[row]
    if "A100" in name:
        return "A100", PEAK_TFLOPS["A100"]
    return None, None


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 10) -> float:
    """Best TFLOP/s of an (n x n) @ (n x n) matmul on the CPU with torch's current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def naive(cfg):
    """The float32 NCHW eager baseline of `cfg`: same model, method and optimiser."""
    return dataclasses.replace(cfg, amp="off", channels_last=False, compile="none", check_finite="step",
                               data=dataclasses.replace(cfg.data, resident=False))


def held_bytes(parts) -> int:
    """Bytes of the tensors a variant keeps between steps: weights, buffers, gradients, optimiser state."""
    seen, total = set(), 0
    tensors = [*parts.model.parameters(), *parts.model.buffers(), *parts.method.parameters(),
               *(q.grad for g in parts.optimizer.param_groups for q in g["params"] if q.grad is not None),
               *(v for s in parts.optimizer.state.values() for v in s.values() if torch.is_tensor(v))]
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen and t.device.type == "cuda":
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


class Variant:
    """One configuration under test: its parts, its batches, and the times of its steps."""

    def __init__(self, name: str, cfg, device: torch.device, loader: bool):
        self.name, self.cfg, self.device = name, cfg, device
        self.parts, self.batch = build(cfg, device)
        self.batches = None
        if loader:
            from data.cityscapes import resolve_root
            from data.loaders import make_loaders

            root = resolve_root(cfg.data_root).resolve()
            train_loader, _, _ = make_loaders(cfg, root, 0, 1, 0, pin=device.type == "cuda", device=device)
            self.batches = iter(train_loader)
        self.step = 0
        self.times: list[float] = []
        self.wait = 0.0
        self.wall = 0.0
        self.images = 0
        self.peak = 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.batches is None:
            return self.batch
        return {k: v.to(self.device, non_blocking=True) for k, v in next(self.batches).items()}

    def run(self, steps: int, timed: bool = True) -> None:
        """`steps` training steps; timed ones add to the variant's figures."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        marks, wait = [], 0.0
        start = time.perf_counter()
        for i in range(steps):
            if cuda:
                events[i].record()
            marks.append(time.perf_counter())
            t = time.perf_counter()
            batch = self.next_batch()
            wait += time.perf_counter() - t
            train_step(self.parts, batch, self.step)
            self.step += 1
        if cuda:
            events[steps].record()
            torch.cuda.synchronize()
        end = time.perf_counter()
        if not timed:
            return
        marks.append(end)
        if cuda:
            self.times += [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]
            self.peak = max(self.peak, torch.cuda.max_memory_allocated())
        else:
            self.times += [b - a for a, b in zip(marks, marks[1:])]
        self.wait += wait
        self.wall += end - start
        self.images += steps * self.cfg.optim.batch_size


def count_flops(v: Variant) -> int:
    """FLOPs of one training step of the variant (FlopCounterMode; the step is really taken)."""
    with FlopCounterMode(display=False) as counter:
        train_step(v.parts, v.batch, v.step)
    v.step += 1
    return counter.get_total_flops()


def precision(v: Variant) -> str:
    """The precision the variant's matmuls and convolutions compute in, as a PEAK_TFLOPS key."""
    dtype = v.parts.autocast_dtype
    if dtype is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    if v.device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"  # float32 convolutions run as TF32 on tensor cores by default
    return "fp32"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant, over all rounds")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per variant before the rounds")
    p.add_argument("--rounds", type=int, default=2, help="the variants take turns this many times")
    p.add_argument("--loader", action="store_true", help="read batches through train.py's loaders")
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="another variant: a name and overrides on top of the config; repeatable")
    p.add_argument("--no-baseline", action="store_true", help="leave out the naive fp32 NCHW eager baseline")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--peak-n", type=int, default=1024, help="CPU: size of the square matmuls that measure the peak")
    p.add_argument("--json", default=None, help="write the figures here (e.g. results/perf/NAME.json)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    configs = {"config": cfg}
    extra = {"config": [], "naive": ["amp=off", "channels_last=false", "compile=none", "check_finite=step",
                                     "data.resident=false"]}
    if not args.no_baseline:
        configs["naive"] = naive(cfg)
    for name, *overrides in args.variant:
        if name in configs:
            p.error(f"--variant {name}: the name is taken (config, naive and each variant once)")
        configs[name], extra[name] = load_config(args.config, [*args.overrides, *overrides]), overrides
    variants = [Variant(name, c, device, args.loader) for name, c in configs.items()]
    load_before = os.getloadavg()[0]

    if device.type == "cuda":
        where = torch.cuda.get_device_name()
        row, peaks = gpu_peaks(where)
        peak_source = f"datasheet ({row})" if row else "unknown device: no peak table entry"
    else:
        where = f"cpu {platform.machine()} ({torch.get_num_threads()} threads)"
        peaks = {"fp32": matmul_peak(torch.float32, args.peak_n), "bf16": matmul_peak(torch.bfloat16, args.peak_n)}
        peak_source = (f"measured in this run: the best {args.peak_n}x{args.peak_n} matmul before, between and "
                       f"after the rounds; on a busy machine it is low and MFU high")

    # The same model's FLOPs in every variant, counted on an eager one (FlopCounterMode sees no compiled graph).
    eager = [v for v in variants if v.cfg.compile == "none"]
    flops = count_flops(eager[0] if eager else Variant("flops", naive(cfg), device, False))
    for v in variants:
        v.run(args.warmup, timed=False)
    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds) for r in range(args.rounds)]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for steps in per_round:
        if device.type == "cpu":  # the best seen: other processes' load lowers it
            peaks = {k: max(peaks[k], matmul_peak(dt, args.peak_n)) for k, dt in dtypes.items()}
        for v in variants:
            v.run(1, timed=False)  # re-prime after the other variants ran
            v.run(steps)
    if device.type == "cpu":
        peaks = {k: max(peaks[k], matmul_peak(dt, args.peak_n)) for k, dt in dtypes.items()}

    bs = cfg.optim.batch_size
    h, w = cfg.data.crop or cfg.data.size or (1024, 2048)
    rows = {}
    naive_rate = None
    for v in variants:
        mean = v.wall / len(v.times)
        achieved = flops / mean / 1e12
        prec = precision(v)
        peak = None
        if device.type == "cuda":
            others = sum(held_bytes(o.parts) for o in variants if o is not v)
            peak = (v.peak - others) / 2**30
        row = {
            "overrides": extra[v.name],
            "amp": prec if v.parts.autocast_dtype is not None else "off", "channels_last": v.cfg.channels_last,
            "images_per_s": round(v.images / v.wall, 2), "s_per_step_mean": round(mean, 4),
            "s_per_step_p50": round(percentile(v.times, 50), 4), "s_per_step_p90": round(percentile(v.times, 90), 4),
            "data_wait_fraction": round(v.wait / v.wall, 4), "peak_mem_GiB": None if peak is None else round(peak, 2),
            "achieved_TFLOPs": round(achieved, 4), "precision": prec,
            "mfu": round(achieved / peaks[prec], 4) if peaks else None,
            "mfu_bf16": round(achieved / peaks["bf16"], 4) if peaks else None,
        }
        rows[v.name] = row
        if v.name == "naive":
            naive_rate = row["images_per_s"]
    if naive_rate:
        for row in rows.values():
            row["speedup_vs_naive"] = round(row["images_per_s"] / naive_rate, 3)

    params = sum(q.numel() for q in variants[0].parts.model.parameters()) / 1e6
    result = {
        "command": "python -m bench.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": where, "torch": torch.__version__, "config": cfg.to_dict(), "config_name": cfg.name,
        "backbone": cfg.model.backbone, "method": cfg.method.name, "params_M": round(params, 2), "batch": bs,
        "size": [h, w], "loader": args.loader, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "gflop_per_step": round(flops / 1e9, 2), "gflop_per_image": round(flops / bs / 1e9, 2),
        "peak_TFLOPs": {k: round(v, 3) for k, v in peaks.items()} if peaks else None, "peak_source": peak_source,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before and after
        "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # KiB -> GiB
        "variants": rows,
    }
    print(f"{cfg.name}: {model_label(result['config']['model'])}, {cfg.method.name}, batch {bs} at {h}x{w}, "
          f"{params:.1f} M parameters, "
          f"{result['gflop_per_image']} GFLOP per image (forward + backward + {cfg.optim.optimizer}) on {where}")
    if peaks:
        print("peak TFLOP/s (" + peak_source + "): " + ", ".join(f"{k} {v:.3g}" for k, v in peaks.items()))
    print(f"{'variant':<14}{'img/s':>9}{'p50 s':>9}{'p90 s':>9}{'wait':>7}{'TFLOP/s':>10}{'MFU':>8}"
          f"{'MFU(bf16)':>10}{'x naive':>9}{'peak GiB':>10}")
    for name, r in rows.items():
        mem = "-" if r["peak_mem_GiB"] is None else f"{r['peak_mem_GiB']:.2f}"
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        mfu16 = "-" if r["mfu_bf16"] is None else f"{100 * r['mfu_bf16']:.1f}%"
        print(f"{name:<14}{r['images_per_s']:>9.2f}{r['s_per_step_p50']:>9.4f}{r['s_per_step_p90']:>9.4f}"
              f"{100 * r['data_wait_fraction']:>6.1f}%{r['achieved_TFLOPs']:>10.3f}{mfu:>8}{mfu16:>10}"
              f"{r.get('speedup_vs_naive', float('nan')):>9.2f}{mem:>10}")
    print(f"1-minute load average before and after: {result['load_average_1min']} ({os.cpu_count()} CPUs)")
    if device.type == "cpu":
        print(f"peak resident memory of the process (all variants): {result['peak_rss_GiB']} GiB")
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
