"""Attention kernels, chosen by feature checks (never by version string), per device and dtype.

Two layouts reach `attend`:

- padded rows [B, T], one document each (inference, a model called without `doc`): causal SDPA;
  a sliding window shorter than T takes the banded path below;
- packed rows: the documents of a micro-batch laid end to end in one row [1, N] with their
  lengths (`Docs`, `cu_seqlens`). Attention runs per document, and no [T, T] mask is ever built:
  * `varlen`: FlashAttention varlen through `torch.nn.attention.varlen.varlen_attn` (CUDA,
    bf16/fp16, compute capability ≥ 8.0): one call for all documents, grouped-query attention and
    the sliding window inside the kernel;
  * `flex`: FlexAttention, compiled, with a block mask built once per forward (compiled too) from
    the document ids: fully masked tiles are skipped (CUDA; float32 included);
  * `sdpa`: a loop of causal SDPA calls, one per document (the portable fallback: CPU, older
    GPUs). A document longer than the sliding window is cut into query chunks, each against the
    keys of its window with a small [chunk, chunk + window - 1] band mask.

Grouped-query attention is asked of SDPA only where its kernel for those inputs takes it (CPU:
the flash kernel does; CUDA: `can_use_flash_attention`/`can_use_efficient_attention` say so);
elsewhere the kv heads are expanded for that call only. OPENTUNE_ATTENTION=varlen|flex|sdpa
forces a kernel (tests, bench); `masked_attend` keeps the former dense-mask path for the bench.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
FORCED = os.environ.get("OPENTUNE_ATTENTION") or None
BAND_CHUNK = 1024  # query chunk of the banded (sliding window) fallback; its mask is [chunk, chunk + window - 1]


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
try:
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # torch < 2.10
    varlen_attn = None
try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    create_block_mask = flex_attention = None

# legacy name: the kernel a padded row takes (doctor.py prints it)
BACKEND = FORCED or ("sdpa" if HAS_SDPA else "eager")


def packed_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel packed rows take on this device in this compute dtype: varlen, flex or sdpa."""
    if FORCED in ("varlen", "flex", "sdpa"):
        return FORCED
    if device.type == "cuda":
        flash_dtype = dtype in (torch.float16, torch.bfloat16)
        if varlen_attn is not None and flash_dtype and torch.cuda.get_device_capability(device)[0] >= 8:
            return "varlen"
        if flex_attention is not None and hasattr(torch, "compile"):
            return "flex"
    return "sdpa"


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """In words, for the job's event log."""
    k = packed_kernel(device, dtype)
    what = {
        "varlen": "FlashAttention varlen (torch.nn.attention.varlen), one call per micro-batch",
        "flex": "FlexAttention with a compiled document block mask",
        "sdpa": "causal SDPA per document (the portable path)",
    }[k]
    return f"attention for packed rows: {k}, {what}; no [T, T] mask"


# ------------------------------------------------------------------ layouts
@dataclass
class Docs:
    """Documents laid end to end in one row of N = sum(lengths) positions."""

    lengths: list[int]
    window: int | None  # sliding window (Mistral): q sees k iff 0 ≤ q - k < window
    kernel: str
    cu_seqlens: torch.Tensor | None = None  # int32 [n + 1] on the device (varlen)
    block_mask: object = None  # flex

    @property
    def max_len(self) -> int:
        return max(self.lengths)


def pack_layout(lengths: list[int], window: int | None, device: torch.device, dtype: torch.dtype) -> Docs:
    """Once per forward: what every layer's `attend` needs for these documents."""
    kernel = packed_kernel(device, dtype)
    docs = Docs(list(lengths), window, kernel)
    if kernel == "varlen":
        cu = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        docs.cu_seqlens = cu.to(device, non_blocking=True)
    elif kernel == "flex":
        docs.block_mask = _block_mask(lengths, window, device)
    return docs


def doc_lengths(doc: torch.Tensor) -> list[int]:
    """Run lengths of a [B, T] document-id tensor, rows laid end to end (row b's documents, then b+1's)."""
    B, T = doc.shape
    key = (doc + torch.arange(B, device=doc.device)[:, None] * (int(doc.max()) + 1)).reshape(-1)
    return torch.unique_consecutive(key, return_counts=True)[1].tolist()


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    return torch.compile(flex_attention)  # automatic dynamic: the second length compiles a graph for all


def _block_mask(lengths: list[int], window: int | None, device: torch.device):
    n = sum(lengths)
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))

    def mask_mod(b, h, q, k):
        keep = (doc[q] == doc[k]) & (k <= q)
        return keep & (q - k < window) if window else keep

    # compiled: eager create_block_mask materialises the whole N×N mask first
    return create_block_mask(mask_mod, None, None, n, n, device=device, _compile=device.type == "cuda")


# ------------------------------------------------------------------ kernels
def repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, kv, T, d] → [B, kv·n, T, d]; query head h uses kv head h // n (as HF's repeat_kv)."""
    if n == 1:
        return x
    B, kv, T, d = x.shape
    return x[:, :, None].expand(B, kv, n, T, d).reshape(B, kv * n, T, d)


def _gqa_in_kernel(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> bool:
    """Whether SDPA's kernel for these inputs reads shared kv heads in place (else: the math kernel,
    which would materialise [B, H, T, T] in float32, so expand kv ourselves instead)."""
    if not SDPA_GQA:
        return False
    if q.device.type == "cpu":
        return True  # the CPU flash kernel takes enable_gqa, with or without a mask
    if q.device.type != "cuda":
        return False
    return _cuda_gqa(q.dtype, mask is not None, causal, q.shape[-1], q.device.index)


@functools.lru_cache(maxsize=64)
def _cuda_gqa(dtype: torch.dtype, masked: bool, causal: bool, head_dim: int, index: int | None) -> bool:
    from torch.nn.attention import SDPAParams

    dev = torch.device("cuda", index)
    q, kv = (
        torch.zeros(1, 4, 128, head_dim, dtype=dtype, device=dev),
        torch.zeros(1, 2, 128, head_dim, dtype=dtype, device=dev),
    )
    m = torch.ones(128, 128, dtype=torch.bool, device=dev).tril() if masked else None
    p = SDPAParams(q, kv, kv, m, 0.0, causal and not masked, True)
    cuda = torch.backends.cuda
    return bool(cuda.can_use_flash_attention(p, False) or cuda.can_use_efficient_attention(p, False))


def _sdpa(q, k, v, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
    n_rep = q.shape[1] // k.shape[1]
    if not HAS_SDPA:  # torch 1.13 (Debian's fallback): eager softmax attention over this call's span
        return _eager(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, causal)
    if n_rep > 1 and _gqa_in_kernel(q, k, mask, causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def _eager(q, k, v, mask, causal: bool) -> torch.Tensor:
    if causal:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    att = att.masked_fill(~mask, float("-inf"))  # every query keeps its diagonal key, so no NaN
    return torch.softmax(att.float(), dim=-1).to(q.dtype) @ v


@functools.lru_cache(maxsize=8)
def _band(chunk: int, window: int, device: torch.device) -> torch.Tensor:
    """[chunk, chunk + window - 1]: query i of a chunk starting at a sees key j of the span starting
    at a - window + 1 iff 0 ≤ (a + i) - (a - window + 1 + j) < window, i.e. i ≤ j ≤ i + window - 1."""
    i = torch.arange(chunk, device=device)[:, None]
    j = torch.arange(chunk + window - 1, device=device)[None, :]
    return (j >= i) & (j <= i + window - 1)


def causal_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Causal (sliding-window when `window` < T) attention of rows that are one document each:
    q [B, H, T, d], k/v [B, KV, T, d] → [B, H, T, d]."""
    T = q.shape[2]
    if window is None or window >= T:
        return _sdpa(q, k, v, causal=True)
    chunk = min(BAND_CHUNK, window)
    band = _band(chunk, window, q.device)
    out = []
    for a in range(0, T, chunk):
        c, ks = min(chunk, T - a), max(0, a - window + 1)
        off = ks - (a - window + 1)  # band columns before key 0 (the first chunks)
        mask = band[:c, off : off + a + c - ks]
        out.append(_sdpa(q[:, :, a : a + c], k[:, :, ks : a + c], v[:, :, ks : a + c], mask=mask))
    return torch.cat(out, dim=2)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, docs: Docs | None, window: int | None = None
) -> torch.Tensor:
    """q [B, H, T, d], k/v [B, KV, T, d] → [B, H, T, d], laid out as [B, T, H, d] in memory (what SDPA
    returns, and what o_proj reads without a copy; one layout also means one compiled graph after
    attention). `docs` None: each row one document; else B = 1 and the row holds `docs.lengths`."""
    y = _attend(q, k, v, docs, window)
    return y.transpose(1, 2).contiguous().transpose(1, 2)


def _attend(q, k, v, docs: Docs | None, window: int | None) -> torch.Tensor:
    if docs is None:
        return causal_attend(q, k, v, window)
    n_rep = q.shape[1] // k.shape[1]
    if docs.kernel == "varlen":
        w = docs.window - 1 if docs.window and docs.window < docs.max_len else -1  # flash: keys q-left..q
        y = varlen_attn(
            q[0].transpose(0, 1).contiguous(),  # [N, H, d]; already so after RoPE (no copy)
            k[0].transpose(0, 1).contiguous(),
            v[0].transpose(0, 1).contiguous(),
            docs.cu_seqlens,
            docs.cu_seqlens,
            docs.max_len,
            docs.max_len,
            window_size=(w, 0),
            enable_gqa=n_rep > 1,
        )
        return y.transpose(0, 1)[None]
    if docs.kernel == "flex":
        return _compiled_flex()(q, k, v, block_mask=docs.block_mask, enable_gqa=n_rep > 1)
    if len(docs.lengths) == 1:
        return causal_attend(q, k, v, docs.window)
    # split, not slices: the backward of a slice writes into a zero tensor of the whole row (one per
    # document, quadratic in the number of documents); split's backward is a single cat
    parts = zip(*(t.split(docs.lengths, dim=2) for t in (q, k, v)), strict=True)
    return torch.cat([causal_attend(qd, kd, vd, docs.window) for qd, kd, vd in parts], dim=2)


# ------------------------------------------------------------------ the former path (bench, inference)
def make_mask(doc: torch.Tensor | None, T: int, window: int | None, device):
    """A dense [B, 1, T, T] mask (q sees k iff same document, k ≤ q, q - k < window), or None for
    plain causal. Only inference's windowed prefill and the bench's before/after comparison use it:
    training never builds one."""
    windowed = window is not None and window < T
    if doc is None and not windowed:
        return None
    if doc is None:
        doc = torch.zeros(1, T, dtype=torch.long, device=device)
    i = torch.arange(T, device=device)
    keep = i[:, None] >= i[None, :]
    if windowed:
        keep = keep & (i[:, None] - i[None, :] < window)
    return (keep & (doc[:, :, None] == doc[:, None, :]))[:, None]  # [B, 1, T, T]


def masked_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """The path packed rows took before padding-free attention: SDPA with a dense mask and kv heads
    expanded (kept for bench/packed_attention.py)."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
