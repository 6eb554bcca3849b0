#!/usr/bin/env bash
# Installs every system package twill's build, tests and benches need on a fresh
# Debian machine. Idempotent: skips apt when everything is already there.
set -euo pipefail
# build-essential, pkg-config: C builds of the -sys crates (libbpf-sys, libxdp-sys run make);
# clang, llvm, m4: libxdp's BPF objects (clang, llc; m4 for its dispatcher) and
#   bindgen (libclang, pulled in by clang); clang also builds dataplane/bpf/steer.c;
# libelf-dev, zlib1g-dev: libbpf; libbpf-dev: <bpf/bpf_helpers.h> for steer.c;
# linux-libc-dev: <linux/bpf.h> and friends; iproute2, iputils-ping, ethtool: the netns
#   integration tests (ip netns, veth, ping); tcpdump: the pktgen capture test;
# valgrind: instruction counts;
# python3: the demo's web server and client;
# containernetworking-plugins: the reference CNI plugins (/usr/lib/cni: host-local,
#   portmap, bandwidth) the twill CNI plugin delegates IPAM to and is chained with;
#   iptables: portmap's rules.
pkgs=(build-essential pkg-config clang llvm m4 libelf-dev zlib1g-dev libbpf-dev linux-libc-dev
  iproute2 iputils-ping ethtool tcpdump valgrind python3 containernetworking-plugins iptables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "install-deps: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true
