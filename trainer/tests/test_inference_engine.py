"""The inference engine (opentune_trainer/inference) in-process, on the CPU:

    cd trainer && python3 -m pytest -q tests/test_inference_engine.py

- greedy decoding with the KV cache equals transformers' greedy `generate` (Llama 3, Qwen2, Qwen3,
  Mistral), and a Mistral sliding window that bites equals full forwards with the window mask;
- logprobs of a generated sequence sum to its teacher-forced score, prompt_logprobs equal it;
- requests of different lengths joining at different steps decode as each alone;
- the same with oneDNN pre-packed linear weights (inference/packed.py);
- sampling: same seed → same tokens, in a batch or alone; penalties; stop ids, max_tokens, cancel.
"""

import pytest
import torch
from test_hf_parity import ARCHS, hf_model

from opentune_trainer.inference import packed
from opentune_trainer.inference.engine import Engine, Request
from opentune_trainer.inference.offline import Collector, run

CPU = torch.device("cpu")


def engine(folder, max_batch=8):
    return Engine(str(folder), CPU, torch.float32, max_batch, Collector())


def req(rid, folder, prompt, n=16, **kw):
    return Request(id=rid, weights=str(folder), adapter_path=kw.pop("adapter", None), prompt=prompt, max_tokens=n, **kw)


def hf_greedy(model, prompt, n):
    model.generation_config.eos_token_id = None  # random weights: never stop early on token 2
    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_greedy_equals_transformers_generate(tmp_path, arch):
    hf = hf_model(tmp_path, arch)
    eng = engine(tmp_path)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (9, 23)]
    out = run(eng, [req(str(i), tmp_path, p, 20) for i, p in enumerate(prompts)])
    for i, p in enumerate(prompts):
        assert out[str(i)]["tokens"] == hf_greedy(hf, p, 20)
        assert out[str(i)]["done"]["finish_reason"] == "length"


@pytest.mark.skipif(not packed.available(CPU, torch.float32), reason="no oneDNN in this torch")
def test_packed_linears_equal_transformers_and_alone(tmp_path, monkeypatch):
    """oneDNN pre-packed weights (packed.py; the tiny test models are below its size threshold)."""
    monkeypatch.setattr(packed, "PACK_MIN_ELEMENTS", 0)
    hf = hf_model(tmp_path, "llama3")
    eng = engine(tmp_path)
    assert eng.packed and isinstance(eng.model.model.layers[0].mlp.up_proj, packed.PackedLinear)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (5, 17, 30)]
    out = run(eng, [req(str(i), tmp_path, p, 12) for i, p in enumerate(prompts)], join_at=[0, 0, 3])
    for i, p in enumerate(prompts):
        assert out[str(i)]["tokens"] == hf_greedy(hf, p, 12)
        assert out[str(i)]["tokens"] == run(eng, [req("x", tmp_path, p, 12)])["x"]["tokens"]


def test_sliding_window_decode_equals_masked_forward(tmp_path):
    """A window of 8 that bites within the prompt and while decoding: each step's token equals the
    argmax of a full forward (model.logits applies the same window as a mask)."""
    transformers = pytest.importorskip("transformers")
    from test_hf_parity import COMMON

    cfg = transformers.MistralConfig(**{**COMMON, "num_hidden_layers": 2}, sliding_window=8)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path))
    eng = engine(tmp_path)
    prompt = torch.randint(0, 512, (13,), generator=torch.Generator().manual_seed(2)).tolist()
    got = run(eng, [req("a", tmp_path, prompt, 12)])["a"]["tokens"]
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(eng.model.logits(torch.tensor([seq]))[0, -1].argmax()))
    assert got == seq[len(prompt) :]


def test_logprobs_sum_to_teacher_forced_score(tiny_dir):
    eng = engine(tiny_dir)
    prompt = [256, 72, 101, 108, 108, 111, 10]
    r = run(eng, [req("a", tiny_dir, prompt, 16, logprobs=3, prompt_logprobs=True)])["a"]
    seq = torch.tensor([prompt + r["tokens"]])
    with torch.no_grad():
        lp = torch.log_softmax(eng.model.logits(seq)[0], -1)
    T = len(prompt)
    forced = [lp[T - 1 + i, t].item() for i, t in enumerate(r["tokens"])]
    assert sum(r["logprobs"]) == pytest.approx(sum(forced), abs=1e-4)
    assert r["logprobs"] == pytest.approx(forced, abs=1e-5)
    for top, chosen in zip(r["top"], r["logprobs"], strict=True):  # greedy: the token is the most likely
        assert len(top) == 3 and top[0][1] == pytest.approx(chosen, abs=1e-6)
    p = r["prompt"]
    assert p["logprobs"][0] is None and p["top"][0] is None
    assert p["logprobs"][1:] == pytest.approx([lp[i, prompt[i + 1]].item() for i in range(T - 1)], abs=1e-5)
    best = lp[: T - 1].topk(3, dim=-1)
    assert [[t for t, _ in top] for top in p["top"][1:]] == best.indices.tolist()


def test_batched_requests_joining_late_equal_each_alone(tiny_dir):
    eng = engine(tiny_dir, max_batch=3)  # 5 requests, 3 slots: two wait, then take freed slots
    g = torch.Generator().manual_seed(3)
    lens, ns, joins = (5, 40, 12, 3, 70), (20, 8, 16, 24, 10), (0, 0, 3, 5, 6)
    reqs = [
        req(str(i), tiny_dir, torch.randint(0, 256, (n,), generator=g).tolist(), k)
        for i, (n, k) in enumerate(zip(lens, ns, strict=True))
    ]
    together = run(eng, reqs, join_at=joins)
    steps = [line for line in eng.emit.lines if line["type"] == "tokens"]
    assert max(len(s["items"]) for s in steps) == 3  # really batched, never past max_batch
    for r in reqs:
        alone = run(engine(tiny_dir), [req("x", tiny_dir, r.prompt, r.max_tokens)])["x"]["tokens"]
        assert together[r.id]["tokens"] == alone, r.id


def test_same_seed_same_tokens(tiny_dir):
    eng = engine(tiny_dir)
    prompt = [256, 72, 105]

    def sampled(seed, others=0, **kw):
        extra = [req(f"o{i}", tiny_dir, [256, 65 + i], 12, temperature=0.7, seed=i) for i in range(others)]
        opts = {"temperature": 1.3, "top_p": 0.95, **kw}
        out = run(eng, [req("s", tiny_dir, prompt, 24, seed=seed, **opts), *extra])
        return out["s"]["tokens"]

    a = sampled(7)
    assert a == sampled(7) == sampled(7, others=3)  # in a batch too: the row has its own generator
    assert a != sampled(8)
    assert len(set(a)) > 3  # a hot temperature really samples
    # top_p so small that only the most likely token stays: the greedy sequence
    greedy = run(eng, [req("g", tiny_dir, prompt, 24)])["g"]["tokens"]
    assert sampled(9, top_p=1e-6) == greedy


def test_penalties_push_away_repeats(tiny_dir):
    eng = engine(tiny_dir)
    prompt = [256, 72, 105]
    plain = run(eng, [req("a", tiny_dir, prompt, 20)])["a"]["tokens"]
    assert len(set(plain)) < len(plain)  # the random tiny model repeats itself
    out = run(eng, [req("b", tiny_dir, prompt, 20, presence=2.0, frequency=2.0), req("c", tiny_dir, prompt, 20)])
    assert len(set(out["b"]["tokens"])) > len(set(plain))
    assert out["c"]["tokens"] == plain  # the row beside it is not penalised


def test_stop_ids_max_tokens_and_cancel(tiny_dir):
    eng = engine(tiny_dir, max_batch=2)
    prompt = [256, 72, 105]
    plain = run(eng, [req("a", tiny_dir, prompt, 12)])["a"]
    assert len(plain["tokens"]) == 12 and plain["done"]["finish_reason"] == "length"
    assert plain["done"]["completion_tokens"] == 12 and plain["done"]["prompt_tokens"] == 3
    stop = plain["tokens"][4]
    k = plain["tokens"].index(stop)
    s = run(eng, [req("b", tiny_dir, prompt, 12, stop_ids=frozenset({stop}))])["b"]
    assert s["tokens"] == plain["tokens"][: k + 1] and s["done"]["finish_reason"] == "stop"

    long_ = req("long", tiny_dir, prompt, 500)
    waiting = req("w", tiny_dir, prompt, 5)

    def cancel_at(step):
        if step == 3:
            assert [r.id for r in eng.rows] == ["long", "other"]  # both slots taken, "w" waits
            long_.cancelled = True

    out = run(eng, [long_, req("other", tiny_dir, prompt, 8), waiting], on_step=cancel_at)
    assert out["long"]["done"]["finish_reason"] == "cancelled" and len(out["long"]["tokens"]) == 3
    assert out["w"]["tokens"] == plain["tokens"][:5]  # took the freed slot, decoded as alone
    assert out["w"]["steps"][0] < out["other"]["steps"][-1]  # joined while "other" still ran
    assert not eng.rows


def test_context_overflow_is_bad_request(tiny_dir):
    eng = engine(tiny_dir)
    out = run(eng, [req("a", tiny_dir, [1] * 1000, 100), req("b", tiny_dir, [], 4), req("c", tiny_dir, [999], 4)])
    assert [out[i]["error"]["code"] for i in "abc"] == ["bad_request"] * 3
    assert "context of 1024" in out["a"]["error"]["message"]
