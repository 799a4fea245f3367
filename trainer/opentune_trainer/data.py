"""Token shards in (format: docs/trainer-protocol.md §1), batches out.

A split is held in memory as flat int32 tensors plus per-row offsets and document lengths. A batch
lays its rows end to end in one row, without padding, and carries, per position, the RoPE position
(restarting at 0 per document) and the documents' lengths, which attention keeps apart (attention.py).
Which rows form a micro-batch is batching.py's plan, by a token budget.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from . import batching

IGNORE = -100


class DataError(ValueError):
    """The shards of a split are unusable (invalid_training_file / invalid_validation_file)."""


def _read_int32(path: str) -> torch.Tensor:
    if not os.path.isfile(path):
        raise DataError(f"missing {os.path.basename(path)}")
    size = os.path.getsize(path)
    if size % 4:
        raise DataError(f"{os.path.basename(path)}: {size} bytes is not a whole number of int32")
    if size == 0:
        return torch.zeros(0, dtype=torch.int32)
    return torch.from_file(path, shared=False, size=size // 4, dtype=torch.int32)


class Split:
    """All rows of one split. Row i is tokens[start[i]:start[i+1]] with documents docs[i]."""

    def __init__(self, path: str, vocab_size: int, max_len: int):
        try:
            with open(os.path.join(path, "manifest.json")) as f:
                m = json.load(f)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read manifest.json: {e}") from None
        if m.get("format") != "opentune-tokens" or m.get("version") != 1:
            raise DataError("manifest.json: format must be opentune-tokens, version 1")
        self.seq_len = int(m.get("seq_len") or 0)
        if not 0 < self.seq_len <= max_len:
            raise DataError(f"seq_len {self.seq_len} must be in 1..{max_len} (the model's context)")
        toks, tgts, self.docs = [], [], []
        for shard in m.get("shards") or []:
            t, y = self._read_shard(path, shard["name"])
            toks.append(t)
            tgts.append(y)
        if not self.docs:
            raise DataError("no rows")
        self.tokens, self.targets = torch.cat(toks), torch.cat(tgts)
        lengths = torch.tensor([sum(d) for d in self.docs], dtype=torch.long)
        self.start = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self._check(vocab_size)
        is_loss = (self.targets != IGNORE).long().cumsum(0)
        ends = is_loss[self.start[1:] - 1]
        self.row_loss = (ends - torch.cat([torch.zeros(1, dtype=torch.long), ends[:-1]])).tolist()
        self.row_len = lengths.tolist()

    def _read_shard(self, path: str, name: str):
        base = os.path.join(path, name)
        t, y = _read_int32(base + ".tokens.bin"), _read_int32(base + ".targets.bin")
        docs, rows = _read_int32(base + ".docs.bin").tolist(), _read_int32(base + ".rows.bin").tolist()
        if len(t) != len(y) or len(t) != sum(docs):
            raise DataError(f"{name}: tokens, targets and document lengths disagree")
        if sum(rows) != len(docs) or min(rows, default=1) < 1 or min(docs, default=1) < 1:
            raise DataError(f"{name}: rows.bin does not partition docs.bin")
        i = 0
        for n in rows:
            row = docs[i : i + n]
            if sum(row) > self.seq_len:
                raise DataError(f"{name}: row {len(self.docs)} has {sum(row)} tokens > seq_len {self.seq_len}")
            self.docs.append(row)
            i += n
        return t, y

    def _check(self, vocab_size: int) -> None:
        if int(self.tokens.min()) < 0 or int(self.tokens.max()) >= vocab_size:
            raise DataError(f"token ids must be in 0..{vocab_size - 1}")
        y = self.targets
        if bool(((y != IGNORE) & ((y < 0) | (y >= vocab_size))).any()):
            raise DataError(f"targets must be -100 or in 0..{vocab_size - 1}")
        doc_ends = torch.tensor([d for row in self.docs for d in row]).cumsum(0) - 1
        if bool((y[doc_ends] != IGNORE).any()):
            raise DataError("the last position of every document must have target -100 (targets are pre-shifted)")

    def __len__(self) -> int:
        return len(self.docs)


@dataclass
class Batch:
    """A micro-batch laid end to end as one row: no padding between rows, none inside them."""

    tokens: torch.Tensor  # [1, N] int64
    targets: torch.Tensor  # [1, N] int64, -100 where no loss
    pos: torch.Tensor  # [1, N] RoPE positions, 0 at each document start
    doc: list[int] | None  # lengths of the documents end to end (sum N); None when there is only one
    loss_idx: torch.Tensor  # flat indices (into N) of the loss positions

    def to(self, device) -> Batch:
        def mv(t):
            return t.to(device, non_blocking=True)

        return Batch(mv(self.tokens), mv(self.targets), mv(self.pos), self.doc, mv(self.loss_idx))


def collate(split: Split, rows: list[int], pad_multiple: int = 1) -> Batch:
    """The rows' documents end to end in one row of N tokens (rounded up to `pad_multiple` by a
    trailing padding document without loss), for attention per document (attention.py)."""
    n = sum(split.row_len[r] for r in rows)
    N = -(-n // pad_multiple) * pad_multiple
    lengths = [d for r in rows for d in split.docs[r]] + ([N - n] if N > n else [])
    tokens = torch.zeros(N, dtype=torch.long)
    targets = torch.full((N,), IGNORE, dtype=torch.long)
    at = 0
    for r in rows:
        s, k = int(split.start[r]), split.row_len[r]
        tokens[at : at + k] = split.tokens[s : s + k]
        targets[at : at + k] = split.targets[s : s + k]
        at += k
    lens = torch.tensor(lengths, dtype=torch.long)
    starts = lens.cumsum(0) - lens
    pos = torch.arange(N) - torch.repeat_interleave(starts, lens)  # restart at 0 per document
    loss_idx = (targets != IGNORE).nonzero().view(-1)
    return Batch(tokens[None], targets[None], pos[None], lengths if len(lengths) > 1 else None, loss_idx)


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    """Row order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator()
    g.manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_rows, generator=g).tolist()


def micro_batches(split: Split, rows: list[int], token_budget: int, max_rows: int | None = None) -> list[list[int]]:
    """A step's rows as micro-batches of at most `token_budget` tokens laid end to end, in data order
    (batching.plan_micro_batches; a row longer than the budget goes alone); with `max_rows` (the
    spec's micro_batch_size) groups of exactly that many rows instead."""
    if max_rows:
        return [rows[i : i + max_rows] for i in range(0, len(rows), max_rows)]
    plan = batching.plan_micro_batches([split.row_len[r] for r in rows], token_budget)
    return [[rows[i] for i in mb] for mb in plan]


def valid_sample(n_rows: int, k: int, seed: int) -> list[int]:
    """The fixed validation sample: k rows drawn once from (seed), the same at every checkpoint."""
    if k >= n_rows:
        return list(range(n_rows))
    g = torch.Generator()
    g.manual_seed(seed + 7_919)
    return sorted(torch.randperm(n_rows, generator=g)[:k].tolist())
