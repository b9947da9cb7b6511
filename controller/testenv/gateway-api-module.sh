#!/usr/bin/env bash
# Prints the folder of the Gateway API Go module (sigs.k8s.io/gateway-api) at the version Gantry
# implements, downloading it into Go's module cache first when needed. With `conformance` as the
# first argument, the folder of its conformance module (sigs.k8s.io/gateway-api/conformance) instead.
#
# The module holds the CRDs (config/crd/standard/), the examples the type tests round-trip
# (examples/standard/), and the conformance suite. Nothing of it is copied into the repository.
set -euo pipefail
GATEWAY_API_VERSION=v1.6.3
module=sigs.k8s.io/gateway-api
[[ ${1:-} == conformance ]] && module=$module/conformance
command -v go >/dev/null || { echo "gateway-api-module: go is not on PATH" >&2; exit 1; }
export GOFLAGS=-mod=mod GOWORK=off GOTOOLCHAIN=local
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
dir=$(go mod download -json "$module@$GATEWAY_API_VERSION" | sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
[[ -n $dir && -d $dir ]] || { echo "gateway-api-module: could not download $module@$GATEWAY_API_VERSION" >&2; exit 1; }
printf '%s\n' "$dir"
