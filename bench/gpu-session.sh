#!/usr/bin/env bash
# Everything issue 3 asks of a GPU, in one call, for a session that has one (none has had yet):
#
#   bash bench/gpu-session.sh "$OUT" [baseline.py]     # on the GPU machine; default bench/hf_peft_baseline.py
#
# 1. the trainer's tests with CUDA: transformers parity (and PEFT loading, when peft is there),
#    FlexAttention, the bf16/compile/fused training path through the CLI;
# 2. throughput side by side, same GPU, same call: the HF + PEFT baseline, then ours with and
#    without torch.compile, then packed rows with SDPA and with FlexAttention.
# Each step's output goes to <out>/<step>.log; a failing step does not stop the others, and the
# summary at the end says which failed. Figures go to docs/benchmarks.md (Trainer section).
set -uo pipefail
out=${1:-gpu-session-out}
baseline=${2:-bench/hf_peft_baseline.py}
mkdir -p "$out"
cd "$(dirname "$0")/.."
failed=()

step() {  # step <name> <command…>
  local name=$1; shift
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (see $out/$name.log)"; failed+=("$name"); fi
  tail -n 20 "$out/$name.log" | grep -E '^\{|passed|failed|error' || true
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
python3 -c 'import torch, transformers; print(torch.__version__, transformers.__version__)' >>"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

step pytest-gpu python3 -m pytest -q -c trainer/pytest.ini trainer/tests/test_hf_parity.py trainer/tests/test_gpu_training.py trainer/tests/test_accelerator_paths.py trainer/tests/test_interop.py
step baseline python3 "$baseline"
step opentune python3 bench/trainer_throughput.py
step opentune-nocompile env OPENTUNE_COMPILE=0 python3 bench/trainer_throughput.py
step packed-sdpa python3 bench/trainer_throughput.py --packed
step packed-flex env OPENTUNE_ATTENTION=flex python3 bench/trainer_throughput.py --packed

if [ ${#failed[@]} -gt 0 ]; then echo "failed steps: ${failed[*]}"; exit 1; fi
echo "all steps passed; JSON lines in $out/*.log"
