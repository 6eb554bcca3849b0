#!/usr/bin/env bash
# Starts twill-dataplane as the harness's DUT (run by ../shared/bench/custom.sh
# --cmd inside pb-dut, already pinned with taskset to PB_DUT_CPU):
#   twill-dut.sh pod-to-pod|service-encap|decap
# Environment: DATAPLANE (binary), WORK (where the config goes), BUSY
# (--busy-poll or empty), plus custom.sh's PB_* variables.
set -eu
sc=$1
here=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/twill-pktrate}
DATAPLANE=${DATAPLANE:-$here/../../target/release/twill-dataplane}
BUSY=${BUSY---busy-poll}
mkdir -p "$WORK"
cfg=$WORK/twill-$sc.toml
if [ "$sc" = pod-to-pod ]; then
  # Both harness veths are pods here: the node's uplink is a spare veth pair
  # inside pb-dut (deleted with the namespace).
  ip link show twup0 >/dev/null 2>&1 || ip link add twup0 type veth peer name twup1
  ip link set twup0 up; ip link set twup1 up
fi
python3 "$here/mkconfig.py" --scenario "$sc" ${BUSY:+--busy-poll} > "$cfg"
echo "twill-dut: $DATAPLANE run --config $cfg $BUSY" >&2
exec "$DATAPLANE" run --config "$cfg" $BUSY
