#!/usr/bin/env bash
# Synthea (org.mitre.synthea:synthea:3.3.0, Maven Central) for the EHR-bundle tests and
# benchmarks: real EHR transaction bundles that nobody on this project wrote.
#
#   synthea.sh build          copy Synthea and its dependencies into target/lib (mvn, once)
#   synthea.sh generate SET   generate SET into the cache unless it is there; prints the
#                             directory holding its fhir/*.json as the last line
#   synthea.sh path SET       print that directory (whether or not it exists)
#
# SETs (seeded, reference date fixed, so the same on every machine):
#   oncology  -s 7 -p 3, ages 55-80, modules breast_cancer, lung_cancer and wellness_encounters
#             (the cancer modules alone produce no vital signs): 5 patient transactions of
#             330-560 entries (Synthea keeps generating until 3 are alive), plus the hospital
#             and practitioner batches that must be pushed first
#   elderly   -s 11 -p 1, ages 85-95, all modules, 40 years of history: one patient
#             transaction of about 10,000 entries (the size limit benchmark)
#
# Generating costs minutes of CPU (the oncology set ~40 s of CPU, over 2 minutes of wall time
# on a loaded 2-core machine), so the output is cached outside the work tree, where every
# clone on the machine finds it (CI runs from a fresh clone):
#   ${FHIR_ADAPTER_CACHE:-${XDG_CACHE_HOME:-~/.cache}/fhir-oncology-adapter}/synthea/SET-KEY
# KEY is a digest of the Synthea version and the set's arguments, so changing either
# regenerates. Synthea's output is synthetic (no real patient) and Synthea is Apache-2.0;
# the files are not committed only because of their size (about 2 MB and 30 MB).
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=3.3.0
LIB="$DIR/target/lib"
CACHE_ROOT="${FHIR_ADAPTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fhir-oncology-adapter}/synthea"
JAVA_OPTS="${SYNTHEA_JAVA_OPTS:--Xmx2g}"

log() { echo "synthea.sh: $*" >&2; }

set_args() {
  local common=(-r 20240101 --exporter.csv.export=false --generate.thread_pool_size=1
    --exporter.fhir.export=true --exporter.hospital.fhir.export=true
    --exporter.practitioner.fhir.export=true)
  case "$1" in
    oncology) echo "-s 7 -cs 7 -p 3 -a 55-80 -m breast_cancer:lung_cancer:wellness_encounters ${common[*]}" ;;
    elderly) echo "-s 11 -cs 11 -p 1 -a 85-95 --exporter.years_of_history=40 --generate.only_alive_patients=true ${common[*]}" ;;
    *) log "unknown set '$1' (oncology, elderly)"; return 2 ;;
  esac
}

set_dir() {
  local args key
  args="$(set_args "$1")"
  key="$(printf '%s\n%s\n' "$VERSION" "$args" | sha256sum | cut -c1-12)"
  echo "$CACHE_ROOT/$1-$key"
}

do_build() {
  if [[ -f "$LIB/synthea-$VERSION.jar" && -f "$DIR/target/.build-stamp" ]]; then
    return 0
  fi
  command -v mvn >/dev/null || { log "maven (mvn) not found"; return 1; }
  log "copying Synthea $VERSION and its dependencies into $LIB (first run downloads ~200 MB) ..."
  rm -rf "$LIB" "$DIR/target/.build-stamp"
  mkdir -p "$DIR/target"
  if ! (cd "$DIR" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIB") >"$DIR/target/build.log" 2>&1; then
    log "build FAILED; last lines of $DIR/target/build.log:"
    tail -n 30 "$DIR/target/build.log" >&2
    return 1
  fi
  touch "$DIR/target/.build-stamp"
}

do_generate() {
  local name="$1" target args work t0
  target="$(set_dir "$name")"
  if [[ -d "$target/fhir" ]]; then
    log "$name: cached in $target"
    echo "$target"
    return 0
  fi
  do_build
  args="$(set_args "$name")"
  mkdir -p "$CACHE_ROOT"
  work="$(mktemp -d "$CACHE_ROOT/.$name.XXXXXX")"
  log "$name: generating (java -cp 'lib/*' App $args) ..."
  t0=$SECONDS
  # shellcheck disable=SC2086 # the set's arguments are words by design
  if ! (cd "$work" && java $JAVA_OPTS -cp "$LIB/*" App $args \
      --exporter.baseDirectory="$work/out/") >"$work/synthea.log" 2>&1; then
    log "$name: Synthea FAILED; last lines of its log:"
    tail -n 30 "$work/synthea.log" >&2
    rm -rf "$work"
    return 1
  fi
  mv "$work/out/fhir" "$work/fhir"
  rm -rf "$work/out"
  # Atomic: a concurrent run either sees the complete set or generates its own.
  if ! mv -T "$work" "$target" 2>/dev/null; then
    rm -rf "$work"
  fi
  log "$name: generated in $((SECONDS - t0)) s into $target"
  echo "$target"
}

case "${1:-}" in
  build) do_build ;;
  generate) do_generate "${2:?set name}" ;;
  path) set_dir "${2:?set name}" ;;
  *) echo "usage: $0 build | generate SET | path SET" >&2; exit 2 ;;
esac
