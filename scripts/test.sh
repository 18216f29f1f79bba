#!/usr/bin/env bash
# Runs every check: formatting, clippy (warnings are errors) and all tests (unit, integration
# against fake nodes and the real binary, the real PyPI client).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
