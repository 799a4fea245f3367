"""What the trainer will run on, as one JSON object: `python -m opentune_trainer doctor`.

`opentune doctor` prints it for people; a GPU user checks here that the CUDA build of PyTorch is
installed and sees the GPU, before a job quietly trains on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return str(__import__(module).__version__)
    except Exception as e:  # noqa: BLE001 - a broken install is worth reporting, not raising
        return f"broken: {type(e).__name__}: {e}"


def _cuda_devices(torch) -> list[dict]:
    devices = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "index": i,
                "name": p.name,
                "memory_gib": round(p.total_memory / 2**30, 1),
                "compute_capability": f"{p.major}.{p.minor}",
                "bf16": (p.major, p.minor) >= (8, 0),  # native bf16 from Ampere on
            }
        )
    return devices


def _attention(torch) -> dict:
    from . import attention

    kernels = {"sdpa": attention.HAS_SDPA, "sdpa_gqa": attention.SDPA_GQA}
    kernels["flex"] = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    kernels["varlen"] = importlib.util.find_spec("torch.nn.attention.varlen") is not None
    if torch.cuda.is_available():
        backends = torch.backends.cuda
        kernels["flash"] = bool(getattr(backends, "is_flash_attention_available", lambda: False)())
        kernels["mem_efficient"] = bool(backends.mem_efficient_sdp_enabled())
    kernels["selected"] = attention.BACKEND
    return kernels


def report() -> dict:
    out: dict = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "peft": _version("peft"),
    }
    if out["torch"] is None or str(out["torch"]).startswith("broken"):
        out["device"] = None
        out["problem"] = "PyTorch is not installed for this interpreter: run `npm run setup`"
        return out
    import torch

    out["cuda_build"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    out["cuda_devices"] = _cuda_devices(torch) if out["cuda_available"] else []
    want = os.environ.get("OPENTUNE_DEVICE", "auto")
    out["device"] = "cuda" if want in ("auto", "cuda") and out["cuda_available"] else "cpu"
    out["bf16"] = any(d["bf16"] for d in out["cuda_devices"]) if out["cuda_available"] else True
    out["cpu_threads"] = torch.get_num_threads()
    out["attention"] = _attention(torch)
    # torch.compile's CPU backend and Triton need a C compiler at run time
    out["compiler"] = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    if out["device"] == "cpu" and shutil.which("nvidia-smi") and not out["cuda_available"]:
        out["problem"] = (
            "an NVIDIA GPU is present but this PyTorch cannot use it"
            f" (torch {out['torch']}, CUDA build: {out['cuda_build']}):"
            " run `OPENTUNE_TORCH=cuda npm run setup`"
        )
    return out


def main() -> int:
    print(json.dumps(report(), indent=2))
    return 0
