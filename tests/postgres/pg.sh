#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks: initdb into a fresh temporary
# folder, started with pg_ctl on a local port, stopped and deleted at the end. See README.md.
#
#   pg.sh install   install Debian's postgresql package if the server binaries are missing
#                   (root + apt-get only; otherwise explain and exit 1)
#   pg.sh start     create and start the cluster (installs first if needed); prints the
#                   connection URL of the database "fhir_test" as the last stdout line
#   pg.sh stop      stop the cluster and delete its folder; OK if not running
#   pg.sh status    "running <url>" (exit 0) or "not running" (exit 1)
#   pg.sh url [DB]  the URL of database DB (default fhir_test) of the running cluster
#   pg.sh jdbc [DB] the same as a JDBC URL (for HAPI), credentials as query parameters
#   pg.sh createdb DB   (re)create an empty database DB, print its URL
#
# Environment: PG_PORT (a free port chosen by the kernel when unset; set it when several
# worktrees share a machine, so clusters never collide), PG_START_TIMEOUT (60 s),
# PG_DURABLE (0: fsync, synchronous_commit and full_page_writes off, for throwaway test data;
# 1: PostgreSQL's durable defaults, for benchmarks that should measure a real deployment),
# PG_BINDIR (the newest /usr/lib/postgresql/*/bin), PG_OS_USER (who runs the server when
# this script runs as root: "postgres", created by Debian's package, else created here).
#
# The server never runs as root (PostgreSQL refuses to): as root the cluster belongs to
# PG_OS_USER; as anyone else, to that user. It listens on 127.0.0.1 only, its unix socket is
# inside the cluster folder, local socket connections are trusted (this script's own
# administration) and TCP connections need the random password generated at initdb.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$DIR/pg.state"
START_TIMEOUT="${PG_START_TIMEOUT:-60}"
SUPERUSER=fhir
DEFAULT_DB=fhir_test

log() { echo "pg.sh: $*" >&2; }

# --- binaries --------------------------------------------------------------------------

find_bindir() {
  if [[ -n "${PG_BINDIR:-}" ]]; then
    [[ -x "$PG_BINDIR/initdb" ]] && echo "$PG_BINDIR"
    return 0
  fi
  local candidate
  # Newest major version first.
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [[ -x "$candidate/initdb" && -x "$candidate/pg_ctl" && -x "$candidate/postgres" ]]; then
      echo "$candidate"
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"
  fi
}

do_install() {
  if [[ -n "$(find_bindir)" ]]; then
    log "server binaries present: $(find_bindir)"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "PostgreSQL server binaries not found (initdb, pg_ctl); install Debian's 'postgresql'"
    log "package (apt-get install postgresql) or set PG_BINDIR"
    return 1
  fi
  log "installing Debian's postgresql package (apt-get) ..."
  local t0=$SECONDS had_clusters=""
  had_clusters="$(ls /etc/postgresql 2>/dev/null || true)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  # The package creates and starts a "main" cluster on port 5432; the tests do not use it.
  if [[ -z "$had_clusters" ]] && command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r version name _; do
      [[ "$name" == main ]] && pg_dropcluster --stop "$version" main >&2 || true
    done
  fi
  log "installed in $((SECONDS - t0)) s"
  [[ -n "$(find_bindir)" ]] || { log "installed, but initdb/pg_ctl still not found"; return 1; }
}

# --- who runs the server -----------------------------------------------------------------

os_user() {
  if [[ "$(id -u)" != 0 ]]; then
    id -un
    return
  fi
  local user="${PG_OS_USER:-postgres}"
  if ! id "$user" >/dev/null 2>&1; then
    log "creating system user $user to run PostgreSQL (it refuses to run as root)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
  echo "$user"
}

# Run a command as the cluster's owner.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$OWNER" -- "$@"
  else
    "$@"
  fi
}

# --- state -----------------------------------------------------------------------------

# The state file holds ROOT (the temporary folder: data/, server.log, the unix socket), PORT,
# PASSWORD, OWNER and BINDIR of the running cluster.
load_state() {
  [[ -f "$STATE" ]] || return 1
  # shellcheck disable=SC1090
  source "$STATE"
  [[ -n "${ROOT:-}" && -n "${PORT:-}" ]]
}

running() {
  load_state || return 1
  [[ -f "$ROOT/data/postmaster.pid" ]] || return 1
  as_owner "$BINDIR/pg_ctl" status -D "$ROOT/data" >/dev/null 2>&1
}

url_of() {
  echo "postgresql://$SUPERUSER:$PASSWORD@127.0.0.1:$PORT/${1:-$DEFAULT_DB}"
}

jdbc_of() {
  echo "jdbc:postgresql://127.0.0.1:$PORT/${1:-$DEFAULT_DB}?user=$SUPERUSER&password=$PASSWORD"
}

psql_admin() {
  # Over the unix socket in the cluster folder (trusted), as the superuser; NOTICEs such as
  # "does not exist, skipping" are noise here.
  as_owner env PGOPTIONS="-c client_min_messages=warning" "$BINDIR/psql" -X -q \
    -v ON_ERROR_STOP=1 -h "$ROOT" -p "$PORT" -U "$SUPERUSER" -d postgres "$@"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

port_taken() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

# Delete what a stopped, failed or dead cluster left behind (only our own temp folders).
remove_root() {
  if [[ -n "${ROOT:-}" && "$ROOT" == */fhir-test-pg.* && -d "$ROOT" ]]; then
    rm -rf "$ROOT"
  fi
  rm -f "$STATE"
}

# --- commands ----------------------------------------------------------------------------

do_createdb() {
  local name=$1
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { log "bad database name: $name"; return 2; }
  psql_admin -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" -c "CREATE DATABASE \"$name\"" >/dev/null
  url_of "$name"
}

do_start() {
  if running; then
    log "already running on port $PORT ($ROOT)"
    url_of
    return 0
  fi
  if load_state; then
    log "removing a dead cluster's folder $ROOT"
    remove_root
  fi
  do_install
  BINDIR="$(find_bindir)"
  OWNER="$(os_user)"
  PORT="${PG_PORT:-$(free_port)}"
  if port_taken "$PORT"; then
    log "port $PORT is in use by another process; set PG_PORT to a free port"
    return 1
  fi
  ROOT="$(mktemp -d "${TMPDIR:-/tmp}/fhir-test-pg.XXXXXX")"
  PASSWORD="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  chmod 700 "$ROOT"
  if [[ "$(id -u)" == 0 ]]; then chown "$OWNER:" "$ROOT"; fi
  (
    umask 077
    printf "ROOT='%s'\nPORT='%s'\nPASSWORD='%s'\nOWNER='%s'\nBINDIR='%s'\n" \
      "$ROOT" "$PORT" "$PASSWORD" "$OWNER" "$BINDIR" >"$STATE"
  )
  local pwfile="$ROOT/pw" t0=$SECONDS
  (umask 077; echo "$PASSWORD" >"$pwfile")
  if [[ "$(id -u)" == 0 ]]; then chown "$OWNER:" "$pwfile"; fi
  log "initdb ($("$BINDIR/postgres" --version)) as $OWNER into $ROOT/data"
  if ! as_owner "$BINDIR/initdb" -D "$ROOT/data" -U "$SUPERUSER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$ROOT/initdb.log" 2>&1; then
    log "initdb FAILED:"
    cat "$ROOT/initdb.log" >&2
    remove_root
    return 1
  fi
  rm -f "$pwfile"
  cat >>"$ROOT/data/postgresql.conf" <<CONF
# throwaway cluster of fhir-oncology-adapter's tests (tests/postgres/pg.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$ROOT'
max_connections = 200
CONF
  if [[ "${PG_DURABLE:-0}" != 1 ]]; then
    # Test data is thrown away: no need to wait for the disk (much faster schema creation
    # and commits on a busy machine). PG_DURABLE=1 keeps PostgreSQL's defaults (benchmarks).
    printf "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" \
      >>"$ROOT/data/postgresql.conf"
  fi
  # -w: wait until the server accepts connections.
  if ! as_owner "$BINDIR/pg_ctl" start -D "$ROOT/data" -l "$ROOT/server.log" -w \
    -t "$START_TIMEOUT" >/dev/null 2>&1; then
    log "server did not start; last lines of its log:"
    tail -n 30 "$ROOT/server.log" >&2 || true
    remove_root
    return 1
  fi
  psql_admin -c "CREATE DATABASE $DEFAULT_DB" >/dev/null
  log "PostgreSQL on 127.0.0.1:$PORT ready in $((SECONDS - t0)) s (log: $ROOT/server.log)"
  url_of
}

do_stop() {
  if ! load_state; then
    log "not running"
    rm -f "$STATE"
    return 0
  fi
  if running; then
    log "stopping the cluster on port $PORT"
    as_owner "$BINDIR/pg_ctl" stop -D "$ROOT/data" -m fast -w -t 60 >/dev/null 2>&1 \
      || as_owner "$BINDIR/pg_ctl" stop -D "$ROOT/data" -m immediate -w >/dev/null 2>&1 || true
  fi
  remove_root
  log "stopped and removed"
}

need_running() {
  running || { log "not running (start it with: $0 start)"; exit 1; }
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status)
    if running; then echo "running $(url_of)"; else echo "not running"; exit 1; fi
    ;;
  url) need_running; url_of "${2:-}" ;;
  jdbc) need_running; jdbc_of "${2:-}" ;;
  createdb)
    [[ -n "${2:-}" ]] || { echo "usage: $0 createdb NAME" >&2; exit 2; }
    need_running
    do_createdb "$2"
    ;;
  *)
    echo "usage: $0 {install|start|stop|status|url [DB]|jdbc [DB]|createdb DB}" >&2
    exit 2
    ;;
esac
