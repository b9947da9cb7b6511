#!/usr/bin/env bash
# policy-mix-pairs.sh — Gantry's policy-mix rate as a share of its plain http1-keepalive rate,
# measured in alternating pairs (see pairs.sh for why pairs).
#
# Usage: loadtests/scripts/policy-mix-pairs.sh OUT_DIR [PAIRS] [DURATION] [PROXY]
#        (defaults: 9 pairs of 5 s runs, proxy gantry; LOADTESTS=path/to/loadtests, GANTRY_BIN=...)
set -euo pipefail
proxy=${4:-gantry}
exec "$(dirname "${BASH_SOURCE[0]}")/pairs.sh" "${1:?output directory}" "${2:-9}" "${3:-5s}" \
  "$proxy:http1-keepalive" "$proxy:policy-mix"
