#!/usr/bin/env bash
# Build and run the offline profile validator (HAPI 8.8.0 FhirInstanceValidator over the npm IG
# packages of packages.json). See README.md in this folder.
#
#   validator.sh fetch     fetch the pinned IG packages into the cache (npm pack, once per machine)
#   validator.sh build     build if sources changed (mvn -B -q package, tests skipped)
#   validator.sh serve [--extension-domain URL]...
#                          fetch + build if needed, then run the validator on stdin/stdout
#                          (JSON lines; see ValidationService.java), in a network namespace of
#                          its own when this machine allows one
#
# Environment: VALIDATOR_JAVA_OPTS (JVM options, default "-Xmx1200m -Xms256m -XX:+UseSerialGC"),
# VALIDATOR_NETNS (auto: unshare --net when it works; 0: never), IG_PACKAGE_CACHE (package
# cache, default ~/.cache/fhir-oncology-adapter/ig-packages), MVN (mvn).
# stdout carries only the validator's answers; everything else goes to stderr.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JAVA_OPTS="${VALIDATOR_JAVA_OPTS:--Xmx1200m -Xms256m -XX:+UseSerialGC}"
MVN="${MVN:-mvn}"
STAMP="$DIR/target/.build-stamp"
MAIN_CLASS=org.example.validator.ProfileValidatorMain

log() { echo "validator.sh: $*" >&2; }

do_fetch() {
  local cache_args=()
  if [[ -n "${IG_PACKAGE_CACHE:-}" ]]; then
    cache_args=(--cache "$IG_PACKAGE_CACHE")
  fi
  python3 "$DIR/fetch_packages.py" "${cache_args[@]}"
}

needs_build() {
  [[ -f "$STAMP" && -d "$DIR/target/lib" && -d "$DIR/target/classes" ]] || return 0
  [[ -n "$(find "$DIR/pom.xml" "$DIR/src" -newer "$STAMP" -print -quit)" ]]
}

do_build() {
  if ! needs_build; then
    return 0
  fi
  command -v "$MVN" >/dev/null || { log "maven ($MVN) not found"; return 1; }
  log "building (mvn package; the first run downloads its dependencies into ~/.m2) ..."
  local t0=$SECONDS
  rm -rf "$DIR/target/lib" "$STAMP"
  mkdir -p "$DIR/target"
  touch "$STAMP.new"
  if ! (cd "$DIR" && "$MVN" -B -q package -DskipTests) >"$DIR/target/build.log" 2>&1; then
    log "build FAILED; last lines of $DIR/target/build.log:"
    tail -n 40 "$DIR/target/build.log" >&2
    return 1
  fi
  mv "$STAMP.new" "$STAMP"
  log "build done in $((SECONDS - t0)) s"
}

# A network namespace with nothing in it (not even a loopback that is up): the JVM cannot reach
# any host, whatever it tries. Needs root or unprivileged user namespaces.
netns_prefix() {
  if [[ "${VALIDATOR_NETNS:-auto}" == "0" ]]; then
    return 0
  fi
  if command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
    echo "unshare --net"
  elif command -v unshare >/dev/null && unshare --user --map-root-user --net true 2>/dev/null; then
    echo "unshare --user --map-root-user --net"
  fi
}

do_serve() {
  local packages
  packages="$(do_fetch)"
  do_build
  command -v java >/dev/null || { log "java not found"; exit 1; }
  local prefix
  prefix="$(netns_prefix)"
  mapfile -t tarballs <<<"$packages"
  # shellcheck disable=SC2086  # JAVA_OPTS and prefix are word lists
  exec $prefix java $JAVA_OPTS -Djava.security.manager=allow -Duser.language=en -Duser.country=US \
    -cp "$DIR/target/classes:$DIR/target/lib/*" "$MAIN_CLASS" "$@" "${tarballs[@]}"
}

case "${1:-}" in
  fetch) do_fetch ;;
  build) do_build ;;
  serve) shift; do_serve "$@" ;;
  *)
    echo "usage: $0 {fetch|build|serve [--extension-domain URL]...}" >&2
    exit 2
    ;;
esac
