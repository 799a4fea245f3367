"""Automatic micro-batching: an out-of-memory error halves the micro-batch and retries the step
(then turns on activation checkpointing, then gives up with out_of_memory). The step's result must
not change. CPU memory cannot be made to run out on purpose, so the error is injected."""

import io
import json

import pytest

from helpers import chat_docs, make_spec, write_split
from opentune_trainer import protocol
from opentune_trainer.protocol import JobError
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer


def trainer_for(tmp_path, tiny_dir):
    write_split(str(tmp_path / "train"), chat_docs(8, seed=3))
    t = Trainer(load_spec(make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), batch_size=8, lora=False)))
    t.setup()
    return t


def fail_while(t, too_big):
    """Make forward_stats raise CUDA's OOM message while `too_big(rows, checkpointing)` holds."""
    real = t.forward_stats

    def forward_stats(split, rows):
        if too_big(len(rows), t.model.checkpointing):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(split, rows)

    t.forward_stats = forward_stats


def test_oom_halves_the_micro_batch_and_the_step_is_unchanged(tmp_path, tiny_dir, monkeypatch):
    rows = list(range(8))
    plain = trainer_for(tmp_path / "plain", tiny_dir).train_step(rows)
    t = trainer_for(tmp_path / "oom", tiny_dir)
    monkeypatch.setattr(protocol, "_out", io.StringIO())  # the protocol lines the runner would read
    fail_while(t, lambda n, ckpt: n > 2)
    m = t.train_step(rows)
    assert t.micro == 2 and not t.model.checkpointing
    assert m["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    assert m["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)
    warnings = [json.loads(line)["message"] for line in protocol._out.getvalue().splitlines()]
    assert warnings == ["out of memory: micro-batch now 4 rows", "out of memory: micro-batch now 2 rows"]


def test_oom_at_one_row_turns_on_checkpointing_then_gives_up(tmp_path, tiny_dir):
    t = trainer_for(tmp_path, tiny_dir)
    fail_while(t, lambda n, ckpt: not ckpt)
    t.train_step(list(range(8)))  # fits once checkpointing is on
    assert t.micro == 1 and t.model.checkpointing
    fail_while(t, lambda n, ckpt: True)
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
    assert t.micro == 8


def test_oom_during_validation_shrinks_and_gives_the_same_metrics(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    t = trainer_for(tmp_path, tiny_dir)
    t.valid_split = t.train_split
    rows = list(range(8))
    plain = t.evaluate(rows)
    fail_while(t, lambda n, ckpt: n > 1)
    assert t.evaluate(rows) == pytest.approx(plain, rel=1e-6)
    assert t.micro == 1
