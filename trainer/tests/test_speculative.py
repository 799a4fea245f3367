"""Speculative decoding with an EAGLE-3 drafter in the engine (inference/speculative.py), on the CPU:

    cd trainer && python3 -m pytest -q tests/test_speculative.py

A tiny random target (8 layers, hidden 64, vocabulary 512) and two drafters over a 128-token draft
vocabulary: one random, one trained for a few hundred optimizer steps on the target's own greedy
outputs (drafter.ttt_forward + step_loss). Greedy outputs with either drafter are token for token
those without one, whatever the prompt length, num_speculative_tokens, stop ids and max_tokens
(also when max_tokens or a stop id falls inside an accepted chain), in batches mixing speculative,
plain and sampled rows joining at different steps; the trained drafter's drafts are accepted.
"""

import json
import os

import pytest
import torch

from opentune_trainer import drafter as dr
from opentune_trainer.checkpoint import load_model, read_config
from opentune_trainer.inference.engine import Engine, Request
from opentune_trainer.inference.offline import Collector, run
from opentune_trainer.inference.server import parse_generate

CPU = torch.device("cpu")
V = 512


def make_target(folder):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).float()
    with torch.no_grad():  # larger weights: a peakier distribution, closer to a trained model's
        for n, p in model.named_parameters():
            if n.endswith("proj.weight"):
                p.mul_(3.0)
    model.save_pretrained(str(folder))


def req(rid, folder, prompt, n=16, **kw):
    return Request(id=rid, weights=str(folder), adapter_path=None, prompt=prompt, max_tokens=n, **kw)


def prompts(seed, lengths):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


def new_drafter(target_dir, used):
    model = load_model(str(target_dir), CPU, torch.float32)
    d = dr.Eagle3Drafter(model.config, used)
    dr.init_drafter(d, model.model.embed_tokens.weight.detach(), seed=3)
    return model, d


def save(d, target_dir, out, steps=None):
    raw, _ = read_config(str(target_dir))
    dr.save_drafter(str(out), d, raw)
    if steps is not None:
        path = os.path.join(out, "config.json")
        with open(path) as f:
            c = json.load(f)
        c["num_speculative_tokens"] = steps
        with open(path, "w") as f:
            json.dump(c, f)
    return str(out)


def train_drafter(model, d, sequences, steps=300, K=3):
    """The drafter fitted to the target's distribution on `sequences` (its own greedy outputs)."""
    L = model.config.num_hidden_layers
    opt = torch.optim.AdamW([p for n, p in d.named_parameters() if not n.startswith("embed_tokens.")], lr=3e-3)
    data = []
    with torch.no_grad():
        for s in sequences:
            tokens = torch.tensor([s])
            h, aux = model.features(tokens, capture=dr.aux_layers(L))
            logp, top = dr.target_distribution(h[0], model.lm_head.weight, d.used)
            data.append((tokens[0], torch.cat(aux, -1)[0], logp, top))
    for i in range(steps):
        tokens, aux, logp, top = data[i % len(data)]
        N = len(tokens)
        pos, doc = torch.arange(N), torch.zeros(N, dtype=torch.long)
        hs = dr.ttt_forward(d, aux, tokens, pos, doc, K)
        loss = 0.0
        for k, hk in enumerate(hs):
            t = torch.arange(N - 1 - k)
            p = dr.step_loss(d.logits(hk[t]), logp[t + 1 + k], top[t + 1 + k], d, "kl")
            loss = loss + dr.STEP_WEIGHT**k * p.loss / max(1, p.covered)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return d


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Target folder, a random drafter folder, a trained drafter folder, and the plain engine's
    greedy continuations the trained one learnt from."""
    root = tmp_path_factory.mktemp("spec")
    target = root / "target"
    make_target(target)
    plain = Engine(str(target), CPU, torch.float32, 8, Collector())
    seeds = prompts(11, [4, 7, 10, 13] * 6)
    out = run(plain, [req(str(i), target, p, 40) for i, p in enumerate(seeds)])
    sequences = [p + out[str(i)]["tokens"] for i, p in enumerate(seeds)]
    used = dr.draft_vocabulary(torch.tensor(sum(sequences, [])), V, 128)
    model, d = new_drafter(target, used)
    random_dir = save(d, target, root / "random", steps=4)
    model, d = new_drafter(target, used)
    trained_dir = save(train_drafter(model, d, sequences), target, root / "trained")
    return target, random_dir, trained_dir


def engine(target, max_batch=8):
    return Engine(str(target), CPU, torch.float32, max_batch, Collector())


def plain_tokens(target, requests):
    out = run(engine(target), requests)
    return {k: (v["tokens"], v["done"]["finish_reason"]) for k, v in out.items()}


def with_draft(requests, folder, **kw):
    for r in requests:
        r.draft_path = folder
        for k, v in kw.items():
            setattr(r, k, v)
    return requests


@pytest.mark.parametrize("which", ["random", "trained"])
@pytest.mark.parametrize("steps", [None, 1, 5])
def test_greedy_identical_with_and_without_drafter(setup, which, steps):
    target, random_dir, trained_dir = setup
    folder = random_dir if which == "random" else trained_dir
    ps = prompts(5, [1, 3, 9, 24, 60])
    ns = [20, 1, 2, 33, 17]
    make = lambda: [req(str(i), target, p, n) for i, (p, n) in enumerate(zip(ps, ns, strict=True))]  # noqa: E731
    want = plain_tokens(target, make())
    eng = engine(target)
    out = run(eng, with_draft(make(), folder, num_speculative_tokens=steps))
    for i in range(len(ps)):
        got = out[str(i)]
        assert (got["tokens"], got["done"]["finish_reason"]) == want[str(i)], i
        assert len(got["tokens"]) == ns[i]
        spec = got["done"]["speculative"]
        k = steps or (4 if which == "random" else 3)  # the random one's config says 4
        assert spec["drafted"] <= k * spec["verifies"]
        if ns[i] > 2:  # the first token comes from the prefill, the last needs no draft
            assert spec["verifies"] >= 1
    if which == "trained":
        assert sum(out[str(i)]["done"]["speculative"]["accepted"] for i in range(len(ps))) > 0
        # several tokens for one id in one step's `tokens` line
        assert any(len(set(out[str(i)]["steps"])) < len(out[str(i)]["steps"]) for i in range(len(ps)))


def test_trained_drafter_is_accepted_often(setup):
    """On continuations of the prompts it was trained on: acceptance length well above 1."""
    target, _, trained = setup
    ps = prompts(11, [4, 7, 10, 13])
    out = run(engine(target), with_draft([req(str(i), target, p, 40) for i, p in enumerate(ps)], trained))
    s = [out[str(i)]["done"]["speculative"] for i in range(len(ps))]
    tau = sum(x["accepted"] for x in s) / sum(x["verifies"] for x in s) + 1
    print("acceptance length", tau, s)
    assert tau > 1.5, s


def test_stop_ids_and_max_tokens_inside_an_accepted_chain(setup):
    """Stop ids and max_tokens cut a chain where they fall: never a token past either."""
    target, _, trained = setup
    ps = prompts(11, [4, 7, 10, 13])
    full = plain_tokens(target, [req(str(i), target, p, 40) for i, p in enumerate(ps)])
    for cut in (2, 3, 5, 8, 13):
        reqs = [req(str(i), target, p, cut) for i, p in enumerate(ps)]
        out = run(engine(target), with_draft(reqs, trained, num_speculative_tokens=6))
        for i in range(len(ps)):
            assert out[str(i)]["tokens"] == full[str(i)][0][:cut]
            assert out[str(i)]["done"]["completion_tokens"] == cut
        for i in range(len(ps)):  # stop at the cut-th token (its first occurrence)
            toks = full[str(i)][0]
            stop = toks[cut - 1]
            first = toks.index(stop)
            got = run(engine(target), with_draft([req("s", target, ps[i], 40, stop_ids=frozenset({stop}))], trained))
            assert got["s"]["tokens"] == toks[: first + 1]
            assert got["s"]["done"]["finish_reason"] == "stop"


def test_mixed_batch_joining_at_different_steps(setup):
    """Speculative rows (two drafters, different steps), plain rows and a sampled row with a
    drafter (which falls back to plain decoding) in one batch, joining at different steps, some
    finishing and being replaced: each row's tokens are those of the row decoded alone."""
    target, random_dir, trained = setup
    ps = prompts(7, [5, 11, 2, 30, 8, 16, 4])
    ns = [25, 9, 30, 12, 3, 20, 15]
    drafts = [trained, None, random_dir, trained, trained, None, trained]
    temps = [0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.7]
    ks = [2, None, 3, 6, None, None, 4]

    def make(with_drafts):
        out = []
        for i in range(len(ps)):
            r = req(str(i), target, ps[i], ns[i], temperature=temps[i], seed=100 + i)
            if with_drafts and drafts[i]:
                r.draft_path, r.num_speculative_tokens = drafts[i], ks[i]
            out.append(r)
        return out

    alone = {str(i): run(engine(target), [r])[str(i)]["tokens"] for i, r in enumerate(make(False))}
    eng = engine(target, max_batch=4)  # fewer slots than rows: some wait, then take freed slots
    out = run(eng, make(True), join_at=[0, 0, 1, 2, 2, 5, 9])
    for i in range(len(ps)):
        assert out[str(i)]["tokens"] == alone[str(i)], i
        assert ("speculative" in out[str(i)]["done"]) == (drafts[i] is not None and temps[i] == 0)
    assert not eng.rows and not eng._verified


def test_draft_chain_is_the_training_time_test(setup):
    """The engine's chain reads what training taught: at every position of a target-generated
    sequence, its first draft is ttt_forward's step-0 prediction there, and while its drafts are the
    true tokens, draft k+1 is step k's prediction (the same keys, positions and tokens)."""
    from types import SimpleNamespace

    from opentune_trainer.inference import speculative as spec
    from opentune_trainer.inference.kv_cache import KVCache

    target, _, trained = setup
    model = load_model(str(target), CPU, torch.float32)
    d = spec.load(trained, model, CPU, torch.float32).module
    p = prompts(11, [7])[0]
    seq = p + plain_tokens(target, [req("a", target, p, 40)])["a"][0]
    tokens = torch.tensor(seq)
    N, L = len(seq), model.config.num_hidden_layers
    with torch.no_grad():
        _, aux = model.features(tokens[None], capture=dr.aux_layers(L))
        aux = torch.cat(aux, -1)[0]
        hs = dr.ttt_forward(d, aux, tokens, torch.arange(N), torch.zeros(N, dtype=torch.long), 4)
    want = [(d.logits(h).argmax(-1) + d.d2t[d.logits(h).argmax(-1)]).tolist() for h in hs]  # [step][t]
    cache = KVCache(1, model.config.num_key_value_heads, model.config.head_dim, 1, 256, CPU, torch.float32)
    cache.ensure(1, 256, [])
    chained = 0
    for n in range(2, N - 5):  # the target has fed seq[:n]; seq[n] is its next token
        row = SimpleNamespace(seq=seq[: n + 1], length=n, dlen=0, feat=aux[:n])
        got = spec.draft(d, cache, [0], [row], [4])[0]
        assert got[0] == want[0][n - 1], n
        for k in range(1, 4):
            if got[k - 1] != seq[n + k]:  # a wrong draft: later steps read another token than training did
                break
            assert got[k] == want[k][n - 1], (n, k)
            chained += 1
    assert chained > 0


def test_rows_joining_a_running_speculative_batch(setup):
    """Two speculative rows run, then six more join (the drafters' cache grows its slots while the
    first two keep their keys): every row as it decodes alone without a drafter."""
    target, _, trained = setup
    ps = prompts(13, [6, 9, 12, 5, 20, 3, 8, 15])
    want = plain_tokens(target, [req(str(i), target, p, 24) for i, p in enumerate(ps)])
    out = run(
        engine(target),
        with_draft([req(str(i), target, p, 24) for i, p in enumerate(ps)], trained),
        join_at=[0, 0, 3, 3, 3, 4, 4, 6],
    )
    for i in range(len(ps)):
        assert out[str(i)]["tokens"] == want[str(i)][0], i


def test_memory_counts_the_drafter_and_its_cache(setup, tmp_path):
    target, random_dir, trained = setup
    eng = engine(target)
    before = eng.nbytes()
    run(eng, with_draft([req("a", target, [1, 2, 3], 8)], trained))
    d = eng.drafters[trained]
    assert eng.nbytes() >= before + d.nbytes() + eng.draft_cache.nbytes()
    assert d.nbytes() > 0 and eng.draft_cache.nbytes() > 0
    assert eng.drop_adapters(1 << 40) >= d.nbytes()
    assert not eng.drafters and eng.draft_cache is None
    # loaded once, then reused; reloaded when the folder is rewritten
    logs = lambda: [x for x in eng.emit.lines if x["type"] == "log" and "drafter" in x["message"]]  # noqa: E731
    run(eng, with_draft([req("b", target, [1, 2, 3], 8)], trained))
    run(eng, with_draft([req("c", target, [1, 2, 3], 8)], trained))
    assert len(logs()) == 2
    st = os.stat(os.path.join(trained, "model.safetensors"))
    os.utime(os.path.join(trained, "model.safetensors"), (st.st_atime, st.st_mtime + 5))
    run(eng, with_draft([req("d", target, [1, 2, 3], 8)], trained))
    assert len(logs()) == 3


def test_memory_pressure_while_admitting_speculative_rows(setup):
    """Loading a second drafter unloads the first while a request that uses it waits for its
    prefill (make_room drops everything idle): both rows still decode as without drafters."""
    target, random_dir, trained = setup
    ps = prompts(17, [5, 9])
    want = plain_tokens(target, [req(str(i), target, p, 20) for i, p in enumerate(ps)])
    eng = engine(target)
    reqs = [req("0", target, ps[0], 20, draft_path=trained), req("1", target, ps[1], 20, draft_path=random_dir)]
    out = run(eng, reqs, make_room=lambda n: eng.drop_adapters(1 << 40))
    for i in range(2):
        assert out[str(i)]["tokens"] == want[str(i)][0]
        assert out[str(i)]["done"]["speculative"]["verifies"] > 0


def test_bad_drafters_are_model_errors(setup, tmp_path):
    target, random_dir, _ = setup
    eng = engine(target)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    c = json.loads(open(os.path.join(random_dir, "config.json")).read())
    (wrong / "config.json").write_text(json.dumps({**c, "vocab_size": 1000}))
    out = run(
        eng, [req("x", target, [1, 2], 4, draft_path=str(other)), req("y", target, [1, 2], 4, draft_path=str(wrong))]
    )
    assert out["x"]["error"]["code"] == "model_error" and "not an EAGLE-3 drafter" in out["x"]["error"]["message"]
    assert out["y"]["error"]["code"] == "model_error" and "vocab_size" in out["y"]["error"]["message"]


def test_request_line_fields():
    base = {"op": "generate", "id": "a", "model": {"weights": "/w"}, "prompt": [1]}
    r = parse_generate({**base, "draft": "/d", "num_speculative_tokens": 4})
    assert r.draft_path == "/d" and r.num_speculative_tokens == 4
    assert parse_generate(base).draft_path is None
    for bad in ({"num_speculative_tokens": 0}, {"num_speculative_tokens": 11}, {"draft": 3}, {"draft": ""}):
        with pytest.raises(ValueError):
            parse_generate({**base, **bad})
