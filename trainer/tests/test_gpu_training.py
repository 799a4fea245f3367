"""The CUDA training path (bf16, compiled blocks, fused AdamW) end to end through the CLI:

cd trainer && python3 -m pytest -q -m gpu tests/test_gpu_training.py
"""

import pytest

from helpers import chat_docs, make_spec, run_cli, write_split

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("lora", [True, False])
def test_cuda_training_path(tmp_path, tiny_dir, lora):
    write_split(str(tmp_path / "train"), chat_docs(32, seed=1), packing=True)
    write_split(str(tmp_path / "valid"), chat_docs(8, seed=2), split="valid")
    spec = make_spec(
        str(tmp_path),
        tiny_dir,
        str(tmp_path / "train"),
        str(tmp_path / "valid"),
        lora=lora,
        learning_rate=5e-3 if lora else 1e-3,
        n_epochs=16,
        batch_size=1,
    )
    spec_text = open(spec).read().replace('"device": "cpu"', '"device": "cuda"')
    open(spec, "w").write(spec_text)
    code, lines, err = run_cli("train", "--spec", spec, timeout=600)
    assert code == 0, err
    started = lines[0] if lines[0]["type"] == "started" else lines[1]
    assert started["device"] == "cuda" and started["dtype"] == "bfloat16"
    losses = [m["train_loss"] for m in lines if m["type"] == "metrics"]
    assert losses[-1] < losses[0] - 0.5
