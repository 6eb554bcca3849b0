#!/usr/bin/env bash
# The main job: builds twill and runs the dataplane pipeline over the embedded
# demo node (a client pod, a Service, remote nodes over VXLAN) in every scenario,
# printing packets/s and ns/packet for each.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -p dataplane
for s in pod-to-pod service-encap decap-reverse new-flow; do
  ./target/release/twill-dataplane bench-pipeline --scenario "$s" --packets 2000000
done
