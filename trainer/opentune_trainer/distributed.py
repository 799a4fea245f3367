"""Several processes per job (torchrun): DDP for LoRA, FSDP2 (`fully_shard`) for full fine-tuning.

    torchrun --standalone --nproc_per_node 2 -m opentune_trainer train --spec /abs/job-spec.json

The runner launches this for a job given more than one GPU (src/runner/trainer-launch.ts); one
process per GPU, `CUDA_VISIBLE_DEVICES` set by the runner, rank r on cuda:r of those.

What stays the same whatever the world size W (docs/trainer-protocol.md §6):
- the data order: every rank forms the same plan of micro-batches for a step and rank r takes
  micro-batches r, r+W, r+2W, …; a rank with one fewer runs a zero-weight stand-in so that every
  rank joins every collective (FSDP2 gathers weights in each forward; DDP reduces in each synced
  backward);
- the loss: each micro-batch backpropagates Σ CE / (the step's loss tokens, which every rank
  counts from the data alone), and gradients are *summed* across ranks (DDP and FSDP2 average by
  default: DDP gets a sum hook, FSDP2 a loss scaled by W), so the gradient is one process's, up to
  float rounding; the step's Σ CE and Σ correct are all-reduced before they are reported;
- the files: rank 0 alone prints protocol lines and writes checkpoints and state; FSDP2's sharded
  weights and optimizer state are gathered to full tensors on rank 0's CPU first.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

# a rank waits this long for the others at a collective before the job fails (a dead GPU, a rank
# stuck writing): the runner's silence watch usually kills a hung job sooner
COLLECTIVE_TIMEOUT_S = float(os.environ.get("OPENTUNE_COLLECTIVE_TIMEOUT_S", "1800"))


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def world_from_env() -> World:
    """The process's place in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK), else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init(world: World, device_type: str) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU (tests)."""
    if world.size == 1 or dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    kw: dict[str, Any] = {"timeout": datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S)}
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
        kw["device_id"] = torch.device("cuda", world.local_rank)  # NCCL connects eagerly, fails early
    dist.init_process_group(backend, **kw)


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def my_share(plan: list[list[int]], world: World) -> list[list[int] | None]:
    """This rank's micro-batches of a step's plan: r, r+W, …, padded with None (a zero-weight
    stand-in) to ceil(len(plan)/W), the count every rank runs."""
    mine: list[list[int] | None] = list(plan[world.rank :: world.size])
    per_rank = -(-len(plan) // world.size)
    return mine + [None] * (per_rank - len(mine))


def all_sum(values: list[float], device: torch.device, world: World) -> list[float]:
    """Σ over ranks, in float64 (token counts and loss sums; exact for counts below 2^53)."""
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: torch.device, world: World) -> bool:
    """True on every rank when it is true on one (decisions that start collectives must agree)."""
    if world.size == 1:
        return flag
    return all_sum([float(flag)], device, world)[0] > 0


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (FSDP2 shard), a plain tensor as it is."""
    return t.to_local() if hasattr(t, "to_local") else t


GIB = 2**30
ACTIVATIONS = 1.1  # weights and optimizer state, plus a tenth for activations


def check_fits(n_params: int, lora: bool, store: torch.dtype, device: torch.device, world: World) -> str | None:
    """Why the model cannot train here (None when it can), with the numbers and the ways out.
    LoRA keeps the whole frozen base on every GPU (DDP replicates it) in `store` (bf16 on CUDA);
    full fine-tuning needs float32 weights, gradients and two AdamW moments, 16 bytes per
    parameter, which FSDP2 shards over the GPUs. On the CPU all ranks share one memory."""
    from .checkpoint import _available_ram, _free_cuda_memory

    base = torch.empty((), dtype=store).element_size()
    per_param = base if lora else 16
    share = 1 if lora else world.size  # how many ranks the bytes are split over
    cuda = device.type == "cuda"
    need = n_params * per_param * ACTIVATIONS / share * (1 if cuda else world.size)
    free = _free_cuda_memory(device) if cuda else _available_ram()
    if need <= free:
        return None
    where = f"{device}" if cuda else "the CPU"
    what = (
        f"the frozen base in {str(store).replace('torch.', '')}"
        if lora
        else "float32 weights, gradients and two AdamW moments"
    )
    on = f" per GPU over {world.size} GPUs" if cuda and share > 1 else ""
    msg = (
        f"the model has {n_params / 1e9:.2f}B parameters × {per_param} bytes ({what}) + 10% for activations: "
        f"about {need / GIB:.1f} GiB{on}, and {free / GIB:.1f} GiB is free on {where}"
    )
    ways = []
    if not lora:
        ways.append(f"lora: true (the frozen base in bfloat16 needs about {n_params * 2 * ACTIVATIONS / GIB:.1f} GiB)")
        if cuda:
            gpus = math.ceil(n_params * 16 * ACTIVATIONS / free)
            ways.append(f'{gpus} or more GPUs (extra_body {{"opentune": {{"gpus": {gpus}}}}}, docs/multi-gpu.md)')
    ways.append("a GPU with more memory")
    return f"{msg}. Ways out: {'; '.join(ways)}"


class WithLoss(nn.Module):
    """The model and its loss in one forward: FSDP2 unshards lm_head's weight only inside the
    forward of the module that holds it, and DDP's reducer must see every pass through forward."""

    def __init__(self, model: nn.Module, stats: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.model = model
        self.stats = stats

    def forward(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.stats(self.model, batch)


def _sum_hook(_state, bucket):  # no annotations: DDP checks `bucket`'s, and ours are strings here
    """DDP's all-reduce without its division by W: each rank's gradient is already a share of
    d(Σ CE / the step's loss tokens), so the sum is the step's gradient."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda f: f.value()[0])


def wrap(model: nn.Module, stats: Callable, lora: bool, world: World, device: torch.device) -> nn.Module:
    """What the training loop calls with a batch: (Σ CE, Σ correct) of its loss tokens."""
    net = WithLoss(model, stats)
    if world.size == 1:
        return net
    if lora:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # the frozen base never enters a bucket: only the adapters (a few MB) are reduced
        ddp = DDP(net, device_ids=ids, gradient_as_bucket_view=True)
        ddp.register_comm_hook(None, _sum_hook)
        return ddp
    from torch.distributed.fsdp import fully_shard

    # one unit per decoder block (its weights gathered just before it runs, freed after), the
    # root holds embeddings, the final norm and lm_head. float32 master weights: the compute dtype
    # is autocast's, as with one process.
    for block in model.model.layers:
        fully_shard(block)
    fully_shard(net)
    return net


def grad_scale(net: nn.Module, world: World) -> float:
    """What each rank's loss is multiplied by before backward. FSDP2 averages gradients over the
    ranks; a divide factor of 1 would need ReduceOp.PREMUL_SUM, which gloo lacks, so the loss is
    scaled by W instead: exact for W a power of two (the scaling only moves the exponent)."""
    return float(world.size) if world.size > 1 and sharded(net) else 1.0


def no_sync(net: nn.Module, last: bool):
    """DDP: reduce only in the last backward of a step (gradients accumulate locally till then)."""
    import contextlib

    if last or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def sharded(net: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(net, FSDPModule)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a collective: every rank calls it), a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def trainable_state(model: nn.Module, net: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as full CPU copies (own memory: training goes on while they are written)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if sharded(net):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {n: sd[n].clone() for n in names if n in sd}
    params = dict(model.named_parameters())
    return {n: params[n].detach().to("cpu", copy=True) for n in names}


def full_state_dict(model: nn.Module, net: nn.Module) -> dict[str, torch.Tensor] | None:
    """The whole model's weights for a full checkpoint: gathered on rank 0 (None elsewhere) when
    sharded; None (the caller reads the module itself) when not."""
    if not sharded(net):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if dist.get_rank() == 0 else None


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """AdamW's state keyed by parameter name, whole (gathered when sharded), copied to the CPU:
    the same file whatever the world size, so a job resumes on any number of GPUs."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return _cpu_copy(sd)


def load_state(model: nn.Module, net: nn.Module, opt: torch.optim.Optimizer, payload: dict[str, Any]) -> None:
    """Trainable weights and optimizer state from a saved payload (full tensors), sharded as needed."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, strict=False)
    if sharded(net):
        set_model_state_dict(model, payload["trainable"], options=opts)
    else:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in payload["trainable"].items():
                params[n].copy_(t)
    set_optimizer_state_dict(model, opt, payload["optimizer"], options=opts)


def _cpu_copy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: _cpu_copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu_copy(v) for v in x)
    return x
