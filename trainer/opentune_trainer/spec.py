"""The job spec (docs/trainer-protocol.md §2), parsed and checked.

Bad hyperparameter values are the job's fault (`invalid_hyperparameters`, exit 2); a spec that
cannot be read or lacks a path is the service's bug (internal_error).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from .protocol import JobError

# The one definition of every hyperparameter's type, range and default (Nebius'
# SupervisedHParameters), which the service builds its request schema from too: the trainer accepts
# exactly what the API accepts. The service writes every value resolved; defaults fill in for specs
# written by hand (tests, benchmarks).
with open(os.path.join(os.path.dirname(__file__), "hyperparameters.json")) as _f:
    RULES: dict[str, dict] = json.load(_f)["properties"]
# the same for the spec-draft method (Nebius SpecDraftHParameters, an EAGLE-3 drafter: drafter.py)
with open(os.path.join(os.path.dirname(__file__), "spec_draft_hyperparameters.json")) as _f:
    DRAFT_RULES: dict[str, dict] = json.load(_f)["properties"]
METHODS = ("supervised", "spec-draft")


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
class DraftParams:
    """What a spec-draft job adds to the optimizer's hyperparameters (spec_draft_hyperparameters.json)."""

    num_decoding_heads: int  # the training-time test's unroll: the draft tokens per target forward
    loss: str  # kl | lk_alpha | lk_hybrid (drafter.step_loss)
    draft_vocab_size: int  # capped at the target's vocabulary by the trainer
    regenerate_responses: bool = False  # train on the target's own responses (regenerate.py)


@dataclass
class Spec:
    job_id: str
    model_dir: str
    train_data: str
    valid_data: str | None
    output_dir: str
    resume: bool
    seed: int
    device: str
    precision: str  # auto (bf16 on CUDA that has it, else float32) | float32 | bfloat16
    hp: HParams
    valid_sample_rows: int
    base_model: str | None  # the model id, for adapter_config.json's base_model_name_or_path
    init_adapter: str | None  # a PEFT adapter folder whose LoRA weights the job keeps training
    micro_batch_size: int | None  # optional override of automatic micro-batching (tests, bench)
    method: str = "supervised"  # supervised | spec-draft
    draft: DraftParams | None = None  # spec-draft only


def _check(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise JobError("invalid_hyperparameters", f"{name} {why}", name)


def _shown(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)  # 1, not 1.0, as the API words it


def _checked(name: str, v: Any, rules: dict[str, dict] = RULES) -> Any:
    """`v` as the rules (hyperparameters.json) type and bound it, else invalid_hyperparameters naming `name`."""
    rule = rules[name]
    kind = rule["type"]
    if kind == "string":
        _check(isinstance(v, str), name, "must be a string")
        trained = rule.get("x-opentune-trained") or rule.get("enum")
        _check(trained is None or v in trained, name, f"must be one of {', '.join(trained or [])}")
        return v
    if kind == "object":  # loss: {type: …}
        _check(isinstance(v, dict), name, "must be an object")
        return {
            k: _checked(f"{name}.{k}", v.get(k, r["default"]), {f"{name}.{k}": r})
            for k, r in rule["properties"].items()
        }
    if kind == "boolean":
        _check(isinstance(v, bool), name, "must be true or false")
        return v
    number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "integer":  # 2.0 from a JSON writer that keeps the point is still 2
        _check(number and float(v).is_integer(), name, "must be an integer")
        v = int(v)
    else:
        _check(number, name, "must be a number")
    if "minimum" in rule:
        _check(v >= rule["minimum"], name, f"must be ≥ {_shown(rule['minimum'])}")
    if "exclusiveMinimum" in rule:
        _check(v > rule["exclusiveMinimum"], name, f"must be > {_shown(rule['exclusiveMinimum'])}")
    if "maximum" in rule:
        _check(v <= rule["maximum"], name, f"must be ≤ {_shown(rule['maximum'])}")
    if "exclusiveMaximum" in rule:
        _check(v < rule["exclusiveMaximum"], name, f"must be < {_shown(rule['exclusiveMaximum'])}")
    return v


def _optimizer(h: dict[str, Any]) -> dict[str, Any]:
    """What both methods' optimizers take, from checked values (floats as the fingerprint hashes them)."""
    return {
        "batch_size": h["batch_size"],
        "learning_rate": float(h["learning_rate"]),
        "n_epochs": h["n_epochs"],
        "warmup_ratio": float(h["warmup_ratio"]),
        "weight_decay": float(h["weight_decay"]),
        "max_grad_norm": float(h["max_grad_norm"]),
    }


def parse_hparams(raw: dict | None) -> HParams:
    """Every known key checked (those the data pipeline applied, like packing, too); unknown ones
    are the service's to echo and are ignored here."""
    given = {k: v for k, v in (raw or {}).items() if v is not None}
    h = {k: _checked(k, given.get(k, rule["default"])) for k, rule in RULES.items()}
    return HParams(
        **_optimizer(h),
        lora=h["lora"],
        lora_r=h["lora_r"],
        # float as before: the resume fingerprint hashes these values
        lora_alpha=float(h["lora_alpha"]),
        lora_dropout=float(h["lora_dropout"]),
    )


def parse_draft_hparams(raw: dict | None) -> tuple[HParams, DraftParams]:
    """A spec-draft job's hyperparameters: the optimizer's as HParams (no LoRA: the target is
    frozen, the drafter trains whole), the drafter's as DraftParams."""
    given = {k: v for k, v in (raw or {}).items() if v is not None}
    h = {k: _checked(k, given.get(k, rule["default"]), DRAFT_RULES) for k, rule in DRAFT_RULES.items()}
    hp = HParams(
        **_optimizer(h),
        lora=False,
        lora_r=0,
        lora_alpha=0.0,
        lora_dropout=0.0,
    )
    draft = DraftParams(h["num_decoding_heads"], h["loss"]["type"], h["draft_vocab_size"], h["regenerate_responses"])
    return hp, draft


def load_spec(path: str) -> Spec:
    with open(path) as f:
        s = json.load(f)
    for key in ("model_dir", "train_data", "output_dir"):
        if not isinstance(s.get(key), str):
            raise ValueError(f"job spec: {key} must be a path")
    micro = s.get("micro_batch_size")
    if s.get("precision", "auto") not in ("auto", "float32", "bfloat16"):
        raise ValueError("job spec: precision must be auto, float32 or bfloat16")
    method = s.get("method") or "supervised"
    if method not in METHODS:
        raise ValueError(f"job spec: method must be one of {', '.join(METHODS)}")
    draft = None
    if method == "spec-draft":
        hp, draft = parse_draft_hparams(s.get("hyperparameters") or {})
    else:
        hp = parse_hparams(s.get("hyperparameters") or {})
    return Spec(
        job_id=str(s.get("job_id", "")),
        model_dir=s["model_dir"],
        train_data=s["train_data"],
        valid_data=s.get("valid_data"),
        output_dir=s["output_dir"],
        resume=bool(s.get("resume", False)),
        seed=int(s.get("seed") or 0),
        device=s.get("device") or "auto",
        precision=s.get("precision") or "auto",
        hp=hp,
        valid_sample_rows=int(s.get("valid_sample_rows") or 32),
        base_model=s.get("base_model"),
        init_adapter=s.get("init_adapter"),
        micro_batch_size=int(micro) if micro else None,
        method=method,
        draft=draft,
    )
