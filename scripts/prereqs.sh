#!/usr/bin/env bash
# Installs what building and testing ts3ab-lb needs on a fresh Debian machine:
# a C toolchain and cmake (Pingora builds zlib-ng with them), pkg-config, and a working python3
# venv (the PyPI client test and the MongoDB test server nx-27017), promtool (the agent's metrics
# check), and for the admin panel's browser test node, npm, chromium and the npm packages of
# tests/browser. Rust itself (1.95) is expected to be installed.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
command -v node >/dev/null 2>&1 || need+=(nodejs)
# NodeSource's nodejs ships npm itself; Debian's needs the npm package.
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-liberation)
# promtool (Debian's prometheus package): the node agent's metrics are checked with it.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust 1.95 (https://rustup.rs) and run this again" >&2
  exit 1
fi
# The browser test's npm packages (playwright-core), pinned by the lock file.
browser_dir="$(dirname "$0")/../tests/browser"
if [ ! -f "$browser_dir/node_modules/playwright-core/package.json" ]; then
  if [ -f "$browser_dir/package-lock.json" ]; then npm_verb=ci; else npm_verb=install; fi
  (cd "$browser_dir" && npm "$npm_verb" --no-audit --no-fund --loglevel=error >/dev/null)
fi
