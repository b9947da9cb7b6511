#!/usr/bin/env bash
# The experiment of README.md: tracing off, the exporter alone, tracing at ratio 0 and at 1%, in
# rotation, outside the harness. /tmp/exp holds a copy of one http1-keepalive run's backend/
# (nginx config, its paths rewritten to /tmp/exp/backend), manifests/ and wrk-plain.lua, from a
# `loadtests run --out DIR` (DIR/run/http1-keepalive/...). The exporter's endpoint is a port nothing
# listens on (its exports fail and are counted; only the 1% run has any). Output: one line per run,
# name, req/s, and the proxy's CPU ticks (1/100 s) during the 5 s of load. Its output on
# 2026-12-01 is wake-experiment.txt.
set -u
G=${GANTRY_BIN:-target/release/gantry}
cd /tmp/exp
taskset -c 1 nginx -p /tmp/exp/backend -e /tmp/exp/backend/e.log -c /tmp/exp/backend/backend.conf &
sleep 1
run() { # name flags...
  local name=$1; shift
  GANTRY_LOG=warn GANTRY_WORKER_THREADS=1 taskset -c 0 $G --manifests /tmp/exp/manifests --http-addr 127.0.0.1:28080 --https-addr 127.0.0.1:28443 --admin-addr 127.0.0.1:28254 --access-log=false "$@" > /tmp/exp/g.log 2>&1 &
  local gp=$!
  for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:28254/readyz && break; sleep 0.05; done
  local t0=$(awk '{print $14+$15}' /proc/$gp/stat)
  local rps=$(taskset -c 1 wrk -t1 -c64 -d5s -H "Host: localhost" http://127.0.0.1:28080/ | awk '/Requests\/sec/{print $2}')
  local t1=$(awk '{print $14+$15}' /proc/$gp/stat)
  kill $gp; wait $gp 2>/dev/null
  echo "$name $rps cpu_ticks=$((t1-t0))"
}
for r in 1 2 3 4; do
  run base
  run otlp-only --otlp-endpoint http://127.0.0.1:1/v1/traces --otlp-protocol http
  run trace1 --otlp-endpoint http://127.0.0.1:1/v1/traces --otlp-protocol http --tracing --trace-sampling-ratio 0.01
  run trace0 --otlp-endpoint http://127.0.0.1:1/v1/traces --otlp-protocol http --tracing --trace-sampling-ratio 0
done
nginx -p /tmp/exp/backend -e /tmp/exp/backend/e.log -c /tmp/exp/backend/backend.conf -s stop
