#!/usr/bin/env bash
# Create/refresh the project's virtual environment (.venv) from requirements.txt.
# Idempotent: re-installs only when requirements.txt or setup.py changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DENSE_OOD_VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-core.txt setup.py | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python dependencies (first run: several minutes, torch is large)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
