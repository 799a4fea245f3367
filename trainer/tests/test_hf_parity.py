"""Parity with Hugging Face, on CUDA when present, else on the CPU (skipped without transformers):

    cd trainer && python3 -m pytest -q tests/test_hf_parity.py

- our logits equal `transformers`' to float32 tolerance for random-init Llama 3 (llama3 rope
  scaling), Qwen2, Qwen3 and Mistral, and a document packed into a row equals it alone;
- PEFT loads our adapter checkpoint and reproduces our LoRA logits (skipped without peft);
- FlexAttention with a document block mask equals the default path (skipped before torch 2.5).

`npm test` runs this file on the CPU in the .venv `npm run setup` makes (PyTorch 2.x,
transformers and peft from trainer/requirements*.txt); a GPU machine runs it on CUDA.
"""

import os
import subprocess
import sys

import pytest
import torch

from helpers import TRAINER_DIR
from opentune_trainer import checkpoint
from opentune_trainer.lora import apply_lora

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

COMMON = dict(
    vocab_size=512,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
)
ARCHS = {
    "llama3": (
        "LlamaConfig",
        dict(
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
    ),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(head_dim=48)),
    "mistral": ("MistralConfig", dict(sliding_window=4096)),
}


def hf_model(tmp_path, arch):
    transformers = pytest.importorskip("transformers")
    cls_name, extra = ARCHS[arch]
    cfg = getattr(transformers, cls_name)(**COMMON, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).float()
    with torch.no_grad():  # non-trivial norms and biases, so a mix-up would show
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(tmp_path))  # safetensors by default
    return model.to(DEVICE).eval()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_logits_match_transformers(tmp_path, arch):
    ref_model = hf_model(tmp_path, arch)
    ours = checkpoint.load_model(str(tmp_path), DEVICE, torch.float32).eval()
    x = torch.randint(0, 512, (2, 200), device=DEVICE)
    with torch.no_grad():
        ref = ref_model(input_ids=x).logits.float()
        out = ours.logits(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        a, b = x[:1, :80], x[1:, :120]  # b packed after a must equal b alone
        pos = torch.cat([torch.arange(80), torch.arange(120)]).to(DEVICE)[None]
        doc = torch.cat([torch.zeros(80), torch.ones(120)]).long().to(DEVICE)[None]
        packed = ours.logits(torch.cat([a, b], 1), pos, doc)
        torch.testing.assert_close(packed[:, 80:], ref_model(input_ids=b).logits.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama3", "qwen2"])
def test_peft_loads_our_adapter(tmp_path, arch):
    peft = pytest.importorskip("peft")
    hf = hf_model(tmp_path / "base", arch)
    ours = checkpoint.load_model(str(tmp_path / "base"), DEVICE, torch.float32)
    apply_lora(ours, r=8, alpha=16, dropout=0.0)
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if n.endswith("lora_B.weight"):
                p.normal_(0.0, 0.05)  # B = 0 at init would make any adapter look right
    files = checkpoint.save_adapter(str(tmp_path / "adapter"), ours, 8, 16, 0.0, str(tmp_path / "base"))
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    loaded = peft.PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    x = torch.randint(0, 512, (2, 64), device=DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval().logits(x), loaded(input_ids=x).logits.float(), rtol=1e-4, atol=1e-4)


def test_flex_attention_keeps_documents_apart(tiny_dir):
    """OPENTUNE_ATTENTION=flex (opt-in) must equal the default path on packed rows."""
    code = f"""
import torch
from opentune_trainer import checkpoint
m = checkpoint.load_model({tiny_dir!r}, {DEVICE!r}, torch.float32).eval()
x = torch.randint(0, 256, (1, 256), device={DEVICE!r})
pos = torch.cat([torch.arange(100), torch.arange(156)]).to({DEVICE!r})[None]
doc = torch.cat([torch.zeros(100), torch.ones(156)]).long().to({DEVICE!r})[None]
with torch.no_grad():
    torch.testing.assert_close(m.logits(x, pos, doc)[:, 100:], m.logits(x[:, 100:]), rtol=1e-4, atol=1e-4)
"""
    pytest.importorskip("torch.nn.attention.flex_attention")
    env = dict(os.environ, OPENTUNE_ATTENTION="flex")
    p = subprocess.run([sys.executable, "-c", code], cwd=TRAINER_DIR, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
