#!/usr/bin/env bash
# The release build: the one command CI and the Dockerfile's builder stage run (a test in
# e2e/tests/dockerfile.rs fails when the Dockerfile's `RUN cargo build` line differs from the
# `cargo build` line below). Produces target/release/unisondb and target/release/unisondb-operator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin unisondb --bin unisondb-operator
