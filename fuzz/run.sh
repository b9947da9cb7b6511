#!/usr/bin/env bash
# Builds one fuzz target with AFL++ instrumentation (cargo afl, stable toolchain) and fuzzes it for a
# bounded time. Exits non-zero, printing the input's path, if afl-fuzz found a crash.
#
#   fuzz/run.sh TARGET SECONDS      TARGET: normalize | h1_response | manifests | request
#
# Needs cargo-afl (`cargo install cargo-afl --version 0.18.2 --locked`; it builds AFL++ from its
# bundled source during the install, which this script does when cargo-afl is missing).
# Environment: CARGO_TARGET_DIR (default fuzz/target), FUZZ_OUT (default fuzz/out), AFL_EXTRA_ARGS.
set -euo pipefail

usage() { echo "usage: $0 normalize|h1_response|manifests|request SECONDS" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
target=$1 seconds=$2
case $target in normalize|h1_response|manifests|request) ;; *) usage ;; esac
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage

here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
out_root=${FUZZ_OUT:-$here/out}

if ! cargo afl --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-afl (builds AFL++, about 2 minutes)" >&2
    cargo install cargo-afl --version 0.18.2 --locked
fi
# Builds AFL++ for the current rustc when it is missing (e.g. after a toolchain update); cargo afl
# refuses, with "already built", when it is there.
if ! config_log=$(cargo afl config --build 2>&1) && ! grep -q 'already built' <<<"$config_log"; then
    echo "$config_log" >&2
    exit 1
fi

features=()
[[ $target == manifests ]] && features=(--features controller)
(cd "$here" && cargo afl build --release --locked --bin "$target" "${features[@]}")
binary=$CARGO_TARGET_DIR/release/$target

out=$out_root/$target
rm -rf "$out"
mkdir -p "$out"

# Targets that talk over loopback sockets or build certificates take longer per input.
case $target in
    normalize) timeout_ms=1000 ;;
    *) timeout_ms=5000 ;;
esac

# AFL_BENCH_UNTIL_CRASH stops at the first crash; -V bounds the run in time either way.
# The other settings suit containers and CI: no screen UI, no CPU pinning (cores are shared), no
# demand that core dumps go to a file or that the CPU governor be changed.
status=0
AFL_NO_UI=1 \
AFL_NO_AFFINITY=1 \
AFL_SKIP_CPUFREQ=1 \
AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
AFL_BENCH_UNTIL_CRASH=1 \
AFL_NO_STARTUP_CALIBRATION=1 \
    cargo afl fuzz -i "$here/corpus/$target" -o "$out" -V "$seconds" -t "$timeout_ms" -m none \
    ${AFL_EXTRA_ARGS:-} -- "$binary" >"$out/afl.log" 2>&1 || status=$?

stats=$out/default/fuzzer_stats
if [[ -f $stats ]]; then
    grep -E '^(run_time|execs_done|execs_per_sec|corpus_count|saved_crashes|saved_hangs|bitmap_cvg|stability)\b' "$stats" \
        | sed "s/^/$target: /"
else
    echo "run.sh: afl-fuzz did not start (exit $status); its log:" >&2
    tail -n 40 "$out/afl.log" >&2
    exit 1
fi

crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | sort)
if [[ -n $crashes ]]; then
    echo "$target: CRASH found; inputs:" >&2
    echo "$crashes" >&2
    echo "reproduce: $binary < INPUT" >&2
    exit 1
fi
if [[ $status -ne 0 ]]; then
    echo "run.sh: afl-fuzz exited $status; its log:" >&2
    tail -n 40 "$out/afl.log" >&2
    exit 1
fi
echo "$target: no crash in ${seconds}s"
