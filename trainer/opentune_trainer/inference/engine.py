"""One loaded set of weights and its running batch (continuous batching).

Each `step()`: drop cancelled rows, admit waiting requests into free slots (prefilled together as
right-padded batches; the prefill gives their first token), decode one token for every row that
was already running, sample every row at once, emit one `tokens` line, finish rows that hit a stop
id or max_tokens (the last row moves into the freed slot, so rows stay compact).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..checkpoint import ModelError, load_model
from .adapters import NO_LORA, Adapter, LoraGroups, adapter_mtime, load_adapter
from .forward import DecodeInputs, decode, prefill
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
    # while running
    adapter: Adapter | None = None
    gen: torch.Generator | None = None
    length: int = 0  # positions written to the cache
    last: int = -1  # the token sampled last, fed at the next decode step
    generated: int = 0
    cancelled: bool = False
    arrived: float = field(default_factory=time.monotonic)


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
        return self.param_bytes() + self.cache.nbytes() + sum(a.nbytes() for a in self.adapters.values()) + extra

    def busy(self) -> bool:
        return bool(self.rows)

    def drop_adapters(self, need: int) -> int:
        """Unload least recently used adapters no running row uses, until `need` bytes are freed."""
        used = {id(r.adapter) for r in self.rows}
        freed = 0
        for path in list(self.adapters):
            if freed >= need:
                break
            a = self.adapters[path]
            if id(a) not in used:
                freed += a.nbytes()
                del self.adapters[path]
        return freed

    def unload(self) -> None:
        self.cache.free()
        self.adapters.clear()
        self.counts = None
        del self.model

    # -- requests ----------------------------------------------------------------------------
    def adapter(self, path: str, make_room: Callable[[int], None]) -> Adapter:
        a = self.adapters.get(path)
        if a is not None and a.mtime == adapter_mtime(path):
            self.adapters.move_to_end(path)
            return a
        t0 = time.monotonic()
        a = load_adapter(path, self.model, self.device, self.dtype)
        make_room(a.nbytes())
        self.adapters[path] = a
        self.emit(
            "log",
            level="info",
            message=f"loaded adapter {path} ({a.nbytes() / 1e6:.1f} MB) in {time.monotonic() - t0:.2f} s",
        )
        return a

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
        h = prefill(self.model, self.cache, slots, tokens, lora)
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
        positions = [r.length for r in rows]
        self.cache.ensure(len(self.rows), max(positions) + 1, [r.length for r in self.rows])
        inp = DecodeInputs(self.model, positions, self.device, self.dtype)
        tokens = torch.tensor([r.last for r in rows], device=self.device)
        h = decode(self.model, self.cache, tokens, inp, self._lora_groups(m))
        return self.model.lm_head(h[:, 0]).float()

    def finish(self, i: int, reason: str | None, error: tuple[str, str] | None = None) -> None:
        """Close row i (done or error) and move the last row into its slot."""
        r = self.rows[i]
        if error is None:
            self.emit("done", id=r.id, finish_reason=reason, prompt_tokens=len(r.prompt), completion_tokens=r.generated)
        else:
            self.emit("error", id=r.id, code=error[0], message=error[1])
        j = len(self.rows) - 1
        if i != j:
            self.cache.move(j, i, self.rows[j].length)
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
