"""Stdout protocol: one JSON object per line, flushed per line (docs/trainer-protocol.md §4).

`claim_stdout()` moves the process's fd 1 to stderr and keeps a private handle on the real stdout,
so stray prints (ours, PyTorch's, C extensions') can never corrupt the protocol stream.

The runner kills a trainer that prints nothing for too long as hung (src/runner/trainer-silence.ts).
Phases without steps that may take long (importing torch, loading, the first step's compile,
validation, checkpoint and state writes) run inside `phase(...)`: a thread prints a `heartbeat` line
every OPENTUNE_HEARTBEAT_S seconds meanwhile. Steps get none: a step that takes far longer than the
slowest before it is what a hang looks like.

Where OPENTUNE_PROTOCOL_FILE is set (the Slurm executor: src/runner/slurm/), each line is also
appended to that file, flushed, before it goes to stdout: the runner follows the file from the byte
offset it has read up to, on storage shared with the compute nodes, so it can stop and start again.
Only rank 0 of a torchrun launch writes it (RANK), as only rank 0 speaks for the job.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_out = sys.stdout
_lock = threading.Lock()  # the heartbeat thread and the main thread print whole lines
HEARTBEAT_S = float(os.environ.get("OPENTUNE_HEARTBEAT_S", "10"))
_phases: list[str] = []  # the long phases the main thread is in, innermost last
_beating: threading.Thread | None = None
_file_path = os.environ.get("OPENTUNE_PROTOCOL_FILE") if os.environ.get("RANK", "0") == "0" else None
_file = None  # opened on the first line (append: a requeued or resumed run carries on after the last)


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


def mute() -> None:
    """Print no protocol line (the ranks other than 0 of a torchrun launch: rank 0 speaks for all)."""
    global _out
    _out = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process


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
    global _file
    text = line(type_, **fields) + "\n"
    with _lock:
        if _file_path:
            if _file is None:
                _file = open(_file_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the process
            _file.write(text)  # one write per whole line: a reader never sees half a line end in "\n"
            _file.flush()
        _out.write(text)
        _out.flush()


def _beat() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        if _phases:
            emit("heartbeat", phase=_phases[-1])


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Heartbeat lines while the block runs (also usable as a decorator)."""
    global _beating
    if _beating is None:
        _beating = threading.Thread(target=_beat, name="heartbeat", daemon=True)
        _beating.start()
    _phases.append(name)
    try:
        yield
    finally:
        _phases.pop()


def first_call_phase(name: str) -> Callable:
    """A decorator: the function's first call runs inside `phase(name)` (the first step compiles)."""

    def wrap(fn: Callable) -> Callable:
        called = False

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal called
            if called:
                return fn(*args, **kwargs)
            called = True
            with phase(name):
                return fn(*args, **kwargs)

        return run

    return wrap


def log(message: str, level: str = "info") -> None:
    emit("log", level=level, message=message)


def error(code: str, message: str, param: str | None = None) -> None:
    emit("error", code=code, message=message, param=param)
