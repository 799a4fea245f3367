"""`python -m opentune_trainer serve` end to end, over its stdin and stdout:

    cd trainer && python3 -m pytest -q tests/test_inference_serve.py

ready first; generate → one tokens line per step → done; cancel → done cancelled; a bad adapter, a
bad line and a too-long prompt → error lines, and the worker keeps serving; idle models unload;
stdin closed → exit 0; nothing but JSON protocol lines on stdout.
"""

import json
import os
import select
import subprocess
import sys
import time

from helpers import TRAINER_DIR


class Worker:
    def __init__(self, *args):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "opentune_trainer", "serve", *args],
            cwd=TRAINER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def send(self, **msg):
        self.p.stdin.write(json.dumps(msg) + "\n")
        self.p.stdin.flush()

    def read(self, timeout=30.0) -> dict:
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert r, "no line from the worker in time"
        line = self.p.stdout.readline()
        assert line, f"the worker exited: {self.p.stderr.read()[-2000:]}"
        return json.loads(line)  # every stdout line is JSON: a stray print would fail here

    def until(self, pred, timeout=30.0) -> list[dict]:
        lines, end = [], time.monotonic() + timeout
        while True:
            lines.append(self.read(end - time.monotonic()))
            if pred(lines[-1]):
                return lines


def gen(rid, weights, adapter=None, **kw):
    return {
        "op": "generate",
        "id": rid,
        "model": {"weights": weights, "adapter": adapter},
        "prompt": [256, 72, 105],
        "max_tokens": 8,
        "temperature": 0,
        **kw,
    }


def test_serve_end_to_end(tiny_dir, tmp_path):
    w = Worker("--max-batch", "4", "--idle-seconds", "1", "--device", "cpu")
    try:
        assert w.read() == {"type": "ready", "device": "cpu", "dtype": "float32", "max_batch": 4}
        w.send(**gen("a", tiny_dir, logprobs=1))
        lines = w.until(lambda m: m["type"] == "done")
        assert lines[0]["type"] == "log" and "loaded" in lines[0]["message"]
        steps = [m for m in lines if m["type"] == "tokens"]
        assert len(steps) == 8 and all(len(s["items"]) == 1 and "logprob" in s["items"][0] for s in steps)
        assert lines[-1] == {
            "type": "done",
            "id": "a",
            "finish_reason": "length",
            "prompt_tokens": 3,
            "completion_tokens": 8,
        }
        first = [s["items"][0]["token"] for s in steps]

        os.makedirs(tmp_path / "bad")
        (tmp_path / "bad" / "adapter_config.json").write_text('{"r": 0, "lora_alpha": 16}')
        w.send(**gen("long", tiny_dir, max_tokens=1000))
        w.send(**gen("bad", tiny_dir, adapter=str(tmp_path / "bad")))
        w.p.stdin.write("not json\n")
        w.send(**gen("huge", tiny_dir, max_tokens=5000))
        got = w.until(lambda m: m["type"] == "tokens" and any(i["id"] == "long" for i in m["items"]))
        errors = {m["id"]: m for m in got if m["type"] == "error"}
        w.send(op="cancel", id="long")
        w.send(op="cancel", id="nobody")  # a no-op
        rest = w.until(lambda m: m["type"] == "done" and m["id"] == "long")
        errors.update({m["id"]: m for m in rest if m["type"] == "error"})
        assert rest[-1]["finish_reason"] == "cancelled"
        # when "long" ran a step before the worker read the next lines, the cancel arrives with
        # them and the step that ends "long" comes before the admissions that reject them
        while not {"bad", "huge", None} <= set(errors):
            m = w.read()
            assert m["type"] == "error", m
            errors[m["id"]] = m
        assert errors["bad"]["code"] == "model_error" and "r must be a positive integer" in errors["bad"]["message"]
        assert errors[None]["code"] == "bad_request" and errors["huge"]["code"] == "bad_request"

        w.send(**gen("again", tiny_dir))  # still serving, same greedy tokens
        lines = w.until(lambda m: m["type"] == "done")
        assert [m["items"][0]["token"] for m in lines if m["type"] == "tokens"] == first
        unloaded = w.until(lambda m: m["type"] == "log" and "unloaded" in m["message"], timeout=10)
        assert unloaded[-1]["message"] == f"unloaded {os.path.abspath(tiny_dir)}"
        w.p.stdin.close()
        assert w.p.wait(timeout=20) == 0
    finally:
        if w.p.poll() is None:
            w.p.kill()
