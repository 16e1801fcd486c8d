"""The one training step, for loss-space and gradient-space methods alike (losses/base.py).

train.py and bench/train.py call `train_step`; nothing else updates the weights. One step:

1. Forward under autocast; task losses in float32; the losses averaged over processes (one small
   all-reduce) form the method's context and are checked for NaN/inf before anything is updated
   (`check_finite: step`, a host synchronisation per step). With `check_finite: log` they stay on the
   device and the caller checks them later in one copy (`LossWindow`, train.py: at each log point and
   before every checkpoint or validation); gradient-space methods still check J every step (below).
2. Gradients, by the method's kind:
   - loss-space: `total, logs = method(losses, ctx)` (the method's weights composed into the total by
     `LossMethod.forward`), `scaler.scale(total).backward()`. DDP
     all-reduces the network's gradients during backward; the method's own parameters (e.g. the
     log-variances) live outside DDP, so their gradients are all-reduced here.
   - gradient-space: forward and backward run inside DDP's `no_sync()`, because DDP must not
     all-reduce the per-task gradients taken with `autograd.grad`, nor the combined gradient we
     write. For each task, one backward of its (scaled) loss gives a row of J (w.r.t. the shared
     parameters, or the shared features with `space: features`) and its own head's gradient.
     J is unscaled in float32 before the method sees it (the scale is a power of two: exact).
     Under DDP, J and the head gradients are all-reduced to the mean over processes (J of the
     features, which differ per process, is all-gathered into the global one instead), so every
     process aggregates the same matrix with the same seeded RNG; `g` is then broadcast from rank 0,
     so the update is identical bit for bit even if an aggregator is not deterministic. `g` goes
     into the shared parameters' `.grad` multiplied by the scale (undone exactly by `unscale_`), or,
     for features, is back-propagated through the encoder, whose gradients are then summed over
     processes. Each head gets its own task's gradient. A non-finite J skips the step through the
     scaler under fp16 and is an error otherwise.
3. `unscale_`, gradient clipping, `scaler.step`, `scaler.update`, the scheduler; then the method's
   hooks `after_step(ctx)` and, after the last step of an epoch, `end_epoch(ctx)`.

Every call into the method runs with torch's RNG seeded from (seed, step), so random methods draw
the same numbers on every process and after a resume; the RNG state outside is left untouched.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from losses import Method, StepContext, task_losses
from models import autocast_forward


class NonFiniteLossError(RuntimeError):
    """A task loss, the total or a task gradient became NaN or infinite."""


@dataclass
class StepParts:
    """Everything one training step touches."""

    model: nn.Module  # the MultiTaskDeepLab itself
    net: nn.Module  # `model`, or DistributedDataParallel(model); either under torch.compile when configured
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    grad_clip: float | None
    seed: int
    steps_per_epoch: int
    iterations: int
    world: int = 1
    rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = False  # the image enters the network in NHWC layout (the model converted by the builder)
    check_finite: str = "step"  # step: check the losses on the host every step; log: leave them to a LossWindow
    compile: str = "none"  # the torch.compile mode `net` is under (config `compile`)

    def state_dict(self) -> dict:
        """What a checkpoint needs of the parts (besides RNG states, step and config)."""
        return {"model": self.model.state_dict(), "method": self.method.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        # Checkpoints written before methods had their own options call the method "weighting".
        self.method.load_state_dict(state["method"] if "method" in state else state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


@dataclass
class StepResult:
    losses: dict[str, float | Tensor]  # task losses averaged over processes, plus "total": this process's
    # combined loss (loss-space methods only); check_finite=step: floats on the host, checked for NaN/inf;
    # check_finite=log: unchecked 0-dim float32 tensors on the device (give them to a LossWindow)
    logs: dict  # the method's logs: floats or 0-dim tensors (convert with float() when logging)


def train_step(p: StepParts, batch: dict[str, Tensor], step: int) -> StepResult:
    """One optimiser step on `batch` (already on the device); `step` counts the steps done before it."""
    ctx = StepContext(step=step, epoch=step // p.steps_per_epoch, steps_per_epoch=p.steps_per_epoch,
                      iterations=p.iterations, losses={})
    p.optimizer.zero_grad(set_to_none=True)
    if p.compile == "reduce-overhead":  # CUDA graphs: a new step begins (the last step's outputs are not reused)
        torch.compiler.cudagraph_mark_step_begin()
    if p.method.kind == "loss":
        result = _loss_space_gradients(p, batch, ctx)
    else:
        result = _gradient_space_gradients(p, batch, ctx)
    if p.grad_clip:
        p.scaler.unscale_(p.optimizer)
        torch.nn.utils.clip_grad_norm_([q for g in p.optimizer.param_groups for q in g["params"]], p.grad_clip)
    p.scaler.step(p.optimizer)
    p.scaler.update()
    p.scheduler.step()
    ctx.recompute_losses = lambda: _recompute_losses(p, batch)
    with _seeded(p, step, 1):
        p.method.after_step(ctx)
        if (step + 1) % p.steps_per_epoch == 0:
            p.method.end_epoch(ctx)
    return result


# ----------------------------------------------------------------------------- shared pieces

def _forward(p: StepParts, batch: dict[str, Tensor], with_features: bool = False, net: nn.Module | None = None):
    """(task losses of this process, shared features or None); `net` defaults to `p.net`."""
    net = net or p.net
    image = batch["image"].contiguous(memory_format=torch.channels_last) if p.channels_last else batch["image"]
    out = autocast_forward(net, image, p.autocast_dtype, **({"with_features": True} if with_features else {}))
    outputs, features = out if with_features else (out, None)  # outputs: {task: (B, C, H, W)}
    return task_losses(outputs, batch), features


def _averaged(p: StepParts, losses: dict[str, Tensor]) -> dict[str, Tensor]:
    """The losses averaged over processes, detached, float32."""
    values = torch.stack(list(losses.values())).detach().float()
    if p.world > 1:
        dist.all_reduce(values)
        values /= p.world
    return dict(zip(losses, values))


def _check_finite(named: dict[str, Tensor], step: int, mode: str = "step") -> dict[str, float | Tensor]:
    """The values on the host (one device-to-host copy); raises naming the first non-finite one. With
    mode "log" nothing is copied or checked here: the detached float32 tensors are returned for a LossWindow."""
    if mode == "log":
        return {k: v.detach().float() for k, v in named.items()}
    host = dict(zip(named, torch.stack(list(named.values())).tolist()))
    bad = [k for k, v in host.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"non-finite {bad[0]} loss ({host}) at step {step + 1}")
    return host


class LossWindow:
    """The per-step losses (StepResult.losses) since the last `flush`. Floats (check_finite=step) are summed as
    they come; device tensors (check_finite=log) are kept there and copied to the host in one transfer by
    `flush`, which raises NonFiniteLossError naming the first non-finite value's task and step, and the window
    of steps checked together. Call `flush` before anything that must not see a non-finite step (a checkpoint,
    a validation) and at every log point."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.pending: list[tuple[int, dict[str, Tensor]]] = []  # (step number, 1-based; losses on the device)

    def add(self, step: int, losses: dict[str, float | Tensor]) -> None:
        """The losses of step number `step` (1-based: the step just taken)."""
        if any(isinstance(v, Tensor) for v in losses.values()):
            self.pending.append((step, losses))
        else:
            self._sum(losses)

    def _sum(self, losses: dict[str, float]) -> None:
        for key, v in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + v

    def flush(self) -> None:
        """Check and sum the pending steps (one device-to-host copy)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        keys = list(pending[0][1])
        rows = torch.stack([torch.stack([losses[k] for k in keys]) for _, losses in pending]).tolist()
        for (step, _), row in zip(pending, rows):
            host = dict(zip(keys, row))
            bad = [k for k, v in host.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLossError(f"non-finite {bad[0]} loss ({host}) at step {step} (check_finite=log: "
                                         f"found when checking steps {pending[0][0]}-{pending[-1][0]} together)")
            self._sum(host)

    def take(self) -> dict[str, float]:
        """Flush, then hand over the sums and start a new window."""
        self.flush()
        sums, self.sums = self.sums, {}
        return sums


@contextlib.contextmanager
def _seeded(p: StepParts, step: int, phase: int):
    """torch's RNG seeded from (seed, step, phase) inside, restored outside."""
    devices = [p.device.index if p.device.index is not None else torch.cuda.current_device()] \
        if p.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(((p.seed * 1_000_003 + step) * 4 + phase) % 2**63)
        yield


def _recompute_losses(p: StepParts, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Task losses of `batch` under the current weights, no grad, averaged over processes; batch-norm
    running statistics are restored so this extra forward changes nothing."""
    saved = [b.detach().clone() for b in p.model.buffers()]
    with torch.no_grad():
        losses, _ = _forward(p, batch, net=p.model)  # the bare model: no DDP hooks or broadcasts
    for b, s in zip(p.model.buffers(), saved):
        b.copy_(s)
    return _averaged(p, losses)


# ----------------------------------------------------------------------------- loss-space

def _loss_space_gradients(p: StepParts, batch: dict[str, Tensor], ctx: StepContext) -> StepResult:
    losses, _ = _forward(p, batch)
    ctx.losses = _averaged(p, losses)
    ctx.last_shared = p.model.last_shared_parameters()
    with _seeded(p, ctx.step, 0):
        total, logs = p.method(losses, ctx)
    values = _check_finite({**ctx.losses, "total": total.detach().float()}, ctx.step, p.check_finite)
    p.scaler.scale(total).backward()
    if p.world > 1:  # the method is outside DDP: average its gradients here
        for q in p.method.optimizer_parameters():
            if q.grad is not None:
                dist.all_reduce(q.grad)
                q.grad /= p.world
    return StepResult(values, logs)


# ----------------------------------------------------------------------------- gradient-space

def _gradient_space_gradients(p: StepParts, batch: dict[str, Tensor], ctx: StepContext) -> StepResult:
    features_space = p.method.options.space == "features"
    ddp = getattr(p.net, "_orig_mod", p.net)  # under torch.compile (compile != none) the DDP module is inside
    no_sync = ddp.no_sync() if isinstance(ddp, DistributedDataParallel) else contextlib.nullcontext()
    with no_sync:
        losses, features = _forward(p, batch, with_features=features_space)
        ctx.losses = _averaged(p, losses)
        values = _check_finite(ctx.losses, ctx.step, p.check_finite)
        shared = [features] if features_space else p.model.shared_parameters()
        scale = p.scaler.get_scale() if p.scaler.is_enabled() else 1.0
        # (tasks, n) float32, each row written in place: no stacked copy of n floats
        J = torch.empty(len(p.method.tasks), sum(x.numel() for x in shared), device=shared[0].device)
        heads = []
        for i, task in enumerate(p.method.tasks):  # J's rows in the method's task order
            head = p.model.task_parameters(task)
            grads = torch.autograd.grad(p.scaler.scale(losses[task]), [*shared, *head], allow_unused=True,
                                        retain_graph=features_space or i < len(losses) - 1)
            _flat_into(grads[: len(shared)], shared, J[i])
            heads += [(q, g if g is not None else torch.zeros_like(q)) for q, g in zip(head, grads[len(shared):])]
        if scale != 1.0:
            J.div_(scale)  # unscaled
        if p.world > 1:
            J = _reduce_jacobian(p, J, heads, features_space)
        g = _aggregate(p, J, ctx)  # (n,)
        if features_space:
            n = features.numel()  # this process's slice of the global feature Jacobian
            local = g[p.rank * n:(p.rank + 1) * n] if p.world > 1 else g
            features.backward((local * scale).view_as(features).to(features.dtype))
        else:
            _unflat_into_grad(g * scale if scale != 1.0 else g, shared)
        for q, grad in heads:
            q.grad = grad
    if p.world > 1 and features_space:  # encoder gradients: sum of each process's share of g
        _all_reduce_grads(p.model.shared_parameters(), [q for q, _ in heads], p.world)
    return StepResult(values, p.method.logs())


def _aggregate(p: StepParts, J: Tensor, ctx: StepContext) -> Tensor:
    finite = all_finite(J)
    if finite:
        with _seeded(p, ctx.step, 0):
            g = p.method.aggregate(J, ctx)
        if g.shape != J.shape[1:]:
            raise RuntimeError(f"{type(p.method).__name__}.aggregate returned shape {tuple(g.shape)} for J of "
                               f"shape {tuple(J.shape)}; expected ({J.shape[1]},)")
        g = g.float()
    elif p.scaler.is_enabled():  # fp16 overflow: let the scaler skip this step and lower its scale
        g = J.sum(0)
    else:
        bad = [t for t, row in zip(ctx.losses, J) if not bool(torch.isfinite(row).all())]
        raise NonFiniteLossError(f"non-finite {bad[0]} gradient at step {ctx.step + 1}")
    if p.world > 1:
        dist.broadcast(g, src=0)
    return g


def _reduce_jacobian(p: StepParts, J: Tensor, heads: list, features_space: bool) -> Tensor:
    """The global J on every process; the head gradients averaged in place (unless features_space,
    where they are reduced with the encoder's after the backward)."""
    if features_space:
        parts = [torch.empty_like(J) for _ in range(p.world)]
        dist.all_gather(parts, J.contiguous())
        return torch.cat(parts, dim=1) / p.world  # the Jacobian of the process-averaged losses
    flat = torch.cat([J.flatten(), *(g.flatten().float() for _, g in heads)])
    dist.all_reduce(flat)
    flat /= p.world
    offset = J.numel()
    for i, (q, g) in enumerate(heads):
        heads[i] = (q, flat[offset:offset + g.numel()].view_as(g).to(g.dtype))
        offset += g.numel()
    return flat[: J.numel()].view_as(J)


def _all_reduce_grads(summed: list[nn.Parameter], averaged: list[nn.Parameter], world: int) -> None:
    """One all-reduce: `summed` gradients added over processes, `averaged` ones averaged."""
    grads = [q.grad for q in summed] + [q.grad / world for q in averaged]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for q in [*summed, *averaged]:
        q.grad = flat[offset:offset + q.numel()].view_as(q).clone()
        offset += q.numel()


def all_finite(t: Tensor) -> bool:
    """Whether every element of `t` is finite. One reduction instead of an elementwise mask of J's size (on the
    CPU the mask cost more than the three backward passes of a shared-parameter J): a NaN or an infinity makes
    the sum non-finite, so a finite sum proves it; a non-finite sum may be an overflow of finite values, which
    the elementwise check then settles."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _flat_into(grads, like, out: Tensor) -> None:
    """Per-tensor gradients (None -> zeros) written as one float32 row into `out`."""
    torch.cat([(g if g is not None else torch.zeros_like(x)).flatten().float() for g, x in zip(grads, like)], out=out)


def _unflat_into_grad(g: Tensor, params: list[nn.Parameter]) -> None:
    """Each parameter's gradient: a copy of its slice of the flat `g` (a method may return a tensor it keeps,
    and the optimiser, the scaler and clipping change gradients in place)."""
    offset = 0
    for q in params:
        q.grad = g[offset:offset + q.numel()].view_as(q).to(q.dtype).clone()
        offset += q.numel()
