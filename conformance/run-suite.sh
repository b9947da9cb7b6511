#!/usr/bin/env bash
# run-suite.sh — runs the official Gateway API conformance suite (v1.6.3) against Gantry on the
# rig (conformance/rig.sh): starts the rig unless it runs, starts Gantry inside the rig's network
# namespace with its own addresses for Gateways (--gateway-address-pool), creates the
# GatewayClass `gantry`, runs the suite and writes its report. See conformance/README.md.
#
#   conformance/run-suite.sh [--report FILE] [--gantry BIN] [-- SUITE-ARGS...]
#
#   --report FILE   where the suite writes its ConformanceReport (default: none)
#   --gantry BIN    the gantry binary (default: target/debug/gantry, built when missing)
#   --keep-rig      leave the rig running afterwards (default: stop it if this script started it)
#   SUITE-ARGS      passed to the suite as they are, for example --run-test=HTTPRouteWeight or
#                   --skip-tests=A,B
#
# The supported features are not given to the suite: it reads them from the GatewayClass's
# status.supportedFeatures, which Gantry publishes. Exit status: the suite's.
# Needs root (the rig). Build the suite first (conformance/build-suite.sh; it needs the Go
# proxy, which the rig's namespace cannot reach).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
report=
gantry=
keep_rig=0
suite_args=()
while (($#)); do
    case $1 in
    --report) report=$(realpath -m "$2"); shift 2 ;;
    --gantry) gantry=$(realpath "$2"); shift 2 ;;
    --keep-rig) keep_rig=1; shift ;;
    --) shift; suite_args=("$@"); break ;;
    *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
done

log() { printf 'run-suite: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cd "$repo"
suite=$(conformance/build-suite.sh | tail -n 1)
[[ -x $suite ]] || die "no suite binary (conformance/build-suite.sh)"
if [[ -z $gantry ]]; then
    cargo build --quiet --locked -p gantry
    gantry=$repo/target/debug/gantry
fi

started_rig=0
eval "$(conformance/rig.sh env)"
if ! ip netns exec "$GANTRY_RIG_NETNS" "$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$KUBECONFIG" \
    --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    conformance/rig.sh start >&2
    eval "$(conformance/rig.sh env)"
    started_rig=1
fi
kctl() { ip netns exec "$GANTRY_RIG_NETNS" "$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$KUBECONFIG" --request-timeout=20s "$@"; }

gantry_pid=
cleanup() {
    if [[ -n $gantry_pid ]]; then
        kill -TERM "$gantry_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$gantry_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$gantry_pid" 2>/dev/null || true
    fi
    if ((started_rig && !keep_rig)); then
        conformance/rig.sh stop >&2 || true
    fi
}
trap cleanup EXIT

kctl apply -f - >&2 <<'EOF'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gantry}
spec: {controllerName: gantry.dev/gateway-controller}
EOF

log "starting gantry (log: $GANTRY_RIG_DIR/gantry.log)"
# Port 80 and 443 as a Service in front of Gantry would expose them; each Gateway gets its own
# address from the rig's load-balancer range, which is routed to the namespace's loopback.
setsid timeout -s KILL 3h ip netns exec "$GANTRY_RIG_NETNS" "$gantry" \
    --kubeconfig "$KUBECONFIG" \
    --http-addr 0.0.0.0:80 --https-addr 0.0.0.0:443 --admin-addr 127.0.0.1:10254 \
    --gateway-address-pool "$GANTRY_RIG_LB_CIDR" \
    --election-namespace default --access-log=false \
    >"$GANTRY_RIG_DIR/gantry.log" 2>&1 </dev/null &
gantry_pid=$!

for _ in $(seq 1 60); do
    if kctl get gatewayclass gantry -o jsonpath='{.status.supportedFeatures[*].name}' 2>/dev/null | grep -q HTTPRoute; then
        break
    fi
    kill -0 "$gantry_pid" 2>/dev/null || { tail -n 20 "$GANTRY_RIG_DIR/gantry.log" >&2; die "gantry exited"; }
    sleep 1
done
log "supported features: $(kctl get gatewayclass gantry -o jsonpath='{.status.supportedFeatures[*].name}')"

report_args=()
if [[ -n $report ]]; then
    mkdir -p "$(dirname "$report")"
    report_args=(--report-output="$report")
fi
log "running the suite"
status=0
# -test.run must be anchored: `TestConformance` alone also runs TestConformanceOptions_*, which
# read files relative to the module folder.
ip netns exec "$GANTRY_RIG_NETNS" env KUBECONFIG="$KUBECONFIG" timeout -s KILL 70m "$suite" \
    -test.run '^TestConformance$' -test.timeout 60m -test.v \
    --gateway-class=gantry \
    --conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC \
    --organization=gantry --project=gantry --url=https://github.com/gantry-dev/gantry \
    --version="$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)" \
    --contact=maintainers \
    "${report_args[@]}" "${suite_args[@]}" || status=$?
log "suite exit status $status"
exit "$status"
