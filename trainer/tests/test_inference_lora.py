"""Multi-LoRA in the inference engine: one copy of the base weights, adapters per row.

    cd trainer && python3 -m pytest -q tests/test_inference_lora.py

- two adapters and no adapter in one batch each equal PEFT (`PeftModel.from_pretrained` on the
  adapter our lora.py + checkpoint.save_adapter wrote): greedy tokens identical, logprobs within
  float tolerance of PEFT's teacher-forced ones;
- a malformed adapter is a model_error that says why, and the batch goes on;
- adapters are kept least recently used first and dropped when memory is short.
"""

import json
import os

import pytest
import torch
from test_hf_parity import hf_model

from opentune_trainer import checkpoint
from opentune_trainer.inference.engine import Engine, Request
from opentune_trainer.inference.offline import Collector, run
from opentune_trainer.lora import apply_lora


def make_adapter(base: str, out: str, seed: int, r=8, alpha=16) -> str:
    m = checkpoint.load_model(base, "cpu", torch.float32)
    apply_lora(m, r=r, alpha=alpha, dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if ".lora_" in n:  # B = 0 at init would make any adapter look right
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if n.endswith("lora_B.weight") else 0.3))
    checkpoint.save_adapter(out, m, r, alpha, 0.0, base)
    return out


@pytest.fixture(scope="module")
def base_and_adapters(tmp_path_factory):
    pytest.importorskip("peft")
    d = tmp_path_factory.mktemp("lora")
    hf = hf_model(d / "base", "llama3")
    a1 = make_adapter(str(d / "base"), str(d / "a1"), 1)
    a2 = make_adapter(str(d / "base"), str(d / "a2"), 2, r=4, alpha=32)
    return hf, str(d / "base"), a1, a2, d


def test_mixed_adapters_in_one_batch_equal_peft(base_and_adapters):
    import copy

    import peft

    hf, base, a1, a2, _ = base_and_adapters
    eng = Engine(base, torch.device("cpu"), torch.float32, 8, Collector())
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (7, 15, 11, 4)]
    adapters = [a1, None, a2, a1]
    reqs = [
        Request(id=str(i), weights=base, adapter_path=a, prompt=p, max_tokens=16, logprobs=0)
        for i, (p, a) in enumerate(zip(prompts, adapters, strict=True))
    ]
    out = run(eng, reqs, join_at=[0, 0, 2, 3])
    assert len(eng.adapters) == 2  # one copy of each adapter, one copy of the base
    for i, (p, a) in enumerate(zip(prompts, adapters, strict=True)):
        ref = hf if a is None else peft.PeftModel.from_pretrained(copy.deepcopy(hf), a).eval()
        ref.generation_config.eos_token_id = None
        x = torch.tensor([p])
        with torch.no_grad():
            want = ref.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False, pad_token_id=0
            )
            want = want[0, len(p) :].tolist()
            assert out[str(i)]["tokens"] == want, (i, a)
            seq = torch.tensor([p + want])
            lp = torch.log_softmax(ref(input_ids=seq).logits[0].float(), -1)
        forced = [lp[len(p) - 1 + j, t].item() for j, t in enumerate(want)]
        assert out[str(i)]["logprobs"] == pytest.approx(forced, abs=1e-4)


def test_adapter_equals_merged_weights(base_and_adapters):
    """Also against weights merged by hand: W + (alpha/r)·B·A, with no LoRA at run time."""
    from opentune_trainer import safetensors_io as st

    _, base, a1, _, _ = base_and_adapters
    eng = Engine(base, torch.device("cpu"), torch.float32, 4, Collector())
    merged = checkpoint.load_model(base, "cpu", torch.float32).eval()
    t = st.load(os.path.join(a1, "adapter_model.safetensors"))
    with torch.no_grad():
        for name, mod in merged.named_modules():
            key = f"base_model.model.{name}.lora_A.weight"
            if key in t:
                mod.weight += 2.0 * t[key.replace("lora_A", "lora_B")] @ t[key]  # alpha 16 / r 8
    prompt = [5, 17, 300, 2, 99]
    got = run(eng, [Request(id="m", weights=base, adapter_path=a1, prompt=prompt, max_tokens=12)])["m"]["tokens"]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(merged.logits(torch.tensor([seq]))[0, -1].argmax()))
    assert got == seq[len(prompt) :]


def _broken(src: str, dst: str, edit) -> str:
    import shutil

    shutil.copytree(src, dst)
    with open(os.path.join(dst, "adapter_config.json")) as f:
        cfg = json.load(f)
    edit(cfg)
    with open(os.path.join(dst, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def test_bad_adapters_are_model_errors_and_the_batch_goes_on(base_and_adapters):
    _, base, a1, _, d = base_and_adapters
    wrong_r = _broken(a1, str(d / "wrong-r"), lambda c: c.update(r=16))
    wrong_t = _broken(a1, str(d / "wrong-t"), lambda c: c.update(target_modules=["q_proj"]))
    dora = _broken(a1, str(d / "dora"), lambda c: c.update(use_dora=True))
    eng = Engine(base, torch.device("cpu"), torch.float32, 4, Collector())
    reqs = [
        Request(id=i, weights=base, adapter_path=a, prompt=[1, 2, 3], max_tokens=4)
        for i, a in (("ok", a1), ("r", wrong_r), ("t", wrong_t), ("dora", dora), ("missing", str(d / "nope")))
    ]
    out = run(eng, reqs)
    assert len(out["ok"]["tokens"]) == 4
    msgs = {i: out[i]["error"] for i in ("r", "t", "dora", "missing")}
    assert all(m["code"] == "model_error" for m in msgs.values())
    assert "lora_A [8, 256]" in msgs["r"]["message"] and "with r=16 needs [16, 256]" in msgs["r"]["message"]
    assert "unexpected weight" in msgs["t"]["message"]
    assert "use_dora" in msgs["dora"]["message"]
    assert "no adapter_config.json" in msgs["missing"]["message"]


def test_adapters_unload_least_recently_used_first(base_and_adapters):
    _, base, a1, a2, _ = base_and_adapters
    eng = Engine(base, torch.device("cpu"), torch.float32, 4, Collector())
    for rid, a in (("x", a1), ("y", a2), ("z", a1)):
        run(eng, [Request(id=rid, weights=base, adapter_path=a, prompt=[1, 2], max_tokens=2)])
    assert list(eng.adapters) == [a2, a1]
    size = eng.adapters[a2].nbytes()
    assert eng.drop_adapters(1) == size and list(eng.adapters) == [a1]
