#!/usr/bin/env bash
# pairs.sh — the rate of configuration B as a share of configuration A, measured in pairs (A and B
# back to back, one round each on a fresh proxy, the order alternating from pair to pair), so that
# the VM's drift lands on both sides of each ratio instead of on one.
#
# Usage: loadtests/scripts/pairs.sh OUT_DIR PAIRS DURATION PROXY_A:SCENARIO_A PROXY_B:SCENARIO_B
#        (LOADTESTS=path/to/loadtests, GANTRY_BIN=... as for `loadtests run`)
# Example: loadtests/scripts/pairs.sh /tmp/gw 9 5s gantry:many-routes gantry-gateway:many-routes
#          Two builds of Gantry: PROXY=BIN, as in gantry=/tmp/old/gantry:many-routes.
#
# Why pairs: on a shared 2-core VM the rate of one configuration drifts by ±25% over minutes (CPU
# time per request moves with it: the machine, not the proxy, changes). A `loadtests run` measures
# all rounds of one proxy and scenario close together, so drift lands on the ratio. The result is
# the median of the pairs' ratios, with its quartiles; each run's full report is kept.
set -euo pipefail
out=$(realpath -m "${1:?output directory}")
pairs=${2:?number of pairs}
duration=${3:?duration of each run, e.g. 5s}
a=${4:?PROXY:SCENARIO of A}
b=${5:?PROXY:SCENARIO of B}
lt=${LOADTESTS:-target/release/loadtests}
bin=${GANTRY_BIN:-target/release/gantry}
[[ -x $lt ]] || { echo "no $lt: cargo build --release -p loadtests -p gantry" >&2; exit 1; }
mkdir -p "$out"
rate() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["scenarios"][0]["results"][0]["rps"])' "$1"; }
run() { # run NAME PROXY[=GANTRY_BIN]:SCENARIO PAIR
  local proxy=${2%%:*} scenario=${2#*:} gantry=$bin
  if [[ $proxy == *=* ]]; then gantry=${proxy#*=}; proxy=${proxy%%=*}; fi
  "$lt" run --gantry-bin "$gantry" --no-install --proxies "$proxy" --scenarios "$scenario" --rounds 1 \
    --duration "$duration" --out "$out/pair-$3/$1" >"$out/pair-$3-$1.log" 2>&1
  rate "$out/pair-$3/$1/report.json"
}
: >"$out/pairs.tsv"
for i in $(seq 1 "$pairs"); do
  # The order alternates (A B, B A, ...): whatever the second run of a pair gains or loses from
  # the first lands on A and on B equally often.
  if ((i % 2)); then
    ra=$(run a "$a" "$i")
    rb=$(run b "$b" "$i")
  else
    rb=$(run b "$b" "$i")
    ra=$(run a "$a" "$i")
  fi
  printf '%s\t%.0f\t%.0f\t%.3f\n' "$i" "$ra" "$rb" "$(python3 -c "print($rb/$ra)")" | tee -a "$out/pairs.tsv"
done
python3 - "$out/pairs.tsv" "$a" "$b" "$duration" >"$out/summary.md" <<'EOF'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]) if l.strip()]
ratios = sorted(float(r[3]) for r in rows)
ra = statistics.median(float(r[1]) for r in rows)
rb = statistics.median(float(r[2]) for r in rows)
a, b, d = sys.argv[2], sys.argv[3], sys.argv[4]
print(f"### {b} / {a}, {len(rows)} alternating pairs of {d} runs\n")
print(f"| pair | {a} req/s | {b} req/s | ratio |")
print("|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r[0]} | {float(r[1]):,.0f} | {float(r[2]):,.0f} | {float(r[3]):.3f} |")
print(f"\nMedian of the pairs' ratios: **{statistics.median(ratios):.3f}** "
      f"(quartiles {ratios[len(ratios)//4]:.3f} to {ratios[(3*len(ratios))//4]:.3f}); "
      f"median rates {ra:,.0f} and {rb:,.0f} req/s.")
EOF
cat "$out/summary.md"
