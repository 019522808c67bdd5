#!/usr/bin/env bash
# Profile report: validates every resource of the R4 output against the mCODE profile that fits
# it (claimed or not) with the offline HL7 validator, and prints per profile how many resources
# fit, claim, fail, and the top messages. See tests/conformance/report.py.
# Usage: bash scripts/profile-report.sh [BUNDLE_OR_RECORD.json...] [--top N] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "run 'bash scripts/test.sh' or 'bash scripts/demo.sh' first to set up .venv" >&2
  exit 2
fi
exec .venv/bin/python -m tests.conformance.report "$@"
