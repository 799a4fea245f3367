"""Test helpers: token shards written in Python (no TypeScript pipeline), tiny chat data, specs."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Sequence

from opentune_trainer import tiny

TRAINER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Doc = tuple[list[int], list[int]]  # (tokens, targets)
# the API's Metrics keys every checkpoint carries (docs/metrics.md)
SEVEN = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)


def chat_doc(user: str, assistant: str) -> Doc:
    """A Llama-3-template chat example, tokenized like the tiny tokenizer (bytes + specials), with
    loss on the assistant reply and its <|eot_id|>. Targets are pre-shifted (targets[i] = tokens[i+1])."""

    def header(role):
        return [tiny.HEADER_START] + tiny.encode(role) + [tiny.HEADER_END] + tiny.encode("\n\n")

    prompt = [tiny.BOS] + header("user") + tiny.encode(user) + [tiny.EOT] + header("assistant")
    answer = tiny.encode(assistant) + [tiny.EOT]
    tokens = prompt + answer
    trained = [False] * len(prompt) + [True] * len(answer)
    targets = [tokens[i + 1] if trained[i + 1] else -100 for i in range(len(tokens) - 1)] + [-100]
    return tokens, targets


def chat_docs(n: int, seed: int = 0) -> list[Doc]:
    """n short question/answer pairs with a learnable pattern (the answer repeats a word)."""
    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "house"]
    out = []
    for _ in range(n):
        w = rng.choice(words)
        out.append(chat_doc(f"Say {w}.", f"{w} {w}!"))
    return out


def pack(docs: Sequence[Doc], seq_len: int, packing: bool) -> list[list[int]]:
    """Rows as lists of document indices (first-fit in order when packing)."""
    if not packing:
        return [[i] for i in range(len(docs))]
    rows, used = [], []
    for i, (t, _) in enumerate(docs):
        for r, u in enumerate(used):
            if u + len(t) <= seq_len:
                rows[r].append(i)
                used[r] += len(t)
                break
        else:
            rows.append([i])
            used.append(len(t))
    return rows


def write_split(
    path: str,
    docs: Sequence[Doc],
    seq_len: int = 1024,
    packing: bool = False,
    vocab_size: int = tiny.VOCAB_SIZE,
    split: str = "train",
    shards: int = 1,
    rows: list[list[int]] | None = None,
) -> None:
    """Write docs as token shards in the trainer-protocol format (§1)."""
    os.makedirs(path, exist_ok=True)
    rows = rows or pack(docs, seq_len, packing)
    per = -(-len(rows) // shards)
    entries = []
    for s in range(shards):
        part = rows[s * per : (s + 1) * per]
        name = f"{split}-{s:05d}"
        order = [i for row in part for i in row]
        toks = [t for i in order for t in docs[i][0]]
        tgts = [y for i in order for y in docs[i][1]]
        for suffix, values in (
            ("tokens", toks),
            ("targets", tgts),
            ("docs", [len(docs[i][0]) for i in order]),
            ("rows", [len(r) for r in part]),
        ):
            _write_int32(os.path.join(path, f"{name}.{suffix}.bin"), values)
        entries.append(
            {
                "name": name,
                "rows": len(part),
                "docs": len(order),
                "tokens": len(toks),
                "loss_tokens": sum(y != -100 for y in tgts),
            }
        )
    manifest = {
        "format": "opentune-tokens",
        "version": 1,
        "split": split,
        "seq_len": seq_len,
        "packing": packing,
        "vocab_size": vocab_size,
        "examples": len(docs),
        "rows": len(rows),
        "tokens": sum(e["tokens"] for e in entries),
        "loss_tokens": sum(e["loss_tokens"] for e in entries),
        "shards": entries,
    }
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def _write_int32(path: str, values: list[int]) -> None:
    with open(path, "wb") as f:  # flat little-endian int32, no header
        f.write(struct.pack(f"<{len(values)}i", *values))


def make_spec(tmp: str, model_dir: str, train: str, valid: str | None = None, **hp) -> str:
    hparams = {
        "batch_size": 4,
        "learning_rate": 1e-2,
        "n_epochs": 2,
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "lora": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
    }
    extra = {
        k: hp.pop(k)
        for k in ("micro_batch_size", "resume", "seed", "valid_sample_rows", "base_model", "precision")
        if k in hp
    }
    hparams.update(hp)
    spec = {
        "version": 1,
        "job_id": "ftjob-test",
        "model_dir": model_dir,
        "train_data": train,
        "valid_data": valid,
        "output_dir": os.path.join(tmp, "out"),
        "resume": True,
        "seed": 0,
        "device": "cpu",
        "hyperparameters": hparams,
        "valid_sample_rows": 4,
        **extra,
    }
    path = os.path.join(tmp, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def draft_spec(tmp, model_dir: str, train: str, valid: str | None = None, **hp) -> str:
    """A spec-draft job spec (docs/trainer-protocol.md §2): small defaults for the tiny model."""
    hparams = {"batch_size": 4, "learning_rate": 3e-3, "n_epochs": 2, "num_decoding_heads": 3}
    hparams["draft_vocab_size"] = hp.pop("draft_vocab_size", 64)
    hparams.update(hp)
    spec = {
        "version": 1,
        "job_id": "ftjob-draft",
        "method": "spec-draft",
        "model_dir": model_dir,
        "train_data": train,
        "valid_data": valid,
        "output_dir": os.path.join(str(tmp), "out"),
        "resume": True,
        "seed": 0,
        "device": "cpu",
        "hyperparameters": hparams,
        "valid_sample_rows": 4,
    }
    path = os.path.join(str(tmp), "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def untrained_acceptance_length(lines: list[dict]) -> float:
    """The untrained drafter's simulated acceptance length, from a spec-draft job's log line."""
    text = next(m["message"] for m in lines if m["type"] == "log" and "before training" in m["message"])
    return float(text.rsplit(" ", 1)[1])


def run_cli(*args: str, **kw) -> tuple[int, list[dict], str]:
    """Run `python -m opentune_trainer …`; returns (exit code, parsed stdout lines, stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "opentune_trainer", *args],
        cwd=TRAINER_DIR,
        capture_output=True,
        text=True,
        timeout=kw.get("timeout", 600),
    )  # a hang guard, not a speed bound
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines()], p.stderr
