"""Speculative decoding with an EAGLE-3 drafter in the inference engine, against no drafter, same run.

    .venv/bin/python bench/speculative_decoding.py [--repeats 3] [--new 48] [--models tiny,llama-512x8]
    .venv/bin/python bench/speculative_decoding.py --plain-only --trainer /tmp/old/trainer   # an older engine

Per model (random llama targets: 8 layers × hidden 64, vocab 512; 8 × 512, vocab 32000), float32
on the CPU, greedy:
- the target's greedy continuations of 32 training prompts (the engine without a drafter) train a
  drafter with drafter.py's own functions (ttt_forward over 3 steps + the kl step_loss, AdamW) —
  a stand-in for a spec-draft job, as the trainer does it on its data: the target's own outputs;
- then the same prompts decoded with and without it: 8 held-out prompts and 8 training prompts,
  one stream at a time and 8 streams in one batch, num_speculative_tokens --ks: decode
  tokens/s (after each request's first token), medians of --repeats, as a ratio against no
  drafter; acceptance length = accepted drafts / verify forwards + 1 (what `done` reports). Every
  speculative output is checked to equal the plain one token for token.
--plain-only: only the no-drafter decode rates (to compare the engine's plain path across versions:
--trainer names another checkout's trainer folder). Prints one JSON object per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the trainer does (opentune_trainer/__init__.py)
HERE = os.path.dirname(os.path.abspath(__file__))


def args_() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--models", default="tiny,llama-512x8")
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--ks", default="3", help="num_speculative_tokens values, comma-separated")
    p.add_argument("--plain-only", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--trainer", default=os.path.join(HERE, "..", "trainer"))
    return p.parse_args()


ARGS = args_()
sys.path.insert(0, os.path.abspath(ARGS.trainer))

import torch  # noqa: E402
import transformers  # noqa: E402

from opentune_trainer.inference.engine import Engine, Request  # noqa: E402
from opentune_trainer.inference.offline import Collector, run  # noqa: E402

CPU = torch.device("cpu")
MODELS = {
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
    "llama-512x8": dict(
        vocab_size=32000, hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=4
    ),
}
DRAFT_VOCAB = {"tiny": 128, "llama-512x8": 4096}


def make_target(folder: str, name: str) -> None:
    cfg = transformers.LlamaConfig(**MODELS[name], num_hidden_layers=8, max_position_embeddings=1024)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)


def prompts(n: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 40, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (k,), generator=g).tolist() for k in lengths]


def decode(eng: Engine, ps: list[list[int]], new: int, draft: str | None, k: int | None):
    """All of `ps` in one batch: (outputs, decode tokens/s after each first token, speculative counts)."""
    reqs = [
        Request(id=str(i), weights=eng.weights, adapter_path=None, prompt=p, max_tokens=new, temperature=0.0)
        for i, p in enumerate(ps)
    ]
    if draft:
        for r in reqs:
            r.draft_path, r.num_speculative_tokens = draft, k
    marks: dict[int, float] = {}
    out = run(eng, reqs, on_step=lambda s: marks.setdefault(s, time.perf_counter()))
    end = time.perf_counter()
    tokens = sum(len(out[str(i)]["tokens"]) for i in range(len(ps))) - len(ps)
    spec = [out[str(i)]["done"].get("speculative") for i in range(len(ps))]
    return [out[str(i)]["tokens"] for i in range(len(ps))], tokens / (end - marks[1]), spec


def rate(eng, ps, new, streams, draft=None, k=None):
    """Decode tokens/s over `ps`, `streams` at a time; the outputs and summed speculative counts."""
    outs, time_s, tokens = [], 0.0, 0
    total = {"verifies": 0, "drafted": 0, "accepted": 0}
    for s in range(0, len(ps), streams):
        o, r, spec = decode(eng, ps[s : s + streams], new, draft, k)
        n = sum(len(x) - 1 for x in o)
        outs += o
        tokens += n
        time_s += n / r
        for x in spec:
            for key in total:
                total[key] += x[key] if x else 0
    return outs, tokens / time_s, total


def train_drafter(target: str, sequences: list[list[int]], draft_vocab: int, steps: int, out: str) -> float:
    """A drafter fitted to the target's distribution on its own greedy outputs (seconds taken)."""
    from opentune_trainer import drafter as dr
    from opentune_trainer.checkpoint import load_model, read_config

    t0 = time.perf_counter()
    model = load_model(target, CPU, torch.float32)
    L = model.config.num_hidden_layers
    used = dr.draft_vocabulary(torch.tensor(sum(sequences, [])), model.config.vocab_size, draft_vocab)
    d = dr.Eagle3Drafter(model.config, used)
    dr.init_drafter(d, model.model.embed_tokens.weight.detach(), seed=0)
    opt = torch.optim.AdamW([p for n, p in d.named_parameters() if not n.startswith("embed_tokens.")], lr=3e-3)
    data = []
    with torch.no_grad():
        for s in sequences:
            h, aux = model.features(torch.tensor([s]), capture=dr.aux_layers(L))
            logp, top = dr.target_distribution(h[0], model.lm_head.weight, d.used)
            data.append((torch.tensor(s), torch.cat(aux, -1)[0], logp, top))
    for i in range(steps):
        tokens, aux, logp, top = data[i % len(data)]
        N = len(tokens)
        hs = dr.ttt_forward(d, aux, tokens, torch.arange(N), torch.zeros(N, dtype=torch.long), 3)
        loss = torch.zeros(())
        for k, hk in enumerate(hs):
            t = torch.arange(N - 1 - k)
            p = dr.step_loss(d.logits(hk[t]), logp[t + 1 + k], top[t + 1 + k], d, "kl")
            loss = loss + dr.STEP_WEIGHT**k * p.loss / max(1, p.covered)
        opt.zero_grad()
        loss.backward()
        opt.step()
    raw, _ = read_config(target)
    dr.save_drafter(out, d, raw)
    return time.perf_counter() - t0


def med(xs):
    return statistics.median(xs)


def bench_model(name: str, root: str) -> None:
    target = os.path.join(root, name)
    make_target(target, name)
    eng = Engine(target, CPU, torch.float32, 8, Collector())
    V = MODELS[name]["vocab_size"]
    seen, held = prompts(32, V, 1), prompts(8, V, 2)
    if ARGS.plain_only:
        for streams in (1, 8):
            rate(eng, held, ARGS.new, streams)  # warm-up
            rates = [rate(eng, held, ARGS.new, streams)[1] for _ in range(ARGS.repeats)]
            print(json.dumps({"model": name, "streams": streams, "plain_tok_s": round(med(rates), 1)}), flush=True)
        return
    plain_seen, _, _ = rate(eng, seen, 64, 8)
    train_s = train_drafter(
        target, [p + o for p, o in zip(seen, plain_seen, strict=True)], DRAFT_VOCAB[name], ARGS.train_steps, root + "/d"
    )
    print(json.dumps({"model": name, "drafter_trained_s": round(train_s, 1)}), flush=True)
    for label, ps in (("held-out", held), ("trained-on", seen[:8])):
        for streams in (1, 8):
            base_out, _, _ = rate(eng, ps, ARGS.new, streams)  # warm-up, and the reference outputs
            for k in [int(x) for x in ARGS.ks.split(",")]:
                rate(eng, ps, ARGS.new, streams, root + "/d", k)  # warm-up (loads the drafter once)
                plain, fast, tau = [], [], []
                for _ in range(ARGS.repeats):  # alternate, so a load change hits both alike
                    plain.append(rate(eng, ps, ARGS.new, streams)[1])
                    outs, r, s = rate(eng, ps, ARGS.new, streams, root + "/d", k)
                    assert outs == base_out, "speculative output differs from plain decoding"
                    fast.append(r)
                    tau.append(s["accepted"] / max(1, s["verifies"]) + 1)
                line = {
                    "model": name,
                    "prompts": label,
                    "streams": streams,
                    "k": k,
                    "plain_tok_s": round(med(plain), 1),
                    "spec_tok_s": round(med(fast), 1),
                    "ratio": round(med(fast) / med(plain), 2),
                    "acceptance_length": round(med(tau), 2),
                }
                print(json.dumps(line), flush=True)


def main() -> None:
    if ARGS.threads:  # on a shared VM a 2-thread gemm of a few rows waits for a busy core (docs/benchmarks.md)
        torch.set_num_threads(ARGS.threads)
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "load": os.getloadavg()}))
    with tempfile.TemporaryDirectory() as root:
        for name in ARGS.models.split(","):
            bench_model(name, root)
    print(json.dumps({"load_after": os.getloadavg()}))


if __name__ == "__main__":
    main()
