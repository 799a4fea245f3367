"""Micro-batches by a token budget, and the budget from the model and the free memory.

One optimizer step takes `batch_size` rows; they run as micro-batches whose tokens fit in memory,
their gradients summed (the step's loss is token-weighted over all of them, so the split never
changes the result). The budget is estimated before the first step from the model's shape, the
compute dtype, LoRA or full fine-tuning, activation checkpointing and the free memory, so a job
does not learn its micro-batch from out-of-memory errors; those remain the rare fallback
(train.py shrinks the budget, then checkpoints more blocks).

    plan_micro_batches([800, 8192, 300, 5000], 8192)   # [[0], [1], [2, 3]]

A micro-batch's cost is the tokens it puts through the model: the sum of its rows' lengths when
rows are laid end to end (data.collate, what training does), or rows × the longest row when they
are padded to a rectangle (`padded=True`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GIB = 1 << 30
CHECKPOINT_STEPS = (0, 4, 2, 1)  # checkpoint no block, every 4th, every 2nd, all: cheapest first
SATURATING_TOKENS = 16384  # past this many tokens a micro-batch keeps a GPU busy: no checkpointing to get more


def plan_micro_batches(lengths: list[int], token_budget: int, padded: bool = False) -> list[list[int]]:
    """Indices into `lengths` (one step's rows), in data order, cut into consecutive micro-batches
    of at most `token_budget` tokens each. A row longer than the budget is a micro-batch alone."""
    plan: list[list[int]] = []
    cur: list[int] = []
    total = longest = 0
    for i, n in enumerate(lengths):
        longest2 = max(longest, n)
        cost = longest2 * (len(cur) + 1) if padded else total + n
        if cur and cost > token_budget:
            plan.append(cur)
            cur, total, longest2 = [], 0, n
        cur.append(i)
        total, longest = total + n, longest2
    if cur:
        plan.append(cur)
    return plan


@dataclass
class Shape:
    """What activation memory depends on (from model.ModelConfig)."""

    hidden: int
    layers: int
    q_dim: int  # heads × head_dim
    kv_dim: int  # kv heads × head_dim
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, cfg) -> Shape:
        hd = cfg.head_dim
        return cls(
            cfg.hidden_size,
            cfg.num_hidden_layers,
            cfg.num_attention_heads * hd,
            cfg.num_key_value_heads * hd,
            cfg.intermediate_size,
            cfg.vocab_size,
        )


def bytes_per_token(shape: Shape, compute_bytes: int, residual_bytes: int, checkpoint_every: int) -> int:
    """Activation bytes one token keeps alive through a training forward, up to its backward.

    A block saves its norms' float32 inputs, q/k/v before and after RoPE, the attention output,
    the MLP's gate, up and product: about compute_bytes × (2h + 4q + 4kv + 4f) + 8h. A checkpointed
    block keeps only its input (the residual stream), plus one block's worth recomputed at a time."""
    h, f = shape.hidden, shape.intermediate
    block = compute_bytes * (2 * h + 4 * shape.q_dim + 4 * shape.kv_dim + 4 * f) + 8 * h
    ckpt = sum(1 for i in range(shape.layers) if checkpoint_every and i % checkpoint_every == 0)
    kept = (shape.layers - ckpt) * block + ckpt * residual_bytes * h + (block if ckpt else 0)
    outside = 4 * residual_bytes * h  # embedding output, final norm, the hidden state's gradient
    return kept + outside


def estimate_token_budget(
    cfg,
    compute_bytes: int,
    lora: bool,
    checkpoint_every: int,
    free_bytes: int,
    trainable_params: int = 0,
) -> int:
    """Tokens per micro-batch that fit in `free_bytes` (measured after the weights are loaded).

    Kept aside first: the gradients and AdamW's two moments of the trainable parameters (float32,
    allocated at the first step), the chunked loss's logits ([8192, vocab] float32 and its
    gradient), a 1 GiB workspace and 10% of what is free (fragmentation). LoRA keeps the residual
    stream in the compute dtype; a full fine-tune keeps float32 master weights, so its residual
    stream is float32."""
    shape = Shape.of(cfg)
    residual_bytes = compute_bytes if lora else 4
    reserved = 12 * trainable_params + 2 * 8192 * shape.vocab * 4 + GIB + free_bytes // 10
    per_token = bytes_per_token(shape, compute_bytes, residual_bytes, checkpoint_every)
    return max(0, (free_bytes - reserved) // per_token)


def checkpoint_words(k: int) -> str:
    """Which blocks `checkpoint_every = k` checkpoints, in words."""
    return {0: "none", 1: "every block", 2: "every 2nd block", 3: "every 3rd block"}.get(k, f"every {k}th block")


@dataclass
class MemoryPlan:
    token_budget: int
    checkpoint_every: int  # 0: none, k: every k-th block
    free_bytes: int
    fits: bool  # one row of `longest` tokens fits by the estimate


def memory_plan(
    cfg, compute_bytes: int, lora: bool, free_bytes: int, trainable_params: int, longest: int, step_tokens: int
) -> MemoryPlan:
    """The least activation checkpointing whose budget holds one longest row and, where memory
    allows, a micro-batch that keeps the GPU busy (SATURATING_TOKENS); never more than a step."""
    want = min(step_tokens, max(longest, SATURATING_TOKENS))
    budget = 0
    for k in CHECKPOINT_STEPS:
        budget = estimate_token_budget(cfg, compute_bytes, lora, k, free_bytes, trainable_params)
        if budget >= want:
            return MemoryPlan(min(budget, step_tokens), k, free_bytes, True)
    for k in CHECKPOINT_STEPS:  # not a busy GPU's worth: the least checkpointing that holds a row
        budget = estimate_token_budget(cfg, compute_bytes, lora, k, free_bytes, trainable_params)
        if budget >= longest:
            return MemoryPlan(min(budget, step_tokens), k, free_bytes, True)
    return MemoryPlan(longest, 1, free_bytes, False)  # try anyway: the estimate errs on the safe side


def free_memory(device) -> int:
    """Bytes free for activations on `device` now: CUDA's free memory plus what PyTorch's caching
    allocator holds unused; on the CPU, MemAvailable."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
