#!/usr/bin/env bash
# Every test: typecheck, lint, the Node suites (SQLite and PostgreSQL), the trainer's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-node.sh
bash scripts/test-python.sh
