#!/usr/bin/env bash
# build-control-plane.sh — build a real Kubernetes control plane for Gantry's
# controller tests from Go modules (no release tarballs, no container images).
#
# What it builds
#   kube-apiserver and kubectl from k8s.io/kubernetes@${K8S_VERSION}, and etcd
#   from go.etcd.io/etcd/server/v3 at the version that Kubernetes release pins
#   in its own go.mod. Only the Go module proxy is contacted.
#
# Where the binaries go
#   ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/control-plane/k8s-<ver>-etcd-<ver>/
#       kube-apiserver  etcd  kubectl
#   A complete folder is reused as is; otherwise everything is built in a
#   scratch folder beside it and renamed into place in one step, so an
#   interrupted build never leaves a half-filled cache folder.
#
# Output
#   Progress goes to stderr. The assets folder is printed on stdout as the LAST
#   line, so callers can do
#       export KUBEBUILDER_ASSETS=$(controller/testenv/build-control-plane.sh | tail -1)
#   If KUBEBUILDER_ASSETS is already set and holds the three binaries, that
#   folder is printed and nothing is built. If it is set but incomplete, a
#   warning is printed and the pinned version is built into the cache instead.
#
# Cost
#   Cold (empty Go caches), on 2 shared cores: about 11.5 minutes (693 s
#   measured; kube-apiserver is most of it), leaving ~1.4 GB in GOMODCACHE,
#   ~2.5 GB in GOCACHE and 182 MB of binaries in the folder above. Warm runs
#   (folder present) take ~10 ms and need no network.
#
# Knobs (environment)
#   GANTRY_CACHE_DIR            cache root (default $HOME/.cache/gantry)
#   GANTRY_CP_BUILD_TIMEOUT     max seconds for each `go` step (default 3600)
#   GANTRY_CP_LOCK_TIMEOUT      max seconds to wait for a concurrent build (default 5400)
#   GOMODCACHE / GOCACHE / GOPROXY are honoured as usual.
#
# Upgrading
#   Change K8S_VERSION below (newest v1.34.x whose go.mod the checksum database
#   knows; `go list -m k8s.io/kubernetes@v1.34` shows the newest on the proxy).
#   The staging module versions and the etcd version follow from it.
set -euo pipefail

# Pinned. v1.34.11 and v1.34.12 are on the module proxy but their go.mod is not
# (yet) in sum.golang.org, so they cannot be verified; v1.34.10 can.
K8S_VERSION=v1.34.10

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wrapper_dir=$script_dir/wrapper
build_timeout=${GANTRY_CP_BUILD_TIMEOUT:-3600}
lock_timeout=${GANTRY_CP_LOCK_TIMEOUT:-5400}
binaries=(kube-apiserver etcd kubectl)

log() { printf 'build-control-plane: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

has_all_binaries() {
    local dir=$1 b
    [[ -n $dir && -d $dir ]] || return 1
    for b in "${binaries[@]}"; do
        [[ -x $dir/$b && -s $dir/$b ]] || return 1
    done
}

if [[ -n ${KUBEBUILDER_ASSETS:-} ]]; then
    if has_all_binaries "$KUBEBUILDER_ASSETS"; then
        printf '%s\n' "$KUBEBUILDER_ASSETS"
        exit 0
    fi
    log "warning: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of ${binaries[*]}; using the cache"
fi

cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}/control-plane
mkdir -p "$cache_root"

# Fast path without touching the network: the etcd version is derived from the
# Kubernetes go.mod, so a finished folder for this Kubernetes version is found
# by pattern. There is at most one per Kubernetes version in practice; take the
# newest if several exist.
find_cached() {
    local d found=
    for d in "$cache_root"/k8s-"$K8S_VERSION"-etcd-*; do
        has_all_binaries "$d" && found=$d
    done
    [[ -n $found ]] && printf '%s\n' "$found"
}

if cached=$(find_cached); then
    log "using cached control plane in $cached"
    printf '%s\n' "$cached"
    exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed)"
go_minor=$(go env GOVERSION | sed -nE 's/^go1\.([0-9]+).*/\1/p')
[[ -n $go_minor && $go_minor -ge 24 ]] || die "Go >= 1.24 is needed, found $(go env GOVERSION)"

# One build at a time per cache root; a second caller waits and then finds the
# result of the first.
exec 9>"$cache_root/.build.lock"
if ! flock -w "$lock_timeout" 9; then
    die "another build held $cache_root/.build.lock for more than ${lock_timeout}s"
fi
if cached=$(find_cached); then
    log "a concurrent build finished $cached"
    printf '%s\n' "$cached"
    exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
# `go` runs in the background and is waited for, so that INT/TERM reach the
# trap below at once (bash defers traps while a foreground command runs).
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
# Holding the lock, any scratch folder left is from a build that was killed.
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

# --- read what k8s.io/kubernetes pins -------------------------------------
log "resolving k8s.io/kubernetes@$K8S_VERSION"
k8s_gomod=$(gorun mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
[[ -f $k8s_gomod ]] || die "could not download the go.mod of k8s.io/kubernetes@$K8S_VERSION"

etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' "$k8s_gomod")
[[ $etcd_version =~ ^v3\.[0-9]+\.[0-9]+$ ]] ||
    die "no go.etcd.io/etcd/server/v3 release version in $k8s_gomod (got '$etcd_version')"
go_directive=$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")
godebug_line=$(grep -E '^godebug ' "$k8s_gomod" || true)

# Staging modules: every `k8s.io/X => ./staging/src/k8s.io/X` in the replace
# block that k8s.io/kubernetes also requires at v0.0.0. They are published as
# k8s.io/X v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
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

dest_name=k8s-$K8S_VERSION-etcd-$etcd_version
dest=$cache_root/$dest_name
log "building $dest_name ($(wc -w <<<"$staging_modules") staging modules at $staging_version), go $(go env GOVERSION)"

# --- kube-apiserver and kubectl ------------------------------------------
mkdir -p "$work/kubernetes" "$work/etcd" "$work/out"
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
fill "$wrapper_dir/kubernetes.go.mod.in" \
    "GO_VERSION=$go_directive" "GODEBUG=$godebug_line" \
    "K8S_VERSION=$K8S_VERSION" "STAGING_REPLACES=$replaces" >"$work/kubernetes/go.mod"

k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    version_ldflags+=" -X $pkg.gitTreeState=clean"
done

for cmd in kube-apiserver kubectl; do
    log "go build k8s.io/kubernetes/cmd/$cmd"
    gorun -C "$work/kubernetes" build -trimpath -ldflags "-s -w$version_ldflags" \
        -o "$work/out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
done

# --- etcd ------------------------------------------------------------------
fill "$wrapper_dir/etcd.go.mod.in" "ETCD_VERSION=$etcd_version" >"$work/etcd/go.mod"
log "go build go.etcd.io/etcd/server/v3@$etcd_version"
gorun -C "$work/etcd" build -trimpath -ldflags "-s -w" -o "$work/out/etcd" go.etcd.io/etcd/server/v3

# --- check and publish -----------------------------------------------------
"$work/out/kube-apiserver" --version >&2
"$work/out/etcd" --version | head -1 >&2
"$work/out/kubectl" version --client >&2
has_all_binaries "$work/out" || die "build finished without all of ${binaries[*]}"

rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest in $(($(date +%s) - start))s ($(du -sh "$dest" | cut -f1))"
printf '%s\n' "$dest"
