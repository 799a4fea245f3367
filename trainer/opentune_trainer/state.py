"""Resumable training state in `output_dir/state/`, replaced atomically.

A new state is written to `state.tmp/`, the old one renamed to `state.old/`, the new one renamed
into place, the old one deleted. If a crash lands between the two renames, `state.old/` is still
whole and `load` falls back to it. Contents: trainable weights, optimizer state, step, RNG states
and a fingerprint of the job (so a changed job never resumes a foreign state). The data position
needs no file of its own: the row order of an epoch is a pure function of (seed, epoch), so the
step number locates it.
"""

from __future__ import annotations

import json
import os
import shutil
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


def save(output_dir: str, payload: dict[str, Any], info: dict[str, Any]) -> str:
    final = os.path.join(output_dir, "state")
    tmp, old = final + ".tmp", final + ".old"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    torch.save(payload, os.path.join(tmp, "state.pt"))
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
