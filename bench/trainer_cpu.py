"""opentune's training step against Hugging Face transformers' on the CPU, same run, same config.

    .venv/bin/python bench/trainer_cpu.py                    # ours and transformers' (the .venv has both)
    .venv/bin/python bench/trainer_cpu.py --impl opentune    # ours only (any torch)

What a GPU-less machine can measure: one full fine-tuning step (float32, AdamW) of a random-init
Llama config, ours vs `LlamaForCausalLM` with SDPA. By default every position but the last is
trained (HF's labels=x); `--loss-fraction 0.3` trains only the last 30% of each row, like a chat
example whose prompt carries no loss (HF still computes every position's logits; we do not).
Each implementation runs in its own process so its peak RSS is its own. Prints one JSON line per
implementation: median step time over --steps after --warmup, tokens/s, peak RSS.
Both get OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise; ACTIVE shows what spinning
OpenMP threads cost (see trainer/opentune_trainer/__init__.py).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = dict(
    vocab_size=32000,
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


def loss_start(seq, fraction):
    """First position whose next token is trained."""
    return min(seq - 2, int(seq * (1 - fraction)))


def opentune_step(batch, seq, fraction):
    sys.path.insert(0, os.path.join(HERE, "..", "trainer"))
    import torch

    from opentune_trainer.checkpoint import build_model
    from opentune_trainer.loss import linear_cross_entropy
    from opentune_trainer.model import ModelConfig

    model = build_model(ModelConfig.from_hf(dict(CONFIG, model_type="llama")), torch.device("cpu"), torch.float32)
    init(model)
    x = torch.randint(0, CONFIG["vocab_size"], (batch, seq))
    s = loss_start(seq, fraction)
    h_idx = torch.arange(batch * seq).view(batch, seq)[:, s:-1].reshape(-1)  # positions with a target
    y = x[:, s + 1 :].reshape(-1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        h = model(x)
        loss, _ = linear_cross_entropy(h.reshape(-1, h.shape[-1]).index_select(0, h_idx), model.lm_head.weight, y)
        (loss / y.numel()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_step(batch, seq, fraction):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(**CONFIG)
    cfg._attn_implementation = "sdpa"
    model = transformers.LlamaForCausalLM(cfg).float()
    init(model)
    x = torch.randint(0, CONFIG["vocab_size"], (batch, seq))
    labels = x.clone()
    labels[:, : loss_start(seq, fraction) + 1] = -100  # HF shifts: labels[i] is the target of i-1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        model(input_ids=x, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def init(model):
    import torch

    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)


def measure(impl, batch, seq, fraction, warmup, steps):
    import torch

    torch.manual_seed(0)
    step = (opentune_step if impl == "opentune" else hf_step)(batch, seq, fraction)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(
        json.dumps(
            dict(
                impl=impl,
                torch=torch.__version__,
                batch=batch,
                seq=seq,
                loss_fraction=fraction,
                threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                step_s=round(med, 3),
                tokens_per_s=round(batch * seq / med),
                peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            )
        ),
        flush=True,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["opentune", "hf"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--loss-fraction", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    if a.impl:
        measure(a.impl, a.batch, a.seq, a.loss_fraction, a.warmup, a.steps)
    else:  # both, one process each, in turn, with the same OpenMP wait policy (ours sets PASSIVE)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        for impl in ("opentune", "hf"):
            args = [
                f"--impl={impl}",
                f"--batch={a.batch}",
                f"--seq={a.seq}",
                f"--loss-fraction={a.loss_fraction}",
                f"--warmup={a.warmup}",
                f"--steps={a.steps}",
            ]
            subprocess.run([sys.executable, __file__, *args], check=True)
