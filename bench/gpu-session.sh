#!/usr/bin/env bash
# Everything issue 13 asks of a GPU, in one command that fits in 8 minutes on one GPU:
#
#   bash bench/gpu-session.sh [OUT]        # OUT: default bench/results/gpu-<UTC date>
#   OPENTUNE_GPU_BUDGET_S=450 (the whole run's budget) · OPENTUNE_PYTHON (default .venv/bin/python)
#
# Most important first; every step under its own `timeout`, cut to what is left of the budget, and
# skipped once fewer than 20 s are left, so a run that stops half-way has still measured the first
# things. One log per step in OUT/<step>.log, their exit codes and seconds in OUT/steps.tsv, and a
# summary table (tokens/s, MFU, peak memory, ours ÷ baseline) in OUT/summary.md.
#
#  1 versions, doctor, and a real CLI job on the tiny model on CUDA (bf16, compile, fused AdamW);
#    a spec-draft drafter for it loaded by vLLM (method eagle3), where vLLM is installed
#  2 1B LoRA: the HF + PEFT baseline in its config (8×2048, no checkpointing), then ours in it
#  3 8B LoRA: the baseline's config (4×2048, checkpointing), ours in it, and ours memory-matched
#    (1×2048 per micro-batch without checkpointing: about the baseline's memory, no recomputation)
#  4 packed rows: 1B, 1×8192 of ~512-token documents, on each attention path (varlen, flex, sdpa)
#  5 the parity and PEFT tests (transformers logits, PEFT loads our adapters, HF loads our weights)
#  6 with two GPUs or more: torchrun on 2 GPUs (LoRA DDP, full FSDP2) equals one process
#
# Every figure comes from the same call on the same GPU: the baseline is re-run here, never quoted.
# Copy OUT to bench/results/ and the table to docs/benchmarks.md (Trainer section).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/gpu-$(date -u +%Y%m%d-%H%M)}
budget=${OPENTUNE_GPU_BUDGET_S:-450}
PY=${OPENTUNE_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# one Inductor cache for every step: blocks compiled by one step are not compiled again by the next
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$out/inductor-cache}
export TORCH_LOGS=${TORCH_LOGS:-recompiles,graph_breaks}  # in each log: did compile hold?
export PYTHONPATH=$PWD/trainer:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}
start=$(date +%s)
printf 'step\texit\tseconds\n' >"$out/steps.tsv"

step() {  # step <name> <timeout s> <command…>: exit 124 = its timeout, "skipped" = no budget left
  local name=$1 limit=$2 left t0 rc
  shift 2
  left=$((budget - ($(date +%s) - start)))
  if [ "$left" -lt 20 ]; then
    echo "== $name: skipped (budget spent)"
    printf '%s\tskipped\t0\n' "$name" >>"$out/steps.tsv"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (≤ ${limit} s): $*"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$out/steps.tsv"
  grep -E '^\{"impl"|^\{"check"|passed|failed|Error' "$out/$name.log" | tail -n 5
  [ "$rc" -eq 0 ] || echo "   exit $rc (see $out/$name.log)"
}

# dense bf16 TFLOP/s for MFU: H100 and H200 (SXM) 989, A100 312; others as an H100 (the log says so)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
case "$gpu" in *A100*) PEAK=312 ;; *) PEAK=989 ;; esac
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
ours() { step "$1" "$2" "$PY" -c "import trainer_throughput as t; t.safe_run($3, $PEAK)"; }
base() { step "$1" "$2" "$PY" -c "import hf_peft_baseline as b; b.run($3, $PEAK)"; }

# 1 ------------------------------------------------------------------------------------------
step versions 30 bash -c "nvidia-smi; echo peak_tflops=$PEAK; $PY -c 'import torch, transformers, peft; \
print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__)'; \
$PY -m opentune_trainer doctor"
step smoke 90 "$PY" -m pytest -q -x -c trainer/pytest.ini trainer/tests/test_gpu_training.py -k True
# issue 16: a spec-draft drafter for an 8-layer tiny model, in our engine and in vLLM (method eagle3) where it imports
step spec-draft-serving 120 "$PY" bench/spec_draft_serving.py "$out/spec-draft"
# 2 ------------------------------------------------------------------------------------------
base baseline-1b 75 "'llama-1b', 8, 2048, 10, False"
ours ours-1b 75 "'llama-1b', 8, 2048, 10, False"
# 3 ------------------------------------------------------------------------------------------
base baseline-8b 90 "'llama-8b', 4, 2048, 6, True"
ours ours-8b 75 "'llama-8b', 4, 2048, 6, True"
ours ours-8b-matched 60 "'llama-8b', 1, 2048, 8, False"
# 4 ------------------------------------------------------------------------------------------
for k in varlen flex sdpa; do
  step "packed-8k-$k" 45 env OPENTUNE_ATTENTION=$k "$PY" -c \
    "import trainer_throughput as t; t.safe_run('llama-1b', 1, 8192, 5, False, $PEAK, True)"
done
# 5 ------------------------------------------------------------------------------------------
step parity-peft 90 "$PY" -m pytest -q -c trainer/pytest.ini trainer/tests/test_hf_parity.py trainer/tests/test_interop.py
# 6 ------------------------------------------------------------------------------------------
if [ "${ngpu:-0}" -ge 2 ]; then
  step multi-gpu 90 env OPENTUNE_TEST_DEVICE=cuda "$PY" -m pytest -q -c trainer/pytest.ini trainer/tests/test_distributed.py
fi

# summary ------------------------------------------------------------------------------------
"$PY" - "$out" <<'EOF'
import json, os, sys

out = sys.argv[1]
rows, base = [], {}
for name in [line.split("\t")[0] for line in open(os.path.join(out, "steps.tsv")).read().splitlines()[1:]]:
    path = os.path.join(out, name + ".log")
    for line in open(path).read().splitlines() if os.path.exists(path) else []:
        if line.startswith('{"impl"'):
            r = json.loads(line)
            rows.append((name, r))
            if r["impl"] == "hf+peft" and "tokens_per_s" in r:
                base[r["model"]] = r
table = ["| step | impl | model | batch×seq | ckpt | tokens/s | MFU (6N) | peak GiB | ours ÷ baseline |", "|" + "---|" * 9]
for name, r in rows:
    b = base.get(r["model"])
    ratio = f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}×" if b and r["impl"] != "hf+peft" and "tokens_per_s" in r else ""
    if "error" in r:
        table.append(f"| {name} | {r['impl']} | {r['model']} | {r['batch']}×{r['seq']} | {r['grad_ckpt']} | {r['error']} | | | |")
        continue
    att = f" ({r['attention']})" if r.get("packed") else ""
    table.append(
        f"| {name} | {r['impl']}{att} | {r['model']} | {r['batch']}×{r['seq']} | {r['grad_ckpt']} | "
        f"{r['tokens_per_s']:,} | {r['mfu_6N']:.3f} | {r['max_mem_gib']} | {ratio} |"
    )
steps = open(os.path.join(out, "steps.tsv")).read()
text = "\n".join(table) + "\n\nsteps (exit 124: its timeout):\n\n```\n" + steps + "```\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
EOF
echo "took $(($(date +%s) - start)) s; logs and summary.md in $out"
