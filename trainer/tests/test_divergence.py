"""A learning rate that blows training up fails the job (invalid_hyperparameters, learning_rate,
exit 2) before the bad update is applied and before any checkpoint or state holds it.

Before: learning_rate 1e308 (valid per the API) trained on with NaN losses, wrote checkpoints whose
train_loss was null, and died with internal_error "RuntimeError: value cannot be converted to type
float without overflow" (AdamW's step size, a finite double beyond float32, in addcdiv_)."""

import io
import math
import os

import pytest
import torch

from helpers import chat_docs, make_spec, run_cli, write_split
from opentune_trainer import protocol
from opentune_trainer.protocol import JobError
from opentune_trainer.spec import load_spec
from opentune_trainer.train import Trainer, lr_at


def run_diverging(tmp_path, tiny_dir, train, valid=None, **hp):
    spec = make_spec(str(tmp_path), tiny_dir, train, valid, n_epochs=2, **hp)
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 2, err
    error = lines[-1]
    assert error["type"] == "error", lines
    assert (error["code"], error["param"]) == ("invalid_hyperparameters", "learning_rate")
    assert "training diverged at step" in error["message"] and "lower learning_rate" in error["message"]
    assert "Traceback" not in err
    types = [m["type"] for m in lines]
    assert "checkpoint" not in types and "state_saved" not in types and "finished" not in types
    out = os.path.join(str(tmp_path), "out")
    assert not os.path.exists(os.path.join(out, "checkpoints")) and not os.path.exists(os.path.join(out, "state"))
    metrics = [m for m in lines if m["type"] == "metrics"]
    assert all(m["train_loss"] is not None and math.isfinite(m["train_loss"]) for m in metrics)
    return error["message"], metrics


@pytest.mark.parametrize("lora", [True, False])
def test_learning_rate_1e308_fails_at_step_1(tmp_path, tiny_dir, splits, lora):
    message, metrics = run_diverging(tmp_path, tiny_dir, splits[0], learning_rate=1e308, lora=lora)
    assert metrics == [] and message.startswith("training diverged at step 1: a learning rate of 1e+308")


@pytest.mark.parametrize("lora", [True, False])
def test_learning_rate_1e30_fails_when_the_next_loss_is_not_finite(tmp_path, tiny_dir, splits, lora):
    # step 1 is finite and applied (weights ~1e31); step 2's loss or gradient overflows: 4 steps an
    # epoch, so no checkpoint came before
    message, metrics = run_diverging(tmp_path, tiny_dir, splits[0], learning_rate=1e30, lora=lora)
    assert [m["step"] for m in metrics] == [1]
    assert message.startswith("training diverged at step 2: the ")


@pytest.mark.parametrize("valid", [False, True])
def test_blown_up_weights_write_no_checkpoint_at_the_epoch_end(tmp_path, tiny_dir, splits, valid):
    # one step an epoch: the update of step 1 is finite, the model it leaves is not; the checkpoint
    # of epoch 1 would be advertised as a fine-tuned model
    message, metrics = run_diverging(
        tmp_path, tiny_dir, splits[0], splits[1] if valid else None, learning_rate=1e30, batch_size=16
    )
    assert [m["step"] for m in metrics] == [1]
    assert message.startswith("training diverged at step 1: the " + ("validation loss" if valid else "loss after"))


def test_schedule_of_a_huge_learning_rate_does_not_overflow():
    assert lr_at(1, 8, 0, 1e308) == 1e308  # was peak·8/8 = inf, reported as null
    assert lr_at(8, 8, 0, 1e308) == 1e308 / 8
    assert lr_at(2, 8, 4, 1e308) == 1e308 / 2
    assert lr_at(7, 10, 3, 5e-3) == pytest.approx(5e-3 * 4 / 7)


def test_a_non_finite_step_leaves_weights_and_optimizer_untouched(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(protocol, "_out", io.StringIO())
    write_split(str(tmp_path / "train"), chat_docs(8, seed=3))
    t = Trainer(load_spec(make_spec(str(tmp_path), tiny_dir, str(tmp_path / "train"), batch_size=8, lora=False)))
    t.setup()
    before = [p.detach().clone() for p in t.params]
    real = t.forward_stats

    def nan_loss(split, rows):
        ls, c = real(split, rows)
        return ls * float("nan"), c

    t.forward_stats = nan_loss
    with pytest.raises(JobError) as e:
        t.train_step(list(range(8)))
    assert (e.value.code, e.value.param) == ("invalid_hyperparameters", "learning_rate")
    assert e.value.message == "training diverged at step 1: the loss is not finite; try a lower learning_rate"
    assert t.step == 0 and not t.opt.state  # AdamW never stepped: no moments, no step count
    assert all(torch.equal(a, p) for a, p in zip(before, t.params, strict=True))


# class 8: a divergence names the hyperparameter that was out of any sane regime, not always the
# learning rate. Before: lora_alpha 1e300 and weight_decay 1e308 failed as "try a lower learning_rate"
# with param learning_rate, though the learning rate was an ordinary one.
@pytest.mark.parametrize(
    ("hp", "param", "advice"),
    [
        (dict(lora=True, lora_alpha=1e300), "lora_alpha", "lora_alpha 1e+300 / lora_r 8 scales the adapter's output"),
        (dict(lora=True, weight_decay=1e308), "weight_decay", "weight_decay 1e+308 × learning_rate 0.01 is 1e+306"),
        (dict(lora=False, weight_decay=1e308), "weight_decay", "weight_decay 1e+308 × learning_rate 0.01"),
    ],
)
def test_class_8_divergence_names_the_extreme_hyperparameter(tmp_path, tiny_dir, splits, hp, param, advice):
    spec = make_spec(str(tmp_path), tiny_dir, splits[0], None, n_epochs=2, **hp)
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 2, err
    error = lines[-1]
    assert (error["type"], error["code"], error["param"]) == ("error", "invalid_hyperparameters", param), error
    assert error["message"].startswith("training diverged at step 1: ") and advice in error["message"], error
    assert "try a lower learning_rate" not in error["message"], error
    assert "checkpoint" not in [m["type"] for m in lines]


@pytest.mark.parametrize(
    ("hp", "param"),
    [
        (dict(learning_rate=1e30, weight_decay=0.01), "learning_rate"),  # lr·wd ≥ 1 because of the lr
        (dict(learning_rate=1e-5, weight_decay=1e3), "learning_rate"),  # lr·wd = 0.01: decay is benign
        (dict(learning_rate=1e-3, weight_decay=5e3), "weight_decay"),  # lr·wd = 5: the decay overshoots
        (dict(lora=True, lora_alpha=512.0, lora_r=8), "learning_rate"),  # alpha/r 64: unusual, not extreme
        (dict(lora=True, lora_alpha=1e6, lora_r=8, learning_rate=1.0), "lora_alpha"),
        (dict(lora=False, lora_alpha=1e300), "learning_rate"),  # no adapter: lora_alpha is unused
    ],
)
def test_class_8_suspect_weighs_each_hyperparameter_against_its_regime(hp, param):
    from opentune_trainer.numerics import suspect
    from opentune_trainer.spec import HParams

    base = dict(batch_size=4, learning_rate=1e-2, n_epochs=1, warmup_ratio=0.0, weight_decay=0.0)
    base.update(max_grad_norm=1.0, lora=False, lora_r=8, lora_alpha=8.0, lora_dropout=0.0)
    assert suspect(HParams(**{**base, **hp}))[0] == param
