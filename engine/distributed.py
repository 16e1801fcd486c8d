"""Process-group set-up and the replica check of DDP runs."""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.distributed as dist
from torch import nn

from infra.atomic import plain


class ReplicaMismatchError(RuntimeError):
    """DDP processes hold different parameters or method state."""


def pick_device(setting: str) -> torch.device:
    """The device of the `device` setting: "cuda", "cpu", or "auto" (a GPU when there is one)."""
    use_cuda = setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def scheduler_environment() -> dict[str, str]:
    """The torch.distributed variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)
    of a process that submitit started as one task of a multi-task job (on SLURM: nodes x tasks per node), read
    from the scheduler's variables by submitit.helpers.TorchDistributedEnvironment; {} outside such a job or
    under torchrun (which sets them itself)."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return {}
    from submitit.helpers import TorchDistributedEnvironment  # only inside a submitit job

    env = TorchDistributedEnvironment()
    if env.world_size <= 1:
        return {}
    return {"MASTER_ADDR": env.master_addr, "MASTER_PORT": str(env.master_port), "RANK": str(env.rank),
            "WORLD_SIZE": str(env.world_size), "LOCAL_RANK": str(env.local_rank),
            "LOCAL_WORLD_SIZE": str(env.local_world_size)}


def init_distributed(device_setting: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun or a multi-task submitit/SLURM job one process per GPU (or
    CPU process with gloo)."""
    os.environ.update(scheduler_environment())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_setting == "cuda" and not torch.cuda.is_available():
        from engine.config import ConfigError

        raise ConfigError("device=cuda but no CUDA GPU is usable here (torch.cuda.is_available() is False); "
                          "use device=auto or device=cpu")
    use_cuda = pick_device(device_setting).type == "cuda"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world, torch.device("cuda", local_rank)
    return rank, world, torch.device("cpu")


def replica_digest(model: nn.Module, method: nn.Module) -> str:
    """Hash of the bytes of the network's parameters and the method's whole state (parameters, buffers
    and extra state such as FAMO's Adam moments). BatchNorm running statistics are left out: without
    sync_bn each process keeps its own."""
    h = hashlib.blake2b(digest_size=16)
    for _, p in sorted(model.named_parameters()):
        h.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    _digest_state(h, dict(method.state_dict()))
    return h.hexdigest()


def _digest_state(h, value) -> None:
    """Feed a method's state into `h`: tensors by their bytes (some methods keep a tasks x n tensor, e.g.
    MoCo's tracked gradients), dicts and lists item by item, anything else by its plain JSON form."""
    if isinstance(value, torch.Tensor):
        h.update(f"tensor {value.dtype} {tuple(value.shape)}".encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"key {key!s}".encode())
            _digest_state(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"list {len(value)}".encode())
        for item in value:
            _digest_state(h, item)
    else:
        h.update(json.dumps(plain(value), sort_keys=True).encode())


def check_replicas(model: nn.Module, method: nn.Module, step: int) -> dict:
    """All-gather every process's digest; raise ReplicaMismatchError if they differ. Returns the
    record kept in metrics.json: {"processes": N, "identical": True}."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    if world == 1:
        return {"processes": 1, "identical": True}
    digests: list[str | None] = [None] * world
    dist.all_gather_object(digests, replica_digest(model, method))
    if len(set(digests)) > 1:
        groups = {d: [r for r, x in enumerate(digests) if x == d] for d in dict.fromkeys(digests)}
        raise ReplicaMismatchError(f"DDP replicas differ at step {step}: processes {list(groups.values())} hold "
                                   f"different parameters or method state; the run cannot continue")
    return {"processes": world, "identical": True}


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is set in any process (one all-reduce under DDP): every process takes the same branch."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor(int(flag), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
