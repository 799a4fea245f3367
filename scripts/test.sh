#!/usr/bin/env bash
# Every test: typecheck, lint, the Node suites (SQLite and PostgreSQL), the trainer's pytest suite
# on Debian's torch 1.13, then again on current PyTorch 2.x + transformers in a chroot (GPU-shaped
# paths and HF parity on the CPU; skipped with a message where it cannot be built).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-node.sh
bash scripts/test-python.sh
bash scripts/test-torch2.sh
