#!/usr/bin/env bash
# Bare Pingora against nginx on the proxy section's request, per request: syscalls
# (strace -c), CPU (perf stat task-clock) and where the time goes (perf record), as in
# BENCHMARKS.md tuning log item 12. Needs the release examples (benches/run.sh builds them),
# nginx, wrk, strace and perf (Debian linux-perf), and root for perf on another process.
#
#   benches/profile_vs_nginx.sh [OUT_DIR]      # default: a new directory under /tmp
#
# Every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${1:-$(mktemp -d -t ts3ab-prof.XXXXXX)}
mkdir -p "$OUT"
EX="$ROOT/target/release/examples"
NODE_AUTH="Basic cm91dGVyOm5vZGUtdG9rZW4="   # router:node-token, as bench.py's NODE_HDR
PATHQ='/api/bot/use/5/(/song)'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PX=$(free_port); BP=$(free_port)
conf() { # template name port upstream_port
  mkdir -p "$OUT/$2"/{tmp_body,tmp_proxy,tmp_fastcgi,tmp_uwsgi,tmp_scgi}
  sed -e "s#@DIR@#$OUT/$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM_PORT@#${4:-}#g" \
      -e "s#@NODE_AUTH@#$NODE_AUTH#g" "$ROOT/benches/nginx/$1" > "$OUT/$2/nginx.conf"
}
conf upstream.conf up "$UP"
conf proxy.conf px "$PX" "$UP"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
taskset -c 1 nginx -c "$OUT/up/nginx.conf" -p "$OUT/up" 2>"$OUT/up/stderr.log" & pids+=($!)
taskset -c 0 nginx -c "$OUT/px/nginx.conf" -p "$OUT/px" 2>"$OUT/px/stderr.log" & pids+=($!)
NGX=$!
taskset -c 0 "$EX/bare_pingora_mimalloc" "127.0.0.1:$BP" "127.0.0.1:$UP" 1 false 128 >"$OUT/bare.log" 2>&1 & pids+=($!)
BARE=$!
for p in "$UP" "$PX" "$BP"; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done
load() { taskset -c 1 wrk -t1 -c32 -d"$2" -H "Authorization: $NODE_AUTH" "http://127.0.0.1:$1$PATHQ"; }
reqs() { grep -oP '\d+(?= requests in)' "$1"; }
report() { # name port pid
  local n=$1 port=$2 pid=$3
  load "$port" 2s >/dev/null
  perf stat -e task-clock -p "$pid" -o "$OUT/$n.perfstat" -- bash -c "$(declare -f load); PATHQ='$PATHQ' NODE_AUTH='$NODE_AUTH' load $port 5s" >"$OUT/$n.wrk"
  timeout 30 strace -c -f -p "$pid" -o "$OUT/$n.strace" & local st=$!
  sleep 1
  load "$port" 4s >"$OUT/$n.strace.wrk"
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  perf record -F 2999 -g -p "$pid" -o "$OUT/$n.perf.data" -- sleep 4 >/dev/null 2>&1 & local pr=$!
  load "$port" 4s >"$OUT/$n.perf.wrk"
  wait "$pr" || true
  local r tc sr
  r=$(reqs "$OUT/$n.wrk"); sr=$(reqs "$OUT/$n.strace.wrk")
  tc=$(grep -oP '[\d.,]+(?= msec task-clock)' "$OUT/$n.perfstat" | tr -d ,)
  echo "== $n: $(python3 -c "print(round($tc*1000/$r,1))") µs CPU per request ($r requests in 5 s)"
  awk -v r="$sr" '/^ *[0-9]/ && $NF!="total" {printf "   %-14s %5.2f per request\n", $NF, $4/r}
                   $NF=="total" {printf "   %-14s %5.2f per request\n", "all syscalls", $4/r}' "$OUT/$n.strace" | sort -k2 -nr | head -7
  perf report -i "$OUT/$n.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -4 | sed 's/^/   /'
}
report nginx "$PX" "$NGX"
report bare-pingora "$BP" "$BARE"
echo "raw files: $OUT (perf report -i $OUT/bare-pingora.perf.data --no-children --sort sym)"
