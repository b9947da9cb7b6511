#!/usr/bin/env bash
# install-helm.sh — build the pinned Helm CLI from its Go module and print its path.
#
# The chart's tests and `.ci/test` need `helm` (lint, template). It is built with
# `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION`: only the Go module proxy is
# contacted, no release tarballs.
#
# Where it goes
#   ${GANTRY_CACHE_DIR:-$HOME/.cache/gantry}/helm-<version>/helm
#   A finished folder is reused as is (about 10 ms, no network). Otherwise the
#   binary is built in a scratch folder beside it and renamed into place in one
#   step, so an interrupted build never leaves a half-filled cache folder.
#
# Output
#   Progress goes to stderr; the path of the helm binary is the LAST line on
#   stdout:   HELM=$(charts/install-helm.sh | tail -1)
#   If GANTRY_HELM names an executable, that is printed and nothing is built.
#
# Cost
#   Cold (empty Go caches), on 2 shared cores: a few minutes and ~0.5 GB of Go
#   caches; the binary is ~60 MB.
#
# Knobs: GANTRY_CACHE_DIR, GANTRY_HELM, GANTRY_HELM_BUILD_TIMEOUT (seconds, default
# 3600), GANTRY_HELM_LOCK_TIMEOUT (default 3600); GOPROXY/GOMODCACHE/GOCACHE as usual.
#
# Upgrading: change HELM_VERSION (`go list -m -versions helm.sh/helm/v3` lists them).
set -euo pipefail

HELM_VERSION=v3.21.4

log() { printf 'install-helm: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [[ -n ${GANTRY_HELM:-} ]]; then
    [[ -x $GANTRY_HELM ]] || die "GANTRY_HELM=$GANTRY_HELM is not an executable"
    printf '%s\n' "$GANTRY_HELM"
    exit 0
fi

cache_root=${GANTRY_CACHE_DIR:-${HOME:?HOME or GANTRY_CACHE_DIR must be set}/.cache/gantry}
dest=$cache_root/helm-$HELM_VERSION
if [[ -x $dest/helm ]]; then
    printf '%s\n' "$dest/helm"
    exit 0
fi

command -v go >/dev/null || die "go is not on PATH (Go >= 1.24 is needed)"
mkdir -p "$cache_root"
# One build at a time; a second caller waits and then finds the first one's result.
exec 9>"$cache_root/.helm-build.lock"
flock -w "${GANTRY_HELM_LOCK_TIMEOUT:-3600}" 9 || die "another build held $cache_root/.helm-build.lock too long"
if [[ -x $dest/helm ]]; then
    printf '%s\n' "$dest/helm"
    exit 0
fi

# Holding the lock, any scratch folder left is from a build that was killed.
rm -rf "$cache_root"/.helm-build.*/
work=$(mktemp -d "$cache_root/.helm-build.XXXXXX")
gopid=
cleanup() {
    if [[ -n $gopid ]] && kill -TERM "$gopid" 2>/dev/null; then
        wait "$gopid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN=$work/out
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
start=$(date +%s)
log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# The ldflags of Helm's own Makefile: the version, and the Kubernetes version that `helm lint` and
# `helm template` assume (.Capabilities.KubeVersion), which follows the client-go it is built with.
gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -nE 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
[[ -f $gomod ]] || die "could not download the go.mod of helm.sh/helm/v3@$HELM_VERSION"
client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
[[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "no k8s.io/client-go version in $gomod"
k8s_minor=${BASH_REMATCH[1]}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
# In the background and waited for, so that INT/TERM reach the trap at once.
timeout --kill-after=30 "${GANTRY_HELM_BUILD_TIMEOUT:-3600}" go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" &
gopid=$!
wait "$gopid"
gopid=
"$work/out/helm" version --short >&2
rm -rf "$dest"
mv -T "$work/out" "$dest"
log "built $dest/helm in $(($(date +%s) - start))s"
printf '%s\n' "$dest/helm"
