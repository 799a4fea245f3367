"""One loaded set of weights and its running batch (continuous batching).

Each `step()`: drop cancelled rows, admit waiting requests into free slots (prefilled together as
right-padded batches; the prefill gives their first token), decode one token for every row that
was already running, sample every row at once, emit one `tokens` line, finish rows that hit a stop
id or max_tokens (the last row moves into the freed slot, so rows stay compact).

Rows with a drafter (greedy, no penalties, no logprobs: speculative.py) draft a few tokens each
step; then every running row goes through one target forward (forward.extend: the fed token plus
its drafts, one token for a plain row), and a speculative row emits the drafts the target agrees
with plus the target's own next token (several items for its id in that step's `tokens` line).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..checkpoint import ModelError, load_model
from . import speculative as spec
from .adapters import NO_LORA, Adapter, LoraGroups, adapter_mtime, load_adapter
from .forward import DecodeInputs, decode, extend, prefill
from .kv_cache import KVCache
from .packed import pack_linears
from .sampling import make_plan, prompt_logprobs, sample

# prompt_logprobs: the LM head runs over this many prompt positions at a time, so a long prompt
# never holds a [T × vocab] float32 logits tensor (4k tokens × 152k vocab would be 2.4 GB)
PROMPT_LOGITS_CHUNK = 256
# the requests admitted in one step are prefilled together, as few right-padded batches of at most
# this many tokens (padding included) as the padding rule in Engine._groups allows
PREFILL_TOKENS = 4096


class BadRequest(ValueError):
    pass


def is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or a CPU allocation that failed (a RuntimeError that says so)."""
    if type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@dataclass
class Request:
    id: str
    weights: str
    adapter_path: str | None
    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    presence: float = 0.0
    frequency: float = 0.0
    stop_ids: frozenset[int] = frozenset()
    logprobs: int | None = None
    prompt_logprobs: bool = False
    draft_path: str | None = None  # an EAGLE-3 drafter folder (speculative decoding)
    num_speculative_tokens: int | None = None  # None: the drafter's config, else spec.DEFAULT_STEPS
    # while running
    adapter: Adapter | None = None
    gen: torch.Generator | None = None
    length: int = 0  # positions written to the cache
    last: int = -1  # the token sampled last, fed at the next decode step
    generated: int = 0
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)
    # speculative rows only (speculative.py says what these hold between steps)
    draft: spec.Drafter | None = None
    steps: int = 0  # drafts per verify forward
    seq: list[int] = field(default_factory=list)  # prompt + generated tokens
    feat: torch.Tensor | None = None
    dlen: int = 0
    verifies: int = 0  # verify forwards that carried drafts
    drafted: int = 0
    accepted: int = 0


# a speculative row's step: its drafts, the target's argmax after each prefix, its features there
Verified = tuple[list[int], list[int], torch.Tensor]


class Engine:
    def __init__(self, weights: str, device: torch.device, dtype: torch.dtype, max_batch: int, emit: Callable):
        self.weights, self.device, self.dtype, self.max_batch, self.emit = weights, device, dtype, max_batch, emit
        self.model = load_model(weights, device, dtype).eval()
        self.model.requires_grad_(False)
        self.packed = pack_linears(self.model, device, dtype, max_batch)  # CPU: oneDNN, see packed.py
        cfg = self.cfg = self.model.config
        self.cache = KVCache(
            cfg.num_hidden_layers,
            cfg.num_key_value_heads,
            cfg.head_dim,
            max_batch,
            cfg.max_position_embeddings,
            device,
            dtype,
        )
        self.rows: list[Request] = []
        self.adapters: OrderedDict[str, Adapter] = OrderedDict()  # least recently used first
        self.counts: torch.Tensor | None = None  # [slots, vocab] generated-token counts, once penalties are used
        self.last_used = time.monotonic()
        self._version = 0  # bumped whenever rows join or leave: the cached plans below go stale
        self._plan_key: tuple | None = None
        self._plan = None
        self._lora_key: tuple | None = None
        self._lora = NO_LORA
        self.drafters: OrderedDict[str, spec.Drafter] = OrderedDict()  # least recently used first
        self.draft_cache: KVCache | None = None  # the drafters' keys, made at the first speculative step
        self._verified: dict[int, Verified] = {}  # id(row) → this step's drafts, argmaxes, features

    # -- memory ------------------------------------------------------------------------------
    def param_bytes(self) -> int:
        seen, total = set(), 0
        for p in self.model.parameters():
            if id(p) not in seen:  # tied embeddings count once
                seen.add(id(p))
                total += p.numel() * p.element_size()
        return total

    def nbytes(self) -> int:
        extra = self.counts.numel() * 4 if self.counts is not None else 0
        extra += sum(d.nbytes() for d in self.drafters.values())
        extra += self.draft_cache.nbytes() if self.draft_cache is not None else 0
        return self.param_bytes() + self.cache.nbytes() + sum(a.nbytes() for a in self.adapters.values()) + extra

    def busy(self) -> bool:
        return bool(self.rows)

    def drop_adapters(self, need: int) -> int:
        """Unload least recently used adapters and drafters no running row uses, until `need` bytes
        are freed (the drafters' cache goes with the last drafter)."""
        used = {id(r.adapter) for r in self.rows} | {id(r.draft) for r in self.rows}
        freed = 0
        for store in (self.adapters, self.drafters):
            for path in list(store):
                if freed >= need:
                    break
                a = store[path]
                if id(a) not in used:
                    freed += a.nbytes()
                    del store[path]
        idle = not self.drafters and not any(r.draft for r in self.rows)  # no running row's keys in it
        if idle and self.draft_cache is not None and freed < need:
            freed += self.draft_cache.nbytes()
            self.draft_cache = None
        return freed

    def unload(self) -> None:
        self.cache.free()
        self.adapters.clear()
        self.drafters.clear()
        self.draft_cache = None
        self.counts = None
        del self.model

    # -- requests ----------------------------------------------------------------------------
    def adapter(self, path: str, make_room: Callable[[int], None]) -> Adapter:
        return self._loaded("adapter", self.adapters, path, adapter_mtime, load_adapter, make_room)

    def drafter(self, path: str, make_room: Callable[[int], None]) -> spec.Drafter:
        return self._loaded("drafter", self.drafters, path, spec.drafter_mtime, spec.load, make_room)

    def _loaded(self, what: str, store: OrderedDict, path: str, mtime: Callable, load: Callable, make_room):
        """The folder's adapter or drafter, from `store` (least recently used first) unless its
        files changed since; else loaded against this model, room made for it, and logged."""
        x = store.get(path)
        if x is not None and x.mtime == mtime(path):
            store.move_to_end(path)
            return x
        t0 = time.monotonic()
        x = load(path, self.model, self.device, self.dtype)
        make_room(x.nbytes())
        store[path] = x
        self.emit(
            "log",
            level="info",
            message=f"loaded {what} {path} ({x.nbytes() / 1e6:.1f} MB) in {time.monotonic() - t0:.2f} s",
        )
        return x

    def check(self, req: Request) -> None:
        n = len(req.prompt)
        limit = self.cfg.max_position_embeddings
        if n == 0:
            raise BadRequest("the prompt is empty")
        if n + req.max_tokens > limit:
            raise BadRequest(
                f"prompt ({n} tokens) + max_tokens ({req.max_tokens}) exceeds the model's context of {limit}"
            )
        V = self.cfg.vocab_size
        if min(req.prompt) < 0 or max(req.prompt) >= V:
            raise BadRequest(f"prompt token ids must be in 0..{V - 1}")

    def _prepare(self, req: Request, make_room: Callable[[int], None]) -> None:
        """Validate `req`, load its adapter, seed its generator (errors: BadRequest, ModelError)."""
        self.check(req)
        if req.adapter_path:
            req.adapter = self.adapter(req.adapter_path, make_room)
        if req.temperature > 0:
            req.gen = torch.Generator(device=self.device)
            req.gen.manual_seed(req.seed if req.seed is not None else int(torch.randint(0, 2**62, ()).item()))
        if (req.presence or req.frequency) and self.counts is None:
            self.counts = torch.zeros(self.max_batch, self.cfg.vocab_size, device=self.device)
        if req.draft_path:  # loaded and checked whenever named; it drafts only for greedy rows without
            d = self.drafter(req.draft_path, make_room)  # penalties or logprobs (the others decode plainly)
            if req.temperature == 0 and not (req.presence or req.frequency) and req.logprobs is None:
                req.draft, req.steps = d, req.num_speculative_tokens or d.steps
                req.seq = list(req.prompt)

    def _prefill(self, group: list[tuple[Request, int]]) -> dict[int, torch.Tensor]:
        """One padded forward for `group` ((request, cache slot) pairs); emits prompt logprobs and
        the `done` of requests that only score their prompt; returns id(request) → the logits
        [1, vocab] of the first token of each request that generates."""
        T = max(len(r.prompt) for r, _ in group)
        tokens = torch.zeros(len(group), T, dtype=torch.long, device=self.device)
        for b, (r, _) in enumerate(group):
            tokens[b, : len(r.prompt)] = torch.tensor(r.prompt, device=self.device)
        slots = torch.tensor([s for _, s in group], device=self.device)
        by: dict[int, tuple[Adapter, list[int]]] = {}
        for b, (r, _) in enumerate(group):
            if r.adapter is not None:
                by.setdefault(id(r.adapter), (r.adapter, []))[1].append(b)
        lora = LoraGroups(
            [(a, None if len(idx) == len(group) else torch.tensor(idx, device=self.device)) for a, idx in by.values()]
        )
        capture = spec.capture_for(self.cfg.num_hidden_layers) if any(r.draft for r, _ in group) else None
        h = prefill(self.model, self.cache, slots, tokens, lora, capture)
        if capture is not None:
            aux = spec.features(capture, self.cfg.num_hidden_layers)
            for b, (r, _) in enumerate(group):
                if r.draft is not None:
                    r.feat, r.dlen = aux[b, : len(r.prompt)], 0
        gen = [b for b, (r, _) in enumerate(group) if r.max_tokens > 0]
        last = torch.tensor([len(group[b][0].prompt) - 1 for b in gen], device=self.device)
        logits = self.model.lm_head(h[torch.tensor(gen, device=self.device), last]).float() if gen else None
        out = {}
        for b, (r, _) in enumerate(group):
            n = len(r.prompt)
            if r.prompt_logprobs:
                chunks = [
                    self.model.lm_head(h[b, s : min(s + PROMPT_LOGITS_CHUNK, n)]).float()
                    for s in range(0, n, PROMPT_LOGITS_CHUNK)
                ]
                values, tops = prompt_logprobs(torch.cat(chunks), r.prompt, r.logprobs)
                fields = {"logprobs": values} if tops is None else {"logprobs": values, "top": tops}
                self.emit("prompt", id=r.id, **fields)
            if r.max_tokens == 0:  # the slot stays free: the next prefill overwrites its cache
                self.emit("done", id=r.id, finish_reason="length", prompt_tokens=n, completion_tokens=0)
        for j, b in enumerate(gen):
            out[id(group[b][0])] = logits[j : j + 1]
        return out

    def _groups(self, batch: list[tuple[Request, int]]) -> list[list[tuple[Request, int]]]:
        """Prefill groups: longest prompts first; a shorter prompt joins while the padding stays
        under a third of the group's tokens and the group under PREFILL_TOKENS padded tokens."""
        order = sorted(batch, key=lambda rs: -len(rs[0].prompt))
        groups: list[list[tuple[Request, int]]] = []
        real = 0
        for rs in order:
            n = len(rs[0].prompt)
            if groups:
                g, T = groups[-1], len(groups[-1][0][0].prompt)
                padded = (len(g) + 1) * T
                if padded <= PREFILL_TOKENS and 2 * padded <= 3 * (real + n):
                    g.append(rs)
                    real += n
                    continue
            groups.append([rs])
            real = n
        return groups

    def _admit(self, batch: list[Request], make_room: Callable[[int], None]) -> dict[int, torch.Tensor]:
        """Prefill the prepared requests of this step (as few padded forwards as padding allows);
        those that generate join the rows in `batch` order. Returns id(request) → first logits."""
        base = len(self.rows)
        gen = [r for r in batch if r.max_tokens > 0]
        score = [r for r in batch if r.max_tokens == 0]
        slot = {id(r): base + i for i, r in enumerate(gen + score)}  # generating rows first, compact
        T = max(len(r.prompt) for r in batch)
        need = base + len(batch)
        lengths = [r.length for r in self.rows]
        make_room(
            max(
                0,
                self.cache.bytes_for(max(need, self.cache.slots), max(T, self.cache.capacity)) - self.cache.nbytes(),
            )
        )
        self.cache.ensure(need, T, lengths)
        new: dict[int, torch.Tensor] = {}
        for group in self._groups([(r, slot[id(r)]) for r in batch]):
            try:
                new.update(self._prefill(group))
                continue
            except Exception as e:  # noqa: BLE001 - out of memory: retry the group's requests alone
                if not is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(group) == 1:
                    self.emit("error", id=group[0][0].id, code="out_of_memory", message=str(e).splitlines()[0])
                    continue
            for rs in group:
                try:
                    new.update(self._prefill([rs]))
                except Exception as e:  # noqa: BLE001
                    if not is_oom(e):
                        raise
                    self.emit("error", id=rs[0].id, code="out_of_memory", message=str(e).splitlines()[0])
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
        for r in gen:
            if id(r) not in new:
                continue
            row = len(self.rows)
            if slot[id(r)] != row:  # a request before it failed: keep the rows compact
                self.cache.move(slot[id(r)], row, len(r.prompt))
            if self.counts is not None:
                self.counts[row].zero_()
            r.length = len(r.prompt)
            self.rows.append(r)
            self._version += 1
        return new

    def _lora_groups(self, m: int) -> LoraGroups:
        key = (self._version, m)
        if key != self._lora_key:
            by: dict[int, tuple[Adapter, list[int]]] = {}
            for i, r in enumerate(self.rows[:m]):
                if r.adapter is not None:
                    by.setdefault(id(r.adapter), (r.adapter, []))[1].append(i)
            groups = []
            for a, idx in by.values():
                rows = None if len(idx) == m else torch.tensor(idx, device=self.device)
                groups.append((a, rows))
            self._lora_key, self._lora = key, LoraGroups(groups)
        return self._lora

    def _decode(self, m: int) -> torch.Tensor:
        rows = self.rows[:m]
        # drafts per row this step: never more than max_tokens leaves room for after the target's own token
        ks = [min(r.steps, r.max_tokens - r.generated - 1) if r.draft is not None else 0 for r in rows]
        if any(k > 0 for k in ks):
            return self._speculate(m, ks)
        positions = [r.length for r in rows]
        self.cache.ensure(len(self.rows), max(positions) + 1, [r.length for r in self.rows])
        inp = DecodeInputs(self.model, positions, self.device, self.dtype)
        tokens = torch.tensor([r.last for r in rows], device=self.device)
        h = decode(self.model, self.cache, tokens, inp, self._lora_groups(m))
        return self.model.lm_head(h[:, 0]).float()

    def _speculate(self, m: int, ks: list[int]) -> torch.Tensor:
        """Draft for the rows with ks[i] > 0, then one target forward over every running row (its fed
        token and its drafts); keeps each speculative row's drafts, the target's argmax after each
        prefix and its features for step() and returns every row's first-position logits [m, vocab]."""
        rows = self.rows[:m]
        L = self.cfg.num_hidden_layers
        need = max(r.length + k for r, k in zip(rows, ks, strict=True)) + 1
        lengths = [r.length for r in self.rows]
        if self.draft_cache is None:  # one layer of the target's key/value shape (speculative.load checks)
            c = self.cfg
            self.draft_cache = KVCache(
                1,
                c.num_key_value_heads,
                c.head_dim,
                self.max_batch,
                c.max_position_embeddings + spec.MAX_STEPS,
                self.device,
                self.dtype,
            )
        # rows past the drafters' cache's slots have no step-0 keys yet: nothing of theirs to keep
        self.draft_cache.ensure(len(self.rows), need + max(ks), lengths[: self.draft_cache.slots])
        by: dict[int, tuple[spec.Drafter, list[int]]] = {}
        for i, r in enumerate(rows):
            if ks[i]:
                by.setdefault(id(r.draft), (r.draft, []))[1].append(i)
        drafts: dict[int, list[int]] = {}
        for d, idx in by.values():
            for i, out in zip(
                idx,
                spec.draft(d.module, self.draft_cache, idx, [rows[i] for i in idx], [ks[i] for i in idx]),
                strict=True,
            ):
                drafts[i] = out
        T = 1 + max(ks)
        tokens = torch.zeros(m, T, dtype=torch.long, device=self.device)
        for i, r in enumerate(rows):
            tokens[i, : 1 + ks[i]] = torch.tensor([r.last] + drafts.get(i, []), device=self.device)
        counts = [1 + k for k in ks]
        self.cache.ensure(len(self.rows), need, lengths)
        capture = spec.capture_for(L)
        h = extend(self.model, self.cache, tokens, counts, [r.length for r in rows], self._lora_groups(m), capture)
        t = torch.arange(T, device=self.device)
        valid = t[None] < torch.tensor(counts, device=self.device)[:, None]
        logits = self.model.lm_head(h[valid]).float()  # [Σ counts, vocab], row by row
        starts = [0]
        for c in counts[:-1]:
            starts.append(starts[-1] + c)
        best = logits.argmax(-1).tolist()
        aux = spec.features(capture, L)
        self._verified = {
            id(rows[i]): (drafts[i], best[starts[i] : starts[i] + counts[i]], aux[i, : counts[i]]) for i in drafts
        }
        return logits[torch.tensor(starts, device=self.device)]

    def _emitted(self, r: Request, token: int) -> list[int]:
        """The tokens row r gets this step (speculative rows: the accepted drafts and the target's
        token, their state advanced), cut after a stop id or at max_tokens."""
        verified = self._verified.pop(id(r), None)
        if verified is None:
            new = [token]
        else:
            drafts, greedy, aux = verified
            new = spec.accepted(drafts, greedy)
            r.verifies += 1
            r.drafted += len(drafts)
            r.accepted += len(new) - 1
            r.dlen, r.feat = r.length, aux[: len(new)]  # step-0 keys now cover 0..length-1
        for n, t in enumerate(new):
            if t in r.stop_ids or r.generated + n + 1 >= r.max_tokens:
                return new[: n + 1]
        return new

    def finish(self, i: int, reason: str | None, error: tuple[str, str] | None = None) -> None:
        """Close row i (done or error) and move the last row into its slot."""
        r = self.rows[i]
        self._verified.pop(id(r), None)
        if error is None:
            extra = {}
            if r.draft is not None:
                extra["speculative"] = {"verifies": r.verifies, "drafted": r.drafted, "accepted": r.accepted}
            self.emit(
                "done",
                id=r.id,
                finish_reason=reason,
                prompt_tokens=len(r.prompt),
                completion_tokens=r.generated,
                **extra,
            )
        else:
            self.emit("error", id=r.id, code=error[0], message=error[1])
        j = len(self.rows) - 1
        if i != j:
            self.cache.move(j, i, self.rows[j].length)
            if self.draft_cache is not None and self.rows[j].draft is not None:
                self.draft_cache.move(j, i, self.rows[j].dlen)
            if self.counts is not None:
                self.counts[i] = self.counts[j]
            self.rows[i] = self.rows[j]
        self.rows.pop()
        self._version += 1

    def step(self, pending: deque, make_room: Callable[[int], None]) -> None:
        self.last_used = time.monotonic()
        for i in reversed(range(len(self.rows))):
            if self.rows[i].cancelled:
                self.finish(i, "cancelled")
        m = len(self.rows)
        batch: list[Request] = []
        while pending and len(self.rows) + len(batch) < self.max_batch:
            req = pending.popleft()
            try:
                self._prepare(req, make_room)
                batch.append(req)
            except BadRequest as e:
                self.emit("error", id=req.id, code="bad_request", message=str(e))
            except ModelError as e:
                self.emit("error", id=req.id, code="model_error", message=str(e))
            except Exception as e:  # noqa: BLE001 - one request's failure must not stop the others
                if not is_oom(e):
                    raise
                self.emit("error", id=req.id, code="out_of_memory", message=str(e).splitlines()[0])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        new: dict[int, torch.Tensor] = {}  # id(request) → its first token's logits
        if batch:
            try:
                new = self._admit(batch, make_room)
            except Exception as e:  # noqa: BLE001 - one step's admissions failing must not stop the rows
                if not is_oom(e):
                    raise
                for req in batch:
                    self.emit("error", id=req.id, code="out_of_memory", message=str(e).splitlines()[0])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        parts = []
        while m:
            try:
                parts.append(self._decode(m))
                break
            except Exception as e:  # noqa: BLE001 - out of memory: the newest running row gives way
                if not is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.finish(m - 1, None, ("out_of_memory", str(e).splitlines()[0]))
                m -= 1
        # rows admitted this step sit after the running ones, in an order an out-of-memory finish
        # above may have changed: their logits go by request
        parts += [new[id(r)] for r in self.rows[m:]]
        if not parts:
            return
        logits = torch.cat(parts) if len(parts) > 1 else parts[0]
        key = (self._version,)
        if key != self._plan_key:
            self._plan_key, self._plan = key, make_plan(self.rows, self.device)
        tokens, lps, tops = sample(logits, self.rows, self._plan, self.counts)
        if self.counts is not None:
            idx = torch.tensor(tokens, device=self.device)
            self.counts.index_put_(
                (torch.arange(len(tokens), device=self.device), idx),
                torch.ones(len(tokens), device=self.device),
                accumulate=True,
            )
        items, ended = [], []
        for i, r in enumerate(self.rows):
            if r.draft is not None:  # several tokens at once; speculative rows have no logprobs
                new = self._emitted(r, tokens[i])
                if i < m:
                    r.length += len(new)  # the token fed this step and the accepted drafts
                r.seq += new
                r.last = t = new[-1]
                r.generated += len(new)
                items += [{"id": r.id, "token": x} for x in new]
            else:
                t = tokens[i]
                if i < m:
                    r.length += 1  # the token fed this step is now in the cache
                r.last = t
                r.generated += 1
                item = {"id": r.id, "token": t}
                if r.logprobs is not None:
                    item["logprob"] = lps[i]
                    item["top"] = (
                        [[a, b] for a, b in zip(tops[0][i][: r.logprobs], tops[1][i][: r.logprobs], strict=True)]
                        if tops
                        else []
                    )
                items.append(item)
            if t in r.stop_ids:
                ended.append((i, "stop"))
            elif r.generated >= r.max_tokens:
                ended.append((i, "length"))
        self.emit("tokens", items=items)
        for i, reason in reversed(ended):
            self.finish(i, reason)
