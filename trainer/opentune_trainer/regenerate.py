"""regenerate_responses: a spec-draft job's trained spans rewritten by the target itself, before the
drafter trains on them (what SpecForge's and speculators' data preparation do, for higher acceptance:
a drafter serves the target's own text, not the dataset's).

In each document, a trained span (a maximal run of positions whose target is not -100: the tokens
that run predicts) becomes the target's greedy continuation of everything before it, stopped at the
model's end-of-sequence ids (the stop token kept and trained) and never longer than the original
span, so rows still fit seq_len and packing stays valid. The tokens after a span (later turns)
follow unchanged; a later span is generated after the earlier ones' regenerated text, so every
trained token is what the target says in the context the drafter trains in. Generation is the
inference engine's (inference/engine.py), batched, with a LoRA target's adapter per request.

Greedy decoding makes the data deterministic; a split regenerated once is also kept under
output_dir/regenerated/<split> in the shard format (docs/trainer-protocol.md §1) and reused when the
job resumes, so the resumed job trains on the same rows (and its fingerprint matches).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable

import torch

from . import checkpoint, data
from .batching import free_memory
from .protocol import JobError, log, phase

MAX_BATCH = 32  # rows the engine decodes at once (fewer where their KV cache would not fit)
KV_SHARE = 0.5  # of the memory left beside the weights, what the engine's KV cache may take


class Interrupted(Exception):
    """SIGTERM arrived while regenerating: the split in progress is not kept."""


def stop_ids(model_dir: str) -> frozenset[int]:
    """The end-of-sequence / end-of-turn ids: config.json's and generation_config.json's
    eos_token_id (a single id or a list), together."""
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        try:
            with open(os.path.join(model_dir, name)) as f:
                eos = json.load(f).get("eos_token_id")
        except (OSError, ValueError):
            continue
        for i in eos if isinstance(eos, list) else [eos]:
            if isinstance(i, int) and not isinstance(i, bool):
                ids.add(i)
    return frozenset(ids)


def trained_spans(targets: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of positions with a target (not -100)."""
    out, start = [], None
    for i, y in enumerate(targets + [data.IGNORE]):
        if y != data.IGNORE and start is None:
            start = i
        elif y == data.IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


def replace_span(tokens: list[int], targets: list[int], span: tuple[int, int], new: list[int]):
    """The document with the tokens predicted by positions [a, b) (tokens a+1..b) replaced by `new`;
    targets stay pre-shifted: positions a..a+len(new)-1 predict `new`, then the original's follow."""
    a, b = span
    return tokens[: a + 1] + new + tokens[b + 1 :], targets[:a] + new + targets[b:]


class _Gather:
    """The engine's `emit`: generated tokens and errors per request id; its logs pass through."""

    def __init__(self) -> None:
        self.tokens: dict[str, list[int]] = {}
        self.errors: dict[str, dict] = {}

    def __call__(self, type_: str, **fields) -> None:
        if type_ == "tokens":
            for item in fields["items"]:
                self.tokens.setdefault(item["id"], []).append(item["token"])
        elif type_ == "error":
            self.errors[fields["id"]] = fields
        elif type_ == "log":
            log(fields["message"], fields.get("level", "info"))


def _max_batch(model_dir: str, device: torch.device, dtype: torch.dtype, longest: int) -> int:
    """As many rows as MAX_BATCH whose KV cache of `longest` positions fits beside the weights."""
    _, cfg = checkpoint.read_config(model_dir)
    size = torch.empty((), dtype=dtype).element_size()
    weights = checkpoint.param_count(checkpoint.weight_files(model_dir)) * size
    per_row = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * longest * size
    return max(1, min(MAX_BATCH, int(KV_SHARE * (free_memory(device) - weights) / per_row)))


class Regenerator:
    """One engine over the target (model_dir, with `adapter` per request) for every split of a job."""

    def __init__(self, model_dir: str, adapter: str | None, device, dtype, longest: int, stopping: Callable[[], bool]):
        from .inference.engine import Engine

        self.model_dir, self.adapter, self.stopping = model_dir, adapter, stopping
        self.stops = stop_ids(model_dir)
        self.gather = _Gather()
        batch = _max_batch(model_dir, device, dtype, longest)
        self.engine = Engine(model_dir, device, dtype, batch, self.gather)

    def close(self) -> None:
        self.engine.unload()
        del self.engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts: dict[str, tuple[list[int], int]]) -> dict[str, list[int]]:
        """id → the greedy continuation of its prompt, at most its max_tokens, cut after a stop id."""
        from .inference.engine import Request

        g = self.gather
        g.tokens, g.errors = {}, {}
        model, adapter, stops = self.model_dir, self.adapter, self.stops
        pending = deque(
            Request(id=i, weights=model, adapter_path=adapter, prompt=p, max_tokens=n, stop_ids=stops)
            for i, (p, n) in prompts.items()
        )
        eng = self.engine
        while pending or eng.rows:
            if self.stopping():
                raise Interrupted()
            eng.step(pending, lambda n: None)
        if g.errors:  # the engine has retried what ran out of memory one request at a time already
            first = next(iter(g.errors.values()))
            why = f"regenerating responses with the target: {len(g.errors)} generations failed: {first['message']}"
            if first["code"] == "out_of_memory":
                raise JobError("out_of_memory", why)
            raise RuntimeError(why)
        return g.tokens

    def split(self, split: data.Split, name: str) -> tuple[list[list[int]], list[list[int]]]:
        """Every document of `split` with its trained spans regenerated, as (tokens, targets) lists."""
        t0 = time.monotonic()
        flat_t, flat_y = split.tokens.tolist(), split.targets.tolist()
        lengths = [n for row in split.docs for n in row]
        toks, tgts, at = [], [], 0
        for n in lengths:
            toks.append(flat_t[at : at + n])
            tgts.append(flat_y[at : at + n])
            at += n
        before = sum(y != data.IGNORE for y in flat_y)
        spans = stopped = 0
        k = 0  # the k-th span of every document that has one, in rounds: a span's prompt holds the earlier ones
        while True:
            todo = {}
            for d, y in enumerate(tgts):
                runs = trained_spans(y)
                if k < len(runs):
                    a, b = runs[k]
                    todo[str(d)] = (toks[d][: a + 1], b - a, (a, b))
            if not todo:
                break
            out = self.generate({i: (p, n) for i, (p, n, _) in todo.items()})
            for i, (_, _, span) in todo.items():
                d, new = int(i), out[i]
                toks[d], tgts[d] = replace_span(toks[d], tgts[d], span, new)
                stopped += new[-1] in self.stops
            spans += len(todo)
            k += 1
        after = sum(y != data.IGNORE for doc in tgts for y in doc)
        log(
            f"regenerated {spans} trained spans of the {name} split with the target ({stopped} ended at a stop token): "
            f"{before} trained tokens became {after}, in {time.monotonic() - t0:.1f} s"
        )
        return toks, tgts


def _key(source: str, model_dir: str, adapter: str | None) -> str:
    """What a cached split was regenerated from: the source split's manifest, the target and its adapter."""
    with open(os.path.join(source, "manifest.json")) as f:
        manifest = json.load(f)
    key = {"source": manifest, "model": os.path.abspath(model_dir), "adapter": adapter and os.path.abspath(adapter)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def write_split(path: str, split: data.Split, toks: list[list[int]], tgts: list[list[int]], source: str, key: str):
    """The regenerated documents as a one-shard split at `path`, in `split`'s rows (written whole, then
    renamed: a folder with a manifest is complete)."""
    with open(os.path.join(source, "manifest.json")) as f:
        m = json.load(f)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    name = f"{m.get('split', os.path.basename(path))}-00000"
    flat_t = [t for doc in toks for t in doc]
    flat_y = [y for doc in tgts for y in doc]
    for suffix, values in (
        ("tokens", flat_t),
        ("targets", flat_y),
        ("docs", [len(doc) for doc in toks]),
        ("rows", [len(row) for row in split.docs]),
    ):
        torch.tensor(values, dtype=torch.int32).numpy().astype("<i4").tofile(os.path.join(tmp, f"{name}.{suffix}.bin"))
    loss = sum(y != data.IGNORE for y in flat_y)
    shard = {"name": name, "rows": len(split), "docs": len(toks), "tokens": len(flat_t), "loss_tokens": loss}
    m.update(rows=len(split), tokens=len(flat_t), loss_tokens=loss, shards=[shard], regenerated_from=key)
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(m, f, indent=2)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def regenerate_splits(spec, splits: dict[str, tuple[str, data.Split]], cfg, device, dtype, stopping):
    """name → its split with the target's responses: the cached one under output_dir/regenerated/<name>
    when it was regenerated from the same data and target, else generated now (and cached)."""
    out_dir = os.path.join(os.path.abspath(spec.output_dir), "regenerated")
    os.makedirs(out_dir, exist_ok=True)
    result, todo = {}, {}
    for name, (source, split) in splits.items():
        path, key = os.path.join(out_dir, name), _key(source, spec.model_dir, spec.init_adapter)
        try:
            with open(os.path.join(path, "manifest.json")) as f:
                cached = json.load(f).get("regenerated_from") == key
        except (OSError, ValueError):
            cached = False
        if cached:
            log(f"the {name} split's responses were regenerated by an earlier run of this job: reusing them")
            result[name] = data.Split(path, cfg.vocab_size, cfg.max_position_embeddings)
        else:
            todo[name] = (source, split, path, key)
    if not todo:
        return result
    with phase("regenerating responses with the target"):
        longest = max(s.seq_len for _, s, _, _ in todo.values())
        gen = Regenerator(spec.model_dir, spec.init_adapter, device, dtype, longest, stopping)
        try:
            for name, (source, split, path, key) in todo.items():
                toks, tgts = gen.split(split, name)
                write_split(path, split, toks, tgts, source, key)
                result[name] = data.Split(path, cfg.vocab_size, cfg.max_position_embeddings)
        finally:
            gen.close()
    return result
