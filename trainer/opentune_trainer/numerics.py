"""Numbers that decide whether a step may be applied: the LR schedule, out-of-memory and
divergence checks. Divergence is the job's fault (its learning rate, almost always) and must be
caught before an update or a checkpoint holds it."""

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


def diverged(step: int, why: str) -> JobError:
    """Training blew up numerically: the job's fault (its learning rate, almost always)."""
    return JobError(
        "invalid_hyperparameters",
        f"training diverged at step {step}: {why}; try a lower learning_rate",
        "learning_rate",
    )


def is_oom(e: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


def update_fits(lr: float, weight_max: float, weight_decay: float) -> bool:
    """Whether AdamW's scalars for this `lr` fit the weights' dtype (`weight_max` its largest value).
    AdamW moves a weight by lr / (1 − β1^t) ≤ 10·lr times m/√v, and multiplies it by
    1 − lr·weight_decay; torch turns both into the weights' dtype, and a finite double beyond
    float32's range raises "value cannot be converted to type float without overflow" (an infinite
    one is let through and makes every weight inf)."""
    return math.isfinite(lr) and 10 * lr <= weight_max and abs(1 - lr * weight_decay) <= weight_max


def check_finite(params: Iterable[torch.Tensor], step: int) -> None:
    """Before anything is saved: an update can overflow the weights even when its loss and
    gradient were finite (the next step would see it; a checkpoint must not hold it)."""
    with torch.no_grad():
        for p in params:
            if not bool(torch.isfinite(p).all()):
                raise diverged(step, "the weights are no longer finite")
