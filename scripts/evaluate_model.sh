#!/usr/bin/env bash
# Evaluate one model file the way models/MODEL_CARD.md reports it: road_anomaly_val (real road
# anomalies, the set models are chosen on: AP, FPR95, AUROC of jsd, msp, maxlogit, entropy),
# CamVid test (mIoU, per-class IoU) and CamVid-Paste val and test (the same four scores).
#   bash scripts/evaluate_model.sh MODEL OUT [dense-ood-evaluate options...]
# e.g. bash scripts/evaluate_model.sh runs/x/nflowjs/model.pt eval_output/x --backend onnxruntime --threads 1
# CamVid-Paste must exist (scripts/reproduce_model_card.sh generates it); CAMVID, PASTE and
# ROAD_ANOMALY override where CamVid, CamVid-Paste and road_anomaly_val are. Choosing between
# models: python -m training.select_model (the rule in models/MODEL_CARD.md).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 MODEL OUT [dense-ood-evaluate options...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
model=$1 out=$2
shift 2
CAMVID=${CAMVID:-../shared/data/camvid}
PASTE=${PASTE:-data_generated/camvid_paste}
ROAD_ANOMALY=${ROAD_ANOMALY:-../shared/data/road_anomaly_val}
for split in val test; do
  if [ ! -f "$PASTE/$split/manifest.json" ]; then
    echo "$0: $PASTE/$split is not a CamVid-Paste split; generate it with" \
      ".venv/bin/python -m training.data.camvid_paste --split $split --seed 0 --out $PASTE/$split" >&2
    exit 2
  fi
done
.venv/bin/dense-ood-evaluate --model "$model" --images "$ROAD_ANOMALY/images" \
  --labels "$ROAD_ANOMALY/labels" --anomaly-values 2 --scores jsd,msp,maxlogit,entropy \
  --out "$out/road_anomaly_val" "$@"
.venv/bin/dense-ood-evaluate --model "$model" --images "$CAMVID/test" \
  --semantic-labels "$CAMVID/testannot" --out "$out/camvid_test" "$@"
for split in val test; do
  .venv/bin/dense-ood-evaluate --model "$model" --images "$PASTE/$split/images" \
    --labels "$PASTE/$split/labels" --semantic-labels "$PASTE/$split/semantic" \
    --scores jsd,msp,maxlogit,entropy --out "$out/camvid_paste_$split" "$@"
done
