"""torchrun on the CPU (gloo): two processes train as one does (docs/multi-gpu.md).

Each job runs once in one process and once under `torchrun --nproc_per_node 2`, on data whose
steps split into an odd number of micro-batches (so one rank runs a zero-weight stand-in), with a
validation split (validation passes are shared too). Same losses, accuracies, checkpoints and
final weights, up to float32 rounding: the two ranks' sums are added in another order (Σ over a
rank's micro-batches, then over ranks), which moves a float32 sum by a few ulps. Measured here:
losses 9e-8 apart (relative), gradient norms 1.2e-6, weights after three AdamW steps at lr 1e-2
3.5e-6 (AdamW's m/√v magnifies the rounding of small gradients). The bounds are 100× (losses,
norms) and 10× (weights, 0.3% of one step's size) that, far below any real difference: one row
trained twice or not at all moves a loss by more than 1e-2.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import TRAINER_DIR, chat_docs, make_spec, write_split
from opentune_trainer import safetensors_io as st

# bench/gpu-session.sh runs this file on 2 GPUs too (NCCL), in float32 like the CPU
DEVICE = os.environ.get("OPENTUNE_TEST_DEVICE", "cpu")
LOSS_RTOL = 1e-5
NORM_RTOL = 1e-4
WEIGHT_ATOL = 3e-5


def _run(spec: str, nproc: int) -> list[dict]:
    if nproc == 1:
        cmd = [sys.executable, "-m", "opentune_trainer", "train", "--spec", spec]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd += ["-m", "opentune_trainer", "train", "--spec", spec]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks on two cores, as torchrun sets it
    p = subprocess.run(cmd, cwd=TRAINER_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads(line) for line in p.stdout.splitlines()]


def _weights(lines: list[dict]) -> dict[str, torch.Tensor]:
    d = [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]
    name = "adapter_model.safetensors" if os.path.exists(os.path.join(d, "adapter_model.safetensors")) else None
    return st.load(os.path.join(d, name or "model.safetensors"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp-data")
    write_split(str(d / "train"), chat_docs(12, seed=5))
    write_split(str(d / "valid"), chat_docs(5, seed=6), split="valid")
    return str(d / "train"), str(d / "valid")


@pytest.mark.parametrize("lora", [True, False], ids=["lora-ddp", "full-fsdp2"])
def test_two_processes_train_as_one(tmp_path, tiny_dir, data, lora):
    # 12 rows, 5 per step: steps of 5, 5, 2 one-row micro-batches; 5 = 3 + 2 (+ a stand-in)
    runs = {}
    for nproc in (1, 2):
        tmp = tmp_path / f"n{nproc}"
        tmp.mkdir()
        spec = make_spec(str(tmp), tiny_dir, *data, batch_size=5, n_epochs=1, micro_batch_size=1, lora=lora)
        with open(spec) as f:
            s = json.load(f)
        s.update(device=DEVICE, precision="float32")
        with open(spec, "w") as f:
            json.dump(s, f)
        runs[nproc] = _run(spec, nproc)
    one, two = runs[1], runs[2]
    assert [m["type"] for m in one] == [m["type"] for m in two]
    assert next(m for m in two if m["type"] == "started")["world_size"] == 2
    m1 = [m for m in one if m["type"] == "metrics"]
    m2 = [m for m in two if m["type"] == "metrics"]
    assert [m["step"] for m in m2] == [1, 2, 3]
    for a, b in zip(m1, m2, strict=True):
        assert (a["tokens"], a["loss_tokens"]) == (b["tokens"], b["loss_tokens"])
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=LOSS_RTOL)
        assert b["train_mean_token_accuracy"] == pytest.approx(a["train_mean_token_accuracy"], abs=1e-12)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=NORM_RTOL)
    c1 = [m for m in one if m["type"] == "checkpoint"][-1]["metrics"]
    c2 = [m for m in two if m["type"] == "checkpoint"][-1]["metrics"]
    assert c1.keys() == c2.keys() and all(v is not None for v in c2.values())
    for k in c1:
        assert c2[k] == pytest.approx(c1[k], rel=LOSS_RTOL), k
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    moved = max(float((w2[k] - w1[k]).abs().max()) for k in w1)
    assert moved < WEIGHT_ATOL


def test_too_large_is_refused_with_the_numbers_and_the_ways_out(monkeypatch):
    """Llama-3.1-8B (8.03B parameters) fully fine-tuned on 80 GB GPUs: 16 bytes per parameter."""
    from opentune_trainer import checkpoint, distributed

    monkeypatch.setattr(checkpoint, "_free_cuda_memory", lambda device: 79 * 2**30)
    gpu, n = torch.device("cuda", 0), 8_030_261_248
    why = distributed.check_fits(n, False, torch.float32, gpu, distributed.SINGLE)
    assert why.startswith("the model has 8.03B parameters × 16 bytes (float32 weights, gradients and two AdamW")
    assert "about 131.6 GiB, and 79.0 GiB is free on cuda:0" in why
    assert "lora: true (the frozen base in bfloat16 needs about 16.5 GiB)" in why
    assert '2 or more GPUs (extra_body {"opentune": {"gpus": 2}}' in why
    two = distributed.World(rank=0, size=2, local_rank=0)
    assert distributed.check_fits(n, False, torch.float32, gpu, two) is None  # FSDP2 shards it: 65.8 GiB each
    assert distributed.check_fits(n, True, torch.bfloat16, gpu, distributed.SINGLE) is None
