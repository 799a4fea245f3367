"""The serve loop: stdin in a reader thread, one scheduler on the main thread, lines on stdout.

Requests for the same weights folder share one Engine (one copy of the weights, one batch, any mix
of adapters); different folders are separate batches, stepped round-robin one step each. Each
Engine takes up to --max-batch rows; the rest wait in arrival order. Engines and adapters are
kept in least-recently-used order under --memory-gb, and engines idle for --idle-seconds unload.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque

import torch

from .. import protocol
from ..checkpoint import ModelError, param_count, read_config, weight_files
from .engine import Engine, Request, is_oom
from .speculative import MAX_STEPS

EOF_MARK = object()  # the reader thread's last item: stdin closed, the service went away
# the longest the idle loop sleeps between checks of --idle-seconds; short enough that unloading is
# timely, long enough that an idle worker costs no CPU
IDLE_POLL_S = 1.0


def pick_device(name: str) -> tuple[torch.device, torch.dtype]:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":  # bf16 halves memory and reads; float32 where the GPU lacks bf16
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return device, torch.float32  # CPU: float32 (bf16 matmuls are slow on most CPUs)


def emit(type_: str, **fields) -> None:
    protocol.emit(type_, **fields)


def _number(msg: dict, key: str, default, lo=None, hi=None, integer=False):
    v = msg.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise ValueError(f"{key} must be {'an integer' if integer else 'a number'}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{key} must be in {lo}..{hi}")
    return v


def parse_generate(msg: dict) -> Request:
    """A `generate` message as a Request; ValueError (→ bad_request) says which field is wrong."""
    model = msg.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("weights"), str) or not model["weights"]:
        raise ValueError("model.weights must be a folder path")
    adapter = model.get("adapter")
    if adapter is not None and not isinstance(adapter, str):
        raise ValueError("model.adapter must be a folder path or null")
    prompt = msg.get("prompt")
    if not isinstance(prompt, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in prompt):
        raise ValueError("prompt must be a list of token ids")
    stop = msg.get("stop_ids") or []
    if not isinstance(stop, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in stop):
        raise ValueError("stop_ids must be a list of token ids")
    draft = msg.get("draft")
    if draft is not None and (not isinstance(draft, str) or not draft):
        raise ValueError("draft must be a drafter folder path or null")
    steps = msg.get("num_speculative_tokens")
    if steps is not None:
        steps = _number(msg, "num_speculative_tokens", None, 1, MAX_STEPS, integer=True)
    logprobs = msg.get("logprobs")
    seed = msg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError("seed must be an integer or null")
    return Request(
        id=msg["id"],
        weights=os.path.abspath(model["weights"]),
        adapter_path=os.path.abspath(adapter) if adapter else None,
        prompt=prompt,
        max_tokens=_number(msg, "max_tokens", 16, 0, None, integer=True),
        temperature=float(_number(msg, "temperature", 1.0, 0.0, None)),
        top_p=float(_number(msg, "top_p", 1.0, 0.0, 1.0)),
        seed=seed % 2**63 if seed is not None else None,
        presence=float(_number(msg, "presence_penalty", 0.0, -2.0, 2.0)),
        frequency=float(_number(msg, "frequency_penalty", 0.0, -2.0, 2.0)),
        stop_ids=frozenset(stop),
        logprobs=None if logprobs is None else _number(msg, "logprobs", 0, 0, 20, integer=True),
        prompt_logprobs=bool(msg.get("prompt_logprobs", False)),
        draft_path=os.path.abspath(draft) if draft else None,
        num_speculative_tokens=steps,
    )


class Scheduler:
    def __init__(self, device, dtype, max_batch: int, memory_bytes: float, idle_seconds: float, out=emit):
        self.device, self.dtype, self.max_batch = device, dtype, max_batch
        self.memory_bytes, self.idle_seconds, self.emit = memory_bytes, idle_seconds, out
        self.engines: OrderedDict[str, Engine] = OrderedDict()  # least recently used first
        self.pending: dict[str, deque[Request]] = {}  # per weights folder, arrival order
        self.known: dict[str, Request] = {}  # every id waiting or running, for cancel
        self.turn = 0  # round-robin position over the weights folders with work

    # -- messages ----------------------------------------------------------------------------
    def handle(self, msg) -> None:
        if not isinstance(msg, dict) or not isinstance(msg.get("id"), str):
            self.emit(
                "error",
                id=msg.get("id") if isinstance(msg, dict) else None,
                code="bad_request",
                message="a request needs an op and a string id",
            )
            return
        op = msg.get("op")
        if op == "cancel":
            self.cancel(msg["id"])
        elif op == "generate":
            if msg["id"] in self.known:
                self.emit("error", id=msg["id"], code="bad_request", message=f"id {msg['id']} is already in use")
                return
            try:
                req = parse_generate(msg)
            except ValueError as e:
                self.emit("error", id=msg["id"], code="bad_request", message=str(e))
                return
            self.known[req.id] = req
            self.pending.setdefault(req.weights, deque()).append(req)
        else:
            self.emit("error", id=msg["id"], code="bad_request", message=f"unknown op {op!r}")

    def cancel(self, rid: str) -> None:
        req = self.known.get(rid)
        if req is None:
            return  # unknown or finished: a no-op
        queue_ = self.pending.get(req.weights)
        if queue_ is not None and req in queue_:
            queue_.remove(req)
            self.forget(rid)
            self.emit("done", id=rid, finish_reason="cancelled", prompt_tokens=len(req.prompt), completion_tokens=0)
        else:
            req.cancelled = True  # the engine drops it at its next step

    def forget(self, rid: str) -> None:
        self.known.pop(rid, None)

    def _out(self, type_: str, **fields) -> None:
        """The engines' emit: also forgets ids that got their last line."""
        if type_ in ("done", "error"):
            self.forget(fields.get("id"))
        self.emit(type_, **fields)

    # -- work --------------------------------------------------------------------------------
    def has_work(self) -> bool:
        return any(self.pending.values()) or any(e.busy() for e in self.engines.values())

    def step(self) -> None:
        folders = [
            w
            for w in set(self.pending) | set(self.engines)
            if self.pending.get(w) or (w in self.engines and self.engines[w].busy())
        ]
        if not folders:
            return
        folders.sort()
        w = folders[self.turn % len(folders)]
        self.turn += 1
        engine = self.engines.get(w) or self.load(w)
        if engine is None:
            return
        self.engines.move_to_end(w)
        queue_ = self.pending.setdefault(w, deque())
        try:
            engine.step(queue_, lambda n: self.make_room(n, keep=engine))
        except Exception as e:  # noqa: BLE001 - a bug in one batch: fail its requests, keep serving
            traceback.print_exc()
            code = "out_of_memory" if is_oom(e) else "internal_error"
            for i in reversed(range(len(engine.rows))):
                engine.finish(i, None, (code, f"{type(e).__name__}: {e}".splitlines()[0]))
        if not queue_:
            self.pending.pop(w, None)

    def load(self, w: str) -> Engine | None:
        queue_ = self.pending.get(w) or deque()
        try:
            _, cfg = read_config(w)
            files = weight_files(w)
            need = param_count(files) * torch.empty((), dtype=self.dtype).element_size()
            if need > self.memory_bytes:
                raise MemoryError(
                    f"{w} needs {need / 2**30:.2f} GiB, more than --memory-gb {self.memory_bytes / 2**30:.2f}"
                )
            self.make_room(need)
            t0 = time.monotonic()
            engine = Engine(w, self.device, self.dtype, self.max_batch, self._out)
        except Exception as e:  # noqa: BLE001 - any load failure is the folder's
            if isinstance(e, MemoryError) or is_oom(e):
                code, text = "out_of_memory", str(e).splitlines()[0]
            else:
                code, text = "model_error", str(e) if isinstance(e, ModelError) else f"{w}: {type(e).__name__}: {e}"
            for req in queue_:
                self._out("error", id=req.id, code=code, message=text)
            self.pending.pop(w, None)
            return None
        self.engines[w] = engine
        mb = engine.param_bytes() / 1e6
        self.emit(
            "log", level="info", message=f"loaded {w} ({mb:.1f} MB, {cfg.model_type}) in {time.monotonic() - t0:.2f} s"
        )
        return engine

    def used(self) -> int:
        return sum(e.nbytes() for e in self.engines.values())

    def make_room(self, need: int, keep: Engine | None = None) -> None:
        """Unload least recently used adapters, then idle engines, until `need` more bytes fit.
        A soft limit: when nothing more can go, the load goes ahead (the allocator has the last word)."""
        over = self.used() + need - self.memory_bytes
        if over <= 0:
            return
        for e in list(self.engines.values()):
            over -= e.drop_adapters(int(over))
            if over <= 0:
                return
        for w, e in list(self.engines.items()):
            if e is keep or e.busy() or self.pending.get(w):
                continue
            over -= e.nbytes()
            self.unload(w)
            if over <= 0:
                return

    def unload(self, w: str) -> None:
        e = self.engines.pop(w)
        e.unload()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.emit("log", level="info", message=f"unloaded {w}")

    def unload_idle(self) -> None:
        now = time.monotonic()
        for w, e in list(self.engines.items()):
            if not e.busy() and not self.pending.get(w) and now - e.last_used > self.idle_seconds:
                self.unload(w)


def _reader(q: queue.Queue) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            q.put(json.loads(line))
        except ValueError:
            q.put({"op": "invalid", "id": None, "line": line[:200]})
    q.put(EOF_MARK)


def serve(device_name: str, max_batch: int, memory_gb: float, idle_seconds: float) -> int:
    device, dtype = pick_device(device_name)
    emit("ready", device=device.type, dtype=str(dtype).removeprefix("torch."), max_batch=max_batch)
    sched = Scheduler(device, dtype, max_batch, memory_gb * 2**30, idle_seconds)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(q,), name="stdin", daemon=True).start()
    wait = max(0.01, min(IDLE_POLL_S, idle_seconds / 4))
    while True:
        msgs = []
        try:  # block (briefly, for the idle check) while idle; between steps take only what arrived
            msgs.append(q.get_nowait() if sched.has_work() else q.get(timeout=wait))
        except queue.Empty:
            pass
        while True:
            try:
                msgs.append(q.get_nowait())
            except queue.Empty:
                break
        for m in msgs:
            if m is EOF_MARK:
                return 0
            if isinstance(m, dict) and m.get("op") == "invalid":
                emit("error", id=None, code="bad_request", message=f"not a JSON line: {m['line']}")
                continue
            sched.handle(m)
        if sched.has_work():
            with torch.no_grad():
                sched.step()
        sched.unload_idle()
