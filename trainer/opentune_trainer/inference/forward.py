"""Prefill and decode over the KV cache, on our model's own submodules (model.model.layers: norms,
q/k/v/o projections, q_norm/k_norm for Qwen3, HF rotate_half RoPE from model.rope, the SwiGLU MLP).

- prefill: n prompts right-padded to [n, T], causal (sliding-window for Mistral) attention, their
  k/v written into their cache rows at positions 0..T-1; returns hidden states after the final norm;
- decode: one token for each of rows 0..n-1 at its own position, attending over the compact views
  k[:n, :, :L] with a per-row key mask (key j visible iff j ≤ pos, and pos - j < window);
- extend: a few tokens for each of rows 0..n-1 (a speculative row's fed token and its drafts, one
  for a plain row), right-padded; only the real ones are written to the cache.

`capture` (prefill, extend): a dict whose keys are layer ids; each gets the residual stream entering
that layer (HF hidden_states[i]), what an EAGLE-3 drafter reads (speculative.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import attention
from ..model import LlamaForCausalLM, rotate_half
from .adapters import LoraGroups
from .kv_cache import KVCache


def _sdpa(q, k, v, mask, causal: bool):
    n_rep = q.shape[1] // k.shape[1]
    if attention.SDPA_GQA:  # read the shared kv heads in place, no repeat_kv copies
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=n_rep > 1)
    k, v = attention.repeat_kv(k, n_rep), attention.repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def _layers(model, x, cos, sin, lora: LoraGroups, write, attend, capture: dict | None = None):
    """Run every block; `write(i, k, v)` stores the new keys/values, `attend(i, q, k, v)` attends."""
    cfg = model.config
    B, T, _ = x.shape
    H, KV, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    for i, block in enumerate(model.model.layers):
        if capture is not None and i in capture:
            capture[i] = x
        at = block.self_attn
        h = block.input_layernorm(x)
        q = lora.linear(at.q_proj, h, i, "q_proj").view(B, T, H, hd)
        k = lora.linear(at.k_proj, h, i, "k_proj").view(B, T, KV, hd)
        v = lora.linear(at.v_proj, h, i, "v_proj").view(B, T, KV, hd).transpose(1, 2)
        if at.qk_norm:
            q, k = at.q_norm(q).to(v.dtype), at.k_norm(k).to(v.dtype)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, heads, T, hd]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        write(i, k, v)
        y = attend(i, q, k, v)
        x = x + lora.linear(at.o_proj, y.transpose(1, 2).reshape(B, T, H * hd), i, "o_proj")
        h = block.post_attention_layernorm(x)
        mlp = block.mlp
        g = lora.linear(mlp.gate_proj, h, i, "gate_proj")
        u = lora.linear(mlp.up_proj, h, i, "up_proj")
        x = x + lora.linear(mlp.down_proj, F.silu(g) * u, i, "down_proj")
    return model.model.norm(x)


@torch.no_grad()
def prefill(
    model: LlamaForCausalLM,
    cache: KVCache,
    rows: torch.Tensor,
    tokens: torch.Tensor,
    lora: LoraGroups,
    capture: dict | None = None,
):
    """tokens [n, T] (prompts right-padded to T) into cache rows `rows` [n]; returns final hidden
    states [n, T, hidden]. Right padding needs no mask: causal attention never lets a prompt
    position see a later (padding) one, and the padding's keys land past the row's length, where
    decode masks them until it overwrites them."""
    n, T = tokens.shape
    x = model.model.embed_tokens(tokens)
    pos = torch.arange(T, device=tokens.device)[None]
    cos, sin = model.rope(pos, x.dtype)
    cos, sin = cos[:, None], sin[:, None]
    mask = attention.make_mask(None, T, model.config.sliding_window, tokens.device)
    r0 = int(rows[0])
    contiguous = n == 1 or torch.equal(rows, torch.arange(r0, r0 + n, device=rows.device))

    def write(i, k, v):
        if contiguous:
            cache.k[i][r0 : r0 + n, :, :T] = k
            cache.v[i][r0 : r0 + n, :, :T] = v
        else:
            cache.k[i][rows, :, :T] = k
            cache.v[i][rows, :, :T] = v

    def attend(i, q, k, v):
        return _sdpa(q, k, v, mask, mask is None)

    return _layers(model, x, cos, sin, lora, write, attend, capture)


class DecodeInputs:
    """What one decode step shares across layers: row/position indices, RoPE, the key mask."""

    def __init__(self, model: LlamaForCausalLM, positions: list[int], device, dtype):
        n = len(positions)
        self.n = n
        self.L = max(positions) + 1  # keys attended: every row's cache up to its own position
        self.rows = torch.arange(n, device=device)
        self.pos = torch.tensor(positions, device=device)
        cos, sin = model.rope(self.pos[:, None], dtype)  # [n, 1, hd]
        self.cos, self.sin = cos[:, None], sin[:, None]  # [n, 1, 1, hd]
        j = torch.arange(self.L, device=device)[None]
        keep = j <= self.pos[:, None]
        window = model.config.sliding_window
        if window is not None:
            keep = keep & (self.pos[:, None] - j < window)
        self.mask = keep[:, None, None, :]  # [n, 1, 1, L]


@torch.no_grad()
def decode(model: LlamaForCausalLM, cache: KVCache, tokens: torch.Tensor, inp: DecodeInputs, lora: LoraGroups):
    """tokens [n] (one per row 0..n-1, at inp.pos) → final hidden states [n, 1, hidden]."""
    n, L = inp.n, inp.L
    x = model.model.embed_tokens(tokens[:, None])

    def write(i, k, v):
        cache.k[i][inp.rows, :, inp.pos] = k[:, :, 0]
        cache.v[i][inp.rows, :, inp.pos] = v[:, :, 0]

    def attend(i, q, k, v):
        return _sdpa(q, cache.k[i][:n, :, :L], cache.v[i][:n, :, :L], inp.mask, False)

    return _layers(model, x, inp.cos, inp.sin, lora, write, attend)


@torch.no_grad()
def extend(
    model: LlamaForCausalLM,
    cache: KVCache,
    tokens: torch.Tensor,
    counts: list[int],
    positions: list[int],
    lora: LoraGroups,
    capture: dict | None = None,
):
    """tokens [n, T]: row i's first counts[i] tokens at positions[i], positions[i]+1, … (the rest is
    padding) → final hidden states [n, T, hidden]. Only real tokens are written to the cache (a
    padding key could land past the context, or on a slot another row's token needs); padding
    queries see keys up to their would-be position and their outputs are never read."""
    n, T = tokens.shape
    dev = tokens.device
    x = model.model.embed_tokens(tokens)
    t = torch.arange(T, device=dev)
    pos = torch.tensor(positions, device=dev)[:, None] + t[None]  # [n, T]
    valid = t[None] < torch.tensor(counts, device=dev)[:, None]
    L = max(p + c for p, c in zip(positions, counts, strict=True))
    j = torch.arange(L, device=dev)
    keep = j[None, None] <= pos[:, :, None]  # [n, T, L]
    window = model.config.sliding_window
    if window is not None:
        keep = keep & (pos[:, :, None] - j[None, None] < window)
    mask = keep[:, None]  # [n, 1, T, L]
    cos, sin = model.rope(pos, x.dtype)
    cos, sin = cos[:, None], sin[:, None]
    rows_v = torch.arange(n, device=dev)[:, None].expand(n, T)[valid]
    pos_v = pos[valid]

    def write(i, k, v):  # k, v [n, KV, T, hd]; cache[rows_v, :, pos_v] is [N, KV, hd]
        cache.k[i][rows_v, :, pos_v] = k.transpose(1, 2)[valid]
        cache.v[i][rows_v, :, pos_v] = v.transpose(1, 2)[valid]

    def attend(i, q, k, v):
        return _sdpa(q, cache.k[i][:n, :, :L], cache.v[i][:n, :, :L], mask, False)

    return _layers(model, x, cos, sin, lora, write, attend, capture)
