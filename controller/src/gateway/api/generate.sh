#!/usr/bin/env bash
# Regenerates the Gateway API types in this folder from the standard-channel CRDs of the pinned
# Gateway API module (controller/testenv/gateway-api-module.sh), with kopium
# (`cargo install kopium --version 0.24.1`). Run it from anywhere; it rewrites the *.rs files
# except mod.rs. The types are generated rather than taken from the `gateway-api` crate because
# that crate is built on kube 4 and Gantry on kube 5.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module=$("$here/../../../testenv/gateway-api-module.sh")
command -v kopium >/dev/null || { echo "generate: kopium is not on PATH (cargo install kopium --version 0.24.1)" >&2; exit 1; }
for kind in gatewayclasses gateways httproutes grpcroutes referencegrants backendtlspolicies; do
  kopium -f "$module/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" \
    --derive PartialEq >"$here/$kind.rs"
  rustfmt --edition 2021 "$here/$kind.rs"
done
