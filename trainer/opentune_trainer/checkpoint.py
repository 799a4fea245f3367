"""Hugging Face folders in and out: load a model, write LoRA (PEFT) or full (HF) checkpoints.

Every checkpoint folder is written under a temporary name and renamed when complete, so a folder
named `step-<N>` is always whole.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil

import torch

from . import safetensors_io as st
from .lora import adapter_config, adapter_state_dict
from .model import LlamaForCausalLM, ModelConfig

SHARD_BYTES = 5 * 2**30  # HF's default max_shard_size for full checkpoints
SKIP_KEYS = ("rotary_emb.inv_freq",)  # old HF checkpoints carry this buffer; we recompute it
COPY_SUFFIXES = (".json", ".model", ".txt", ".jinja", ".tiktoken")
NOT_COPIED = {"model.safetensors.index.json", "adapter_config.json"}


class ModelError(ValueError):
    """The model folder is unusable (maps to the `invalid_model` error code)."""


def read_config(model_dir: str) -> tuple[dict, ModelConfig]:
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            raw = json.load(f)
        return raw, ModelConfig.from_hf(raw)
    except FileNotFoundError:
        raise ModelError(f"{model_dir} has no config.json") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: {e}") from None


def weight_files(model_dir: str) -> list[str]:
    """Safetensors files of a model folder: the index's shards, else every *.safetensors."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        files = [os.path.join(model_dir, n) for n in names]
        missing = [f for f in files if not os.path.exists(f)]
        if missing:
            raise ModelError(f"{model_dir}: index names missing shard {os.path.basename(missing[0])}")
        return files
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    files = [f for f in files if not os.path.basename(f).startswith("adapter_")]
    if not files:
        raise ModelError(f"{model_dir} has no *.safetensors weights")
    return files


def param_count(files: list[str]) -> int:
    """Parameters stored in the files, from their headers' shapes (whatever dtype they are in)."""
    total = 0
    for f in files:
        for k, v in st.read_header(f).items():
            if k != "__metadata__":
                total += math.prod(v["shape"])
    return total


def check_fits(n_params: int, lora: bool, store: torch.dtype, device: torch.device) -> str | None:
    """Why the model cannot train on `device` (None when it can): weights + optimizer vs free memory.
    LoRA keeps only the frozen base, in `store` (bf16 on CUDA); full fine-tuning needs float32
    weights, gradients and two AdamW moments: 16 bytes per parameter. Activations come on top."""
    per_param = 16 if not lora else torch.empty((), dtype=store).element_size()
    need = n_params * per_param * 1.1
    free = _free_cuda_memory(device) if device.type == "cuda" else _available_ram()
    if need <= free:
        return None
    return f"needs about {need / 2**30:.1f} GiB for weights and optimizer, {free / 2**30:.1f} GiB free on {device.type}"


def _free_cuda_memory(device: torch.device) -> int:
    # torch 1.13 wants an index: mem_get_info(torch.device("cuda")) raises ValueError there
    return torch.cuda.mem_get_info(device.index if device.index is not None else torch.cuda.current_device())[0]


def _available_ram() -> float:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return float("inf")  # not Linux: let the allocator be the judge


def build_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    """Parameters allocated on `device` in `dtype`, uninitialised where the meta device allows."""
    if hasattr(torch.device, "__enter__"):  # torch ≥ 2.0: skip the random init entirely
        with torch.device("meta"):
            model = LlamaForCausalLM(cfg)
        model = model.to(dtype).to_empty(device=device)
        if cfg.tie_word_embeddings:  # to_empty re-creates parameters, which unties them
            model.lm_head.weight = model.model.embed_tokens.weight
        return model
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def load_model(model_dir: str, device="cpu", dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    _, cfg = read_config(model_dir)
    files = weight_files(model_dir)
    model = build_model(cfg, torch.device(device), dtype)
    params = dict(model.named_parameters())
    if cfg.tie_word_embeddings:
        params.pop("lm_head.weight", None)
    loaded = set()
    with torch.no_grad():
        for path in files:
            try:
                tensors = st.load(path)
            except (ValueError, OSError) as e:
                raise ModelError(f"{os.path.basename(path)}: {e}") from None
            for name, t in tensors.items():
                if name not in params:
                    continue  # lm_head.weight of a tied model, rotary buffers, …
                if tuple(t.shape) != tuple(params[name].shape):
                    raise ModelError(f"{name}: shape {list(t.shape)} ≠ config's {list(params[name].shape)}")
                params[name].copy_(t)
                loaded.add(name)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ModelError(f"{model_dir}: weights missing for {len(missing)} parameters, e.g. {missing[0]}")
    return model


def publish(tmp: str, final: str) -> None:
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_adapter(out: str, model: torch.nn.Module, r: int, alpha: float, dropout: float, base_model: str) -> list[str]:
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    st.save(adapter_state_dict(model), os.path.join(tmp, "adapter_model.safetensors"))
    with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
        json.dump(adapter_config(r, alpha, dropout, base_model), f, indent=2)
    publish(tmp, out)
    return sorted(os.listdir(out))


def load_adapter(model: torch.nn.Module, adapter_dir: str, r: int, alpha: float) -> None:
    """Set the model's LoRA weights (apply_lora first) from a PEFT adapter folder, to keep
    training it: same rank and alpha, and every LoRA weight present with its shape."""
    try:
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            cfg = json.load(f)
        tensors = st.load(os.path.join(adapter_dir, "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise ModelError(f"the adapter to continue cannot be read: {e}") from None
    if cfg.get("r") != r or cfg.get("lora_alpha") != alpha:
        raise ModelError(
            f"the adapter has r={cfg.get('r')}, lora_alpha={cfg.get('lora_alpha')}; "
            f"the job asks for r={r}, lora_alpha={alpha}"
        )
    params = {n: p for n, p in model.named_parameters() if ".lora_" in n}
    given = {k[len("base_model.model.") :] if k.startswith("base_model.model.") else k: v for k, v in tensors.items()}
    wrong = sorted(set(params) ^ set(given))
    if wrong:
        raise ModelError(f"the adapter does not fit this model ({len(wrong)} LoRA weights differ, e.g. {wrong[0]})")
    with torch.no_grad():
        for n, p in params.items():
            if p.shape != given[n].shape:
                raise ModelError(f"the adapter's {n} has shape {list(given[n].shape)}, the model's {list(p.shape)}")
            p.copy_(given[n])


def save_full(
    out: str, model: LlamaForCausalLM, model_dir: str, shard_bytes: int = SHARD_BYTES, state_dict: dict | None = None
) -> list[str]:
    """HF folder: model.safetensors (or shards + index) in the base's dtype, plus config/tokenizer.
    `state_dict`: the weights when the module does not hold them whole (FSDP2 shards, gathered)."""
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    dtype = getattr(torch, model.config.torch_dtype, torch.float32)
    sd = {k: v.detach().to("cpu", dtype) for k, v in (state_dict or model.state_dict()).items()}
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # HF omits the tied copy
    _write_shards(tmp, sd, shard_bytes)
    copy_base_files(model_dir, tmp)  # config + tokenizer, so the folder loads on its own
    publish(tmp, out)
    return sorted(os.listdir(out))


def _write_shards(folder: str, sd: dict[str, torch.Tensor], shard_bytes: int) -> None:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(sd):
        n = sd[k].numel() * sd[k].element_size()
        if shards[-1] and size + n > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = sd[k]
        size += n
    if len(shards) == 1:
        st.save(shards[0], os.path.join(folder, "model.safetensors"))
        return
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        st.save(shard, os.path.join(folder, name))
        weight_map.update({k: name for k in shard})
    total = sum(v.numel() * v.element_size() for v in sd.values())
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def copy_base_files(model_dir: str, out: str) -> None:
    for n in sorted(os.listdir(model_dir)):
        src = os.path.join(model_dir, n)
        if n.endswith(COPY_SUFFIXES) and n not in NOT_COPIED and os.path.isfile(src):
            shutil.copyfile(src, os.path.join(out, n))
