"""Drive an Engine in-process, without the stdin/stdout loop: what the tests and the benchmark use.

eng = Engine(folder, torch.device("cpu"), torch.float32, max_batch=8, emit=Collector())
out = run(eng, [Request(id="a", weights=folder, adapter_path=None, prompt=[1, 2], max_tokens=8)])
out["a"]["tokens"]   # [..8 ids..]; out["a"]["done"]["finish_reason"] == "length"
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from .engine import Engine, Request


class Collector:
    """An `emit` that keeps the protocol lines as dicts."""

    def __init__(self) -> None:
        self.lines: list[dict] = []

    def __call__(self, type_: str, **fields) -> None:
        self.lines.append({"type": type_, **fields})


def results(lines: list[dict]) -> dict[str, dict]:
    """Per request id: tokens, logprobs, top, prompt (the prompt line), done or error."""
    out: dict[str, dict] = {}

    def get(i):
        return out.setdefault(i, {"tokens": [], "logprobs": [], "top": [], "steps": []})

    for n, line in enumerate(lines):
        t = line["type"]
        if t == "tokens":
            for item in line["items"]:
                r = get(item["id"])
                r["tokens"].append(item["token"])
                r["steps"].append(n)
                if "logprob" in item:
                    r["logprobs"].append(item["logprob"])
                    r["top"].append(item["top"])
        elif t in ("done", "error", "prompt"):
            get(line["id"])[t] = line
    return out


def run(
    engine: Engine,
    requests: Sequence[Request],
    join_at: Sequence[int] | None = None,
    make_room: Callable[[int], None] = lambda n: None,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, dict]:
    """Step until every request is done; request i joins the queue before step join_at[i]."""
    emit = engine.emit
    start = len(emit.lines) if isinstance(emit, Collector) else 0
    order = sorted(range(len(requests)), key=lambda i: join_at[i] if join_at else 0)
    waiting = deque(order)
    pending: deque = deque()
    step = 0
    while waiting or pending or engine.rows:
        while waiting and (join_at[waiting[0]] if join_at else 0) <= step:
            pending.append(requests[waiting.popleft()])
        if on_step:
            on_step(step)
        engine.step(pending, make_room)
        step += 1
    return results(emit.lines[start:]) if isinstance(emit, Collector) else {}
