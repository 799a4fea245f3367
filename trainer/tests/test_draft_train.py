"""The spec-draft job end to end through the CLI on the tiny model: protocol lines, the drafter
folder vLLM loads, metrics, the loss going down for each loss type, resume after SIGTERM."""

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import SEVEN, TRAINER_DIR, draft_spec, make_spec, run_cli, untrained_acceptance_length
from opentune_trainer import safetensors_io as st


@pytest.mark.parametrize("loss", ["kl", "lk_alpha", "lk_hybrid"])
def test_spec_draft_job_trains_a_drafter(tmp_path, fine_tuned_target, loss):
    model, train, valid = fine_tuned_target
    spec = draft_spec(tmp_path, model, train, valid, batch_size=8, learning_rate=1e-2, loss={"type": loss})
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    assert lines[-1] == {"type": "finished", "step": 16, "status": "succeeded"}
    metrics = [m for m in lines if m["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 17))
    assert sum(m["train_loss"] for m in metrics[-4:]) < sum(m["train_loss"] for m in metrics[:4])
    ckpts = [m for m in lines if m["type"] == "checkpoint"]
    assert [c["step"] for c in ckpts] == [8, 16]
    last = ckpts[-1]
    assert last["files"] == ["config.json", "model.safetensors"] == sorted(os.listdir(last["dir"]))
    m = last["metrics"]
    assert set(SEVEN) <= set(m) and all(m[k] is not None for k in SEVEN)
    for k in (1, 2, 3):
        assert 0 <= m[f"valid_acceptance_rate_{k}"] <= 1 and 0 <= m[f"valid_top1_accuracy_{k}"] <= 1
    assert 0 < m["valid_draft_vocab_coverage"] <= 1
    # what training is for: more tokens accepted per target forward than the untrained drafter
    assert m["valid_acceptance_length"] > untrained_acceptance_length(lines) + 0.3
    assert m["valid_acceptance_rate_1"] > ckpts[0]["metrics"]["valid_acceptance_rate_1"] - 0.05
    cfg = json.load(open(os.path.join(last["dir"], "config.json")))
    assert cfg["architectures"] == ["LlamaForCausalLMEagle3"] and cfg["draft_vocab_size"] == 64
    assert cfg["num_speculative_tokens"] == 3
    keys = set(st.read_header(os.path.join(last["dir"], "model.safetensors"))) - {"__metadata__"}
    assert "d2t" in keys and "t2d" in keys and "fc.weight" in keys and not any(k.startswith("embed") for k in keys)


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, fine_tuned_target):
    model, train, valid = fine_tuned_target
    whole = tmp_path / "whole"
    whole.mkdir()
    code, full, err = run_cli("train", "--spec", draft_spec(whole, model, train, valid))
    assert code == 0, err
    part = tmp_path / "part"
    part.mkdir()
    spec = draft_spec(part, model, train, valid)
    p = subprocess.Popen(
        [sys.executable, "-m", "opentune_trainer", "train", "--spec", spec],
        cwd=TRAINER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    for raw in p.stdout:
        m = json.loads(raw)
        if m["type"] == "metrics" and m["step"] == 2:
            p.send_signal(signal.SIGTERM)
            break
    tail = [json.loads(raw) for raw in p.stdout]
    assert p.wait(timeout=30) == 3 and tail[-1]["status"] == "stopped"
    stopped = tail[-1]["step"]
    code, resumed, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    assert f"resumed from step {stopped}" in [m.get("message") for m in resumed if m["type"] == "log"]

    def losses(lines):
        return {m["step"]: m["train_loss"] for m in lines if m["type"] == "metrics"}

    assert all(losses(resumed)[s] == losses(full)[s] for s in losses(resumed))  # bit for bit on CPU

    def weights(lines):
        d = [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]
        return open(os.path.join(d, "model.safetensors"), "rb").read()

    assert weights(resumed) == weights(full)


def test_a_lora_checkpoint_is_merged_into_the_target(tmp_path, tiny_dir, fine_tuned_target):
    """A LoRA checkpoint as the target: its adapter is merged, so the drafter learns the fine-tuned
    model (its distribution differs from the base's), not the base."""
    _, train, valid = fine_tuned_target
    spec = make_spec(str(tmp_path), tiny_dir, train, None, learning_rate=1e-2, n_epochs=1, batch_size=8)
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    adapter = [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]
    runs = {}
    for name, extra in (("base", {}), ("lora", {"init_adapter": adapter})):
        d = tmp_path / name
        d.mkdir()
        path = draft_spec(d, tiny_dir, train, valid, n_epochs=1)
        s = json.load(open(path))
        json.dump({**s, **extra}, open(path, "w"))
        code, runs[name], err = run_cli("train", "--spec", path)
        assert code == 0, err

    def first_loss(lines):
        return next(m["train_loss"] for m in lines if m["type"] == "metrics")

    assert first_loss(runs["base"]) != pytest.approx(first_loss(runs["lora"]), rel=1e-3)


def test_bad_spec_draft_hyperparameters_exit_2(tmp_path, fine_tuned_target):
    model, train, valid = fine_tuned_target
    code, lines, _ = run_cli("train", "--spec", draft_spec(tmp_path, model, train, valid, loss={"type": "mse"}))
    assert code == 2
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "invalid_hyperparameters"
    assert lines[-1]["param"] == "loss.type" and "kl, lk_alpha, lk_hybrid" in lines[-1]["message"]
