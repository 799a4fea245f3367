"""LoRA on every linear projection, with PEFT's semantics and key names.

    y = W x + b + (lora_alpha / r) · B(A(dropout(x)))      A: [r, in], B: [out, r]

A starts kaiming-uniform (a=√5, as PEFT and nn.Linear), B starts at zero, so at init the model is
exactly the base model. State-dict keys are `….q_proj.lora_A.weight`, which become PEFT's
`base_model.model.….q_proj.lora_A.weight` on export (PEFT strips the adapter name `.default`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import autocast_dtype

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.weight, self.bias = base.weight, base.bias  # shared, frozen; keys stay `….weight`
        dev = base.weight.device
        # adapters train in float32 even when the frozen base is bf16
        self.lora_A = nn.Linear(base.in_features, r, bias=False, device=dev, dtype=torch.float32)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, device=dev, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        a = self.dropout(x)
        if autocast_dtype(x.device.type) is None:  # eager fp32/bf16 mixes need an explicit cast
            a = a.to(self.lora_A.weight.dtype)
        return y + (self.lora_B(self.lora_A(a)) * self.scaling).to(y.dtype)


def apply_lora(model: nn.Module, r: int, alpha: float, dropout: float, targets: list[str] = TARGET_MODULES) -> int:
    """Wrap every target nn.Linear in place, freeze everything else; returns trainable count."""
    for p in model.parameters():
        p.requires_grad_(False)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
    trainable = [p for n, p in model.named_parameters() if ".lora_" in n]
    for p in trainable:
        p.requires_grad_(True)
    return sum(p.numel() for p in trainable)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights under PEFT key names, float32 on the CPU."""
    return {
        f"base_model.model.{n}": p.detach().float().cpu().contiguous()
        for n, p in model.named_parameters()
        if ".lora_" in n
    }


def adapter_config(r: int, alpha: float, dropout: float, base_model: str) -> dict:
    """PEFT LoraConfig as `adapter_config.json` (what PeftModel.from_pretrained reads)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": TARGET_MODULES,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
        "revision": None,
    }


@torch.no_grad()
def merge_lora(model: nn.Module) -> None:
    """Fold every LoRALinear into a plain nn.Linear (W + scaling·B·A, in W's dtype): the fine-tuned
    model as one set of weights, e.g. the frozen target of a spec-draft job."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                w = child.weight
                delta = (child.lora_B.weight @ child.lora_A.weight) * child.scaling
                merged = nn.Linear(w.shape[1], w.shape[0], bias=child.bias is not None, device=w.device, dtype=w.dtype)
                merged.weight.copy_(w.float() + delta.to(w.device))
                if child.bias is not None:
                    merged.bias.copy_(child.bias)
                setattr(module, name, merged)
