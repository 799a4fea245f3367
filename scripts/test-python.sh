#!/usr/bin/env bash
# The Python side: ruff (lint + format check) over trainer/ and bench/, then the trainer's pytest
# suite on the interpreter the service uses (CPU here; the GPU tests skip themselves without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${OPENTUNE_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python
  else
    PY=$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )
    echo "test-python: no .venv (npm run setup makes it): running on $PY; tests needing transformers/peft skip"
  fi
fi
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
if "$PY" -m ruff --version >/dev/null 2>&1; then
  "$PY" -m ruff check trainer bench
  "$PY" -m ruff format --check trainer bench
else
  echo "test-python: ruff is not installed for $PY: lint skipped"
fi
cd trainer
"$PY" -m pytest -q -rs
