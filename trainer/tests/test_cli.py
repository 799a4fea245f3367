"""The CLI end to end on the tiny model: protocol lines, files, exit codes, resume."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from helpers import SEVEN, TRAINER_DIR, chat_docs, make_spec, run_cli, write_split
from opentune_trainer import checkpoint
from opentune_trainer import safetensors_io as st
from opentune_trainer.lora import TARGET_MODULES


def test_lora_job_end_to_end(tmp_path, tiny_dir, splits):
    spec = make_spec(str(tmp_path), tiny_dir, *splits, learning_rate=5e-3, base_model="opentune/tiny-llama")
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    types = [m["type"] for m in lines]
    assert types[0] == "started" and types[-1] == "finished" and lines[-1]["status"] == "succeeded"
    started = lines[0]
    assert (started["total_steps"], started["steps_per_epoch"], started["start_step"]) == (8, 4, 0)
    assert started["device"] == "cpu" and started["trainable_params"] < started["total_params"]
    metrics = [m for m in lines if m["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert [m["epoch"] for m in metrics] == [1] * 4 + [2] * 4
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[0]["learning_rate"] == pytest.approx(5e-3) and metrics[-1]["learning_rate"] == pytest.approx(
        5e-3 / 8
    )
    ckpts = [m for m in lines if m["type"] == "checkpoint"]
    assert [c["step"] for c in ckpts] == [4, 8] and [c["epoch"] for c in ckpts] == [1, 2]
    for c in ckpts:
        assert sorted(c["metrics"]) == sorted(SEVEN) and all(v is not None for v in c["metrics"].values())
        assert c["files"] == ["adapter_config.json", "adapter_model.safetensors"]
        assert sorted(os.listdir(c["dir"])) == c["files"]
        assert c["metrics"]["train_loss"] == next(m["train_loss"] for m in metrics if m["step"] == c["step"])
    # 8 validation docs ≤ valid_sample_rows... the sample is 4 rows of 1 packed row: both cover all
    assert ckpts[-1]["metrics"]["valid_loss"] == pytest.approx(ckpts[-1]["metrics"]["full_valid_loss"])
    assert [m["type"] for m in lines].count("state_saved") == 2
    cfg = json.load(open(os.path.join(ckpts[-1]["dir"], "adapter_config.json")))
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 8
    assert cfg["lora_alpha"] == 16 and cfg["target_modules"] == TARGET_MODULES and cfg["bias"] == "none"
    assert cfg["base_model_name_or_path"] == "opentune/tiny-llama"


def test_adapter_has_peft_names_and_shapes(tmp_path, tiny_dir, splits):
    spec = make_spec(str(tmp_path), tiny_dir, *splits, n_epochs=1, lora_r=16, lora_alpha=8)  # r ≠ the default 8
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    d = next(m for m in lines if m["type"] == "checkpoint")["dir"]
    header = st.read_header(os.path.join(d, "adapter_model.safetensors"))
    assert header.pop("__metadata__") == {"format": "pt"}
    shapes = {
        "q_proj": (128, 128),
        "k_proj": (128, 64),
        "v_proj": (128, 64),
        "o_proj": (128, 128),
        "gate_proj": (128, 384),
        "up_proj": (128, 384),
        "down_proj": (384, 128),
    }
    want = {}
    for i in range(4):
        for mod, (fan_in, fan_out) in shapes.items():
            part = "self_attn" if mod in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            base = f"base_model.model.model.layers.{i}.{part}.{mod}"
            want[f"{base}.lora_A.weight"] = [16, fan_in]
            want[f"{base}.lora_B.weight"] = [fan_out, 16]
    assert {k: v["shape"] for k, v in header.items()} == want
    assert all(v["dtype"] == "F32" for v in header.values())


def test_full_fine_tune_writes_loadable_hf_folder(tmp_path, tiny_dir, splits):
    spec = make_spec(str(tmp_path), tiny_dir, splits[0], None, n_epochs=1, lora=False, learning_rate=1e-3)
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    c = next(m for m in lines if m["type"] == "checkpoint")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(c["files"])
    assert all(c["metrics"][k] is None for k in SEVEN if k.startswith(("valid", "full_valid")))
    tuned, base = checkpoint.load_model(c["dir"]), checkpoint.load_model(tiny_dir)
    assert "lm_head.weight" not in st.read_header(os.path.join(c["dir"], "model.safetensors"))  # tied
    x = torch.arange(40)[None]
    with torch.no_grad():
        assert not torch.allclose(tuned.logits(x), base.logits(x))


def test_bad_hyperparameters_exit_2(tmp_path, tiny_dir, splits):
    code, lines, _ = run_cli("train", "--spec", make_spec(str(tmp_path), tiny_dir, *splits, batch_size=0))
    assert code == 2
    assert lines[-1] == {
        "type": "error",
        "code": "invalid_hyperparameters",
        "message": "batch_size must be ≥ 1",
        "param": "batch_size",
    }


def test_model_without_weights_exit_2(tmp_path, tiny_dir, splits):
    bare = tmp_path / "bare"
    os.makedirs(bare)
    shutil.copyfile(os.path.join(tiny_dir, "config.json"), bare / "config.json")
    code, lines, _ = run_cli("train", "--spec", make_spec(str(tmp_path), str(bare), *splits))
    assert code == 2 and lines[-1]["type"] == "error" and lines[-1]["code"] == "invalid_model"
    assert "safetensors" in lines[-1]["message"]


def test_bad_shards_exit_2(tmp_path, tiny_dir, splits):
    docs = chat_docs(4)
    docs[0] = (docs[0][0], docs[0][1][:-1] + [docs[0][0][0]])  # last target not -100: not pre-shifted
    write_split(str(tmp_path / "bad"), docs)
    code, lines, _ = run_cli("train", "--spec", make_spec(str(tmp_path), tiny_dir, str(tmp_path / "bad"), splits[1]))
    assert code == 2 and lines[-1]["code"] == "invalid_training_file"
    write_split(str(tmp_path / "big"), [([999, 1], [-100, -100])], split="valid")
    code, lines, _ = run_cli("train", "--spec", make_spec(str(tmp_path), tiny_dir, splits[0], str(tmp_path / "big")))
    assert code == 2 and lines[-1]["code"] == "invalid_validation_file" and "token ids" in lines[-1]["message"]


# ---------------------------------------------------------------- resume


def _spec(tmp, tiny_dir, train):
    # dropout > 0 so resume must restore the RNG; 32 steps per epoch so SIGTERM lands mid-epoch
    return make_spec(
        str(tmp), tiny_dir, train, None, batch_size=2, n_epochs=3, lora_dropout=0.1, learning_rate=5e-3, seed=11
    )


def _popen(spec, env=None):
    # Unbuffered, through a one-page pipe: the trainer cannot run more than a few lines ahead of what
    # the test has read, so a signal sent after line X lands soon after X however the machine
    # schedules the two processes. (A 64 KiB pipe holds a whole run's output: a test descheduled
    # for a few seconds would signal a trainer that had already finished.)
    p = subprocess.Popen(
        [sys.executable, "-m", "opentune_trainer", "train", "--spec", spec],
        cwd=TRAINER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env=env,
    )
    fcntl.fcntl(p.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    return p


def _read_until(p, stop):
    lines = []
    for raw in p.stdout:
        lines.append(json.loads(raw))
        if stop(lines[-1]):
            return lines
    raise AssertionError("trainer ended before the expected line")


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, tiny_dir):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    write_split(str(tmp / "train"), chat_docs(64, seed=3))
    code, lines, err = run_cli("train", "--spec", _spec(tmp, tiny_dir, str(tmp / "train")))
    assert code == 0, err
    return str(tmp / "train"), lines


def _losses(lines):
    return {m["step"]: (m["train_loss"], m["train_mean_token_accuracy"]) for m in lines if m["type"] == "metrics"}


def _final_adapter(lines):
    d = [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]
    return open(os.path.join(d, "adapter_model.safetensors"), "rb").read()


def _resume_and_compare(spec, long_lines, after_step):
    code, lines, err = run_cli("train", "--spec", spec)
    assert code == 0, err
    assert lines[0] == {"type": "log", "level": "info", "message": f"resumed from step {after_step}"}
    assert lines[1]["type"] == "started" and lines[1]["start_step"] == after_step
    resumed, full = _losses(lines), _losses(long_lines)
    assert sorted(resumed) == list(range(after_step + 1, 97))
    assert all(resumed[s] == full[s] for s in resumed)  # bit-for-bit on CPU
    assert _final_adapter(lines) == _final_adapter(long_lines)


def test_kill_after_checkpoint_then_resume(tmp_path, tiny_dir, long_run):
    train, long_lines = long_run
    spec = _spec(tmp_path, tiny_dir, train)
    p = _popen(spec)
    _read_until(p, lambda m: m["type"] == "state_saved")
    p.kill()  # SIGKILL: nothing runs after this, the state on disk must be whole by itself
    p.wait()
    step = json.load(open(tmp_path / "out" / "state" / "state.json"))["step"]
    assert step % 32 == 0 and step >= 32
    _resume_and_compare(spec, long_lines, step)


def test_sigterm_saves_state_and_resume_matches(tmp_path, tiny_dir, long_run):
    train, long_lines = long_run
    spec = _spec(tmp_path, tiny_dir, train)
    p = _popen(spec)
    _read_until(p, lambda m: m["type"] == "metrics" and m["step"] == 2)
    p.send_signal(signal.SIGTERM)
    tail = [json.loads(raw) for raw in p.stdout]
    assert p.wait(timeout=10) == 3
    assert [m["type"] for m in tail[-2:]] == ["state_saved", "finished"] and tail[-1]["status"] == "stopped"
    stopped_at = tail[-1]["step"]
    assert 2 <= stopped_at < 96 and tail[-2]["step"] == stopped_at
    _resume_and_compare(spec, long_lines, stopped_at)


def test_sigterm_when_writing_the_state_would_outlast_the_grace_resumes_from_the_last_one(tmp_path, tiny_dir, long_run):
    """A state the trainer cannot write within the runner's grace (OPENTUNE_STOP_GRACE_S, here a
    millisecond; in practice a full fine-tune's 12 bytes per parameter on a slow disk) is not
    started at SIGTERM: the trainer exits at once, keeps the last whole state (written in the
    background at the epoch's end, step 32), says so, and the resumed run equals an uninterrupted one."""
    train, long_lines = long_run
    spec = _spec(tmp_path, tiny_dir, train)
    p = _popen(spec, env={**os.environ, "OPENTUNE_STOP_GRACE_S": "0.001"})
    _read_until(p, lambda m: m["type"] == "metrics" and m["step"] == 34)
    p.send_signal(signal.SIGTERM)
    tail = [json.loads(raw) for raw in p.stdout]
    assert p.wait(timeout=10) == 3
    assert tail[-3]["type"] == "log" and tail[-3]["level"] == "warn"
    assert "resumes from the state of step 32" in tail[-3]["message"]
    assert [(m["type"], m["step"]) for m in tail[-2:]] == [("state_saved", 32), ("finished", 32)]
    assert json.load(open(tmp_path / "out" / "state" / "state.json"))["step"] == 32
    _resume_and_compare(spec, long_lines, 32)


def test_unreadable_spec_is_internal_error(tmp_path):
    (tmp_path / "spec.json").write_text("{not json")
    code, lines, _ = run_cli("train", "--spec", str(tmp_path / "spec.json"))
    assert code == 1 and lines[-1]["type"] == "error" and lines[-1]["code"] == "internal_error"


@pytest.mark.parametrize("preset,expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_told(preset, expected):
    """Spinning OpenMP threads fought OpenBLAS's for 2 cores: torch 2.14 ran steps 20× slower."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import opentune_trainer, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    p = subprocess.run([sys.executable, "-c", code], cwd=TRAINER_DIR, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == expected


def test_init_adapter_continues_a_lora_checkpoint(tmp_path, tiny_dir, splits):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_spec(str(tmp_path / "a"), tiny_dir, *splits, learning_rate=5e-3, n_epochs=3)
    code, lines, err = run_cli("train", "--spec", a)
    assert code == 0, err
    first_a = next(m for m in lines if m["type"] == "metrics")
    last_a = [m for m in lines if m["type"] == "metrics"][-1]
    adapter = [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]

    b = make_spec(str(tmp_path / "b"), tiny_dir, *splits, learning_rate=5e-3, n_epochs=1)
    spec = json.load(open(b))
    spec["init_adapter"] = adapter
    json.dump(spec, open(b, "w"))
    code, lines, err = run_cli("train", "--spec", b)
    assert code == 0, err
    first_b = next(m for m in lines if m["type"] == "metrics")
    # B starts where A ended, not from a fresh adapter (A's first loss)
    assert first_b["train_loss"] < first_a["train_loss"] - 0.3
    assert abs(first_b["train_loss"] - last_a["train_loss"]) < 0.3

    spec["hyperparameters"]["lora_r"] = 16  # another rank: the adapter cannot be continued
    spec["output_dir"] = str(tmp_path / "c")
    json.dump(spec, open(b, "w"))
    code, lines, err = run_cli("train", "--spec", b)
    assert code == 2
    assert lines[-1]["type"] == "error" and lines[-1]["code"] == "invalid_model" and "r=8" in lines[-1]["message"]


@pytest.mark.parametrize(
    "raised",
    [
        "OSError(errno.ENOSPC, 'No space left on device', '/data/out/state.pt')",
        "RuntimeError('[enforce fail] No space left on device')",
    ],
)
def test_class_4_a_full_disk_is_storage_full_not_internal_error(tmp_path, tiny_dir, splits, raised):
    """Issue 10 class 4: the trainer says the disk is full (exit 2), so the job's error names the disk."""
    spec = make_spec(str(tmp_path), tiny_dir, *splits)
    code = (
        "import errno, sys\n"
        "from opentune_trainer import __main__ as cli, train\n"
        f"def full(spec): raise {raised}\n"
        "train.run = full\n"
        f"sys.exit(cli.main(['train', '--spec', {spec!r}]))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=TRAINER_DIR, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2, p.stderr[-2000:]
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["type"] == "error" and last["code"] == "storage_full", last
    assert "state.pt" in last["message"] if "OSError" in raised else "No space left" in last["message"]
