#!/usr/bin/env bash
# The whole test suite, as a newcomer and CI run it: install what the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
bash scripts/install-deps.sh
cargo test --workspace --locked
