#!/usr/bin/env bash
# policy-mix-pairs.sh — Gantry's policy-mix rate as a share of its plain http1-keepalive rate,
# measured in alternating pairs.
#
# Usage: loadtests/scripts/policy-mix-pairs.sh OUT_DIR [PAIRS] [DURATION] [PROXY]
#        (defaults: 9 pairs of 5 s runs, proxy gantry; LOADTESTS=path/to/loadtests, GANTRY_BIN=...)
#
# Why pairs: on a shared 2-core VM the rate of one configuration drifts by ±25% over minutes
# (CPU time per request moves with it: the machine, not the proxy, changes). A `loadtests run`
# measures all rounds of one scenario, then all rounds of the next, so drift lands on the ratio.
# Here each pair runs http1-keepalive and then policy-mix back to back (one round each, fresh
# proxy each), and the result is the median of the pairs' ratios. Each run's full report is kept.
set -euo pipefail
out=$(realpath -m "${1:?output directory}")
pairs=${2:-9}
duration=${3:-5s}
proxy=${4:-gantry}
lt=${LOADTESTS:-target/release/loadtests}
bin=${GANTRY_BIN:-target/release/gantry}
[[ -x $lt ]] || { echo "no $lt: cargo build --release -p loadtests -p gantry" >&2; exit 1; }
mkdir -p "$out"
rate() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["scenarios"][0]["results"][0]["rps"])' "$1"; }
: > "$out/pairs.tsv"
for i in $(seq 1 "$pairs"); do
  for s in http1-keepalive policy-mix; do
    "$lt" run --gantry-bin "$bin" --no-install --proxies "$proxy" --scenarios "$s" --rounds 1 \
      --duration "$duration" --out "$out/pair-$i/$s" >"$out/pair-$i-$s.log" 2>&1
  done
  plain=$(rate "$out/pair-$i/http1-keepalive/report.json")
  mix=$(rate "$out/pair-$i/policy-mix/report.json")
  printf '%s\t%.0f\t%.0f\t%.3f\n' "$i" "$plain" "$mix" "$(python3 -c "print($mix/$plain)")" | tee -a "$out/pairs.tsv"
done
python3 - "$out/pairs.tsv" "$proxy" "$duration" >"$out/summary.md" <<'EOF'
import statistics, sys
rows = [l.split('\t') for l in open(sys.argv[1]) if l.strip()]
ratios = sorted(float(r[3]) for r in rows)
plain = statistics.median(float(r[1]) for r in rows)
mix = statistics.median(float(r[2]) for r in rows)
print(f"### policy-mix / http1-keepalive, {sys.argv[2]}, {len(rows)} alternating pairs of {sys.argv[3]} runs\n")
print("| pair | http1-keepalive req/s | policy-mix req/s | ratio |")
print("|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r[0]} | {float(r[1]):,.0f} | {float(r[2]):,.0f} | {float(r[3]):.3f} |")
print(f"\nMedian of the pairs' ratios: **{statistics.median(ratios):.3f}** "
      f"(quartiles {ratios[len(ratios)//4]:.3f} to {ratios[(3*len(ratios))//4]:.3f}); "
      f"median rates {plain:,.0f} and {mix:,.0f} req/s.")
EOF
cat "$out/summary.md"
