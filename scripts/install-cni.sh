#!/usr/bin/env bash
# Installs the twill CNI plugin where container runtimes look for it: the
# binary in /opt/cni/bin, configs/10-twill.conflist in /etc/cni/net.d (with
# this node's podCIDRs), and the reference plugins twill delegates to or is
# chained with (host-local, portmap, bandwidth, loopback) linked into the
# bin directory from Debian's containernetworking-plugins (/usr/lib/cni) when
# they are not there already. Idempotent; run as root.
#
#   scripts/install-cni.sh [--pod-cidrs 10.244.1.0/24,fd00:244:1::/64]
#                          [--bin-dir /opt/cni/bin] [--conf-dir /etc/cni/net.d]
#                          [--binary target/release/twill]
#
# The conflist says cniVersion 1.0.0: Debian's plugins (1.1.x) speak CNI up
# to 1.0.0, and every plugin of a chain must accept the list's version. With
# plugins >= 1.5 it may say "cniVersions": ["1.0.0", "1.1.0"] to get STATUS
# and GC. Pod gateways default to the first address of each podCIDR and must
# match the node config's pod_gateway_ipv4/ipv6 and pod_gateway_mac.
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=/opt/cni/bin
conf_dir=/etc/cni/net.d
pod_cidrs=""
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --conf-dir) conf_dir=$2; shift 2 ;;
    --pod-cidrs) pod_cidrs=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "install-cni: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  binary=target/release/twill
  [ -x "$binary" ] || cargo build -j1 --release -p cni --bin twill
fi
[ -x "$binary" ] || { echo "install-cni: $binary is not an executable" >&2; exit 1; }
mkdir -p "$bin_dir" "$conf_dir"
# Write beside and rename: a runtime never runs a half-copied binary.
install -m 0755 "$binary" "$bin_dir/.twill.tmp"
mv -f "$bin_dir/.twill.tmp" "$bin_dir/twill"
for p in host-local portmap bandwidth loopback; do
  if [ ! -e "$bin_dir/$p" ] && [ -x "/usr/lib/cni/$p" ]; then
    ln -s "/usr/lib/cni/$p" "$bin_dir/$p"
  fi
  [ -e "$bin_dir/$p" ] || echo "install-cni: warning: $p not found (install containernetworking-plugins)" >&2
done
conf=$(cat configs/10-twill.conflist)
if [ -n "$pod_cidrs" ]; then
  list=$(printf '%s' "$pod_cidrs" | sed 's/[^,][^,]*/"&"/g; s/,/, /g')
  conf=$(printf '%s\n' "$conf" | sed "s|\"podCIDRs\": \[.*\]|\"podCIDRs\": [$list]|")
fi
printf '%s\n' "$conf" > "$conf_dir/.10-twill.conflist.tmp"
mv -f "$conf_dir/.10-twill.conflist.tmp" "$conf_dir/10-twill.conflist"
echo "install-cni: $bin_dir/twill and $conf_dir/10-twill.conflist installed"
