"""The inference engine against `transformers` `generate`, same weights, same CPU, same run.

    .venv/bin/python bench/inference_engine.py [--repeats 3] [--new 32] [--prompt 32]

Per model (the built-in tiny llama; a random llama with hidden 512, 8 layers, vocab 32000),
float32 on the CPU, greedy, medians of --repeats:
- 1 stream: time to first token, decode tokens/s after it;
- 8 and 32 concurrent streams: aggregate tokens/s. Ours: all requests in one continuous batch
  (they arrive together: one padded prefill, then one decode step per token for all of them).
  transformers: one request after another (a server without continuous batching), and, for
  reference, one batched `generate` over all of them (equal prompt lengths: no padding waste);
- memory: the engine serving 10 LoRA adapters (r=16, every linear) of the 512-wide model against
  one base + 10 adapters' sizes and 10 merged copies; RSS growth while the adapters load.
Prints one JSON object per measurement, then a table.
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
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer"))

import torch  # noqa: E402
import transformers  # noqa: E402

from opentune_trainer import checkpoint  # noqa: E402
from opentune_trainer.inference.engine import Engine, Request  # noqa: E402
from opentune_trainer.inference.offline import Collector, run  # noqa: E402
from opentune_trainer.lora import apply_lora  # noqa: E402
from opentune_trainer.tiny import init_tiny  # noqa: E402

CPU = torch.device("cpu")


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make_models(root: str) -> dict[str, str]:
    tiny = os.path.join(root, "tiny")
    init_tiny(tiny)
    cfg = transformers.LlamaConfig(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    big = os.path.join(root, "llama-512x8")
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(big)
    return {"tiny": tiny, "llama-512x8": big}


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, min(vocab, 256), (length,), generator=g).tolist() for _ in range(n)]


def ours(eng: Engine, ps: list[list[int]], new: int) -> tuple[float, float, int]:
    """(time to first token, total time, tokens) for all prompts joining at once."""
    reqs = [
        Request(id=str(i), weights=eng.weights, adapter_path=None, prompt=p, max_tokens=new) for i, p in enumerate(ps)
    ]
    first = []
    t0 = time.perf_counter()
    out = run(eng, reqs, on_step=lambda s: first.append(time.perf_counter()) if s == 1 else None)
    total = time.perf_counter() - t0
    ttft = (first[0] if first else time.perf_counter()) - t0  # step 0 emits every first token
    eng.emit.lines.clear()
    return ttft, total, sum(len(r["tokens"]) for r in out.values())


def hf_generate(model, ps: list[list[int]], new: int) -> float:
    x = torch.tensor(ps)
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    return time.perf_counter() - t0


def bench_model(name: str, folder: str, repeats: int, new: int, plen: int) -> list[dict]:
    eng = Engine(folder, CPU, torch.float32, 32, Collector())
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None
    vocab = eng.cfg.vocab_size
    rows = []
    # warm-up both (first-call allocations, lazy inits)
    ours(eng, prompts(2, plen, vocab, 99), 4)
    hf_generate(hf, prompts(1, plen, vocab, 99), 4)

    p1 = prompts(1, plen, vocab, 0)
    o_ttft, o_dec, h_ttft, h_dec = [], [], [], []
    for _ in range(repeats):
        ttft, total, n = ours(eng, p1, new)
        o_ttft.append(ttft)
        o_dec.append((n - 1) / (total - ttft))
        t1 = hf_generate(hf, p1, 1)
        tn = hf_generate(hf, p1, new)
        h_ttft.append(t1)
        h_dec.append((new - 1) / (tn - t1))
    rows.append(
        dict(
            model=name,
            streams=1,
            ours_ttft_ms=1e3 * statistics.median(o_ttft),
            hf_ttft_ms=1e3 * statistics.median(h_ttft),
            ours_decode_tps=statistics.median(o_dec),
            hf_decode_tps=statistics.median(h_dec),
        )
    )
    for streams in (8, 32):
        ps = prompts(streams, plen, vocab, streams)
        o, hs, hb = [], [], []
        for _ in range(repeats):
            _, total, n = ours(eng, ps, new)
            o.append(n / total)
            hs.append(streams * new / sum(hf_generate(hf, [p], new) for p in ps))
            hb.append(streams * new / hf_generate(hf, ps, new))
        rows.append(
            dict(
                model=name,
                streams=streams,
                ours_tps=statistics.median(o),
                hf_sequential_tps=statistics.median(hs),
                hf_batched_tps=statistics.median(hb),
            )
        )
    for r in rows:
        r["packed_linears"] = eng.packed  # oneDNN pre-packed weights (inference/packed.py)
        print(json.dumps(r), flush=True)
    return rows


def bench_adapters(root: str, folder: str, n: int = 10, r: int = 16) -> dict:
    paths = []
    for i in range(n):
        m = checkpoint.load_model(folder, "cpu", torch.float32)
        apply_lora(m, r=r, alpha=2 * r, dropout=0.0)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("lora_B.weight"):
                    p.normal_(0, 0.01)
        paths.append(os.path.join(root, f"adapter-{i}"))
        checkpoint.save_adapter(paths[-1], m, r, 2 * r, 0.0, folder)
        del m
    eng = Engine(folder, CPU, torch.float32, 32, Collector())
    base = eng.param_bytes()
    before = rss()
    reqs = [
        Request(id=str(i), weights=folder, adapter_path=p, prompt=[1, 2, 3, 4], max_tokens=4)
        for i, p in enumerate(paths)
    ]
    run(eng, reqs)  # all 10 in one batch
    adapters = sum(a.nbytes() for a in eng.adapters.values())
    files = sum(os.path.getsize(os.path.join(p, "adapter_model.safetensors")) for p in paths)
    row = dict(
        model="llama-512x8",
        adapters=n,
        r=r,
        base_mb=base / 1e6,
        adapters_in_memory_mb=adapters / 1e6,
        adapter_files_mb=files / 1e6,
        engine_params_mb=(base + adapters) / 1e6,
        one_base_plus_files_mb=(base + files) / 1e6,
        ten_merged_copies_mb=n * base / 1e6,
        rss_growth_mb=(rss() - before) / 1e6,
        kv_cache_mb=eng.cache.nbytes() / 1e6,
    )
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)  # medians of this many
    ap.add_argument("--new", type=int, default=32)  # tokens generated per request
    ap.add_argument("--prompt", type=int, default=32)  # prompt tokens per request
    ap.add_argument("--models", default="tiny,llama-512x8")
    args = ap.parse_args()
    print(
        json.dumps(
            dict(torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads())
        )
    )
    with tempfile.TemporaryDirectory() as root:
        folders = make_models(root)
        rows = []
        for name in args.models.split(","):
            rows += bench_model(name, folders[name], args.repeats, args.new, args.prompt)
        mem = bench_adapters(root, folders["llama-512x8"])
    print("\n| model | streams | opentune | transformers (one after another) | ratio | transformers batched generate |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        m = r["model"]
        if r["streams"] == 1:
            o, h = r["ours_ttft_ms"], r["hf_ttft_ms"]
            print(f"| {m} | 1: time to first token | {o:.1f} ms | {h:.1f} ms | {h / o:.2f}× faster | |")
            o, h = r["ours_decode_tps"], r["hf_decode_tps"]
            print(f"| {m} | 1: decode | {o:.0f} tok/s | {h:.0f} tok/s | {o / h:.2f}× | |")
        else:
            o, h, b = r["ours_tps"], r["hf_sequential_tps"], r["hf_batched_tps"]
            print(f"| {m} | {r['streams']} | {o:.0f} tok/s | {h:.0f} tok/s | {o / h:.2f}× | {b:.0f} tok/s |")
    print(f"\nmemory, 10 adapters r=16: {json.dumps(mem)}")


if __name__ == "__main__":
    main()
