#!/usr/bin/env bash
# The one prepared GPU check: GPU tests, Triton kernels validated on the GPU, the GPU benchmark.
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine: everything, < 8 min on one H100
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: the same steps on the CPU, tiny sizes (~1 min)
#
# Without a CUDA device it runs the dry run. Needs only python3 with torch, triton, numpy (and pytest,
# safetensors, onnx for the test steps; a missing one skips that step): no network, no pip install
# (the `cadenza` package is put on PYTHONPATH through a folder of symlinks when it is not installed).
# Each step has a time budget (`timeout`; GPU budgets add up to 455 s); a step over budget is reported
# and the next one runs.
# Writes gpu_check.log, gpu_bench.json(l) and compile/gpu_bench.json(l) into $OUT (default: a temp dir).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t cadenza-gpu-check.XXXX)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

if ! "$PY" -c "import cadenza.engine.backends.torch.generator" 2>/dev/null; then
  SHIM=$(mktemp -d -t cadenza-shim.XXXX)
  mkdir -p "$SHIM/cadenza"
  for p in engine export kernels benchmarks; do ln -s "$ROOT/$p" "$SHIM/cadenza/$p"; done
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if [[ $DRY == 0 ]] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: running the CPU dry run"
  DRY=1
fi

STATUS=()
step() {  # step NAME BUDGET_S CMD...: run CMD under its budget and record how it ended
  local name=$1 budget=$2 t0=$SECONDS rc
  shift 2
  echo "=== $name (budget ${budget} s)"
  timeout --signal=INT --kill-after=10 "$budget" "$@"
  rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then
    echo "=== $name: exceeded its ${budget} s budget and was stopped (what it measured so far is kept)"
  fi
  echo "=== $name: rc=$rc after $((SECONDS - t0)) s"
  STATUS+=("$name=$rc")
}
has() { "$PY" -c "import $1" 2>/dev/null; }

"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
EOF

VALIDATE='
import torch
from cadenza.kernels import penalty, sampling
dev = "cuda" if torch.cuda.is_available() else "cpu"
for dt in (torch.float32, torch.bfloat16):
    sampling.validate(dtype=dt, device=dev)
    sampling.validate(V=2049, dtype=dt, device=dev)  # the 1b codebook-0 row: C + 1 logits
    penalty.validate(dtype=dt, device=dev)
print("kernels validate: ok on", dev)
'

if [[ $DRY == 1 ]]; then
  if has pytest; then
    step "tests (gpu-marked: collected and skipped without a GPU)" 120 \
      "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/engine/backends/torch
  fi
  if has triton; then
    step "kernels validate (Triton interpreter)" 120 env TRITON_INTERPRET=1 "$PY" -c "$VALIDATE"
  fi
  step "gpu_bench dry run" 120 "$PY" benchmarks/gpu_bench.py --dry-run --size tiny --device cpu --out "$OUT"
else
  export TRITON_INTERPRET=0  # tests/kernels/conftest.py would otherwise default it to 1
  if has pytest; then
    step "GPU tests" 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu \
      tests/engine/backends/torch
    step "kernel tests on CUDA" 60 "$PY" -m pytest -q -p no:cacheprovider -x tests/kernels
  fi
  step "kernels validate" 45 "$PY" -c "$VALIDATE"
  step "gpu_bench (1b: graph, eager, ttfa, codec)" 170 \
    "$PY" benchmarks/gpu_bench.py --size 1b --parts graph,eager,ttfa,codec --part-budget 60 --out "$OUT"
  step "gpu_bench (1b: torch.compile reduce-overhead)" 90 env TORCHINDUCTOR_COMPILE_THREADS=16 TORCH_LOGS=recompiles \
    "$PY" benchmarks/gpu_bench.py --size 1b --parts compile --compile-buckets 1,8 --part-budget 60 \
    --out "$OUT/compile"
  if [[ "${STATUS[-1]}" == *=124 || "${STATUS[-1]}" == *=137 ]]; then
    echo "torch.compile: skipped, it exceeded its 90 s budget (compile time of the 1b frame); see the log above"
  fi
fi

echo "=== summary: ${STATUS[*]}"
echo "=== results in $OUT"
for s in "${STATUS[@]}"; do [[ $s == *=0 ]] || exit 1; done
