#!/usr/bin/env bash
# Every test: typecheck, lint, the Node suites (SQLite and PostgreSQL), then ruff and the trainer's
# pytest suite on the .venv that `npm run setup` makes (PyTorch 2.x, transformers, peft: the HF
# parity and interop tests run on the CPU; the GPU tests skip themselves without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-node.sh
bash scripts/test-python.sh
