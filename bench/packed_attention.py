"""Packed rows: padding-free attention (ours) against the former dense-mask SDPA, in one run.

    .venv/bin/python bench/packed_attention.py [--seq 8192] [--doc 512] [--reps 5] [--device cpu|cuda]
        [--heads H --kv-heads KV --head-dim D]

A packed row of `--seq` tokens holds documents of about `--doc` tokens (uniform in ±50%). Each
path runs one layer's attention forward and backward on that row: Llama-3-8B-shaped on CUDA (32
query heads, 8 kv heads, head_dim 128), 4/2/64 on the CPU by default (the masked path's T² would
take minutes a repetition there):

- `masked_sdpa`: what packed rows took before (attention.make_mask + attention.masked_attend: a
  [1, 1, T, T] block-diagonal mask, kv heads expanded, SDPA);
- ours, each kernel this device has (attention.pack_layout + attention.attend): `sdpa` (causal SDPA
  per document) everywhere, `flex` and `varlen` on CUDA.

Prints one JSON line per path (median seconds of forward+backward, peak memory: CUDA's allocator
peak, or on the CPU the process's peak RSS growth, measured in a fresh subprocess per path so one
path's peak does not hide another's) and the ratios against masked_sdpa. Not part of npm test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "trainer"))


def lengths(seq: int, doc: int, seed: int = 0) -> list[int]:
    rng, out = random.Random(seed), []
    while sum(out) < seq:
        out.append(min(rng.randint(doc // 2, doc * 3 // 2), seq - sum(out)))
    return out


def one_path(path: str, seq: int, doc: int, reps: int, device: str, heads: tuple[int, int, int]) -> dict:
    import resource

    import torch

    from opentune_trainer import attention

    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # one thread: two on a shared 2-core machine wait on each other
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    lens = lengths(seq, doc)
    H, KV, HD = heads
    g = torch.Generator(device=dev).manual_seed(0)
    q = torch.randn(1, H, seq, HD, device=dev, dtype=dtype, generator=g, requires_grad=True)
    k, v = (torch.randn(1, KV, seq, HD, device=dev, dtype=dtype, generator=g, requires_grad=True) for _ in "kv")
    if path != "masked_sdpa":
        attention.FORCED = path  # this kernel, whatever auto would pick

    def step():
        if path == "masked_sdpa":
            doc = torch.repeat_interleave(torch.arange(len(lens), device=dev), torch.tensor(lens, device=dev))[None]
            y = attention.masked_attend(q, k, v, attention.make_mask(doc, seq, None, dev))
        else:
            y = attention.attend(q, k, v, attention.pack_layout(lens, None, dev, dtype))
        y.float().square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (flex compiles here)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"path": path, "seconds": round(statistics.median(times), 4), "peak_mib": round(peak, 1), "docs": len(lens)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--doc", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--head-dim", type=int)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # the child: run this path only
    a = ap.parse_args()
    cuda = a.device == "cuda"
    heads = (a.heads or (32 if cuda else 4), a.kv_heads or (8 if cuda else 2), a.head_dim or (128 if cuda else 64))
    if a.one:
        print(json.dumps(one_path(a.one, a.seq, a.doc, a.reps, a.device, heads)))
        return
    shape = dict(zip(("heads", "kv_heads", "head_dim"), heads, strict=True))
    print(json.dumps({"seq": a.seq, "doc": a.doc, "reps": a.reps, "device": a.device, **shape}), flush=True)
    paths = ["masked_sdpa", "sdpa"] + (["flex", "varlen"] if cuda else [])
    results = []
    for p in paths:
        cmd = [sys.executable, __file__, "--one", p, "--seq", str(a.seq), "--doc", str(a.doc), "--reps", str(a.reps)]
        cmd += [
            "--device",
            a.device,
            "--heads",
            str(heads[0]),
            "--kv-heads",
            str(heads[1]),
            "--head-dim",
            str(heads[2]),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            r = {"path": p, "error": (out.stderr.strip().splitlines() or ["failed"])[-1][:300]}
        else:
            r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(json.dumps(r), flush=True)
    ref = results[0]
    for r in results[1:]:
        if "error" not in r and "error" not in ref:
            ratio = {"speedup": round(ref["seconds"] / r["seconds"], 2)}
            ratio["memory_ratio"] = round(r["peak_mib"] / ref["peak_mib"], 3) if ref["peak_mib"] > 0 else None
            print(json.dumps({"path": r["path"], "vs": "masked_sdpa", **ratio}))


if __name__ == "__main__":
    main()
