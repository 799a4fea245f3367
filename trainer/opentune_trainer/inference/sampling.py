"""Next tokens for a batch of rows, as docs/inference-protocol.md says:

- logprobs (k): log-softmax of the raw logits, before penalties, temperature or top_p;
- presence/frequency penalties over the tokens a row generated: logit -= p·(count > 0) + f·count;
- temperature 0: argmax (ties to the lowest id, torch.argmax's rule); else logits / temperature,
  top_p nucleus filtering, one draw from the row's own torch.Generator (seeded per request).

One device→host transfer per step for every row together; only rows that sample loop in Python
(a generator cannot be shared by rows, or the same seed would depend on the batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Plan:
    """What one batch composition needs; rebuilt only when rows join or leave."""

    sampled: list[int]  # rows with temperature > 0
    penalised: bool
    presence: torch.Tensor | None  # [n]
    frequency: torch.Tensor | None  # [n]
    kmax: int | None  # the largest `logprobs` k asked for by any row, None when no row asks


def make_plan(rows, device) -> Plan:
    penalised = any(r.presence or r.frequency for r in rows)
    ks = [r.logprobs for r in rows if r.logprobs is not None]
    return Plan(
        sampled=[i for i, r in enumerate(rows) if r.temperature > 0],
        penalised=penalised,
        presence=torch.tensor([float(r.presence) for r in rows], device=device) if penalised else None,
        frequency=torch.tensor([float(r.frequency) for r in rows], device=device) if penalised else None,
        kmax=max(ks) if ks else None,
    )


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every token outside the smallest set, most likely first, whose mass reaches top_p."""
    sorted_p, order = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
    sorted_p = sorted_p.masked_fill(before > top_p, 0.0)  # the first token always stays (before = 0)
    return torch.zeros_like(probs).scatter_(-1, order, sorted_p)


def sample(logits: torch.Tensor, rows, plan: Plan, counts: torch.Tensor | None):
    """logits [n, V] float32 → (tokens, logprobs or None, top lists or None), as Python lists."""
    lp = torch.log_softmax(logits, -1) if plan.kmax is not None else None
    if plan.penalised and counts is not None:
        c = counts[: logits.shape[0]]
        logits = logits - plan.presence[:, None] * (c > 0) - plan.frequency[:, None] * c
    tok = logits.argmax(-1)
    for i in plan.sampled:
        r = rows[i]
        probs = torch.softmax(logits[i] / r.temperature, -1)
        if r.top_p < 1.0:
            probs = nucleus(probs, r.top_p)
        tok[i] = torch.multinomial(probs, 1, generator=r.gen)[0]
    if lp is None:
        return tok.tolist(), None, None
    chosen = lp.gather(1, tok[:, None])[:, 0]
    if plan.kmax > 0:
        top_v, top_i = lp.topk(plan.kmax, dim=-1)
        return tok.tolist(), chosen.tolist(), (top_i.tolist(), top_v.tolist())
    return tok.tolist(), chosen.tolist(), None


def prompt_logprobs(logits: torch.Tensor, prompt: list[int], k: int | None):
    """Teacher-forced log-probabilities of prompt[1:] from logits [T, V] (position t predicts t+1):
    ([None, lp1, …], [None, top1, …] or None)."""
    lp = torch.log_softmax(logits[:-1].float(), -1)
    target = torch.tensor(prompt[1:], device=logits.device)
    values = [None] + lp.gather(1, target[:, None])[:, 0].tolist()
    if k is None:
        return values, None
    if k == 0:
        return values, [None] + [[] for _ in prompt[1:]]
    top_v, top_i = lp.topk(k, dim=-1)
    tops = [
        [[t, v] for t, v in zip(ti, tv, strict=True)] for ti, tv in zip(top_i.tolist(), top_v.tolist(), strict=True)
    ]
    return values, [None] + tops
