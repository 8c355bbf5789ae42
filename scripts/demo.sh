#!/usr/bin/env bash
# Set up the environment if needed, then run the detector node end to end on the demo frames.
# Results (side-by-side PNGs) go to demo_output/; arguments are passed on (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# A private DDS domain per run, so the demo never talks to other ROS systems.
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
exec .venv/bin/dense-ood-demo "$@"
