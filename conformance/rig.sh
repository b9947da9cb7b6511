#!/usr/bin/env bash
# rig.sh — a one-node Kubernetes cluster for the Gateway API conformance suite, without
# container images. See conformance/README.md.
#
#   conformance/rig.sh start   create the rig's network namespace and start etcd, kube-apiserver,
#                              kube-controller-manager and gantry-node-agent in it; install the
#                              Gateway API standard CRDs; print how to use it
#   conformance/rig.sh env     print the variables to use it (eval "$(conformance/rig.sh env)")
#   conformance/rig.sh stop    stop everything started by `start` and delete the namespace
#
# Everything listens inside the network namespace $GANTRY_RIG_NETNS only: the API server on
# 127.0.0.1:6443 there, pods on 10.124.0.0/16 behind a bridge there. Run clients with
# `ip netns exec $GANTRY_RIG_NETNS …`. Needs root (network namespaces, bind mounts).
#
# Environment
#   GANTRY_RIG_DIR        state folder: certificates, kubeconfig, logs, etcd data, pids
#                         (default /tmp/gantry-rig)
#   GANTRY_RIG_NETNS      network namespace name (default gantry-rig)
#   GANTRY_RIG_POD_CIDR   pod addresses (default 10.124.0.0/16; the first is the node's)
#   GANTRY_RIG_LB_CIDR    the load balancer's addresses (default 10.125.0.0/24): routed to the
#                         namespace's loopback, so a process listening on 0.0.0.0 there receives
#                         connections to any of them (gantry --gateway-address-pool)
#   GANTRY_RIG_LIFETIME   if set, every rig process is SIGKILLed after this many seconds
#                         (tests set it, so a killed test leaves nothing running for long)
#   GANTRY_RIG_TIMEOUT    seconds to wait for each start-up step (default 90)
#   GANTRY_NODE_AGENT     the gantry-node-agent binary (default: target/debug, built if missing)
#   KUBEBUILDER_ASSETS    etcd/kube-apiserver/kubectl (default: controller/testenv/build-control-plane.sh)
#   GANTRY_RIG_BIN        kube-controller-manager/echo-basic (default: conformance/build-rig.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${GANTRY_RIG_DIR:-/tmp/gantry-rig}
ns=${GANTRY_RIG_NETNS:-gantry-rig}
pod_cidr=${GANTRY_RIG_POD_CIDR:-10.124.0.0/16}
lb_cidr=${GANTRY_RIG_LB_CIDR:-10.125.0.0/24}
timeout_s=${GANTRY_RIG_TIMEOUT:-90}
lifetime=${GANTRY_RIG_LIFETIME:-}
node=gantry-node

log() { printf 'rig: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

print_env() {
    cat <<EOF
export GANTRY_RIG_NETNS=$ns
export GANTRY_RIG_DIR=$dir
export KUBECONFIG=$dir/kubeconfig
export KUBEBUILDER_ASSETS=$(cat "$dir/assets" 2>/dev/null || true)
export GANTRY_RIG_LB_CIDR=$lb_cidr
EOF
}

# Stops the processes listed in $dir/pids (only those: each was started by this script), the
# node agent first so it can remove its pods, then deletes the namespace. Bounded: TERM, up to
# 15 s, then KILL.
stop_rig() {
    if [[ -f $dir/pids ]]; then
        local pid name i
        while read -r pid name; do
            [[ -n $pid ]] || continue
            kill -TERM "$pid" 2>/dev/null || continue
            for ((i = 0; i < 150; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "$name ($pid) ignored TERM; KILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done < <(tac "$dir/pids")
        rm -f "$dir/pids"
    fi
    # Pod namespaces the agent could not remove (it was killed) go with the rig.
    local p
    for p in $(ip netns list 2>/dev/null | awk -v pre="$ns-pod-" 'index($1, pre) == 1 { print $1 }'); do
        ip netns del "$p" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
}

# start_proc NAME BINARY ARGS...: runs it in the rig's namespace, in the background, with its
# own session (so it survives this script), output to $dir/NAME.log, and records its pid.
start_proc() {
    local name=$1
    shift
    local -a wrap=()
    [[ -n $lifetime ]] && wrap=(timeout -s KILL "$lifetime")
    setsid "${wrap[@]}" ip netns exec "$ns" "$@" >>"$dir/$name.log" 2>&1 </dev/null &
    echo "$! $name" >>"$dir/pids"
}

# wait_for WHAT COMMAND...: retries COMMAND once a second for at most $timeout_s seconds.
wait_for() {
    local what=$1 i
    shift
    for ((i = 0; i < timeout_s; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    log "$what was not ready after ${timeout_s}s; last lines of the logs in $dir:"
    tail -n 15 "$dir"/*.log >&2 || true
    return 1
}

in_ns() { ip netns exec "$ns" "$@"; }
kctl() { in_ns "$assets/kubectl" --kubeconfig "$dir/kubeconfig" --request-timeout=20s "$@"; }

write_certs() {
    local d=$1
    # EC P-256 everywhere: fast to generate, accepted by every component.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=gantry-rig-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    leaf() { # leaf NAME SUBJECT EXTENSIONS...
        local name=$1 subj=$2
        shift 2
        local -a ext=()
        local e
        for e in "$@"; do ext+=(-addext "$e"); done
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
            -CA "$d/ca.crt" -CAkey "$d/ca.key" -subj "$subj" "${ext[@]}" \
            -keyout "$d/$name.key" -out "$d/$name.crt" 2>/dev/null
    }
    leaf apiserver /CN=kube-apiserver \
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc" \
        "extendedKeyUsage=serverAuth" "basicConstraints=critical,CA:FALSE"
    leaf admin "/O=system:masters/CN=gantry-rig-admin" \
        "extendedKeyUsage=clientAuth" "basicConstraints=critical,CA:FALSE"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/sa.key" 2>/dev/null
    openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
    cat >"$d/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gantry-rig
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $d/ca.crt
users:
- name: gantry-rig-admin
  user:
    client-certificate: $d/admin.crt
    client-key: $d/admin.key
contexts:
- name: gantry-rig
  context:
    cluster: gantry-rig
    user: gantry-rig-admin
current-context: gantry-rig
EOF
}

start_rig() {
    [[ $(id -u) == 0 ]] || die "the rig needs root (network namespaces, bind mounts)"
    if ip netns list | awk '{ print $1 }' | grep -qx "$ns"; then
        die "network namespace $ns exists: run '$0 stop' first (or set GANTRY_RIG_NETNS)"
    fi
    assets=${KUBEBUILDER_ASSETS:-}
    [[ -n $assets ]] || assets=$("$repo/controller/testenv/build-control-plane.sh" | tail -n 1)
    bin=${GANTRY_RIG_BIN:-}
    [[ -n $bin ]] || bin=$("$repo/conformance/build-rig.sh" | tail -n 1)
    agent=${GANTRY_NODE_AGENT:-$repo/target/debug/gantry-node-agent}
    if [[ ! -x $agent ]]; then
        log "building gantry-node-agent"
        cargo build --manifest-path "$repo/Cargo.toml" -p gantry-node-agent >&2
    fi
    local f
    for f in "$assets/etcd" "$assets/kube-apiserver" "$assets/kubectl" \
        "$bin/kube-controller-manager" "$bin/echo-basic" "$agent"; do
        [[ -x $f ]] || die "$f is missing"
    done
    local crds
    crds=$("$repo/controller/testenv/gateway-api-module.sh")/config/crd/standard

    rm -rf "$dir"
    mkdir -p "$dir/etcd-data" "$dir/agent"
    chmod 700 "$dir/etcd-data"
    printf '%s\n' "$assets" >"$dir/assets"
    write_certs "$dir"

    ip netns add "$ns"
    # From here on, a failure undoes the start.
    trap 'log "start failed; stopping"; stop_rig' ERR
    in_ns ip link set lo up
    in_ns ip route add local "$lb_cidr" dev lo

    log "starting etcd"
    start_proc etcd "$assets/etcd" --data-dir "$dir/etcd-data" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --unsafe-no-fsync=true --log-level=warn
    wait_for etcd in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/2379' 

    log "starting kube-apiserver"
    # As controller/tests/support/envtest.rs, except that the ServiceAccount admission plugin
    # stays enabled: kube-controller-manager runs the service account controllers here, and the
    # suite's pods then look like a real cluster's. `pods/log` (kubectl logs) is served by the
    # node agent's kubelet API at the Node's InternalIP (its Hostname address does not resolve);
    # without --kubelet-certificate-authority the API server does not verify the agent's
    # self-signed certificate, and without --kubelet-client-certificate it presents none (the
    # agent does not ask: it listens only inside this namespace).
    start_proc kube-apiserver "$assets/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 --secure-port=6443 --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 --cert-dir="$dir/apiserver-certs" \
        --tls-cert-file="$dir/apiserver.crt" --tls-private-key-file="$dir/apiserver.key" \
        --client-ca-file="$dir/ca.crt" --service-cluster-ip-range=10.0.0.0/24 \
        --service-account-issuer=https://kubernetes.default.svc \
        --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
        --authorization-mode=RBAC --allow-privileged=true --profiling=false \
        --endpoint-reconciler-type=none --kubelet-preferred-address-types=InternalIP
    wait_for kube-apiserver kctl get --raw /readyz

    log "starting kube-controller-manager"
    # nodelifecycle is off: the agent's Node never goes NotReady for lack of kubelet leases, and
    # nothing evicts the pods. The cloud, IPAM, route and CSR signing controllers have nothing to
    # do here (no cloud, no per-node pod CIDRs, no signing CA).
    start_proc kube-controller-manager "$bin/kube-controller-manager" \
        --kubeconfig="$dir/kubeconfig" --leader-elect=false --secure-port=0 \
        --service-account-private-key-file="$dir/sa.key" --root-ca-file="$dir/ca.crt" \
        --use-service-account-credentials=false \
        --controllers='*,-node-lifecycle-controller,-node-ipam-controller,-node-route-controller,-service-lb-controller,-cloud-node-lifecycle-controller,-certificatesigningrequest-signing-controller' \
        --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10
    wait_for "kube-controller-manager (default ServiceAccount)" kctl -n default get serviceaccount default

    log "starting gantry-node-agent"
    start_proc node-agent "$agent" --kubeconfig "$dir/kubeconfig" --node-name "$node" \
        --pod-cidr "$pod_cidr" --netns-prefix "$ns-pod-" --state-dir "$dir/agent" \
        --image "echo-basic=$bin/echo-basic" \
        --image "coredns=$bin/echo-basic"
    wait_for "node $node" kctl wait --for=condition=Ready "node/$node" --timeout=5s

    log "installing the Gateway API standard CRDs from $crds"
    wait_for "Gateway API CRDs" kctl apply --server-side -f "$crds"
    wait_for "Gateway API CRDs established" kctl wait --for=condition=Established crd --all --timeout=5s
    trap - ERR

    log "ready. Use it with:"
    cat >&2 <<EOF

    eval "\$($0 env)"
    ip netns exec \$GANTRY_RIG_NETNS \$KUBEBUILDER_ASSETS/kubectl get nodes,pods -A
    (pod logs: kubectl logs, or $dir/agent/pods/<uid>/<container>.log in CRI format;
     component logs: $dir/*.log)
    $0 stop

EOF
    print_env
}

case ${1:-} in
start) start_rig ;;
stop) stop_rig ;;
env) print_env ;;
*)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
