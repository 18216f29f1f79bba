#!/usr/bin/env bash
# The benchmark suite in one command (see benches/README.md and BENCHMARKS.md):
#
#   benches/run.sh            # full run, about 30 minutes
#   benches/run.sh --quick    # short rounds, a few minutes
#   benches/run.sh --only proxy,micro [--quick] [--out DIR] [--skip-build]
#
# Installs what it needs (cmake for Pingora, nginx-light, wrk, python3) when missing, builds the
# release binaries once, then runs benches/bench.py, which writes
# benches/results/<timestamp>/results.md, results.json and results.csv.
# Every process started is recorded by PID and stopped on exit, whatever the exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP_BUILD=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --skip-build) SKIP_BUILD=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80; the benchmarks never use it.

if [ "$SKIP_BUILD" = 0 ]; then
  echo "building release binaries (once; a first build takes a few minutes)"
  cargo build --release --workspace --bins --examples
fi

PIDFILE="$(mktemp -t ts3ab-bench-pids.XXXXXX)"
export BENCH_PIDFILE="$PIDFILE"
RUNNER=""
cleanup() {
  # The runner stops its own children; this is the backstop for any exit (Ctrl-C, errors).
  if [ -n "$RUNNER" ] && kill -0 "$RUNNER" 2>/dev/null; then
    kill -TERM "$RUNNER" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$RUNNER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$RUNNER" 2>/dev/null || true
  fi
  if [ -f "$PIDFILE" ]; then
    while read -r pid _; do
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done < "$PIDFILE"
    rm -f "$PIDFILE"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python3 benches/bench.py "${ARGS[@]+"${ARGS[@]}"}" &
RUNNER=$!
wait "$RUNNER"
