#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of the parsers and rewriters (see fuzz/README.md): installs
# cargo-fuzz into target/tools (and g++ for libFuzzer if missing), builds the targets of fuzz/
# with libFuzzer on stable Rust (no sanitizer, debug assertions and overflow checks on), runs each
# target for a bounded time and prints executions, exec/s, coverage and any crash file.
# Exits non-zero when a target crashed or a property failed. Not part of scripts/test.sh.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [target...]
#   --seconds N  time per target (default 60)
#   --jobs J     libFuzzer worker processes per target, sharing one corpus (default 1)
#   target       command_rewrite, basic_auth, json_edit (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(command_rewrite basic_auth json_edit)

# libFuzzer itself is C++, built by libfuzzer-sys with the system compiler.
if ! command -v c++ >/dev/null; then
    apt-get update -qq && apt-get install -y -qq g++
fi
tools="$root/target/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    cargo install --locked --root "$tools" cargo-fuzz
fi
export PATH="$tools/bin:$PATH"

# `-s none`: the sanitizers need `-Zsanitizer`, nightly only. `-a`: debug assertions and
# overflow checks, so arithmetic overflow panics as in a debug build.
flags=(--fuzz-dir "$root/fuzz" -s none -a)
# All targets at once (one build of the router's library with these flags).
(cd fuzz && cargo fuzz build "${flags[@]}") || { echo "fuzz build failed" >&2; exit 1; }

logs="$root/fuzz/target/logs"
mkdir -p "$logs"
failed=0
printf '\n%-16s %8s %14s %10s %8s %8s %10s  %s\n' target seconds executions exec/s cov ft corpus result
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    artifacts="$root/fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$logs/$t.log"
    before=$(ls "$artifacts" | wc -l)
    set +e
    (cd fuzz && cargo fuzz run "${flags[@]}" "$t" "$corpus" "$root/fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -dict="$root/fuzz/dict/$t.dict" -max_len=4096 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        $( [ "$jobs" -gt 1 ] && echo "-jobs=$jobs -workers=$jobs" )) >"$log" 2>&1
    rc=$?
    set -e
    if [ "$jobs" -gt 1 ]; then
        cat "$root"/fuzz/fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f "$root"/fuzz/fuzz-*.log
    fi
    # The last status line: "#N DONE cov: C ft: F corp: K/..b ... exec/s: E ..." (none when
    # an input of the corpus fails at once).
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}' || true)
    rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{s+=$2} END {print s+0}' || true)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
    ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
    corp=$(ls "$corpus" | wc -l)
    after=$(ls "$artifacts" | wc -l)
    result=ok
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        result="FAILED (exit $rc): $(ls -t "$artifacts" | head -n 1 | sed "s|^|$artifacts/|")"
        failed=1
    fi
    printf '%-16s %8s %14s %10s %8s %8s %10s  %s\n' "$t" "$seconds" "$execs" "$rate" "${cov:-?}" "${ft:-?}" "$corp" "$result"
done
echo "logs: $logs"
if [ "$failed" -ne 0 ]; then
    echo "a target failed: reproduce with (cd fuzz && cargo fuzz run -s none -a <target> <crash file>)" >&2
    exit 1
fi
