"""PEFT LoRA adapter folders for inference: validated against the loaded model, kept as (A, B·scaling)
per target linear, and applied per row group in a batch that mixes adapters.

    y = W x + b + Σ_adapters [row uses it] · (alpha / r) · B(A(x))

Rows without an adapter add nothing, so one copy of the base weights serves every adapter.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import safetensors_io as st
from ..checkpoint import ModelError
from ..lora import TARGET_MODULES

_KEY = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.default)?\.weight$"
)
_PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn"}
_PARENT.update({"gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"})


@dataclass
class Adapter:
    path: str
    mtime: float
    r: int
    scaling: float
    # per layer: module name → (A [r, in], B·scaling [out, r]); scaling folded in once at load
    layers: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=list)

    def nbytes(self) -> int:
        return sum(
            a.numel() * a.element_size() + b.numel() * b.element_size() for d in self.layers for a, b in d.values()
        )


def adapter_mtime(path: str) -> float:
    """Changes when the folder is rewritten (a checkpoint is replaced), so a stale copy is reloaded."""
    try:
        return os.stat(os.path.join(path, "adapter_model.safetensors")).st_mtime
    except OSError:
        return -1.0


def load_adapter(path: str, model, device, dtype) -> Adapter:
    """Read and check a PEFT folder against `model`; ModelError says what is wrong."""
    cfg_path = os.path.join(path, "adapter_config.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"adapter {path} has no adapter_config.json") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"adapter {cfg_path}: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"adapter {path}: peft_type {cfg.get('peft_type')!r} is not LORA")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ModelError(f"adapter {path}: r must be a positive integer, got {r!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise ModelError(f"adapter {path}: lora_alpha must be a number, got {alpha!r}")
    targets = cfg.get("target_modules")
    if not isinstance(targets, list) or not targets or any(t not in TARGET_MODULES for t in targets):
        raise ModelError(f"adapter {path}: target_modules must be a list of {TARGET_MODULES}, got {targets!r}")
    for flag in ("use_dora", "fan_in_fan_out"):
        if cfg.get(flag):
            raise ModelError(f"adapter {path}: {flag} is not supported")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save"):
        if cfg.get(key):
            raise ModelError(f"adapter {path}: {key} is not supported")
    if cfg.get("bias", "none") != "none":
        raise ModelError(f"adapter {path}: bias {cfg.get('bias')!r} is not supported (only 'none')")
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r  # PEFT's two scalings
    weights_path = os.path.join(path, "adapter_model.safetensors")
    try:
        tensors = st.load(weights_path)
    except (OSError, ValueError) as e:
        raise ModelError(f"adapter {weights_path}: {e}") from None

    layers = model.model.layers
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m or m.group(3) not in targets or _PARENT.get(m.group(3)) != m.group(2):
            raise ModelError(f"adapter {path}: unexpected weight {key} (target_modules {targets})")
        layer = int(m.group(1))
        if layer >= len(layers):
            raise ModelError(f"adapter {path}: {key} names layer {layer}, the model has {len(layers)}")
        pairs.setdefault((layer, m.group(3)), {})[m.group(4)] = t
    if not pairs:
        raise ModelError(f"adapter {path}: no LoRA weights in adapter_model.safetensors")
    out: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in layers]
    for (layer, name), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise ModelError(f"adapter {path}: layer {layer} {name} has lora_{''.join(ab)} without its pair")
        lin = getattr(getattr(layers[layer], _PARENT[name]), name)
        a, b = ab["A"], ab["B"]
        want_a, want_b = (r, lin.in_features), (lin.out_features, r)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise ModelError(
                f"adapter {path}: layer {layer} {name} lora_A {list(a.shape)} / lora_B {list(b.shape)}, "
                f"the model with r={r} needs {list(want_a)} / {list(want_b)}"
            )
        a = a.to(device=device, dtype=dtype).contiguous()
        b = (b.double() * scaling).to(device=device, dtype=dtype).contiguous()
        out[layer][name] = (a, b)
    return Adapter(path=path, mtime=adapter_mtime(path), r=r, scaling=scaling, layers=out)


class LoraGroups:
    """The adapters of one forward call: (adapter, row indices or None for every row)."""

    def __init__(self, groups: list[tuple[Adapter, torch.Tensor | None]]):
        self.groups = groups

    def linear(self, lin: torch.nn.Module, x: torch.Tensor, layer: int, name: str) -> torch.Tensor:
        y = lin(x)  # an nn.Linear, or a PackedLinear (packed.py) on the CPU
        for adapter, rows in self.groups:
            ab = adapter.layers[layer].get(name)
            if ab is None:
                continue
            a, b = ab
            if rows is None:
                y = y + F.linear(F.linear(x, a), b)
            else:  # only this adapter's rows: gather, two thin matmuls, scatter-add back
                y.index_add_(0, rows, F.linear(F.linear(x.index_select(0, rows), a), b))
        return y


NO_LORA = LoraGroups([])
