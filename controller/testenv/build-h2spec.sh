#!/usr/bin/env bash
# build-h2spec.sh — build the pinned h2spec (HTTP/2 conformance tester) from its Go module and print
# its path.
#
# controller/tests/h2spec.rs runs h2spec against both of gantry's listeners (TLS with ALPN h2, and
# plain HTTP with h2c prior knowledge). It is built from github.com/summerwind/h2spec through the Go
# module proxy only: no release tarballs, no git.
#
# Which version
#   The newest h2spec the module proxy can serve is v2.2.1+incompatible (2019). The later tags
#   (v2.3.0 … v2.6.0) carry a go.mod that says `module github.com/summerwind/h2spec` without the
#   /v2 suffix a v2 tag needs, so they are not valid module versions and the proxy refuses them
#   (`go list -m -versions github.com/summerwind/h2spec` lists v1.5.0 and v2.2.1+incompatible).
#   v2.2.1 has no go.mod of its own, so its dependencies are pinned in the small wrapper module
#   written below (versions that build with Go 1.24+; its Gopkg.lock pins 2018 revisions).
#
# Where it goes
#   ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/h2spec-<version>/h2spec
#   A finished folder is reused as is (about 10 ms, no network). Otherwise the binary is built in a
#   scratch folder beside it and renamed into place in one step, so an interrupted build never
#   leaves a half-filled cache folder. The Go module and build caches are the default ones
#   (`go env GOMODCACHE GOCACHE`) unless set.
#
# Output
#   Progress goes to stderr; the path of the h2spec binary is the LAST line on stdout:
#       GANTRY_H2SPEC=$(controller/testenv/build-h2spec.sh | tail -1)
#   If GANTRY_H2SPEC names an executable, that is printed and nothing is built.
#
# Cost
#   Cold (empty Go caches), on 2 shared cores: about 1.5 minutes (93 s measured), leaving ~65 MB
#   in GOMODCACHE and ~115 MB in GOCACHE; the binary is ~6 MB. With warm Go caches ~2 s.
#
# Knobs: GANTRY_CACHE_DIR, GANTRY_H2SPEC, GANTRY_H2SPEC_BUILD_TIMEOUT (seconds, default 1800),
# GANTRY_H2SPEC_LOCK_TIMEOUT (default 1800); GOPROXY/GOMODCACHE/GOCACHE as usual.
#
# Upgrading: change H2SPEC_VERSION (and the pins below) once the proxy serves a newer version.
set -euo pipefail

H2SPEC_VERSION=v2.2.1+incompatible
# Dependencies of h2spec v2.2.1 (it has no go.mod), pinned for a reproducible build.
H2SPEC_DEPS=(
    golang.org/x/net@v0.62.0
    golang.org/x/text@v0.43.0
    golang.org/x/sys@v0.49.0
    github.com/spf13/cobra@v1.10.2
    github.com/spf13/pflag@v1.0.9
    github.com/fatih/color@v1.19.0
    github.com/mattn/go-colorable@v0.1.14
    github.com/mattn/go-isatty@v0.0.20
)

log() { printf 'build-h2spec: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ -n ${GANTRY_H2SPEC:-} ]]; then
    [[ -x $GANTRY_H2SPEC ]] || die "GANTRY_H2SPEC=$GANTRY_H2SPEC is not an executable"
    printf '%s\n' "$GANTRY_H2SPEC"
    exit 0
fi

version=${H2SPEC_VERSION%+incompatible}
cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}
dest=$cache_root/h2spec-$version
if [[ -x $dest/h2spec ]]; then
    printf '%s\n' "$dest/h2spec"
    exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed)"
go_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
[[ -n $go_minor && $go_minor -ge 24 ]] || die "Go >= 1.24 is needed, found $(go env GOVERSION)"
mkdir -p "$cache_root"
# One build at a time; a second caller waits and then finds the first one's result.
exec 9>"$cache_root/.h2spec-build.lock"
flock -w "${GANTRY_H2SPEC_LOCK_TIMEOUT:-1800}" 9 || die "another build held $cache_root/.h2spec-build.lock too long"
if [[ -x $dest/h2spec ]]; then
    printf '%s\n' "$dest/h2spec"
    exit 0
fi

# Holding the lock, any scratch folder left is from a build that was killed.
rm -rf "$cache_root"/.h2spec-build.*/
work=$(mktemp -d "$cache_root/.h2spec-build.XXXXXX")
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
    timeout --kill-after=30 "${GANTRY_H2SPEC_BUILD_TIMEOUT:-1800}" go "$@" &
    gopid=$!
    wait "$gopid" || rc=$?
    gopid=
    return "$rc"
}

start=$(date +%s)
# The wrapper module: h2spec and its dependencies at the pinned versions; go.sum is filled (and
# checked against sum.golang.org) by -mod=mod.
mkdir -p "$work/mod" "$work/out"
{
    printf 'module gantry.dev/testenv/h2spec\n\ngo 1.24\n\nrequire (\n'
    printf '\t%s %s\n' github.com/summerwind/h2spec "$H2SPEC_VERSION"
    for dep in "${H2SPEC_DEPS[@]}"; do
        printf '\t%s %s\n' "${dep%@*}" "${dep#*@}"
    done
    printf ')\n'
} >"$work/mod/go.mod"

log "go build github.com/summerwind/h2spec/cmd/h2spec@$H2SPEC_VERSION, go $(go env GOVERSION)"
# The ldflags of h2spec's own Makefile (VERSION, COMMIT), so that `h2spec --version` is right.
gorun -C "$work/mod" build -trimpath \
    -ldflags "-s -w -X main.VERSION=${version#v} -X main.COMMIT=$H2SPEC_VERSION" \
    -o "$work/out/h2spec" github.com/summerwind/h2spec/cmd/h2spec
"$work/out/h2spec" --version >&2
rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest/h2spec in $(($(date +%s) - start))s"
printf '%s\n' "$dest/h2spec"
