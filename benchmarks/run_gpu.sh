#!/usr/bin/env bash
# Runs every benchmark on a CUDA machine in one go (about 4-5 minutes on one H100/H200, at most ~9 with
# every step at its time limit) and writes the JSON results and a log into the folder given as $1
# (default: benchmarks/results). Each step has its own time limit, and a failing step is logged and
# skipped, so the others still produce numbers.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]
#
# hm_hf is used from this checkout (PYTHONPATH), not installed. On a machine whose Python lacks some of
# hm_hf's requirements (the device machine has no `datasets`), first run `bash benchmarks/gpu_wheels.sh`
# on a machine with PyPI access: it downloads the missing wheels into .whl/, which this script installs
# into /tmp/site when this Python cannot import `datasets`.
#
# BENCH_DEVICE=cpu BENCH_ARGS=--tiny runs the same steps at smoke sizes on a CPU (tests/test_benchmarks.py
# does, so that this script is known to work before a GPU session spends its time on it); the
# torch.compile step runs on CUDA only. Inference latency is a 2-core CPU measurement (with tesseract, which
# the device machine lacks): run benchmarks/inference_latency.py on such a machine instead.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BENCH_ARGS:-}" ] && [ -z "${1:-}" ]; then
  echo "run_gpu.sh: give an output folder when BENCH_ARGS is set (smoke numbers must not replace benchmarks/results)" >&2
  exit 2
fi
OUT_DIR="${1:-benchmarks/results}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/run_gpu.log"
PY="${PYTHON:-python3}"
DEVICE="${BENCH_DEVICE:-cuda}"
read -r -a ARGS <<< "${BENCH_ARGS:-}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False

if compgen -G ".whl/*.whl" > /dev/null && ! "$PY" -c "import datasets" 2>/dev/null; then  # not where it is installed
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

{
  echo "== $(date -u '+%Y-%m-%d %H:%M UTC') $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" - <<'EOF'
import importlib
for name in ("torch", "transformers", "datasets", "peft", "accelerate", "pyarrow", "psutil", "hm_hf"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as err:  # noqa: BLE001 - report every missing piece, then fail below
        print(f"{name} MISSING: {err!r}")
EOF
} 2>&1 | tee "$LOG"

step() {  # step <seconds> <name> <command...>
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
  [ "$rc" = 0 ] || FAILED+=("$name")
}
FAILED=()

B=benchmarks
step 210 train_step "$PY" $B/train_step.py --device "$DEVICE" --matmul-peak "${ARGS[@]}" \
  --output "$OUT_DIR/train_step_$DEVICE.json"
step 60 extraction "$PY" $B/extraction.py --device "$DEVICE" "${ARGS[@]}" --output "$OUT_DIR/extraction_$DEVICE.json"
STEP_JSON="$OUT_DIR/train_step_$DEVICE.json"  # the loader is compared with this run's step, never an older one
[[ " ${FAILED[*]} " == *" train_step "* ]] && STEP_JSON=/nonexistent
step 150 data_loading "$PY" $B/data_loading.py --device "$DEVICE" "${ARGS[@]}" \
  --gpu-step-json "$STEP_JSON" --output "$OUT_DIR/data_loading_$DEVICE.json"
if [ "$DEVICE" = cuda ]; then
  step 100 train_step_compile "$PY" $B/train_step.py --device cuda --compile --methods full --modes fixed \
    "${ARGS[@]}" --output "$OUT_DIR/train_step_compile_cuda.json"
fi
echo "== done in ${SECONDS}s; failed steps: ${FAILED[*]:-none}" | tee -a "$LOG"
[ "${#FAILED[@]}" = 0 ]
