"""Attention kernels and document masks, chosen by feature checks (never by version string).

- one document per row (no packing): plain causal attention, so SDPA can use its flash kernel;
- packed rows: a block-diagonal causal mask [B, 1, T, T] built from document ids. SDPA (torch 2.x)
  runs it with the memory-efficient kernel; torch 1.13 has no SDPA, so we use eager softmax attention;
- OPENTUNE_ATTENTION=flex (torch ≥ 2.5, CUDA) uses FlexAttention with a document block mask, which
  skips fully-masked tiles. Opt-in until measured against SDPA on a GPU.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
BACKEND = os.environ.get("OPENTUNE_ATTENTION", "sdpa" if HAS_SDPA else "eager")


def _probe_sdpa_gqa() -> bool:
    if not HAS_SDPA:
        return False
    q, kv = torch.zeros(1, 4, 2, 8), torch.zeros(1, 2, 2, 8)
    try:  # enable_gqa appeared in torch 2.5; older versions raise TypeError
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


SDPA_GQA = _probe_sdpa_gqa()

_flex = None
if BACKEND == "flex":
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    _flex = torch.compile(flex_attention)  # flex is only fast when compiled


def make_mask(doc: torch.Tensor | None, T: int, window: int | None, device):
    """None (plain causal) when each row is one document and no sliding window bites; else a
    mask that lets position q see position k iff same document, k ≤ q (and q - k < window)."""
    windowed = window is not None and window < T
    if doc is None and not windowed:
        return None
    if doc is None:
        doc = torch.zeros(1, T, dtype=torch.long, device=device)
    if _flex is not None:
        return _flex_mask(doc, window if windowed else None)
    i = torch.arange(T, device=device)
    keep = i[:, None] >= i[None, :]
    if windowed:
        keep = keep & (i[:, None] - i[None, :] < window)
    return (keep & (doc[:, :, None] == doc[:, None, :]))[:, None]  # [B, 1, T, T]


def _flex_mask(doc: torch.Tensor, window: int | None):
    def mask_mod(b, h, q, k):
        keep = (doc[b, q] == doc[b, k]) & (k <= q)
        return keep & (q - k < window) if window else keep

    B, T = doc.shape
    return create_block_mask(mask_mod, B, None, T, T, device=doc.device)


def repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, kv, T, d] → [B, kv·n, T, d]; query head h uses kv head h // n (as HF's repeat_kv)."""
    if n == 1:
        return x
    B, kv, T, d = x.shape
    return x[:, :, None].expand(B, kv, n, T, d).reshape(B, kv * n, T, d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """q [B, H, T, d], k/v [B, KV, T, d] → [B, H, T, d]."""
    n_rep = q.shape[1] // k.shape[1]
    if _flex is not None and mask is not None:
        return _flex(q, k, v, block_mask=mask, enable_gqa=n_rep > 1)
    if BACKEND != "eager":
        if mask is None and SDPA_GQA:  # flash kernel, reads shared kv heads in place
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_rep > 1)
        # with a mask SDPA picks the memory-efficient kernel, which may not take enable_gqa
        # (it would then fall back to the slow math kernel), so expand kv heads ourselves
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    T = q.shape[2]
    if mask is None:
        mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    att = att.masked_fill(~mask, float("-inf"))  # every row keeps its diagonal, so no NaN
    att = torch.softmax(att.float(), dim=-1).to(q.dtype)
    return att @ v
