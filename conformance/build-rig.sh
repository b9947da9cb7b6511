#!/usr/bin/env bash
# build-rig.sh — build the extra binaries the conformance rig runs, from Go
# modules (no release tarballs, no container images).
#
# What it builds
#   kube-controller-manager from k8s.io/kubernetes@${K8S_VERSION} (the same
#   version and the same wrapper go.mod template as
#   controller/testenv/build-control-plane.sh), and echo-basic, the Gateway
#   API conformance backend, from sigs.k8s.io/gateway-api/conformance@${GATEWAY_API_VERSION}.
#   CoreDNS (also in the suite's base manifests) is NOT built: only the UDPRoute
#   tests talk to it; the rig's node agent runs a stand-in so its Pod is Ready.
#
# Where the binaries go
#   ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/conformance-rig/k8s-<ver>-gwapi-<ver>/
#       kube-controller-manager  echo-basic
#   Built in a scratch folder beside it and renamed into place in one step.
#
# Output
#   Progress on stderr; the folder on stdout as the LAST line.
#
# Cost
#   Cold GOCACHE, on 2 shared cores: about 16 minutes (973 s measured;
#   kube-controller-manager is 949 s of it), 2.7 GB of GOCACHE, 102 MB of
#   binaries. Warm runs (folder present) are instant and need no network.
#
# Knobs: GANTRY_CACHE_DIR, GANTRY_RIG_BUILD_TIMEOUT (seconds per `go` step,
# default 3600), GANTRY_RIG_LOCK_TIMEOUT (default 5400), GOPROXY/GOCACHE/GOMODCACHE.
set -euo pipefail

# Keep in step with controller/testenv/build-control-plane.sh and
# controller/testenv/gateway-api-module.sh.
K8S_VERSION=v1.34.10
GATEWAY_API_VERSION=v1.6.3

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_wrapper=$script_dir/../controller/testenv/wrapper/kubernetes.go.mod.in
echo_wrapper=$script_dir/wrapper/echo-basic.go.mod.in
build_timeout=${GANTRY_RIG_BUILD_TIMEOUT:-3600}
lock_timeout=${GANTRY_RIG_LOCK_TIMEOUT:-5400}
binaries=(kube-controller-manager echo-basic)

log() { printf 'build-rig: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

has_all_binaries() {
    local dir=$1 b
    [[ -d $dir ]] || return 1
    for b in "${binaries[@]}"; do
        [[ -x $dir/$b && -s $dir/$b ]] || return 1
    done
}

cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}/conformance-rig
dest=$cache_root/k8s-$K8S_VERSION-gwapi-$GATEWAY_API_VERSION
mkdir -p "$cache_root"

if has_all_binaries "$dest"; then
    log "using cached rig binaries in $dest"
    printf '%s\n' "$dest"
    exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.26 is needed: the conformance module says go 1.26.0)"

exec 9>"$cache_root/.build.lock"
flock -w "$lock_timeout" 9 || die "another build held $cache_root/.build.lock for more than ${lock_timeout}s"
if has_all_binaries "$dest"; then
    log "a concurrent build finished $dest"
    printf '%s\n' "$dest"
    exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
# `go` runs in the background and is waited for, so INT/TERM reach the trap at once.
gopid=
gorun() {
    local rc=0
    timeout --kill-after=30 "$build_timeout" go "$@" &
    gopid=$!
    wait "$gopid" || rc=$?
    gopid=
    return "$rc"
}

start=$(date +%s)
rm -rf "$cache_root"/.build.*/
work=$(mktemp -d "$cache_root/.build.XXXXXX")
cleanup() {
    if [[ -n $gopid ]] && kill -TERM "$gopid" 2>/dev/null; then
        wait "$gopid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fill() { # fill TEMPLATE KEY=VALUE... -> stdout
    local text key value kv
    text=$(<"$1")
    shift
    for kv in "$@"; do
        key=${kv%%=*}
        value=${kv#*=}
        text=${text//"@$key@"/"$value"}
    done
    printf '%s\n' "$text"
}

# --- kube-controller-manager ----------------------------------------------
# Same resolution as build-control-plane.sh: the staging modules k8s.io/kubernetes
# requires at v0.0.0 are mapped to their published v0.<minor>.<patch> releases.
log "resolving k8s.io/kubernetes@$K8S_VERSION"
k8s_gomod=$(gorun mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
[[ -f $k8s_gomod ]] || die "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"
go_directive=$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")
godebug_line=$(grep -E '^godebug ' "$k8s_gomod" || true)
staging_version=v0.${K8S_VERSION#v1.}
staging_modules=$(awk '
    /^require[[:space:]]*\(/ { inreq = 1; next }
    /^replace[[:space:]]*\(/ { inrep = 1; next }
    /^\)/ { inreq = 0; inrep = 0; next }
    inreq && $2 == "v0.0.0" { req[$1] = 1 }
    inrep && $2 == "=>" && $3 ~ /^\.\/staging\// { rep[$1] = 1 }
    END { for (m in rep) if (m in req) print m }
' "$k8s_gomod" | sort)
[[ -n $staging_modules ]] || die "found no staging modules in $k8s_gomod"
replaces=$(printf '\t%s => %s %s\n' $(for m in $staging_modules; do echo "$m $m $staging_version"; done))

mkdir -p "$work/kubernetes" "$work/echo-basic" "$work/out"
fill "$k8s_wrapper" \
    "GO_VERSION=$go_directive" "GODEBUG=$godebug_line" \
    "K8S_VERSION=$K8S_VERSION" "STAGING_REPLACES=$replaces" >"$work/kubernetes/go.mod"

k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    version_ldflags+=" -X $pkg.gitTreeState=clean"
done
log "go build k8s.io/kubernetes/cmd/kube-controller-manager"
t0=$(date +%s)
gorun -C "$work/kubernetes" build -trimpath -ldflags "-s -w$version_ldflags" \
    -o "$work/out/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
log "kube-controller-manager built in $(($(date +%s) - t0))s"

# --- echo-basic --------------------------------------------------------------
echo_go=$(gorun mod download -json "sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION" |
    sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
[[ -f $echo_go ]] || die "could not download sigs.k8s.io/gateway-api/conformance@$GATEWAY_API_VERSION"
fill "$echo_wrapper" "GO_VERSION=$(awk '$1 == "go" { print $2; exit }' "$echo_go")" \
    "GATEWAY_API_VERSION=$GATEWAY_API_VERSION" >"$work/echo-basic/go.mod"
log "go build sigs.k8s.io/gateway-api/conformance/echo-basic@$GATEWAY_API_VERSION"
t0=$(date +%s)
gorun -C "$work/echo-basic" build -trimpath -ldflags "-s -w" \
    -o "$work/out/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic
log "echo-basic built in $(($(date +%s) - t0))s"

"$work/out/kube-controller-manager" --version >&2
has_all_binaries "$work/out" || die "build finished without all of ${binaries[*]}"
rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest in $(($(date +%s) - start))s ($(du -sh "$dest" | cut -f1))"
printf '%s\n' "$dest"
