"""Speculative decoding with an EAGLE-3 drafter (drafter.py) inside the engine: the drafter's
loading and its draft chain; engine.py verifies the drafts with one target forward (forward.extend).

State of a speculative row (a Request) between steps: the target's cache holds positions
0..length-1, `last` (= seq[length]) is the token it chose and has not fed yet; the drafter's cache
(one layer, row = the row's slot) holds step-0 keys for positions 0..dlen-1, and `feat` the
target's features (aux_layers, concatenated) at positions dlen..length-1 whose step-0 keys are
still to be computed. Step 0 at position t reads fc(features at t) and the embedding of seq[t+1]
and predicts seq[t+2]; so a draft first writes those pending step-0 keys, then runs its query at
length-1 (→ d_1) and chains: step k feeds step k-1's output hidden and d_k at position
length-1+k, its key stored at that slot, attending causally over the slots before it (the step-0
keys plus the chain's own). The verify forward overwrites nothing of the drafter's committed
state: the chain's slots lie at or past `length` and are rewritten by step-0 keys once accepted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from ..checkpoint import ModelError
from ..drafter import Eagle3Drafter, aux_layers, is_drafter, load_drafter
from .forward import _sdpa
from .kv_cache import KVCache

DEFAULT_STEPS = 3  # num_speculative_tokens when neither the request nor the drafter's config says
MAX_STEPS = 10


@dataclass
class Drafter:
    path: str
    mtime: float
    module: Eagle3Drafter
    steps: int  # the drafter's own num_speculative_tokens (what it was trained for), else DEFAULT_STEPS

    def nbytes(self) -> int:  # the embedding is the target's: not counted twice
        return sum(
            p.numel() * p.element_size() for n, p in self.module.named_parameters() if not n.startswith("embed_tokens.")
        ) + sum(b.numel() * b.element_size() for b in self.module.buffers())


def drafter_mtime(path: str) -> float:
    try:
        return os.stat(os.path.join(path, "model.safetensors")).st_mtime
    except OSError:
        return -1.0


def load(path: str, model, device, dtype) -> Drafter:
    """The drafter folder `path` for the target `model`; ModelError says why it cannot serve it."""
    if not is_drafter(path):
        raise ModelError(f"draft {path} is not an EAGLE-3 drafter (config.json architectures LlamaForCausalLMEagle3)")
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    cfg = model.config
    theirs = (c.get("vocab_size"), c.get("target_hidden_size") or c.get("hidden_size"), c.get("hidden_size"))
    ours = (cfg.vocab_size, cfg.hidden_size, cfg.hidden_size)
    if theirs != ours:
        raise ModelError(
            f"draft {path} (vocab_size, target_hidden_size, hidden_size) {theirs} does not fit this model's {ours}"
        )
    heads = (c.get("num_key_value_heads") or c.get("num_attention_heads"), c.get("head_dim"))
    if heads != (cfg.num_key_value_heads, cfg.head_dim):
        raise ModelError(
            f"draft {path} (num_key_value_heads, head_dim) {heads} differs from this model's "
            f"{(cfg.num_key_value_heads, cfg.head_dim)}: its cache shares the target's layout"
        )
    if cfg.num_hidden_layers < 3:
        raise ModelError(f"draft: a target of {cfg.num_hidden_layers} layers has no EAGLE-3 feature layers")
    try:
        module = load_drafter(path, model.model.embed_tokens.weight, device, dtype)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise ModelError(f"draft {path}: {type(e).__name__}: {e}") from None
    steps = c.get("num_speculative_tokens")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        steps = DEFAULT_STEPS
    return Drafter(path=path, mtime=drafter_mtime(path), module=module, steps=steps)


def features(capture: dict[int, torch.Tensor], n_layers: int) -> torch.Tensor:
    """The drafter's fc input [.., 3·hidden] from a forward's capture dict."""
    return torch.cat([capture[i] for i in aux_layers(n_layers)], dim=-1)


def capture_for(n_layers: int) -> dict[int, torch.Tensor | None]:
    return dict.fromkeys(aux_layers(n_layers))


@torch.no_grad()
def draft(d: Eagle3Drafter, cache: KVCache, slots: list[int], rows, steps: list[int]) -> list[list[int]]:
    """For each row (a Request at cache slot slots[i]) `steps[i]` drafted target ids, greedily.

    All rows of one drafter together: step 0's pending keys as one flat batch, then the chain one
    step at a time for every row (a row that needs fewer steps drafts the extra ones into slots it
    never reads). Writes step-0 keys at 0..length-1 and chain keys past them; changes no row state."""
    dev = cache.device
    ids, pos, where, last = [], [], [], []
    for s, r in zip(slots, rows, strict=True):
        ids += r.seq[r.dlen + 1 : r.length + 1]
        pos += range(r.dlen, r.length)
        where += [s] * (r.length - r.dlen)
        last.append(len(ids) - 1)
    aux = torch.cat([r.feat for r in rows])
    h = d.fc(aux.to(d.fc.weight.dtype))
    q, k, v = d.qkv(torch.tensor(ids, device=dev), h, torch.tensor(pos, device=dev))
    kc, vc = cache.k[0], cache.v[0]
    where_t, pos_t = torch.tensor(where, device=dev), torch.tensor(pos, device=dev)
    kc[where_t, :, pos_t] = k.transpose(0, 1)
    vc[where_t, :, pos_t] = v.transpose(0, 1)
    li = torch.tensor(last, device=dev)
    h, q = h[li], q[:, li]
    cur = torch.tensor([r.length - 1 for r in rows], device=dev)  # each row's query position
    rix = torch.tensor(slots, device=dev)
    contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
    out: list[torch.Tensor] = []
    tok = torch.zeros(0)
    for k_ in range(max(steps)):
        if k_ > 0:
            q, key, val = d.qkv(tok, h, cur)
            kc[rix, :, cur] = key.transpose(0, 1)
            vc[rix, :, cur] = val.transpose(0, 1)
        n = int(cur.max()) + 1
        if contiguous:
            keys, vals = kc[slots[0] : slots[0] + len(slots), :, :n], vc[slots[0] : slots[0] + len(slots), :, :n]
        else:
            keys, vals = kc[rix, :, :n], vc[rix, :, :n]
        mask = (torch.arange(n, device=dev)[None] <= cur[:, None])[:, None, None]  # [R, 1, 1, n]
        y = _sdpa(q.transpose(0, 1)[:, :, None], keys, vals, mask, False)  # [R, heads, 1, hd]
        h = d.finish(h, y[:, :, 0].transpose(0, 1))
        best = d.logits(h).argmax(-1)
        tok = best + d.d2t[best]
        out.append(tok)
        cur = cur + 1
    drafted = torch.stack(out, 1).tolist()
    return [drafted[i][: steps[i]] for i in range(len(rows))]


def accepted(drafts: list[int], greedy: list[int]) -> list[int]:
    """The tokens one verify forward yields: the drafts up to the first the target disagrees with,
    then the target's own choice there (greedy[i]: its argmax after the fed token and drafts[:i])."""
    a = 0
    while a < len(drafts) and drafts[a] == greedy[a]:
        a += 1
    return drafts[:a] + [greedy[a]]
