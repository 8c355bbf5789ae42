#!/usr/bin/env bash
# Re-measure the evaluation numbers in models/MODEL_CARD.md (its training runs have their own
# commands there): generates CamVid-Paste (val, test), evaluates the shipped CE-only, NFlowJS and
# separable models with dense-ood-evaluate and lists the NFlowJS model's missed anomaly pixels
# (training.misses); ~25 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
CAMVID=${CAMVID:-../shared/data/camvid}
OUT=${OUT:-eval_output}
for split in val test; do
  [ -f "data_generated/camvid_paste/$split/manifest.json" ] || \
    $PY -m training.data.camvid_paste --split "$split" --seed 0 --out "data_generated/camvid_paste/$split"
done
for model in camvid_ce default separable; do
  CAMVID=$CAMVID bash scripts/evaluate_model.sh "models/$model.pt" "$OUT/$model"
done
$PY -m training.figures --models CE-only=models/camvid_ce.pt NFlowJS=models/default.pt --scores msp,jsd \
  --images data_generated/camvid_paste/test/images --labels data_generated/camvid_paste/test/labels \
  --out "$OUT/anomaly_maps.png"
$PY -m training.figures --models CE-only=models/camvid_ce.pt NFlowJS=models/default.pt --scores msp,jsd \
  --images data_generated/camvid_paste/test/images --labels data_generated/camvid_paste/test/labels \
  --stems Seq05VD_f03060 Seq05VD_f04290 Seq05VD_f02160 --out "$OUT/failure_modes.png"
for split in val test; do
  $PY -m training.misses --model models/default.pt --benchmark "data_generated/camvid_paste/$split" \
    --out "$OUT/default/misses_$split.json"
  $PY -m training.report CE-only="$OUT/camvid_ce/camvid_paste_$split" NFlowJS="$OUT/default/camvid_paste_$split"
done
