"""Stdout protocol: one JSON object per line, flushed per line (docs/trainer-protocol.md §4).

`claim_stdout()` moves the process's fd 1 to stderr and keeps a private handle on the real stdout,
so stray prints (ours, PyTorch's, C extensions') can never corrupt the protocol stream.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

_out = sys.stdout


class JobError(Exception):
    """The job's fault: exit 2 with an `error` line (code from the protocol's list)."""

    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def claim_stdout() -> None:
    global _out
    sys.stdout.flush()
    _out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf; a diverged loss reads as null
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def line(type_: str, **fields: Any) -> str:
    """One protocol line (without the newline), non-finite numbers as null."""
    return json.dumps(_clean({"type": type_, **fields}), allow_nan=False)


def emit(type_: str, **fields: Any) -> None:
    _out.write(line(type_, **fields) + "\n")
    _out.flush()


def log(message: str, level: str = "info") -> None:
    emit("log", level=level, message=message)


def error(code: str, message: str, param: str | None = None) -> None:
    emit("error", code=code, message=message, param=param)
