"""Automatic micro-batching: micro-batches come from a token budget (batching.py); an out-of-memory
error halves the budget down to one row and retries the step (then checkpoints every 4th, every 2nd,
every block, then gives up with out_of_memory). The step's result must not change. CPU memory
cannot be made to run out on purpose, so the error is injected."""

import io
import json

import pytest

from helpers import chat_docs, make_spec, write_split
from opentune_trainer import protocol
from opentune_trainer.protocol import JobError
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer


def trainer_for(tmp_path, tiny_dir):
    write_split(str(tmp_path / "train"), chat_docs(8, seed=3), seq_len=64)  # budget floor: one 64-token row
    t = Trainer(load_spec(make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), batch_size=8, lora=False)))
    t.setup()
    return t


def fail_while(t, too_big):
    """Make forward_stats raise CUDA's OOM message while `too_big(tokens, checkpoint_every)` holds."""
    real = t.forward_stats

    def forward_stats(split, rows):
        if too_big(sum(split.row_len[r] for r in rows), t.model.checkpoint_every):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(split, rows)

    t.forward_stats = forward_stats


def test_oom_halves_the_token_budget_and_the_step_is_unchanged(tmp_path, tiny_dir, monkeypatch):
    rows = list(range(8))
    plain = trainer_for(tmp_path / "plain", tiny_dir).train_step(rows)
    t = trainer_for(tmp_path / "oom", tiny_dir)
    assert t.micro == 8 * 64 and t.model.checkpoint_every == 0  # the whole step fits in CPU memory
    monkeypatch.setattr(protocol, "_out", io.StringIO())  # the protocol lines the runner would read
    fail_while(t, lambda tokens, ckpt: tokens > 128)
    m = t.train_step(rows)
    assert t.micro == 128 and t.model.checkpoint_every == 0
    assert m["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    assert m["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)
    warnings = [json.loads(line)["message"] for line in protocol._out.getvalue().splitlines()]
    assert warnings == [f"out of memory: micro-batches now of at most {n} tokens" for n in (256, 128)]


def test_oom_at_one_row_checkpoints_more_blocks_then_gives_up(tmp_path, tiny_dir, monkeypatch):
    t = trainer_for(tmp_path, tiny_dir)
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    fail_while(t, lambda tokens, ckpt: ckpt != 1)
    t.train_step(list(range(8)))  # fits once every block is checkpointed
    assert t.micro == 64 and t.model.checkpointing
    warnings = [json.loads(line)["message"] for line in protocol._out.getvalue().splitlines()]
    assert warnings[-3:] == [
        f"out of memory at one row per micro-batch: activation checkpointing of {what}"
        for what in ("every 4th block", "every 2nd block", "every block")
    ]
    fail_while(t, lambda tokens, ckpt: True)
    with pytest.raises(JobError) as e:
        t.train_step(list(range(8)))
    assert e.value.code == "out_of_memory"


def test_other_errors_are_not_retried(tmp_path, tiny_dir):
    t = trainer_for(tmp_path, tiny_dir)

    def broken(split, rows):
        raise RuntimeError("shape mismatch")

    t.forward_stats = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        t.train_step(list(range(8)))
    assert t.micro == 8 * 64


def test_oom_during_validation_shrinks_and_gives_the_same_metrics(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    t = trainer_for(tmp_path, tiny_dir)
    t.valid_split = t.train_split
    rows = list(range(8))
    plain = t.evaluate(rows)
    fail_while(t, lambda tokens, ckpt: tokens > 64)
    assert t.evaluate(rows) == pytest.approx(plain, rel=1e-6)
    assert t.micro == 64
