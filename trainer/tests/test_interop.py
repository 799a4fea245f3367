"""What a job writes, read by the Hugging Face stack (CPU; skipped without transformers/peft):

    cd trainer && python -m pytest -q tests/test_interop.py

- `peft.PeftModel.from_pretrained` loads the LoRA adapter a training run wrote and gives our logits;
- `transformers.AutoModelForCausalLM.from_pretrained` loads the full fine-tune a run wrote and gives
  our logits.

Each run is the trainer's `train` command on a random-initialised model of a real architecture,
as the service starts it for a job; the checkpoint is the one its `checkpoint` line names.
"""

import pytest
import torch
from test_hf_parity import hf_model

from helpers import chat_docs, make_spec, run_cli, write_split
from opentune_trainer import checkpoint
from opentune_trainer.lora import apply_lora

transformers = pytest.importorskip("transformers")


def train_once(tmp_path, base: str, lora: bool) -> str:
    """One real training run (a few steps); returns the last checkpoint's folder."""
    write_split(str(tmp_path / "train"), chat_docs(8, seed=3), seq_len=256)
    spec = make_spec(
        str(tmp_path),
        base,
        str(tmp_path / "train"),
        lora=lora,
        n_epochs=1,
        batch_size=2,
        learning_rate=1e-2 if lora else 1e-3,
    )
    code, lines, err = run_cli("train", "--spec", spec, timeout=300)
    assert code == 0, (lines[-1:], err[-3000:])
    return [m for m in lines if m["type"] == "checkpoint"][-1]["dir"]


def probe() -> torch.Tensor:
    return torch.randint(0, 320, (2, 48), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["llama3", "qwen3"])
def test_peft_loads_the_adapter_a_job_wrote(tmp_path, arch):
    peft = pytest.importorskip("peft")
    base = str(tmp_path / "base")
    hf = hf_model(tmp_path / "base", arch).cpu()
    adapter = train_once(tmp_path, base, lora=True)

    ours = checkpoint.load_model(base, "cpu", torch.float32)
    apply_lora(ours, r=8, alpha=16, dropout=0.0)
    checkpoint.load_adapter(ours, adapter, 8, 16)
    x = probe()
    with torch.no_grad():
        before = hf(input_ids=x).logits.float()
        loaded = peft.PeftModel.from_pretrained(hf, adapter).eval()
        theirs = loaded(input_ids=x).logits.float()
        torch.testing.assert_close(ours.eval().logits(x), theirs, rtol=1e-4, atol=1e-4)
    assert (theirs - before).abs().max() > 1e-3, "training changed nothing: the comparison would prove nothing"


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_transformers_loads_the_full_fine_tune_a_job_wrote(tmp_path, arch):
    base = str(tmp_path / "base")
    before_model = hf_model(tmp_path / "base", arch).cpu()
    folder = train_once(tmp_path, base, lora=False)

    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32).eval()
    ours = checkpoint.load_model(folder, "cpu", torch.float32).eval()
    x = probe()
    with torch.no_grad():
        out = theirs(input_ids=x).logits.float()
        torch.testing.assert_close(ours.logits(x), out, rtol=1e-4, atol=1e-4)
        assert (out - before_model(input_ids=x).logits.float()).abs().max() > 1e-3
