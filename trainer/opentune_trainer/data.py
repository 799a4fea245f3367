"""Token shards in (format: docs/trainer-protocol.md §1), batches out.

A split is held in memory as flat int32 tensors plus per-row offsets and document lengths. A batch
pads rows to a common length (pad targets are -100, so they carry no loss) and carries, per
position, the RoPE position (restarting at 0 per document) and, when any row packs more than one
document, the document index that the attention mask is built from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

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
    tokens: torch.Tensor  # [B, T] int64
    targets: torch.Tensor  # [B, T] int64, -100 where no loss
    pos: torch.Tensor  # [B, T] RoPE positions, 0 at each document start
    doc: torch.Tensor | None  # [B, T] document index, None when every row is one document
    loss_idx: torch.Tensor  # flat indices (into B·T) of the loss positions

    def to(self, device) -> Batch:
        def mv(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(mv(self.tokens), mv(self.targets), mv(self.pos), mv(self.doc), mv(self.loss_idx))


def collate(split: Split, rows: list[int], pad_multiple: int = 1) -> Batch:
    T = max(split.row_len[r] for r in rows)
    T = -(-T // pad_multiple) * pad_multiple  # fixed-ish shapes keep torch.compile from recompiling
    B = len(rows)
    tokens = torch.zeros(B, T, dtype=torch.long)
    targets = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    doc = torch.zeros(B, T, dtype=torch.long)
    packed = False
    for b, r in enumerate(rows):
        s, n = int(split.start[r]), split.row_len[r]
        tokens[b, :n] = split.tokens[s : s + n]
        targets[b, :n] = split.targets[s : s + n]
        # per row, not per document: a packed 8k row holds ~100 documents (6 ms a batch as a loop)
        lens = torch.tensor(split.docs[r], dtype=torch.long)
        which = torch.repeat_interleave(torch.arange(len(lens)), lens)
        pos[b, :n] = torch.arange(n) - (lens.cumsum(0) - lens)[which]  # restart at 0 per document
        doc[b, :n] = which
        doc[b, n:] = len(lens)  # padding: its own "document", never seen by real tokens
        packed |= len(lens) > 1
    loss_idx = (targets.view(-1) != IGNORE).nonzero().view(-1)
    return Batch(tokens, targets, pos, doc if packed else None, loss_idx)


def epoch_order(n_rows: int, seed: int, epoch: int) -> list[int]:
    """Row order of one epoch: a permutation that depends only on (seed, epoch)."""
    g = torch.Generator()
    g.manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_rows, generator=g).tolist()


def micro_batches(split: Split, rows: list[int], size: int) -> list[list[int]]:
    """Split a step's rows into groups of ≤ size rows; longest first so groups pad little."""
    rows = sorted(rows, key=lambda r: -split.row_len[r])
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def valid_sample(n_rows: int, k: int, seed: int) -> list[int]:
    """The fixed validation sample: k rows drawn once from (seed), the same at every checkpoint."""
    if k >= n_rows:
        return list(range(n_rows))
    g = torch.Generator()
    g.manual_seed(seed + 7_919)
    return sorted(torch.randperm(n_rows, generator=g)[:k].tolist())
