#!/usr/bin/env bash
# The test command: installs system packages, then runs every test of the
# workspace (unit, pipeline, property and concurrency tests), checks formatting
# and lints, and compiles the benches.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The process tests (tests/dataplane_run.rs) run this binary; build it first.
cargo build --release -p dataplane --bins
cargo test --workspace --release
cargo bench --workspace --no-run
