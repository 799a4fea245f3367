"""Padding-free attention for packed rows and micro-batches by a token budget (issue 13), on the CPU:

- every attention path the CPU has (causal SDPA per document, banded for a sliding window;
  FlexAttention's block mask, forward only: flex has no CPU backward) equals each document alone,
  outputs and gradients, with and without a sliding window, with grouped-query heads;
- the tiny model on a packed row equals each document alone (Mistral's window included);
- a 64k-token packed row trains (forward + backward) in less memory than one [T, T] mask takes;
- the token-budget planner never exceeds its budget, keeps data order, and any budget gives the
  same gradients as one big batch.
"""

import io
import json
import os
import random
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import TRAINER_DIR, chat_docs, make_spec, write_split
from opentune_trainer import attention, batching, protocol
from opentune_trainer.checkpoint import build_model
from opentune_trainer.model import ModelConfig, init_weights
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer

LENGTHS = [37, 64, 5, 90, 1, 23]  # uneven documents, one of a single token


def alone(q, k, v, lengths, window):
    """Reference: each document by itself, dense math attention with an explicit mask."""
    out, s = [], 0
    for n in lengths:
        i = torch.arange(n)
        keep = (i[:, None] >= i[None, :]) & ((i[:, None] - i[None, :] < window) if window else True)
        n_rep = q.shape[1] // k.shape[1]
        kk, vv = (attention.repeat_kv(t[:, :, s : s + n], n_rep) for t in (k, v))
        att = (q[:, :, s : s + n] @ kk.transpose(-2, -1)) * q.shape[-1] ** -0.5
        out.append(torch.softmax(att.masked_fill(~keep, float("-inf")), -1) @ vv)
        s += n
    return torch.cat(out, dim=2)


def qkv(requires_grad=True):
    g = torch.Generator().manual_seed(0)
    N = sum(LENGTHS)
    q = torch.randn(1, 4, N, 16, generator=g, dtype=torch.float64, requires_grad=requires_grad)
    k, v = (torch.randn(1, 2, N, 16, generator=g, dtype=torch.float64, requires_grad=requires_grad) for _ in "kv")
    return q, k, v


@pytest.mark.parametrize("window", [None, 200, 16, 7])  # 200: longer than every document
def test_sdpa_per_document_equals_each_document_alone(window, monkeypatch):
    monkeypatch.setattr(attention, "BAND_CHUNK", 10)  # several band chunks, a partial last one
    attention._band.cache_clear()
    docs = attention.pack_layout(LENGTHS, window, torch.device("cpu"), torch.float64)
    assert docs.kernel == "sdpa"
    results = []
    for fn in (lambda q, k, v: attention.attend(q, k, v, docs), lambda q, k, v: alone(q, k, v, LENGTHS, window)):
        q, k, v = qkv()
        y = fn(q, k, v)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        results.append((y.detach(), q.grad, k.grad, v.grad))
    for ours, ref in zip(*results, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    attention._band.cache_clear()


@pytest.mark.skipif(attention.flex_attention is None, reason="FlexAttention needs torch ≥ 2.5")
@pytest.mark.parametrize("window", [None, 16])
def test_flex_block_mask_equals_each_document_alone(window):
    q, k, v = (t.float() for t in qkv(requires_grad=False))
    mask = attention._block_mask(LENGTHS, window, torch.device("cpu"))
    y = attention.flex_attention(q, k, v, block_mask=mask, enable_gqa=True)  # eager: CPU has no compiled backward
    torch.testing.assert_close(y, alone(q, k, v, LENGTHS, window), rtol=1e-5, atol=1e-5)


def small_model(model_type="llama", window=None):
    cfg = dict(
        model_type=model_type,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        sliding_window=window,
    )
    model = build_model(ModelConfig.from_hf(cfg), torch.device("cpu"), torch.float64)
    init_weights(model, seed=1, std=0.2)
    return model


@pytest.mark.parametrize("model_type,window", [("llama", None), ("mistral", 16)])
def test_model_on_a_packed_row_equals_each_document_alone(model_type, window):
    """Logits and weight gradients; the Mistral window is shorter than three of the documents."""
    g = torch.Generator().manual_seed(2)
    toks = [torch.randint(0, 64, (1, n), generator=g) for n in LENGTHS]
    grads = []
    for packed in (True, False):
        model = small_model(model_type, window)
        if packed:
            pos = torch.cat([torch.arange(n) for n in LENGTHS])[None]
            logits = model.logits(torch.cat(toks, 1), pos, list(LENGTHS))
        else:
            logits = torch.cat([model.logits(t) for t in toks], 1)
        (logits * torch.linspace(-1, 1, logits.shape[-1], dtype=logits.dtype)).sum().backward()
        grads.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = grads
    torch.testing.assert_close(l0, l1, rtol=1e-9, atol=1e-9)
    for n in g0:
        torch.testing.assert_close(g0[n], g1[n], rtol=1e-8, atol=1e-9)


LONG_ROW = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
from opentune_trainer import tiny
from opentune_trainer.checkpoint import build_model
from opentune_trainer.loss import linear_cross_entropy
from opentune_trainer.model import ModelConfig, init_weights
torch.set_num_threads(1)  # two threads on a loaded 2-core machine wait on each other
T, n = 65536, 256  # 256 documents of 256 tokens end to end
small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
cfg = ModelConfig.from_hf({**tiny.CONFIG, **small, "max_position_embeddings": T})
model = build_model(cfg, torch.device("cpu"), torch.float32)
init_weights(model, seed=0)
g = torch.Generator().manual_seed(0)
tokens = torch.randint(0, 256, (1, T), generator=g)
keep = (torch.arange(T) + 1) % n != 0  # pre-shifted targets: a document's last position has none
h = model(tokens, torch.arange(n).repeat(T // n)[None], [n] * (T // n))[0]
loss, _ = linear_cross_entropy(h[keep], model.lm_head.weight, tokens[0].roll(-1)[keep])
(loss / T).backward()
grad = sum(float(p.grad.norm()) for p in model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"loss": float(loss) / T, "grad": grad, "peak_kib": peak}))
"""


def test_a_64k_token_packed_row_trains_in_less_memory_than_one_dense_mask():
    """The former path built three [T, T] masks (4 GiB each as bool at T = 65536) and SDPA a float
    bias of 16 GiB; the whole process must peak below 2 GiB, half of one bool mask. The model is a
    long-context copy of the tiny model narrowed to one 32-wide block, so that the forward and
    backward of 65536 tokens take seconds on two CPU cores: attention's memory does not depend on it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", LONG_ROW, TRAINER_DIR], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < r["loss"] < 10 and 0 < r["grad"] < float("inf")  # trained: a finite loss and gradients
    assert r["peak_kib"] * 1024 < 65536 * 65536 / 2


def test_the_planner_never_exceeds_its_budget_and_keeps_data_order():
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.randint(1, 600) for _ in range(rng.randint(1, 40))]
        budget = rng.randint(1, 2000)
        for padded in (False, True):
            plan = batching.plan_micro_batches(lengths, budget, padded=padded)
            assert [i for mb in plan for i in mb] == list(range(len(lengths)))  # data order, every row once
            for mb in plan:
                ls = [lengths[i] for i in mb]
                cost = max(ls) * len(ls) if padded else sum(ls)
                assert cost <= budget or len(mb) == 1  # a row longer than the budget goes alone
            # greedy: a micro-batch could not have taken the next row
            for a, b in zip(plan, plan[1:], strict=False):
                ls = [lengths[i] for i in a + b[:1]]
                assert (max(ls) * len(ls) if padded else sum(ls)) > budget


def test_the_memory_plan_checkpoints_only_what_memory_needs():
    cfg = ModelConfig.from_hf(  # Llama 3.1 8B's shape
        dict(
            model_type="llama",
            vocab_size=128256,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
        )
    )
    est = [batching.estimate_token_budget(cfg, 2, True, k, 60 * batching.GIB, 42_000_000) for k in (0, 4, 2, 1)]
    assert est == sorted(est) and est[0] > 0  # more checkpointing, more tokens
    roomy = batching.memory_plan(cfg, 2, True, 130 * batching.GIB, 42_000_000, 8192, 8 * 8192)
    tight = batching.memory_plan(cfg, 2, True, 30 * batching.GIB, 42_000_000, 8192, 8 * 8192)
    assert roomy.checkpoint_every == 0 and roomy.token_budget >= batching.SATURATING_TOKENS
    assert tight.checkpoint_every > 0 and tight.fits and tight.token_budget >= 8192
    assert batching.memory_plan(cfg, 2, True, 4 * batching.GIB, 42_000_000, 8192, 65536).fits is False


def test_any_token_budget_gives_the_gradients_of_one_big_batch(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    write_split(str(tmp_path / "train"), chat_docs(24, seed=11), packing=True, seq_len=160)
    t = Trainer(load_spec(make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), batch_size=8, lora=False)))
    t.setup()
    rows = list(range(len(t.train_split)))
    results = []
    for budget in (10**9, 200, 1):  # one micro-batch; a few; one row each
        t.micro = budget
        assert len(t.train_split.docs[rows[0]]) > 1  # packed rows
        loss, correct, n = t.accumulate(rows)
        results.append(
            (loss / n, correct, {k: p.grad.clone() for k, p in t.model.named_parameters() if p.grad is not None})
        )
        t.opt.zero_grad(set_to_none=True)
    l0, c0, g0 = results[0]
    for loss, correct, grads in results[1:]:
        assert loss == pytest.approx(l0, rel=1e-6) and correct == c0
        for k in g0:
            torch.testing.assert_close(grads[k], g0[k], rtol=1e-4, atol=1e-7)
    t.total_steps = 0  # no steps: only the lines a job prints first
    t.train()
    first = [json.loads(line) for line in protocol._out.getvalue().splitlines()][:2]
    assert first[0]["type"] == "started" and first[1]["type"] == "log"  # the job's events say how it runs
    assert first[1]["message"].startswith(
        "precision float32; attention for packed rows: sdpa, causal SDPA per document"
    )


def test_sdpa_is_asked_for_grouped_query_attention_only_where_its_kernel_takes_it(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda q, k, v, **kw: seen.append((k.shape[1], kw)) or real(q, k, v, **kw)
    )
    q, k, v = (t.float() for t in qkv(requires_grad=False))
    monkeypatch.setattr(attention, "_gqa_in_kernel", lambda *a: False)  # e.g. CUDA's efficient kernel with a mask
    attention.causal_attend(q, k, v)
    monkeypatch.setattr(attention, "_gqa_in_kernel", lambda *a: True)
    attention.causal_attend(q, k, v)
    assert [(kv, kw.get("enable_gqa", False)) for kv, kw in seen] == [(4, False), (2, True)]


@pytest.mark.parametrize(
    "capability,precision,want,kernel",
    [
        ((9, 0), "auto", torch.bfloat16, "varlen"),  # Hopper: native bf16, FlashAttention varlen
        ((8, 0), "bfloat16", torch.bfloat16, "varlen"),
        ((7, 5), "auto", None, "flex"),  # Turing: bf16 only emulated, so float32; flash needs sm80
        ((7, 5), "bfloat16", None, "flex"),  # asked for, refused with a warn line
        ((9, 0), "float32", None, "flex"),
    ],
)
def test_the_precision_and_kernel_follow_the_gpu(monkeypatch, capability, precision, want, kernel):
    """Checked without a GPU: CUDA's capability query answers as that GPU would."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    t = Trainer.__new__(Trainer)
    t.device = torch.device("cuda", 0)
    assert t._compute_dtype(precision) is want
    warned = [json.loads(line)["level"] for line in protocol._out.getvalue().splitlines()]
    assert warned == (["warn"] if precision == "bfloat16" and want is None else [])
    if kernel == "varlen" and attention.varlen_attn is None:
        kernel = "flex"  # torch < 2.10 has no varlen
    if attention.flex_attention is None:
        kernel = "sdpa"
    assert attention.packed_kernel(t.device, want or torch.float32) == kernel
