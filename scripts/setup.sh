#!/usr/bin/env bash
# One-time set-up on a fresh machine (Debian/Ubuntu, run as root or with sudo available):
# the trainer's Python side from Debian packages, the Node packages, and the compiled service.
# Elsewhere: install Python 3 with PyTorch (pip install torch numpy pytest) and set OPENTUNE_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

# python3-torch is Debian's CPU PyTorch; without libopenblas0-pthread it falls back to the
# reference BLAS and trains ~15x slower.
PACKAGES=(python3 python3-torch python3-numpy python3-pytest libopenblas0-pthread)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: not a Debian system; install Python 3 with torch, numpy and pytest, then set OPENTUNE_PYTHON" >&2
  else
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npm run build
echo "setup: done"
