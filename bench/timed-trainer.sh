#!/usr/bin/env bash
# Wraps the real trainer for bench/job-overhead.ts: records when the process started and ended.
start=$(date +%s%3N)
"${OPENTUNE_PYTHON:-$(dirname "$0")/../.venv/bin/python}" -m opentune_trainer "$@"
rc=$?
echo "{\"start_ms\":$start,\"end_ms\":$(date +%s%3N),\"rc\":$rc}" >> "$TIMED_TRAINER_LOG"
exit $rc
