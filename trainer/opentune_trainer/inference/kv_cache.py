"""Slot-based KV cache: per layer k and v of shape [slots, kv_heads, capacity, head_dim].

Rows 0..n-1 are the running requests, always compact: when one finishes, the last row moves into
its place, so a decode step attends over the views k[:n, :, :L] with a key-length mask per row
(no gather, no padding copies). Keys are stored after RoPE, so a cached key never changes.
"""

from __future__ import annotations

import torch

# first allocation: enough for a short chat without regrowing, small enough to be cheap for the tiny
# model; capacity then doubles (never past the model's context) and slots double (never past max_batch)
INITIAL_SLOTS = 4
INITIAL_CAPACITY = 256


class KVCache:
    def __init__(self, layers: int, kv_heads: int, head_dim: int, max_slots: int, max_len: int, device, dtype):
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim
        self.max_slots, self.max_len = max_slots, max_len
        self.device, self.dtype = device, dtype
        self.slots, self.capacity = 0, 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def bytes_for(self, slots: int, capacity: int) -> int:
        return (
            2
            * self.layers
            * slots
            * self.kv_heads
            * capacity
            * self.head_dim
            * torch.empty((), dtype=self.dtype).element_size()
        )

    def ensure(self, slots: int, length: int, lengths: list[int]) -> None:
        """Room for `slots` rows of `length` positions; existing rows (their `lengths`) are kept."""
        if slots <= self.slots and length <= self.capacity:
            return
        new_slots = self.slots
        if slots > self.slots:
            new_slots = min(self.max_slots, max(slots, 2 * self.slots, INITIAL_SLOTS))
        new_cap = self.capacity
        if length > self.capacity:
            new_cap = min(self.max_len, max(length, 2 * self.capacity, INITIAL_CAPACITY))
        shape = (new_slots, self.kv_heads, new_cap, self.head_dim)
        n, keep = len(lengths), max(lengths, default=0)
        for i in range(self.layers):
            for store in (self.k, self.v):
                t = torch.zeros(shape, device=self.device, dtype=self.dtype)
                if i < len(store):
                    if n and keep:
                        t[:n, :, :keep] = store[i][:n, :, :keep]
                    store[i] = t
                else:
                    store.append(t)
        self.slots, self.capacity = new_slots, new_cap

    def move(self, src: int, dst: int, length: int) -> None:
        """Row `src` (its first `length` positions) into row `dst` (compaction after a finish)."""
        if src == dst or length == 0:
            return
        for store in (self.k, self.v):
            for t in store:
                t[dst, :, :length] = t[src, :, :length]

    def free(self) -> None:
        self.k, self.v = [], []
        self.slots, self.capacity = 0, 0
