"""Which Hugging Face configs model.py can train: the rules live in supported_models.json, which the
service reads too (src/models/support.ts), so a model it accepts is one the trainer trains and a
model the trainer refuses is refused when the job is created. The two checks word every reason
alike; trainer/tests/model_support_cases.json holds the cases both test suites run.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

with open(os.path.join(os.path.dirname(__file__), "supported_models.json")) as _f:
    SUPPORTED: dict[str, Any] = json.load(_f)

MODEL_TYPES: list[str] = SUPPORTED["model_types"]
ROPE_TYPES: dict[str, list[str]] = SUPPORTED["rope_types"]
SLIDING_WINDOW_TYPES: list[str] = SUPPORTED["sliding_window_types"]  # model.py applies their sliding_window


def _shown(v: Any) -> str:
    """A value as JSON.stringify writes it on the service's side (8.0 is 8 there)."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return json.dumps(v, ensure_ascii=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summary() -> str:
    """What is supported, for error messages."""
    return (
        f"model_type {', '.join(MODEL_TYPES)}; rope scaling {', '.join(ROPE_TYPES)}; "
        "dense models (no mixture of experts)"
    )


def unsupported_reason(cfg: Any) -> str | None:
    """Why model.py cannot train a model with this config.json, or None when it can."""
    if not isinstance(cfg, dict):
        return "config.json is not a JSON object"
    mt = cfg.get("model_type")
    if mt is None:
        return "config.json has no model_type"
    if mt not in MODEL_TYPES:
        return f"model_type {_shown(mt)} is not supported"
    for field in SUPPORTED["expert_fields"]:
        v = cfg.get(field)
        if _is_number(v) and v > 1:
            return f"mixture-of-experts models ({field} {_shown(v)}) are not supported"
    for field in SUPPORTED["required"]:
        v = cfg.get(field)
        if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
            return f"config.json needs {field} as a positive integer"
    for field, want in SUPPORTED["fixed"].items():
        v = cfg.get(field)
        if v is not None and v != want:
            return f"{field} {_shown(v)} is not supported (only {_shown(want)})"
    return _attention_reason(cfg, mt) or _rope_reason(cfg)


def _attention_reason(cfg: dict, mt: str) -> str | None:
    if mt not in SLIDING_WINDOW_TYPES and cfg.get("use_sliding_window") is True:
        return f"sliding-window attention (use_sliding_window) is not supported for {mt}"
    layers = cfg.get("layer_types")
    if isinstance(layers, list):
        other = [t for t in layers if t not in SUPPORTED["layer_types"]]
        if other:
            return f"layer_types {_shown(other[0])} is not supported (only {', '.join(SUPPORTED['layer_types'])})"
    return None


def _rope_reason(cfg: dict) -> str | None:
    # as model.py reads it: transformers ≥ 5 writes `rope_parameters`, older ones `rope_scaling`
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        return "rope_scaling is not a JSON object"
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if not isinstance(kind, str) or kind not in ROPE_TYPES:
        return f"rope scaling {_shown(kind)} is not supported"
    missing = [k for k in ROPE_TYPES[kind] if not _is_number(rope.get(k))]
    if missing:
        return f"rope scaling {_shown(kind)} needs {', '.join(missing)} as numbers"
    return None


def check_supported(cfg: Any) -> None:
    """Raises ValueError (→ invalid_model) naming what is unsupported and what is."""
    why = unsupported_reason(cfg)
    if why is not None:
        raise ValueError(f"{why} (supported: {summary()})")
