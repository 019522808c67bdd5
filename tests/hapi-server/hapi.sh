#!/usr/bin/env bash
# Build, start, stop a local HAPI FHIR JPA server (R4; in-memory H2, or PostgreSQL with
# HAPI_DB=postgres) for the integration tests and benchmarks. See README.md in this folder.
#
#   hapi.sh build    build if sources changed (mvn -B -q, tests skipped)
#   hapi.sh start    build if needed, start in the background, wait until
#                    /fhir/metadata answers, print the base URL as last line
#   hapi.sh stop     stop it (TERM, then KILL after HAPI_STOP_TIMEOUT s)
#   hapi.sh status   print "running ..." (exit 0) or "not running" (exit 1)
#
# Environment: HAPI_PORT (8089), HAPI_START_TIMEOUT (900 s; 15-30 s on an idle machine, but
# one start took 553 s on 2 cores with a load average of 24), HAPI_STOP_TIMEOUT
# (30 s), HAPI_DB (h2: in-memory, the default; postgres: a fresh database "hapi" in the
# cluster of tests/postgres/pg.sh, which is started if it is not running, and then stopped
# again by "hapi.sh stop"; PG_PORT picks its port), HAPI_JAVA_OPTS (JVM options, default "-Xmx3g -Xms256m": H2 keeps all data on the heap, and a 1 GB heap ran out after a few thousand transactions), HAPI_REQUEST_VALIDATION (true; "false" stops HAPI validating request bodies, as its JPA starter ships), MVN (mvn).
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${HAPI_PORT:-8089}"
HOST=127.0.0.1
BASE_URL="http://${HOST}:${PORT}/fhir"
START_TIMEOUT="${HAPI_START_TIMEOUT:-900}"
STOP_TIMEOUT="${HAPI_STOP_TIMEOUT:-30}"
JAVA_OPTS="${HAPI_JAVA_OPTS:--Xmx3g -Xms256m}"
MVN="${MVN:-mvn}"
PID_FILE="$DIR/hapi.pid"
LOG_FILE="$DIR/hapi.log"
STAMP="$DIR/target/.build-stamp"
MAIN_CLASS=org.example.hapiserver.FhirServerMain
DB="${HAPI_DB:-h2}"
PG_SH="$DIR/../postgres/pg.sh"
PG_STARTED_FLAG="$DIR/hapi.pg-started"

log() { echo "hapi.sh: $*" >&2; }

# --- build -----------------------------------------------------------------

needs_build() {
  [[ -f "$STAMP" && -d "$DIR/target/lib" && -d "$DIR/target/classes" ]] || return 0
  # Anything in the POM or the sources newer than the last successful build?
  [[ -n "$(find "$DIR/pom.xml" "$DIR/src" -newer "$STAMP" -print -quit)" ]]
}

do_build() {
  if ! needs_build; then
    log "build up to date"
    return 0
  fi
  command -v "$MVN" >/dev/null || { log "maven ($MVN) not found"; return 1; }
  log "building (mvn package, first run downloads ~340 MB into ~/.m2) ..."
  local t0=$SECONDS
  # Remove stale jars (e.g. after a version change) so the classpath has one of each.
  rm -rf "$DIR/target/lib" "$STAMP"
  mkdir -p "$DIR/target"
  # Stamp taken before the build: a source edited while it runs triggers the next build.
  touch "$STAMP.new"
  if ! (cd "$DIR" && "$MVN" -B -q package -DskipTests) >"$DIR/target/build.log" 2>&1; then
    log "build FAILED; last lines of $DIR/target/build.log:"
    tail -n 40 "$DIR/target/build.log" >&2
    return 1
  fi
  mv "$STAMP.new" "$STAMP"
  log "build done in $((SECONDS - t0)) s"
  if [[ -n "$(running_pid)" ]]; then
    log "note: a server is running with the previous build; use '$0 restart'"
  fi
}

# --- process helpers -------------------------------------------------------

# PID from the pid file if that process is alive and is our server, else empty.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$MAIN_CLASS"; then
    echo "$pid"
  fi
}

healthy() {
  # The first capability statement is built on demand and takes seconds (a minute on a
  # saturated machine): an impatient client that gives up and asks again only piles up
  # concurrent first requests (HAPI then failed one with a ConcurrentModificationException).
  curl -sf -o /dev/null --max-time "${1:-10}" -H 'Accept: application/fhir+json' "$BASE_URL/metadata"
}

port_in_use() {
  # Something (not ours) answering on the port?
  curl -s -o /dev/null --max-time 3 "http://${HOST}:${PORT}/" 2>/dev/null
}

fail_start() {
  log "$1"
  if [[ -f "$LOG_FILE" ]]; then
    echo "----- last 60 lines of $LOG_FILE -----" >&2
    tail -n 60 "$LOG_FILE" >&2
  fi
  exit 1
}

# A fresh, empty database "hapi" in the test cluster (started here if it is not running);
# prints its JDBC URL.
postgres_database() {
  if ! bash "$PG_SH" status >/dev/null 2>&1; then
    bash "$PG_SH" start >/dev/null || return 1
    touch "$PG_STARTED_FLAG"
  fi
  bash "$PG_SH" createdb hapi >/dev/null || return 1
  bash "$PG_SH" jdbc hapi
}

# --- start / stop ------------------------------------------------------------

do_start() {
  local pid
  pid="$(running_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    if port_in_use; then
      fail_start "port $PORT is already in use by another process; set HAPI_PORT"
    fi
    do_build
    command -v java >/dev/null || fail_start "java not found"
    local jdbc_url=""
    case "$DB" in
      h2) ;;
      postgres) jdbc_url="$(postgres_database)" || fail_start "no PostgreSQL for HAPI_DB=postgres" ;;
      *) fail_start "HAPI_DB must be h2 or postgres, not '$DB'" ;;
    esac
    log "starting HAPI FHIR ($DB) on $BASE_URL (log: $LOG_FILE)"
    # The JDBC URL (with its password) goes in the environment, not on the command line.
    # shellcheck disable=SC2086  # JAVA_OPTS is a list of options
    HAPI_JDBC_URL="$jdbc_url" nohup java $JAVA_OPTS \
      -Dhapi.port="$PORT" -Dhapi.host="$HOST" \
      -cp "$DIR/target/classes:$DIR/target/lib/*" \
      "$MAIN_CLASS" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
  else
    log "already running (pid $pid)"
  fi

  local deadline=$((SECONDS + START_TIMEOUT)) t0=$SECONDS
  until healthy 120; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      fail_start "server process $pid died during start-up"
    fi
    if ((SECONDS >= deadline)); then
      stop_pid "$pid"
      rm -f "$PID_FILE"
      fail_start "server not healthy after ${START_TIMEOUT} s; stopped it"
    fi
    sleep 1
  done
  log "healthy after $((SECONDS - t0)) s (pid $pid)"
  echo "$BASE_URL"
}

stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "pid $pid did not stop after ${STOP_TIMEOUT} s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.5
  done
}

do_stop() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    log "stopping pid $pid"
    stop_pid "$pid"
    log "stopped"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
  if [[ -f "$PG_STARTED_FLAG" ]]; then
    bash "$PG_SH" stop || true
    rm -f "$PG_STARTED_FLAG"
  fi
}

do_status() {
  local pid
  pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    if healthy; then
      echo "running (pid $pid) $BASE_URL"
    else
      echo "running (pid $pid), not (yet) answering on $BASE_URL"
    fi
    return 0
  fi
  echo "not running"
  return 1
}

case "${1:-}" in
  build) do_build ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  restart) do_stop; do_start ;;
  *)
    echo "usage: $0 {build|start|stop|status|restart}" >&2
    exit 2
    ;;
esac
