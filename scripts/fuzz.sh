#!/usr/bin/env bash
# Long fuzzing run of everything that parses outside data (issue 17), with the "long"
# hypothesis profile (thousands of random examples per property, a new seed each run):
#   test/test_conversions_fuzz.py  camera messages (Image, CompressedImage): 10,000 per property
#   test/test_fuzz_files.py        training configs, label images, the evaluator's frames, ONNX
#                                  metadata, TensorRT engine records, checkpoint fields: 10,700
#   test/test_fuzz_parameters.py   the node's parameters: 3,000
#   test/test_fuzz_dataset_descriptions.py  dataset description files (mutated built-ins,
#                                  random documents), label values -> training ids: 12,000
#   test/test_fuzz_bags.py         header stamps, bags (MCAP, sqlite3) with damaged storage
#                                  files and metadata.yaml, the replay's per-frame decoding:
#                                  15,000
# (CI runs the same properties with a few hundred fixed examples each.) Prints hypothesis's
# statistics and, per module, the number of cases tried and how they ended; a failure prints
# the falsifying example and the seed/blob that reproduces it. FUZZ_TARGETS="test/..." runs
# some of the files only; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export DENSE_OOD_FUZZ_PROFILE=long
default_targets="test/test_conversions_fuzz.py test/test_fuzz_files.py test/test_fuzz_parameters.py"
default_targets+=" test/test_fuzz_dataset_descriptions.py test/test_fuzz_bags.py"
read -r -a targets <<< "${FUZZ_TARGETS:-$default_targets}"
exec .venv/bin/python -m pytest "${targets[@]}" -p no:cacheprovider -s \
  --hypothesis-show-statistics "$@"
