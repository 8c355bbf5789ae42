#!/usr/bin/env bash
# Long soak of the detector node (issue 17): 10,000 frames at 20 Hz, about twice what the node
# sustains on two CPU cores (about 9 minutes). Figures to docs/soak.json and docs/soak.md;
# exit code 1 if the node crashed, an output came out of order or only in part, or a frame
# was not accounted for. Extra arguments go to python -m dense_ood_ros.ros.soak (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
exec .venv/bin/python -m dense_ood_ros.ros.soak --frames 10000 --rate 20 --out docs/soak "$@"
