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
  echo "== starting the local HAPI FHIR server (first build downloads Maven dependencies)"
  trap 'bash tests/hapi-server/hapi.sh stop >/dev/null 2>&1 || true' EXIT
  FHIR_TEST_SERVER_URL=$(bash tests/hapi-server/hapi.sh start | tail -n 1)
  export FHIR_TEST_SERVER_URL
  echo "HAPI FHIR at $FHIR_TEST_SERVER_URL"
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
