"""Linear layers with their weights pre-packed for oneDNN, for the CPU engine.

On the CPU, `F.linear` goes to MKL's sgemm, which packs (copies) the weight on every call; with a
few rows (a decode step of 8 streams) that copy and its kernel cost far more than the rows' own
work: on the 2-core AMD EPYC VM of docs/benchmarks.md the 32000 × 512 LM head takes ~45 ms for
8 rows against ~9 ms for one. oneDNN with a weight reordered once at load (what inductor's CPU
freezing uses) takes ~11 ms for 1, 8 or 32 rows. Each row's result also no longer depends on how
many rows share the call.

oneDNN costs ~0.1 ms a call whatever the size, where MKL's one-row gemv of a small weight takes
microseconds: so only weights of at least PACK_MIN_ELEMENTS are packed (on the tiny model none,
which packed ran one stream at 0.4-0.7x; on the 8 x 512 benchmark model the LM head only; on
real models every projection too).

`pack_linears(model)` swaps those block projections (and an untied LM head) for a `PackedLinear`
holding only the reordered weight: the dense copy is dropped, so memory stays the same. Off for
other devices and dtypes, when oneDNN is missing, or with OPENTUNE_PACKED_LINEAR=0.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..lora import TARGET_MODULES

PACK_MIN_ELEMENTS = 1 << 20  # 4 MB of float32


class PackedLinear(nn.Module):
    def __init__(self, lin: nn.Linear, batch_hint: int):
        super().__init__()
        self.in_features, self.out_features = lin.in_features, lin.out_features
        w = torch.ops.mkldnn._reorder_linear_weight(lin.weight.detach(), batch_hint)
        self.weight = nn.Parameter(w, requires_grad=False)  # opaque oneDNN layout, [out, in]
        self.bias = None if lin.bias is None else nn.Parameter(lin.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.weight, self.bias, "none", [], "")


def available(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        os.environ.get("OPENTUNE_PACKED_LINEAR", "1") != "0"
        and device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


@torch.no_grad()
def pack_linears(model, device: torch.device, dtype: torch.dtype, batch_hint: int) -> bool:
    """In place; True when any linear was packed. A tied LM head stays dense (packing it would keep
    a second copy of the embedding)."""
    if not available(device, dtype):
        return False
    try:  # an odd build without the ops' kernels: stay on F.linear
        PackedLinear(nn.Linear(8, 8, bias=False), 1)(torch.zeros(1, 8))
    except RuntimeError:
        return False
    packed = False
    for block in model.model.layers:
        for parent in (block.self_attn, block.mlp):
            for name in TARGET_MODULES:
                lin = getattr(parent, name, None)
                if isinstance(lin, nn.Linear) and lin.weight.numel() >= PACK_MIN_ELEMENTS:
                    setattr(parent, name, PackedLinear(lin, batch_hint))
                    packed = True
    head = model.lm_head
    tied = head.weight is model.model.embed_tokens.weight
    if isinstance(head, nn.Linear) and not tied and head.weight.numel() >= PACK_MIN_ELEMENTS:
        model.lm_head = PackedLinear(head, batch_hint)
        packed = True
    return packed
