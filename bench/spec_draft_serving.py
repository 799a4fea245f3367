"""A drafter from the spec-draft trainer, served: in our engine, and in vLLM where it imports.

    PYTHONPATH=trainer:bench .venv/bin/python bench/spec_draft_serving.py [WORKDIR] [--repeats 3]

Trains, through the trainer's CLI on whatever device there is: an 8-layer tiny model fully
fine-tuned on chat data (a target whose distribution is learnt), then an EAGLE-3 drafter for it
(spec-draft, kl, `regenerate_responses`: trained on the target's own answers). Then:
- our engine (trainer/opentune_trainer/inference): held-out chat prompts decoded greedily with and
  without the drafter, one stream, runs alternating: decode tokens/s (medians) and the measured
  acceptance length (accepted drafts / verify forwards + 1, from `done`), the outputs asserted equal;
- vLLM, where `vllm` imports (a GPU machine; issue 16's check): the target alone and with the
  drafter (`speculative_config={"method": "eagle3", …}`): whether the outputs agree, vLLM's
  draft/accepted counts and mean acceptance length. Without vLLM it says so (the layout is still
  checked against vLLM's loader by trainer/tests/test_drafter.py).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(os.path.dirname(HERE), "trainer")
sys.path[:0] = [TRAINER, os.path.join(TRAINER, "tests")]

from helpers import chat_doc, chat_docs, make_spec, write_split  # noqa: E402
from opentune_trainer import safetensors_io as st  # noqa: E402
from opentune_trainer import tiny  # noqa: E402
from opentune_trainer.model import LlamaForCausalLM, ModelConfig, init_weights  # noqa: E402


def cli(spec: str) -> list[dict]:
    p = subprocess.run(
        [sys.executable, "-m", "opentune_trainer", "train", "--spec", spec],
        cwd=TRAINER,
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        raise SystemExit(f"trainer exit {p.returncode}: {p.stderr[-2000:]}")
    return [json.loads(line) for line in p.stdout.splitlines()]


def last_checkpoint(lines: list[dict]) -> dict:
    return [m for m in lines if m["type"] == "checkpoint"][-1]


def eight_layer_tiny(out: str) -> None:
    """The tiny model with 8 layers instead of 4: vLLM and SGLang capture each of the drafter's
    feature layers (2, L/2, L-3) once, so they need three distinct ones (L ≥ 7)."""
    tiny.init_tiny(out)
    path = os.path.join(out, "config.json")
    cfg = {**json.load(open(path)), "num_hidden_layers": 8}
    json.dump(cfg, open(path, "w"), indent=2)
    model = LlamaForCausalLM(ModelConfig.from_hf(cfg))
    init_weights(model, 0)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    st.save(sd, os.path.join(out, "model.safetensors"))


def train(work: str) -> tuple[str, str, dict]:
    eight_layer_tiny(os.path.join(work, "base"))
    write_split(os.path.join(work, "train"), chat_docs(128, seed=1))
    write_split(os.path.join(work, "valid"), chat_docs(32, seed=2), packing=True, split="valid")
    os.makedirs(os.path.join(work, "sft"), exist_ok=True)
    spec = make_spec(
        os.path.join(work, "sft"),
        os.path.join(work, "base"),
        os.path.join(work, "train"),
        None,
        lora=False,
        learning_rate=3e-3,
        n_epochs=3,
        batch_size=8,
    )
    spec_json = json.load(open(spec))
    json.dump({**spec_json, "device": "auto"}, open(spec, "w"))
    target = last_checkpoint(cli(spec))["dir"]
    draft_dir = os.path.join(work, "draft")
    os.makedirs(draft_dir, exist_ok=True)
    hp = {"batch_size": 8, "learning_rate": 1e-2, "n_epochs": 3, "draft_vocab_size": 128, "regenerate_responses": True}
    draft_spec = {
        **spec_json,
        "device": "auto",
        "method": "spec-draft",
        "model_dir": target,
        "valid_data": os.path.join(work, "valid"),
        "output_dir": os.path.join(draft_dir, "out"),
        "hyperparameters": hp,
    }
    path = os.path.join(draft_dir, "spec.json")
    json.dump(draft_spec, open(path, "w"))
    ckpt = last_checkpoint(cli(path))
    return target, ckpt["dir"], ckpt["metrics"]


STOPS = frozenset({tiny.EOT})  # the fine-tuned target ends its answers there


def prompts() -> list[list[int]]:
    """Held-out chat prompts, up to the assistant header: words the training data never asks for."""
    words = ("mango", "ocean", "pencil", "violet", "window", "rocket", "garden", "silver")
    return [chat_doc(f"Say {w}.", "x")[0][:-2] for w in words]


def engine_run(target: str, drafter: str, repeats: int) -> dict:
    """Our engine, one stream, greedy: tokens/s with and without the drafter and the acceptance length."""
    import torch

    from opentune_trainer.inference.engine import Engine, Request
    from opentune_trainer.inference.offline import Collector, run

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    eng = Engine(target, device, torch.float32, 1, Collector())

    def once(draft: str | None) -> tuple[list[list[int]], float, dict]:
        outs, tokens, seconds, counts = [], 0, 0.0, {"verifies": 0, "accepted": 0}
        for p in prompts():
            r = Request(id="r", weights=target, adapter_path=None, prompt=p, max_tokens=48, stop_ids=STOPS)
            r.draft_path = draft
            marks: dict[int, float] = {}
            out = run(eng, [r], on_step=lambda s, m=marks: m.setdefault(s, time.perf_counter()))["r"]
            seconds += time.perf_counter() - marks.get(1, time.perf_counter())
            tokens += len(out["tokens"]) - 1
            outs.append(out["tokens"])
            for k in counts:
                counts[k] += (out["done"].get("speculative") or {}).get(k, 0)
        return outs, tokens / seconds, counts

    base, _, _ = once(None)
    once(drafter)  # warm-up: loads the drafter
    plain, fast, counts = [], [], {}
    for _ in range(repeats):  # alternating, so a change of load hits both alike
        plain.append(once(None)[1])
        outs, rate, counts = once(drafter)
        assert outs == base, "speculative output differs from plain decoding"
        fast.append(rate)
    p, f = statistics.median(plain), statistics.median(fast)
    return {
        "device": device.type,
        "plain_tok_s": round(p, 1),
        "drafter_tok_s": round(f, 1),
        "ratio": round(f / p, 2),
        "acceptance_length": round(counts["accepted"] / max(1, counts["verifies"]) + 1, 2),
    }


def spec_counts(llm) -> dict[str, float]:
    """vLLM's speculative-decoding counters (v1 `get_metrics`), by name."""
    out: dict[str, float] = {}
    for m in llm.get_metrics():
        if "spec_decode" in m.name and hasattr(m, "value"):
            out[m.name] = float(m.value)
    return out


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("work", nargs="?", default=None)
    args.add_argument("--repeats", type=int, default=3)
    a = args.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="spec-draft-serving-")
    t0 = time.time()
    target, drafter, metrics = train(work)
    result: dict = {
        "check": "spec-draft-serving",
        "train_s": round(time.time() - t0, 1),
        "simulated_acceptance_length": metrics.get("valid_acceptance_length"),
        "engine": engine_run(target, drafter, a.repeats),
    }
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        print(json.dumps({**result, "vllm": f"not importable ({e}): unverified"}))
        return
    params = SamplingParams(temperature=0.0, max_tokens=32)
    common = dict(enforce_eager=True, gpu_memory_utilization=0.25, max_model_len=1024, skip_tokenizer_init=True)
    plain = LLM(model=target, **common)
    want = [o.outputs[0].token_ids for o in plain.generate([{"prompt_token_ids": p} for p in prompts()], params)]
    del plain
    spec = {"method": "eagle3", "model": drafter, "num_speculative_tokens": 3}
    llm = LLM(model=target, speculative_config=spec, **common)
    got = [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in prompts()], params)]
    counts = spec_counts(llm)
    drafts = next((v for k, v in counts.items() if "num_draft_tokens" in k), None)
    accepted = next((v for k, v in counts.items() if "num_accepted_tokens" in k and "per_pos" not in k), None)
    drafted_steps = next((v for k, v in counts.items() if "num_drafts" in k), None)
    result.update(
        vllm="loaded",
        outputs_equal=[list(a) for a in want] == [list(b) for b in got],
        counters=counts,
        acceptance_rate=accepted / drafts if drafts else None,
        mean_acceptance_length=1 + accepted / drafted_steps if drafted_steps and accepted is not None else None,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
