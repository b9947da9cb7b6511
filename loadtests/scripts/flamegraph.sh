#!/usr/bin/env bash
# flamegraph.sh — where Gantry's CPU time goes on the http1-keepalive scenario.
#
# Usage: loadtests/scripts/flamegraph.sh GANTRY_BIN OUT.svg [SECONDS]
#        (RUN=DIR for another load-test output folder's run/http1-keepalive)
#
# Needs a finished load-test run (cargo run -p loadtests --release -- run ...) for the manifests
# and the backend configuration it generated under target/loadtests/run/http1-keepalive/, and
# perf, wrk and nginx installed (the load-test runner installs the last two), and `inferno`
# (cargo install inferno). Gantry runs with one worker pinned to CPU 0; the backend (nginx) and
# wrk (64 connections) run on CPU 1, as in the load test. perf samples CPU 0's process at 999 Hz
# with DWARF call graphs. Everything listens on 127.0.0.1 and stops by itself.
set -euo pipefail
bin=${1:?gantry binary}
out=${2:?output svg}
secs=${3:-8}
run=${RUN:-target/loadtests/run/http1-keepalive}
[[ -d $run ]] || { echo "no $run: run the load test first" >&2; exit 1; }
for t in perf wrk nginx inferno-collapse-perf inferno-flamegraph; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

manifests=$run/gantry/manifests
backend_conf=$run/backend/backend.conf
[[ -d $manifests && -f $backend_conf ]] || { echo "no manifests or backend.conf under $run" >&2; exit 1; }
# The backend listens where the manifests' EndpointSlice says; start it as the runner did.
taskset -c 1 nginx -c "$(realpath "$backend_conf")" >"$work/backend.log" 2>&1 &
pids+=($!)
port=$(python3 - <<'PY'
import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])
PY
)
GANTRY_WORKER_THREADS=1 taskset -c 0 "$bin" --manifests "$manifests" --http-addr "127.0.0.1:$port" \
  --https-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --access-log=false >"$work/gantry.log" 2>&1 &
gantry=$!
pids+=($gantry)
for _ in $(seq 1 100); do
  curl -fs -o /dev/null -H 'Host: localhost' "http://127.0.0.1:$port/" && break
  sleep 0.1
done
taskset -c 1 wrk -t1 -c64 -d$((secs + 2))s -H 'Host: localhost' "http://127.0.0.1:$port/" >"$work/wrk.txt" 2>&1 &
pids+=($!)
sleep 1
perf record -F 999 --call-graph dwarf,16384 -p "$gantry" -o "$work/perf.data" -- sleep "$secs" \
  >/dev/null 2>&1
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"${out%.svg}.folded"
inferno-flamegraph --title "gantry http1-keepalive, 1 worker" <"${out%.svg}.folded" >"$out"
wait "${pids[2]}" 2>/dev/null || true
grep -E 'Requests/sec' "$work/wrk.txt" || true
echo "wrote $out"
