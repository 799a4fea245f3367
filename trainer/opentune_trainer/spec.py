"""The job spec (docs/trainer-protocol.md §2), parsed and checked.

Bad hyperparameter values are the job's fault (`invalid_hyperparameters`, exit 2); a spec that
cannot be read or lacks a path is the service's bug (internal_error).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

from .protocol import JobError

DEFAULTS = dict(batch_size=8, learning_rate=1e-5, n_epochs=3, warmup_ratio=0.0, weight_decay=0.0,
                max_grad_norm=1.0, lora=False, lora_r=8, lora_alpha=8, lora_dropout=0.0)


@dataclass
class HParams:
    batch_size: int
    learning_rate: float
    n_epochs: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    lora: bool
    lora_r: int
    lora_alpha: float
    lora_dropout: float


@dataclass
class Spec:
    job_id: str
    model_dir: str
    train_data: str
    valid_data: Optional[str]
    output_dir: str
    resume: bool
    seed: int
    device: str
    precision: str  # auto (bf16 on CUDA that has it, else float32) | float32 | bfloat16
    hp: HParams
    valid_sample_rows: int
    base_model: Optional[str]  # the model id, for adapter_config.json's base_model_name_or_path
    init_adapter: Optional[str]  # a PEFT adapter folder whose LoRA weights the job keeps training
    micro_batch_size: Optional[int]  # optional override of automatic micro-batching (tests, bench)


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise JobError("invalid_hyperparameters", f"{name} {why}", name)


def _number(h: dict, name: str, integer: bool = False):
    v = h[name]
    good = isinstance(v, int) if integer else isinstance(v, (int, float))
    _check(good and not isinstance(v, bool) and math.isfinite(v), name,
           "must be an integer" if integer else "must be a number")
    return int(v) if integer else float(v)


def parse_hparams(raw: dict) -> HParams:
    h = {**DEFAULTS, **{k: v for k, v in (raw or {}).items() if v is not None}}
    hp = HParams(
        batch_size=_number(h, "batch_size", True), learning_rate=_number(h, "learning_rate"),
        n_epochs=_number(h, "n_epochs", True), warmup_ratio=_number(h, "warmup_ratio"),
        weight_decay=_number(h, "weight_decay"), max_grad_norm=_number(h, "max_grad_norm"),
        lora=h["lora"], lora_r=_number(h, "lora_r", True), lora_alpha=_number(h, "lora_alpha"),
        lora_dropout=_number(h, "lora_dropout"))
    _check(isinstance(hp.lora, bool), "lora", "must be true or false")
    _check(hp.batch_size >= 1, "batch_size", "must be ≥ 1")
    _check(hp.learning_rate >= 0, "learning_rate", "must be ≥ 0")
    _check(hp.n_epochs >= 1, "n_epochs", "must be ≥ 1")
    _check(0 <= hp.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
    _check(hp.weight_decay >= 0, "weight_decay", "must be ≥ 0")
    _check(hp.max_grad_norm > 0, "max_grad_norm", "must be > 0")
    if hp.lora:
        _check(hp.lora_r >= 1, "lora_r", "must be ≥ 1")
        _check(hp.lora_alpha > 0, "lora_alpha", "must be > 0")
        _check(0 <= hp.lora_dropout <= 1, "lora_dropout", "must be in [0, 1]")  # the API's range
    return hp


def load_spec(path: str) -> Spec:
    with open(path) as f:
        s = json.load(f)
    for key in ("model_dir", "train_data", "output_dir"):
        if not isinstance(s.get(key), str):
            raise ValueError(f"job spec: {key} must be a path")
    micro = s.get("micro_batch_size")
    if s.get("precision", "auto") not in ("auto", "float32", "bfloat16"):
        raise ValueError("job spec: precision must be auto, float32 or bfloat16")
    return Spec(job_id=str(s.get("job_id", "")), model_dir=s["model_dir"], train_data=s["train_data"],
                valid_data=s.get("valid_data"), output_dir=s["output_dir"], resume=bool(s.get("resume", False)),
                seed=int(s.get("seed") or 0), device=s.get("device") or "auto",
                precision=s.get("precision") or "auto",
                hp=parse_hparams(s.get("hyperparameters") or {}),
                valid_sample_rows=int(s.get("valid_sample_rows") or 32), base_model=s.get("base_model"),
                init_adapter=s.get("init_adapter"),
                micro_batch_size=int(micro) if micro else None)
