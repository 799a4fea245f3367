"""Heartbeat lines in the long phases without steps (issue 10, class 3): the runner kills a trainer
that prints nothing for too long, so loading, the first step, checkpoints and state writes beat."""

import json
import os
import subprocess
import sys

from helpers import TRAINER_DIR, make_spec

PHASES = {"starting", "loading", "the first step", "validating and writing a checkpoint", "writing resumable state"}


def test_class_3_long_phases_print_heartbeats_between_whole_lines(tmp_path, tiny_dir, splits):
    spec = make_spec(str(tmp_path), tiny_dir, *splits)
    env = {**os.environ, "OPENTUNE_HEARTBEAT_S": "0.005"}  # far more often than the runner's
    p = subprocess.run(
        [sys.executable, "-m", "opentune_trainer", "train", "--spec", spec],
        cwd=TRAINER_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines()]  # two threads print: never half a line
    beats = [m for m in lines if m["type"] == "heartbeat"]
    assert beats, "importing torch and loading the model take longer than 5 ms"
    assert {b["phase"] for b in beats} <= PHASES
    assert {"starting", "loading"} <= {b["phase"] for b in beats}
    assert lines[-1]["type"] == "finished" and lines[-1]["status"] == "succeeded"
