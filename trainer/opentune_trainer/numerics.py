"""Numbers that decide whether a step may be applied: the LR schedule, out-of-memory and
divergence checks. Divergence is the job's fault (its learning rate, most often; an extreme
lora_alpha or weight_decay otherwise) and must be caught before an update or a checkpoint holds it."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .protocol import JobError


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """LR of optimizer step `step` (1-based): up linearly over `warmup` steps to `peak`, then down
    linearly so that the step after the last would be 0 (the last step still learns)."""
    # the ratio first (as transformers' LambdaLR does): peak × step would overflow to inf for a huge
    # but finite peak (1e308 is a valid learning_rate) and the step would then report null
    if step <= warmup:
        return peak * (step / warmup)
    return peak * ((total - step + 1) / (total - warmup))


# Where fine-tuning is run at all; beyond these, a value is what blew training up. At a divergence
# the hyperparameter furthest beyond its bound (in orders of magnitude) is named; none beyond: the
# learning rate, the usual cause. Fine-tuning LRs are 1e-6..1e-3; LoRA's alpha/r is 1..4 in
# practice (32 at the most seen); decoupled weight decay scales weights by 1 − lr·wd each step, which
# zeroes them at lr·wd = 1 and flips and grows them beyond.
SANE_LEARNING_RATE = 1e-2
SANE_LORA_SCALE = 64.0


def suspect(hp) -> tuple[str, str]:
    """(param, advice) for a divergence: the hyperparameter out of a sane numeric regime."""
    lr, wd = hp.learning_rate, hp.weight_decay
    scale = hp.lora_alpha / hp.lora_r if hp.lora else 0.0
    beyond = {
        "learning_rate": _orders(lr, SANE_LEARNING_RATE),
        "weight_decay": _orders(wd, 1.0) if lr * wd >= 1 else 0.0,
        "lora_alpha": _orders(scale, SANE_LORA_SCALE),
    }
    param = max(beyond, key=lambda k: beyond[k])
    if beyond[param] <= 0 or param == "learning_rate":
        return "learning_rate", "try a lower learning_rate"
    if param == "weight_decay":
        return param, (
            f"weight_decay {wd:g} × learning_rate {lr:g} is {lr * wd:g}, and each step scales the weights by "
            f"1 − that; try a weight_decay well below 1/learning_rate (0 to 0.1 is usual)"
        )
    return param, (
        f"lora_alpha {hp.lora_alpha:g} / lora_r {hp.lora_r} scales the adapter's output by {scale:g}; "
        f"try a lora_alpha of 1 to 4 × lora_r"
    )


def _orders(value: float, bound: float) -> float:
    return math.log10(value / bound) if value > bound else 0.0


def diverged(step: int, why: str, hp=None) -> JobError:
    """Training blew up numerically: the job's fault, blamed on the hyperparameter that was extreme
    (`hp`: the job's; without it, the learning rate)."""
    param, advice = suspect(hp) if hp is not None else ("learning_rate", "try a lower learning_rate")
    return JobError("invalid_hyperparameters", f"training diverged at step {step}: {why}; {advice}", param)


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def update_overflow(lr: float, weight_max: float, weight_decay: float, dtype: str) -> str | None:
    """Why AdamW's scalars for this `lr` do not fit the weights' dtype (`weight_max` its largest
    value), or None. AdamW moves a weight by lr / (1 − β1^t) ≤ 10·lr times m/√v, and multiplies it by
    1 − lr·weight_decay; torch turns both into the weights' dtype, and a finite double beyond
    float32's range raises "value cannot be converted to type float without overflow" (an infinite
    one is let through and makes every weight inf)."""
    if not (math.isfinite(lr) and 10 * lr <= weight_max):
        return f"a learning rate of {lr:g} overflows the optimizer's update of {dtype} weights"
    if not abs(1 - lr * weight_decay) <= weight_max:
        return f"the weight decay factor 1 − {lr:g} × {weight_decay:g} overflows {dtype} weights"
    return None


def check_finite(params: Iterable[torch.Tensor], step: int, hp=None) -> None:
    """Before anything is saved: an update can overflow the weights even when its loss and
    gradient were finite (the next step would see it; a checkpoint must not hold it)."""
    with torch.no_grad():
        for p in params:
            if not bool(torch.isfinite(p).all()):
                raise diverged(step, "the weights are no longer finite", hp)
