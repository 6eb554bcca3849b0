#!/usr/bin/env bash
# DUT "kernel-decap" for ../shared/bench's harness (sourced from $BENCH_DIR by
# path, not copied): the kernel's flannel + kube-proxy receive path on the node
# hosting the destination pod. VXLAN from node 192.168.50.3 arrives on vB (the
# uplink, 192.168.50.1), flannel.1 (VNI 1, UDP 8472) decapsulates it, the inner
# packet 10.244.1.2 -> 10.244.2.2 is forwarded through cni0 (br_netfilter on,
# conntrack, flannel + kube-proxy nftables rules loaded as kernel-k8s.sh does)
# to the pod's veth vC; the sink (vD) is the pod. RPS puts the work on DUT_CPU.
# The generator's pcap comes from GEN_PCAP_EXTRA=--vxlan (lib/mkpcap.py
# defaults: outer 192.168.50.3 -> 192.168.50.1:8472, inner dst MAC
# 02:00:00:00:1b:1b = flannel.1's).
#   BENCH_DIR=../shared/bench GEN_PCAP_EXTRA=--vxlan benches/pktrate/kernel-decap.sh [harness options]
set -u
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/bench}
PB_DIR=$(cd "$BENCH_DIR" && pwd); source "$PB_DIR/lib/common.sh"
DUT_NAME=kernel-decap
SERVICES=${SERVICES:-1}
ENDPOINTS=${ENDPOINTS:-3}
MAC_CNI=02:00:00:00:c0:02
MAC_FLANNEL=02:00:00:00:1b:1b
dut_opt() {
  case $1 in
    --services) SERVICES=$2; DUT_OPT_SHIFT=2 ;;
    *) return 1 ;;
  esac
}
dut_usage() { echo "  --services S   kube-proxy services loaded (default 1)"; }

dut_setup() {
  case " ${GEN_PCAP_EXTRA:-} " in *" --vxlan "*) ;; *) die "run with GEN_PCAP_EXTRA=--vxlan" ;; esac
  local rules=$PB_WORK/k8s-S$SERVICES-E$ENDPOINTS-Tlast
  [ -s "$rules/target" ] || python3 "$PB_LIB/k8s_rules.py" --services "$SERVICES" --endpoints "$ENDPOINTS" \
      --target last --sink-mac "$MAC_D" --outdir "$rules" || die "rule generation failed"
  DUT_CFG="flannel.1 decap -> cni0 -> pod, nft S=$SERVICES"
  nsx $NS_DUT sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
      net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.send_redirects=0
  ip -n $NS_DUT addr add 192.168.50.1/24 dev vB
  ip -n $NS_DUT link add flannel.1 address $MAC_FLANNEL type vxlan id 1 local 192.168.50.1 \
      dev vB dstport 8472 nolearning
  ip -n $NS_DUT link set flannel.1 mtu 1450 up
  ip -n $NS_DUT addr add 10.244.2.0/32 dev flannel.1
  # the sending node, as flannel programs it
  ip -n $NS_DUT route add 10.244.1.0/24 via 10.244.1.0 dev flannel.1 onlink
  ip -n $NS_DUT neigh add 10.244.1.0 lladdr 02:00:00:00:1a:1a dev flannel.1 nud permanent
  nsx $NS_DUT bridge fdb add 02:00:00:00:1a:1a dev flannel.1 dst 192.168.50.3
  ip -n $NS_DUT neigh replace 192.168.50.3 lladdr $MAC_A dev vB nud permanent
  # the local pod 10.244.2.2 behind vC (the sink's MAC), on cni0
  ip -n $NS_DUT link add cni0 address $MAC_CNI type bridge
  ip -n $NS_DUT addr add 10.244.2.1/24 dev cni0
  ip -n $NS_DUT link set cni0 up
  ip -n $NS_DUT link set vC master cni0
  ip -n $NS_DUT link set vC type bridge_slave hairpin on
  nsx $NS_DUT bridge fdb replace $MAC_D dev vC master static
  nsx $NS_DUT sysctl -qw net.bridge.bridge-nf-call-iptables=1
  ip -n $NS_DUT neigh replace 10.244.2.2 lladdr $MAC_D dev cni0 nud permanent
  nsx $NS_DUT nft -f "$rules/flannel.nft" || die "flannel nft"
  nsx $NS_DUT nft -f "$rules/kp.nft" || die "kube-proxy nft"
  set_rps $NS_DUT vB "$(printf %x $((1 << DUT_CPU)))"
  GEN_DST_MAC=$MAC_B GEN_SRC_IP=10.244.1.2 GEN_DST_IP=10.244.2.2 GEN_DPORT=5201
}
dut_pre_run() { nsx $NS_DUT conntrack -F >/dev/null 2>&1 || true; }

source "$PB_LIB/bench.sh"
bench_main "$@"
