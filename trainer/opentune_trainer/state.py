"""Resumable training state in `output_dir/state/`, replaced atomically.

A new state is written to `state.tmp/`, the old one renamed to `state.old/`, the new one renamed
into place, the old one deleted. If a crash lands between the two renames, `state.old/` is still
whole and `load` falls back to it. Contents: trainable weights, optimizer state, step, RNG states
and a fingerprint of the job (so a changed job never resumes a foreign state). The data position
needs no file of its own: the row order of an epoch is a pure function of (seed, epoch), so the
step number locates it.

`Writer` writes a state on a background thread from a CPU copy taken between two steps, so
training goes on while the disk works (a full fine-tune's state is 12 bytes per parameter: 15 GB
at 1B, far more than a shutdown's grace allows), and measures how fast it writes. At SIGTERM the
trainer writes the current step's state only if that fits the grace; otherwise it aborts a write
in flight and keeps the last complete state, saying at which step the job will resume.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    s = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["cpu"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


class Aborted(Exception):
    """A background write given up at SIGTERM: its tmp folder is discarded, the last state stays."""


class _AbortableFile:
    """torch.save writes through this; a set flag fails the next write (within one chunk)."""

    def __init__(self, f, abort: threading.Event):
        self.f, self.abort = f, abort

    def write(self, b) -> int:
        if self.abort.is_set():
            raise Aborted()
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def save(output_dir: str, payload: dict[str, Any], info: dict[str, Any], abort: threading.Event | None = None) -> str:
    final = os.path.join(output_dir, "state")
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        with open(os.path.join(tmp, "state.pt"), "wb") as f:
            torch.save(payload, _AbortableFile(f, abort) if abort is not None else f)
    except Exception:
        if abort is not None and abort.is_set():  # torch may wrap our exception in its own
            raise Aborted() from None
        raise
    if abort is not None and abort.is_set():
        raise Aborted()
    with open(os.path.join(tmp, "state.json"), "w") as f:
        json.dump(info, f, indent=2)
    for name in ("state.pt", "state.json"):
        with open(os.path.join(tmp, name), "rb") as f:
            os.fsync(f.fileno())
    if os.path.isdir(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def load(output_dir: str, fingerprint: str) -> dict[str, Any] | None:
    """The saved payload if a whole state for this job exists, else None."""
    for name in ("state", "state.old"):
        d = os.path.join(output_dir, name)
        try:
            with open(os.path.join(d, "state.json")) as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if info.get("fingerprint") != fingerprint:
            return None
        # our own file (optimizer state, RNG tensors): no need for torch ≥ 2.6's weights_only filter
        return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
    return None


def nbytes(x: Any) -> int:
    """Bytes of the tensors in a payload (what a write costs)."""
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(nbytes(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return sum(nbytes(v) for v in x)
    return 0


# before the first write has been timed: a conservative local-disk speed (bytes per second)
ASSUMED_WRITE_BPS = 200e6


class Writer:
    """One state write at a time, on a background thread, from a payload the caller copied to the CPU."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.step: int | None = None  # step of the last state wholly on disk (this run)
        self.bps = ASSUMED_WRITE_BPS  # measured by the last completed write
        self._thread: threading.Thread | None = None
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self.writing: int | None = None  # the step being written, if any
        self._started = 0.0
        self._bytes = 0

    def estimate_s(self, n_bytes: int) -> float:
        return n_bytes / self.bps + 0.5  # fsync and renames

    def remaining_s(self) -> float:
        """Seconds the write in flight still needs (0 when none)."""
        if self.writing is None:
            return 0.0
        return max(0.0, self.estimate_s(self._bytes) - (time.monotonic() - self._started))

    def submit(self, payload: dict[str, Any], info: dict[str, Any], done: Callable[[str, float], None]) -> None:
        """Start writing; `done(dir, seconds)` runs on the writer thread once the state is whole."""
        self.wait()
        self._abort.clear()
        self.writing, self._started, self._bytes = info["step"], time.monotonic(), nbytes(payload)
        self._thread = threading.Thread(target=self._write, args=(payload, info, done), name="state", daemon=True)
        self._thread.start()

    def _write(self, payload: dict[str, Any], info: dict[str, Any], done: Callable[[str, float], None]) -> None:
        try:
            d = save(self.output_dir, payload, info, self._abort)
            seconds = time.monotonic() - self._started
            self.bps = max(self._bytes / max(seconds, 1e-3), 1e6)
            self.step = info["step"]
            done(d, seconds)
        except Aborted:
            shutil.rmtree(os.path.join(self.output_dir, "state.tmp"), ignore_errors=True)
        except BaseException as e:  # noqa: BLE001 - raised again in the main thread by wait()
            self._error = e
        finally:
            self.writing = None

    def wait(self) -> None:
        """Until the write in flight is done; its error (a full disk) is raised here."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def abort(self) -> None:
        """Give up the write in flight (the last whole state stays in place)."""
        self._abort.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._error = None
