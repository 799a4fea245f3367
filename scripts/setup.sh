#!/usr/bin/env bash
# One-time set-up on a fresh machine: the trainer's Python environment (.venv: PyTorch 2.x from pip,
# the CUDA build where an NVIDIA GPU is present, the CPU build otherwise), the Node packages and the
# compiled service. Run it again after pulling: it only redoes what changed.
#
#   OPENTUNE_TORCH=cpu|cuda   force the PyTorch build (default: cuda when nvidia-smi sees a GPU)
#   OPENTUNE_SETUP_PYTHON     the interpreter the venv is made from (default: python3, needs >= 3.10)
#
# Where pip cannot install PyTorch (no index reachable), Debian's python3-torch 1.13 (CPU only) is
# installed instead, and this script says so: the trainer works, GPU and interop tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { echo "setup: $*"; }

apt_install() {  # apt_install <package…>: those not installed yet, one apt-get update first
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { say "not a Debian system: install ${missing[*]} yourself"; return 1; }
  say "installing ${missing[*]}"
  [ -n "${APT_UPDATED:-}" ] || { $SUDO apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

torch_build() {
  if [ -n "${OPENTUNE_TORCH:-}" ]; then echo "$OPENTUNE_TORCH"; return; fi
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then echo cuda; else echo cpu; fi
}

# The venv is remade when its requirements change; the stamp holds their hash.
python_env() {
  local build req stamp py
  build=$(torch_build)
  req="trainer/requirements-$build.txt"
  [ -f "$req" ] || { say "OPENTUNE_TORCH must be cpu or cuda, got '$build'"; exit 1; }
  stamp="$build $(cat "$req" trainer/requirements.txt | sha256sum | cut -c1-16)"
  if [ -x .venv/bin/python ] && [ "$(cat .venv/.opentune-stamp 2>/dev/null)" = "$stamp" ]; then
    say "trainer environment up to date (.venv, PyTorch $build)"
    return 0
  fi
  py=${OPENTUNE_SETUP_PYTHON:-python3}
  if ! "$py" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    apt_install python3 python3-venv || true
    py=python3
  fi
  say "making the trainer environment .venv (PyTorch $build build, from $req; a few minutes the first time)"
  rm -rf .venv
  "$py" -m venv .venv
  # two retries, not pip's five: an index that is not there should fail in seconds, not minutes
  if .venv/bin/python -m pip install -q --retries 2 -r "$req" >/tmp/opentune-pip.log 2>&1; then
    echo "$stamp" > .venv/.opentune-stamp
    say "trainer: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
    return 0
  fi
  tail -5 /tmp/opentune-pip.log
  rm -rf .venv
  say "WARNING: pip could not install PyTorch; falling back to Debian's python3-torch 1.13 (CPU only)."
  say "WARNING: the trainer runs on the CPU, and the GPU, transformers and PEFT tests are skipped."
  # without libopenblas0-pthread Debian's torch uses the reference BLAS and trains ~15x slower
  apt_install python3 python3-torch python3-numpy python3-pytest libopenblas0-pthread
}

python_env
# headless Chromium for the dashboard's browser tests (test/dashboard/, driven by playwright-core)
# Slurm and munge for the Slurm executor's tests (test/slurm/ starts a one-node Slurm of its own)
command -v slurmctld >/dev/null || apt_install slurm-wlm munge || say "WARNING: no slurm-wlm: the Slurm executor tests will skip"
[ -x /usr/bin/chromium ] || apt_install chromium || say "WARNING: no chromium: the dashboard browser tests will skip"
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
npm run build
say "done — 'npm start' serves on 127.0.0.1:8000; 'node dist/cli.js doctor' shows what the trainer will run on"
