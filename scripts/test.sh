#!/usr/bin/env bash
# Sets up everything and runs every check: lint, types, unit tests, the mCODE profile tests with
# the offline HL7 validator (tests/validator, built here) and the integration tests against a
# real HAPI FHIR server that this script builds (Maven) and starts itself.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy

if [ "${SKIP_PROFILE_VALIDATION:-0}" != "1" ]; then
  # The offline HL7 validator of tests/conformance: IG packages from npm (pinned, cached in
  # ~/.cache/fhir-oncology-adapter/ig-packages, so fetched once per machine) and a Maven build.
  echo "== profile validator: IG packages and build"
  t0=$SECONDS
  bash tests/validator/validator.sh fetch >/dev/null
  bash tests/validator/validator.sh build
  echo "profile validator built in $((SECONDS - t0)) s"
fi

if [ "${SKIP_HAPI:-0}" != "1" ]; then
  # Real EHR bundles for tests/integration/test_synthea_gateway.py: Synthea 3.3.0 from Maven
  # Central, seeded; generated while HAPI starts, cached outside the clone (see synthea.sh).
  echo "== Synthea bundles (generated once per machine, then cached)"
  synthea_out=$(mktemp)
  bash tests/synthea/synthea.sh generate oncology >"$synthea_out" &
  synthea_pid=$!
  trap 'kill "$synthea_pid" 2>/dev/null || true; rm -f "$synthea_out"; bash tests/hapi-server/hapi.sh stop >/dev/null 2>&1 || true' EXIT
  echo "== starting the local HAPI FHIR server (first build downloads Maven dependencies)"
  FHIR_TEST_SERVER_URL=$(bash tests/hapi-server/hapi.sh start | tail -n 1)
  export FHIR_TEST_SERVER_URL
  echo "HAPI FHIR at $FHIR_TEST_SERVER_URL"
  t0=$SECONDS
  if ! wait "$synthea_pid"; then
    echo "Synthea generation failed (see the lines above)" >&2
    exit 1
  fi
  FHIR_TEST_SYNTHEA_DIR=$(tail -n 1 "$synthea_out")
  export FHIR_TEST_SYNTHEA_DIR
  echo "Synthea bundles in $FHIR_TEST_SYNTHEA_DIR (waited $((SECONDS - t0)) s after HAPI)"
  # A cold JVM takes seconds over its first transactions; the tests that expect an answer
  # within the gateway's synchronous wait must not pay for that. Warm-up data has its own
  # identifier namespace, so no test sees it.
  t0=$SECONDS
  .venv/bin/fhir-adapter push examples/cases/caruso2022-0[1-4].json --quiet \
    --server "$FHIR_TEST_SERVER_URL" --namespace https://warm-up.fhir-oncology-adapter.example.org >/dev/null
  echo "HAPI warmed up in $((SECONDS - t0)) s"
fi

echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
