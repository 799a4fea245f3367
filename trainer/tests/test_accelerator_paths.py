"""The paths a GPU takes, checked on the CPU: bf16 autocast over a bf16 frozen base (what CUDA runs
by default) and torch.compile'd blocks against eager. On torch before 2.x (Debian's fallback 1.13)
the compile test skips."""

import copy
import io
import json
from unittest import mock

import pytest
import torch

from helpers import chat_docs, make_spec, write_split
from opentune_trainer import checkpoint, protocol
from opentune_trainer.lora import apply_lora
from opentune_trainer.model import compile_blocks, compile_stats
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer


def trainer_for(tmp_path, tiny_dir, **hp):
    write_split(str(tmp_path / "train"), chat_docs(16, seed=7), packing=True, seq_len=256)
    t = Trainer(load_spec(make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), **hp)))
    t.setup()
    return t


@pytest.mark.parametrize("lora", [True, False])
def test_bf16_training_matches_float32_then_learns(tmp_path, tiny_dir, lora):
    hp = dict(lora=lora, batch_size=4, learning_rate=5e-3 if lora else 1e-3, n_epochs=8)
    fp32 = trainer_for(tmp_path / "fp32", tiny_dir, precision="float32", **hp)
    bf16 = trainer_for(tmp_path / "bf16", tiny_dir, precision="bfloat16", **hp)
    assert fp32.amp is None and bf16.amp is torch.bfloat16
    base = bf16.model.model.layers[0].self_attn.q_proj.weight
    # LoRA keeps the frozen base in bf16 and trains float32 adapters; full keeps float32 masters
    assert base.dtype == (torch.bfloat16 if lora else torch.float32)
    assert all(p.dtype == torch.float32 for p in bf16.params)
    rows = list(range(len(bf16.train_split)))[:4]
    first32, first16 = fp32.train_step(rows)["train_loss"], bf16.train_step(rows)["train_loss"]
    assert first16 == pytest.approx(first32, rel=0.02)  # same model, bf16 rounding only
    losses = [first16]
    while bf16.step < bf16.total_steps:
        epoch, k = divmod(bf16.step, bf16.steps_per_epoch)
        losses.append(bf16.train_step(list(range(len(bf16.train_split)))[k * 4 : (k + 1) * 4])["train_loss"])
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.skipif(not hasattr(torch.nn.Module, "compile"), reason="torch.compile needs torch ≥ 2.2")
def test_compiled_blocks_equal_eager(tiny_dir):
    eager = checkpoint.load_model(tiny_dir, "cpu", torch.float32)
    apply_lora(eager, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for n, p in eager.named_parameters():
            if n.endswith("lora_B.weight"):
                p.normal_(0.0, 0.05)
    compiled = copy.deepcopy(eager)
    assert compile_blocks(compiled)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 96))
    pos = torch.cat([torch.arange(40), torch.arange(56)]).expand(2, 96)
    doc = torch.cat([torch.zeros(40), torch.ones(56)]).long().expand(2, 96)
    outs = []
    for model in (eager, compiled):
        logits = model.logits(x, pos, doc)
        logits.logsumexp(-1).mean().backward()
        outs.append((logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = outs
    torch.testing.assert_close(l1, l0, rtol=1e-4, atol=1e-4)
    assert set(g1) == set(g0) and len(g0) == 2 * 7 * len(eager.model.layers)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-6)


@pytest.mark.skipif(not hasattr(torch.nn.Module, "compile"), reason="torch.compile needs torch ≥ 2.2")
def test_a_compiler_failure_falls_back_to_eager(tiny_dir):
    """Compiling happens at the first step: a missing compiler must not fail the job."""

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C compiler")

    eager = checkpoint.load_model(tiny_dir, "cpu", torch.float32).eval()
    compiled = copy.deepcopy(eager)
    assert compile_blocks(compiled, backend=broken_backend)
    x = torch.randint(0, 256, (1, 32))
    out = io.StringIO()
    with torch.no_grad(), mock.patch.object(protocol, "_out", out):
        torch.testing.assert_close(compiled.logits(x), eager.logits(x))
    said = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(m["level"], m["message"].split(":")[0]) for m in said] == [
        ("warn", "torch.compile failed, training continues without it (slower)")
    ]  # once, not once per block


@pytest.mark.skipif(not hasattr(torch.nn.Module, "compile"), reason="torch.compile needs torch ≥ 2.2")
def test_one_graph_per_shape_family_whatever_the_length(tiny_dir):
    """Micro-batches of every length share one graph per block half (the sequence dimension is
    dynamic; every layer reuses it); packed documents do not enter the graph."""
    model = checkpoint.load_model(tiny_dir, "cpu", torch.float32)
    assert compile_blocks(model, backend="eager")  # dynamo's graphs without Inductor's codegen: fast
    graphs = []
    for n, docs in ((40, [25, 15]), (72, [30, 42]), (117, [17, 50, 50])):
        model(torch.randint(0, 256, (1, n)), doc=docs).sum().backward()
        graphs.append(compile_stats()["graphs"])
    assert graphs[0] == graphs[1] == graphs[2]  # compiled at the first length, no recompile after


def test_qwen3_full_fine_tune_under_bf16_gives_attention_one_dtype(monkeypatch):
    """float32 q/k norm weights promoted bf16 q and k to float32 while v stayed bf16:
    FlexAttention rejects mixed dtypes, SDPA only hid it through autocast."""
    from opentune_trainer import attention
    from opentune_trainer.checkpoint import build_model
    from opentune_trainer.model import ModelConfig

    cfg = ModelConfig.from_hf(
        dict(
            model_type="qwen3",
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )
    )
    model = build_model(cfg, torch.device("cpu"), torch.float32)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.02)
    seen, real = [], attention.attend
    monkeypatch.setattr(
        attention, "attend", lambda q, k, v, *a: seen.append((q.dtype, k.dtype, v.dtype)) or real(q, k, v, *a)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(0, 64, (1, 8)))
    assert seen == [(torch.bfloat16,) * 3]
