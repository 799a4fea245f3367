"""Model, LoRA, loss and metric properties on the tiny model (CPU, float32)."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import chat_docs, make_spec, write_split
from opentune_trainer import checkpoint, data, tiny
from opentune_trainer.lora import apply_lora
from opentune_trainer.model import LlamaForCausalLM, ModelConfig, init_weights
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer


def trainer_for(tmp_path, tiny_dir, docs, packing=False, **hp):
    write_split(str(tmp_path / "train"), docs, packing=packing)
    spec = make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), **hp)
    t = Trainer(load_spec(spec))
    t.setup()
    return t


def test_random_model_loss_is_ln_vocab(tiny_dir):
    model = checkpoint.load_model(tiny_dir)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (4, 64), generator=g)
    with torch.no_grad():
        loss = F.cross_entropy(model.logits(x)[:, :-1].reshape(-1, tiny.VOCAB_SIZE), x[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(tiny.VOCAB_SIZE)) < 0.1  # + σ²/2 of the small random logits


def test_lora_at_init_leaves_logits_unchanged(tiny_dir):
    model = checkpoint.load_model(tiny_dir)
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model.logits(x)
        n = apply_lora(model, r=8, alpha=16, dropout=0.0)
        after = model.logits(x)
    assert torch.equal(before, after)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert all(".lora_" in name for name, p in model.named_parameters() if p.requires_grad)


def test_metrics_equal_hand_computation(tmp_path, tiny_dir):
    docs = chat_docs(6, seed=3)
    t = trainer_for(tmp_path, tiny_dir, docs, packing=True, learning_rate=0.0, batch_size=6, lora=False)
    assert len(t.train_split) == 1  # all six documents packed into one row
    m = t.train_step([0])
    ce, hits, n = 0.0, 0, 0
    with torch.no_grad():  # each document alone, as its own sequence
        for tokens, targets in docs:
            logits = t.model.logits(torch.tensor([tokens]))[0]
            y = torch.tensor(targets)
            keep = y != -100
            ce += F.cross_entropy(logits[keep], y[keep], reduction="sum").item()
            hits += (logits[keep].argmax(-1) == y[keep]).sum().item()
            n += keep.sum().item()
    assert m["loss_tokens"] == n
    assert m["train_loss"] == pytest.approx(ce / n, rel=1e-5)
    assert m["train_mean_token_accuracy"] == pytest.approx(hits / n, abs=1e-9)
    assert m["tokens"] == sum(len(d[0]) for d in docs)


def test_packed_equals_unpacked(tmp_path, tiny_dir):
    docs = chat_docs(10, seed=4)
    sums = []
    for packing in (False, True):
        t = trainer_for(tmp_path / str(packing), tiny_dir, docs, packing=packing)
        with torch.no_grad():
            ls, c = t.forward_stats(t.train_split, list(range(len(t.train_split))))
        sums.append((ls.item(), c.item(), len(t.train_split)))
    (l0, c0, rows0), (l1, c1, rows1) = sums
    assert rows0 == 10 and rows1 == 1
    assert l1 == pytest.approx(l0, rel=1e-5) and c1 == c0


def test_micro_batches_do_not_change_gradients_or_metrics(tmp_path, tiny_dir):
    docs = chat_docs(8, seed=5) + [(t[:20], y[:19] + [-100]) for t, y in chat_docs(4, seed=6)]
    results = []
    for micro in (8, 2):
        t = trainer_for(tmp_path / str(micro), tiny_dir, docs[:8] + docs[8:], lora=False, micro_batch_size=micro)
        rows = list(range(8, 12)) + list(range(4))  # uneven lengths: padding differs per split
        loss, correct, n = t.accumulate(rows)
        grads = {k: p.grad.clone() for k, p in t.model.named_parameters() if p.grad is not None}
        results.append((loss / n, correct / n, grads))
    (l8, a8, g8), (l2, a2, g2) = results
    assert l2 == pytest.approx(l8, rel=1e-6) and a2 == a8
    assert set(g8) == set(g2) and len(g8) > 10
    for k in g8:
        torch.testing.assert_close(g2[k], g8[k], rtol=1e-4, atol=1e-7)


def test_loss_falls_on_memorisation_set(tmp_path, tiny_dir):
    """LoRA on a random-init base learns slowly; lr 5e-3, r 8, alpha 16 shows it in 24 steps."""
    t = trainer_for(tmp_path, tiny_dir, chat_docs(16, seed=7), batch_size=8, learning_rate=5e-3, n_epochs=12)
    losses = []
    while t.step < t.total_steps:
        e, k = divmod(t.step, t.steps_per_epoch)
        order = data.epoch_order(len(t.train_split), 0, e)
        losses.append(t.train_step(order[k * 8 : (k + 1) * 8])["train_loss"])
    assert losses[0] == pytest.approx(math.log(tiny.VOCAB_SIZE), abs=0.2)
    assert sum(losses[-4:]) / 4 < losses[0] - 1.0


@pytest.mark.parametrize("arch", ["llama3", "qwen2", "qwen3", "mistral"])
def test_architectures_load_and_pack(tmp_path, arch):
    """Each family builds from an HF config, round-trips through sharded safetensors, and keeps
    packed documents apart (a document's logits do not depend on its row neighbours)."""
    cfg = dict(tiny.CONFIG, num_hidden_layers=2)
    cfg.update(
        {
            "llama3": {
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 64,
                },
                "rope_theta": 500000.0,
                "tie_word_embeddings": False,
            },
            "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
            "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 48},
            "mistral": {
                "model_type": "mistral",
                "architectures": ["MistralForCausalLM"],
                "sliding_window": 16,
                "tie_word_embeddings": False,
            },
        }[arch]
    )
    src = tmp_path / "src"
    os.makedirs(src)
    (src / "config.json").write_text(json.dumps(cfg))
    model = LlamaForCausalLM(ModelConfig.from_hf(cfg))
    init_weights(model, seed=1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(".bias") or n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn(p.shape))  # make biases/norms matter
    checkpoint.save_full(str(tmp_path / "out"), model, str(src), shard_bytes=200_000)
    assert os.path.exists(tmp_path / "out" / "model.safetensors.index.json")
    back = checkpoint.load_model(str(tmp_path / "out"))
    a, b = torch.randint(0, 256, (1, 24)), torch.randint(0, 256, (1, 30))
    with torch.no_grad():
        alone = back.logits(b)
        assert torch.equal(model.logits(b), alone)
        packed = back.logits(
            torch.cat([a, b], 1),
            torch.cat([torch.arange(24), torch.arange(30)])[None],
            torch.cat([torch.zeros(24), torch.ones(30)]).long()[None],
        )
    torch.testing.assert_close(packed[:, 24:], alone, rtol=1e-4, atol=1e-5)
    if arch == "qwen2":
        assert back.model.layers[0].self_attn.q_proj.bias is not None
    if arch == "qwen3":
        assert back.model.layers[0].self_attn.q_norm.weight.shape == (48,)


def test_model_too_large_is_refused_before_loading(tiny_dir):
    cpu = torch.device("cpu")
    n = checkpoint.param_count(checkpoint.weight_files(tiny_dir))
    assert n == sum(p.numel() for p in checkpoint.load_model(tiny_dir).parameters())
    assert checkpoint.check_fits(n, lora=True, store=torch.float32, device=cpu) is None
    why = checkpoint.check_fits(10**15, lora=False, store=torch.float32, device=cpu)  # a 1e15-parameter model
    assert why is not None and "GiB" in why


def test_free_cuda_memory_asks_with_a_device_index(monkeypatch):
    """torch 1.13's mem_get_info raises on torch.device("cuda") (no index)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: asked.append(i) or (123, 456))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert checkpoint._free_cuda_memory(torch.device("cuda")) == 123
    assert checkpoint._free_cuda_memory(torch.device("cuda:1")) == 123
    assert asked == [0, 1]


def test_warmup_steps_are_not_rounded_up_by_float_error(tmp_path, tiny_dir):
    """0.07 × 100 = 7.000000000000001 in floating point: ceil gave 8 warmup steps, not 7."""
    t = trainer_for(tmp_path, tiny_dir, chat_docs(100, seed=9), batch_size=1, n_epochs=1, warmup_ratio=0.07)
    assert (t.total_steps, t.warmup) == (100, 7)
