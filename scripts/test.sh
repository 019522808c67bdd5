#!/usr/bin/env bash
# Sets up everything and runs every check: lint, types, unit tests, the mCODE profile tests with
# the offline HL7 validator (tests/validator, built here), the integration tests against a real
# HAPI FHIR server that this script builds (Maven) and starts itself, the Synthea EHR-bundle
# tests, and the gateway's Postgres outbox tests against a throwaway PostgreSQL cluster it also
# starts (tests/postgres/pg.sh; Debian's postgresql package is installed when missing and this
# runs as root). The servers are stopped at the end.
# Usage: bash scripts/test.sh [pytest args...]
# Environment: HAPI_PORT, HAPI_JAVA_OPTS, HAPI_DB (h2|postgres), PG_PORT (a free port if
# unset), SKIP_HAPI=1, SKIP_POSTGRES=1. Under CI (CI=true) a missing PostgreSQL is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev,postgres]"

# A C compiler builds the compiled wheel that tests/compiled compares with the source (setup.py).
if ! command -v cc >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing a C compiler (gcc) for the compiled-build test"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null
fi

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy

started_postgres=0
started_hapi=0
synthea_pid=""
synthea_out=""
cleanup() {
  if [ -n "$synthea_pid" ]; then kill "$synthea_pid" 2>/dev/null || true; fi
  if [ -n "$synthea_out" ]; then rm -f "$synthea_out"; fi
  if [ "$started_hapi" = 1 ]; then bash tests/hapi-server/hapi.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_postgres" = 1 ]; then bash tests/postgres/pg.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

if [ "${SKIP_POSTGRES:-0}" != "1" ]; then
  echo "== starting a throwaway PostgreSQL cluster (tests/postgres/pg.sh)"
  if bash tests/postgres/pg.sh status >/dev/null 2>&1; then
    echo "(reusing the cluster already running for this worktree)"
  else
    started_postgres=1
  fi
  if FHIR_TEST_POSTGRES_URL=$(bash tests/postgres/pg.sh start | tail -n 1) \
    && [ -n "$FHIR_TEST_POSTGRES_URL" ]; then
    export FHIR_TEST_POSTGRES_URL
    export FHIR_TEST_REQUIRE_POSTGRES=1
  else
    unset FHIR_TEST_POSTGRES_URL
    if [ "${CI:-}" = "true" ]; then
      echo "PostgreSQL could not be started; CI must run the Postgres outbox tests" >&2
      exit 1
    fi
    echo "WARNING: no PostgreSQL (see the message above): the Postgres outbox and" \
      "multi-gateway tests will be SKIPPED; everything else runs" >&2
  fi
fi

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
  echo "== starting the local HAPI FHIR server (first build downloads Maven dependencies)"
  started_hapi=1
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
