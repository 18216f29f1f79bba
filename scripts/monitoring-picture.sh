#!/usr/bin/env bash
# Renders docs/monitoring.png (README.md, Monitoring) from real scraped data: builds the router
# and the agent, makes a venv with matplotlib and PyYAML under target/tmp (never system-wide),
# and runs scripts/monitoring-picture.py, which starts `ts3ab-lb demo`, three agents and a
# Prometheus on loopback, drives a few minutes of traffic and plots the dashboard's queries.
#
#   scripts/monitoring-picture.sh                     # about 3 minutes, writes docs/monitoring.png
#   scripts/monitoring-picture.sh --duration 60 --out /tmp/m.png
#   scripts/monitoring-picture.sh --agent-only        # a router without /metrics: agent panels only
#   PROFILE=release scripts/monitoring-picture.sh     # use target/release
#
# Needs Debian's prometheus package and python3 with venv (scripts/prereqs.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v prometheus >/dev/null 2>&1 || { echo "prometheus is not installed: run scripts/prereqs.sh (Debian package prometheus)" >&2; exit 1; }
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || { echo "python3 venv is missing: run scripts/prereqs.sh" >&2; exit 1; }
profile="${PROFILE:-debug}"
if [ "$profile" = debug ]; then
  cargo build -p ts3ab-lb -p ts3ab-lb-agent --bin ts3ab-lb --bin ts3ab-lb-agent
else
  cargo build --profile "$profile" -p ts3ab-lb -p ts3ab-lb-agent --bin ts3ab-lb --bin ts3ab-lb-agent
fi
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
venv="$target_dir/tmp/monitoring-venv"
if [ ! -f "$venv/.ready" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'matplotlib>=3.8,<4' 'PyYAML>=6,<7'
  touch "$venv/.ready"
fi
exec "$venv/bin/python" scripts/monitoring-picture.py --bin-dir "$target_dir/$profile" --prometheus "$(command -v prometheus)" "$@"
