#!/usr/bin/env bash
# build-otelcol.sh — build a small OpenTelemetry Collector (OTLP receiver, file exporter) from its
# Go modules and print its path.
#
# controller/tests/e2e_tracing.rs sends Gantry's spans to it over OTLP and reads the JSON file it
# writes. The collector is assembled as the collector's builder (ocb) would: otelcol/main.go here
# names the two components, and a wrapper go.mod written below pins them, all at one collector
# release (the contrib file exporter's newest release that builds from the module proxy is the
# pin). Only the Go module proxy is contacted: no release tarballs, no git.
#
# Where it goes
#   ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/otelcol-<version>/otelcol-gantry
#   A finished folder is reused as is (no network). Otherwise the binary is built in a scratch
#   folder beside it and renamed into place in one step, so an interrupted build never leaves a
#   half-filled cache folder. The cache key also holds a hash of main.go, so changing it rebuilds.
#
# Output
#   Progress goes to stderr; the path of the binary is the LAST line on stdout:
#       GANTRY_OTELCOL=$(controller/testenv/build-otelcol.sh | tail -1)
#   If GANTRY_OTELCOL names an executable, that is printed and nothing is built.
#
# Cost
#   Cold (empty Go caches), on 2 shared cores: about 3.5 minutes (194 s measured; ~70 s with the
#   module cache warm);
#   with the folder present ~10 ms.
#
# Knobs: GANTRY_CACHE_DIR, GANTRY_OTELCOL, GANTRY_OTELCOL_BUILD_TIMEOUT (seconds, default 3600),
# GANTRY_OTELCOL_LOCK_TIMEOUT (default 3600); GOPROXY/GOMODCACHE/GOCACHE as usual.
set -euo pipefail

# One collector release for every module (core v0.x and its v1.x modules follow from it).
OTELCOL_VERSION=v0.161.0

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'build-otelcol: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ -n ${GANTRY_OTELCOL:-} ]]; then
    [[ -x $GANTRY_OTELCOL ]] || die "GANTRY_OTELCOL=$GANTRY_OTELCOL is not an executable"
    printf '%s\n' "$GANTRY_OTELCOL"
    exit 0
fi

main_hash=$(sha256sum "$script_dir/otelcol/main.go" | cut -c1-8)
cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}
dest=$cache_root/otelcol-$OTELCOL_VERSION-$main_hash
if [[ -x $dest/otelcol-gantry ]]; then
    printf '%s\n' "$dest/otelcol-gantry"
    exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed)"
go_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
[[ -n $go_minor && $go_minor -ge 24 ]] || die "Go >= 1.24 is needed, found $(go env GOVERSION)"
mkdir -p "$cache_root"
# One build at a time; a second caller waits and then finds the first one's result.
exec 9>"$cache_root/.otelcol-build.lock"
flock -w "${GANTRY_OTELCOL_LOCK_TIMEOUT:-3600}" 9 || die "another build held $cache_root/.otelcol-build.lock too long"
if [[ -x $dest/otelcol-gantry ]]; then
    printf '%s\n' "$dest/otelcol-gantry"
    exit 0
fi

# Holding the lock, any scratch folder left is from a build that was killed.
rm -rf "$cache_root"/.otelcol-build.*/
work=$(mktemp -d "$cache_root/.otelcol-build.XXXXXX")
gopid=
cleanup() {
    if [[ -n $gopid ]] && kill -TERM "$gopid" 2>/dev/null; then
        wait "$gopid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
# `go` runs in the background and is waited for, so that INT/TERM reach the trap at once.
gorun() {
    local rc=0
    timeout --kill-after=30 "${GANTRY_OTELCOL_BUILD_TIMEOUT:-3600}" go "$@" &
    gopid=$!
    wait "$gopid" || rc=$?
    gopid=
    return "$rc"
}

start=$(date +%s)
mkdir -p "$work/mod" "$work/out"
cp "$script_dir/otelcol/main.go" "$work/mod/main.go"
# The wrapper module: the components at the pinned release; the rest of the graph (the collector's
# v1.x modules, gRPC, ...) follows by minimal version selection from what they require, and go.sum
# is filled (and checked against the checksum database) by -mod=mod.
cat >"$work/mod/go.mod" <<GOMOD
module gantry.dev/testenv/otelcol

go 1.24

require (
	go.opentelemetry.io/collector/otelcol $OTELCOL_VERSION
	go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
	github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter $OTELCOL_VERSION
)
GOMOD
log "resolving the collector's modules at $OTELCOL_VERSION, go $(go env GOVERSION)"
gorun -C "$work/mod" mod tidy
log "go build otelcol-gantry"
gorun -C "$work/mod" build -trimpath -ldflags "-s -w -X main.version=${OTELCOL_VERSION#v}" \
    -o "$work/out/otelcol-gantry" .
"$work/out/otelcol-gantry" --version >&2
rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest/otelcol-gantry in $(($(date +%s) - start))s"
printf '%s\n' "$dest/otelcol-gantry"
