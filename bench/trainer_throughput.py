"""opentune trainer throughput on one GPU, side by side with bench/hf_peft_baseline.py.

    python3 bench/trainer_throughput.py                      # all configs, one JSON line each
    OPENTUNE_COMPILE=0 python3 bench/trainer_throughput.py   # without torch.compile
    python3 bench/trainer_throughput.py --smoke              # a tiny config on the CPU: does it run?
    python3 bench/trainer_throughput.py --packed             # rows of packed documents (document masks)
    OPENTUNE_ATTENTION=flex python3 bench/trainer_throughput.py --packed   # the same with FlexAttention
    python3 bench/hf_peft_baseline.py                # the baseline, same GPU

Same workload as the baseline: random-init Llama configs, LoRA r=16 alpha=32 on all seven linear
projections, bf16, seq 2048, every position but the last trained (HF's labels=x), AdamW fused.
It times the trainer's own step path: frozen bf16 base + float32 adapters under autocast,
per-block torch.compile, SDPA causal (flash) attention, chunked linear+CE that never builds the
[tokens × 128k] logits, and no activation checkpointing unless the config asks for it.
Same JSON fields as the baseline (mfu_6N uses the baseline's 6N + attention formula).
"""

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer"))
from opentune_trainer import attention  # noqa: E402
from opentune_trainer.checkpoint import build_model  # noqa: E402
from opentune_trainer.lora import apply_lora  # noqa: E402
from opentune_trainer.loss import linear_cross_entropy  # noqa: E402
from opentune_trainer.model import ModelConfig, compile_blocks  # noqa: E402

CONFIGS = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "smoke": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
    ),
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
COMPILE = os.environ.get("OPENTUNE_COMPILE", "1") != "0" and hasattr(torch.nn.Module, "compile")


def make_model(name, seq):
    cfg = ModelConfig.from_hf(
        dict(
            CONFIGS[name],
            model_type="llama",
            max_position_embeddings=seq,
            rope_theta=500000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=(name == "llama-1b"),
        )
    )
    torch.manual_seed(0)
    model = build_model(cfg, torch.device(DEVICE), torch.bfloat16)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return model, cfg


def packed_rows(batch, seq, mean_doc, device):
    """(pos, doc) for rows of documents of random lengths around `mean_doc`, as packing makes them."""
    g = torch.Generator().manual_seed(0)
    pos, doc = torch.empty(batch, seq, dtype=torch.long), torch.empty(batch, seq, dtype=torch.long)
    for b in range(batch):
        t, d = 0, 0
        while t < seq:
            n = min(seq - t, int(torch.randint(mean_doc // 4, mean_doc * 7 // 4, (1,), generator=g)))
            pos[b, t : t + n], doc[b, t : t + n] = torch.arange(n), d
            t, d = t + n, d + 1
    return pos.to(device), doc.to(device)


def run(name, batch, seq, steps, ckpt, peak_tflops, packed=False):
    model, cfg = make_model(name, seq)
    n_params = sum(p.numel() for p in model.parameters())
    apply_lora(model, r=16, alpha=32, dropout=0.0)
    model.checkpointing = ckpt
    model.train()
    if COMPILE:
        compile_blocks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq), device=DEVICE)
    y = torch.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    idx = (y.view(-1) != -100).nonzero().view(-1)
    n_loss = idx.numel()
    pos, doc = packed_rows(batch, seq, min(512, seq // 4), DEVICE) if packed else (None, None)

    def step():
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            h = model(x, pos, doc)
            h = h.reshape(-1, h.shape[-1]).index_select(0, idx)
            loss, _ = linear_cross_entropy(h, model.lm_head.weight, y.view(-1).index_select(0, idx))
        (loss / n_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(3):  # warm-up (and compilation)
        step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    sync()
    dt = (time.perf_counter() - t) / steps
    tok_s = batch * seq / dt
    L, H, Q = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
    attn = 12 * L * H * Q * seq  # fwd+bwd attention flops per token (PaLM convention, as the baseline)
    mfu6 = tok_s * (6 * n_params + attn) / (peak_tflops * 1e12)
    print(
        json.dumps(
            dict(
                impl="opentune",
                model=name,
                params=n_params,
                batch=batch,
                seq=seq,
                grad_ckpt=ckpt,
                step_s=round(dt, 4),
                tokens_per_s=round(tok_s),
                mfu_6N=round(mfu6, 4),
                max_mem_gib=round(max_memory() / 2**30, 1),
                compile=COMPILE,
                attention=attention.BACKEND,
                packed=packed,
            )
        ),
        flush=True,
    )


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def max_memory() -> int:
    return torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0


def safe_run(*args):
    try:
        run(*args)
    except torch.cuda.OutOfMemoryError as e:
        print(
            json.dumps(
                dict(
                    impl="opentune",
                    model=args[0],
                    batch=args[1],
                    seq=args[2],
                    grad_ckpt=args[4],
                    error="out_of_memory",
                    detail=str(e).splitlines()[0],
                )
            ),
            flush=True,
        )
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    peak = 989.0  # H100 SXM dense bf16 TFLOP/s
    packed = "--packed" in sys.argv  # documents of ~512 tokens packed into each row
    if "--smoke" in sys.argv:
        safe_run("smoke", 2, 128, 2, False, peak, packed)
        safe_run("smoke", 2, 128, 2, True, peak, packed)
        sys.exit(0)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    if packed:  # the attention path is what differs: one config is enough
        safe_run("llama-1b", 8, 2048, 10, False, peak, True)
        safe_run("llama-1b", 2, 8192, 10, False, peak, True)
        sys.exit(0)
    safe_run("llama-1b", 8, 2048, 10, False, peak)
    safe_run("llama-1b", 8, 2048, 10, True, peak)
    safe_run("llama-8b", 4, 2048, 6, True, peak)
    safe_run("llama-8b", 4, 2048, 6, False, peak)  # ours without checkpointing, if it fits
