#!/usr/bin/env bash
# build-suite.sh — compile the Gateway API conformance suite (the Go test of
# sigs.k8s.io/gateway-api/conformance at ${GATEWAY_API_VERSION}) into one test
# binary, so it can run inside the rig's network namespace, which has no route
# to the Go proxy. Its manifests are embedded, so the binary runs from anywhere.
#
# The conformance module cannot be built in place: the Go module cache is
# read-only and its go.mod replaces sigs.k8s.io/gateway-api with `../`, which
# there is not the API module. So, as for echo-basic in build-rig.sh, a wrapper
# module requires both modules at the release and `go test -c` builds the
# package from it.
#
# Output: ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/conformance-suite-<ver>/conformance.test,
# printed as the LAST stdout line. Reused while present.
set -euo pipefail
GATEWAY_API_VERSION=v1.6.3 # keep in step with build-rig.sh and gateway-api-module.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build_timeout=${GANTRY_RIG_BUILD_TIMEOUT:-3600}
log() { printf 'build-suite: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}
dest=$cache_root/conformance-suite-$GATEWAY_API_VERSION
if [[ -x $dest/conformance.test ]]; then
    printf '%s\n' "$dest/conformance.test"
    exit 0
fi
command -v go >/dev/null || die "go is not on PATH"
mkdir -p "$cache_root"
exec 9>"$cache_root/.conformance-suite.lock"
flock -w "$build_timeout" 9 || die "another build holds $cache_root/.conformance-suite.lock"
if [[ -x $dest/conformance.test ]]; then
    printf '%s\n' "$dest/conformance.test"
    exit 0
fi
export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
work=$(mktemp -d "$cache_root/.conformance-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
mod_gomod=$(go mod download -json "sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION" |
    sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
[[ -f $mod_gomod ]] || die "could not download sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION"
mkdir -p "$work/mod" "$work/out"
text=$(<"$script_dir/wrapper/echo-basic.go.mod.in")
text=${text//@GO_VERSION@/$(awk '$1 == "go" { print $2; exit }' "$mod_gomod")}
text=${text//@GATEWAY_API_VERSION@/$GATEWAY_API_VERSION}
printf '%s\n' "$text" >"$work/mod/go.mod"
start=$(date +%s)
log "go test -c sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION"
timeout --kill-after=30 "$build_timeout" go -C "$work/mod" test -c -trimpath -ldflags "-s -w" \
    -o "$work/out/conformance.test" sigs.k8s.io/gateway-api/conformance
rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest/conformance.test in $(($(date +%s) - start))s"
printf '%s\n' "$dest/conformance.test"
