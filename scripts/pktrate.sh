#!/usr/bin/env bash
# The packet-rate benchmark (see benches/pktrate/run.sh for options):
#   scripts/pktrate.sh            twill vs testpmd io-forward (ceiling) vs the kernel path,
#                                 three scenarios, 3 runs x 10 s each
#   scripts/pktrate.sh gen        twill-pktgen vs testpmd txonly on one veth
# Builds the release binaries first. Needs root and ../shared/bench (BENCH_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -j1 --release -p dataplane --bin twill-dataplane --bin twill-pktgen
if [ "${1:-}" = gen ]; then shift; exec benches/pktrate/gen-vs-testpmd.sh "$@"; fi
exec benches/pktrate/run.sh "$@"
