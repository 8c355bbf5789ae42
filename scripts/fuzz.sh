#!/usr/bin/env bash
# Long fuzzing run of the camera message conversions (test/test_conversions_fuzz.py, the
# "long" hypothesis profile: 10,000 random examples per property, a new seed each run).
# Prints hypothesis's statistics and the number of messages converted; a failure prints the
# falsifying example and the seed/blob that reproduces it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export DENSE_OOD_FUZZ_PROFILE=long
exec .venv/bin/python -m pytest test/test_conversions_fuzz.py -p no:cacheprovider -s \
  --hypothesis-show-statistics "$@"
