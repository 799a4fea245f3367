#!/usr/bin/env bash
# The trainer's pytest suite on the interpreter the service uses (CPU; GPU tests skip themselves).
set -euo pipefail
cd "$(dirname "$0")/../trainer"
PY="${OPENTUNE_PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3 )}"
"$PY" -m pytest -q
