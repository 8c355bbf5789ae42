#!/usr/bin/env bash
# Make the demo bags (never committed: CamVid and COCO are CC BY-NC / Flickr-licensed) from
# ../shared/data:
#   data_generated/bags/camvid_seq05vd     CamVid test sequence Seq05VD, 171 frames, with its
#                                          class labels (/camera/semantic_labels)
#   data_generated/bags/camvid_paste_test  CamVid-Paste test split (seed 0), 233 frames, with
#                                          anomaly labels (/camera/labels: 1 pasted object,
#                                          0 inlier, 255 void) and class labels
# CamVid's labelled frames are one second apart in the drive, so the stamps are 1 Hz
# (--rate 1); replay them faster with dense-ood-replay --live --rate N.
# Options: --storage mcap|sqlite3 (default mcap), --encoding rgb8|bgr8|jpeg (default rgb8),
# --overwrite; anything else goes to every dense-ood-make-bag call.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
CAMVID=${CAMVID:-../shared/data/camvid}
OUT=${OUT:-data_generated/bags}
PASTE=data_generated/camvid_paste/test
mkdir -p "$OUT"
if [ ! -f "$PASTE/manifest.json" ]; then
  .venv/bin/python -m training.data.camvid_paste --split test --out "$PASTE" --seed 0
fi
.venv/bin/dense-ood-make-bag --frames "$CAMVID/test" --pattern 'Seq05VD_*' \
  --semantic-labels "$CAMVID/testannot" --rate 1 --out "$OUT/camvid_seq05vd" "$@"
.venv/bin/dense-ood-make-bag --frames "$PASTE/images" --labels "$PASTE/labels" \
  --semantic-labels "$PASTE/semantic" --rate 1 --out "$OUT/camvid_paste_test" "$@"
