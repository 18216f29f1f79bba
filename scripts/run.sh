#!/usr/bin/env bash
# Runs the router. `scripts/run.sh demo` (the default) starts it on the embedded store in front of
# three local fake TS3AudioBot nodes; `scripts/run.sh serve --config conf/ts3ab-lb.yaml` is the
# production entry.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
if [ $# -eq 0 ]; then set -- demo; fi
exec cargo run --release --bin ts3ab-lb -- "$@"
