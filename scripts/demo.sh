#!/usr/bin/env bash
# Sets up the adapter and runs its main job on the embedded examples: validate the 22 seed
# case records and convert them to FHIR R4 transaction Bundles in out/bundles/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
.venv/bin/fhir-adapter validate --quiet examples/cases/*.json
echo "all $(ls examples/cases/*.json | wc -l) example case records are valid"
.venv/bin/fhir-adapter convert examples/cases --out-dir out/bundles "$@"
echo "bundles written to out/bundles/"
