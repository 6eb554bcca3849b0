#!/usr/bin/env bash
# twill-pktgen against DPDK testpmd's txonly mode on the same veth, same CPU.
#
#   benches/pktrate/gen-vs-testpmd.sh [--runs 3] [--secs 10] [--size 64] [--flows 1]
#                                     [--gens "twill testpmd-xdp testpmd-packet"]
#
# Topology (two namespaces of this script's own, deleted on exit):
#   twpg-gen: vA  ===veth===  vB :twpg-sink, XDP_DROP on vB (counted: xdp_drops)
# Each generator in turn (interleaved, RUNS rounds) sends 64 B UDP frames out
# of vA pinned to CPU $GEN_CPU for WARMUP+SECS seconds. Measured over the SECS
# window from the kernel's counters, the same way for every generator:
#   offered   = vA tx_packets + tx_dropped per second (what left the generator)
#   delivered = vB XDP drops per second (what the peer's XDP program saw)
# Generators:
#   twill          target/release/twill-pktgen (AF_XDP copy mode, tx ring kept full,
#                  one kick may send the whole ring: XDP_MAX_TX_SKB_BUDGET, Linux 6.17+)
#   twill-b32      the same with the kernel's default of 32 frames per kick (as testpmd)
#   testpmd-xdp    dpdk-testpmd --forward-mode=txonly over net_af_xdp (iface=vA)
#   testpmd-packet dpdk-testpmd txonly over net_af_packet (what ../shared/bench --gen txonly uses)
# On veth the peer's XDP (and the copy into an skb) run on the sender's CPU:
# every generator pays the same kernel work on $GEN_CPU.
#   own_cpu   the generator's own share of $GEN_CPU: its process time (all threads;
#             without IRQ_TIME_ACCOUNTING this includes the veth/XDP softirq work run
#             on return from its sendto) plus ksoftirqd/$GEN_CPU's (softirq work
#             deferred); other jobs on a shared machine do not count in it
#   offered_per_own_cpu_s = offered / own_cpu: frames per second of generator CPU
# Needs root; installs dpdk (testpmd, net_af_xdp) and clang's BPF target if missing.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PKTGEN=${PKTGEN:-$ROOT/target/release/twill-pktgen}
WORK=${WORK:-/tmp/twill-pktrate}
GEN_CPU=${GEN_CPU:-0}
RUNS=3 SECS=10 WARMUP=3 SIZE=64 FLOWS=1
GENS="twill testpmd-xdp testpmd-packet"
NS_G=twpg-gen NS_S=twpg-sink
DST_MAC=02:00:00:00:0b:0b SRC_IP=10.244.1.2 DST_IP=10.244.2.2 SPORT=10000 DPORT=5201
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;; --secs) SECS=$2; shift 2 ;; --warmup) WARMUP=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;; --flows) FLOWS=$2; shift 2 ;; --gens) GENS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source "$ROOT/benches/pktrate/lib.sh"
mkdir -p "$WORK"
need_root
install_tools
build_xdp_drop

cleanup() {
  stop_tracked
  ip netns del $NS_G 2>/dev/null; ip netns del $NS_S 2>/dev/null
  restore_hugepages
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -x "$PKTGEN" ] || die "$PKTGEN not built (cargo build --release -p dataplane --bin twill-pktgen)"
hugepages 512

ip netns del $NS_G 2>/dev/null; ip netns del $NS_S 2>/dev/null
ip netns add $NS_G; ip netns add $NS_S
ip link add vA netns $NS_G address 02:00:00:00:0a:0a type veth peer name vB netns $NS_S address $DST_MAC
ip -n $NS_G link set vA up; ip -n $NS_S link set vB up
ip -n $NS_S link set vB xdp obj "$XDP_DROP_OBJ" sec xdp

ports_hi=$((SPORT + FLOWS - 1))
start_gen() {  # $1 = generator, $2 = seconds, $3 = log
  local secs=$2 log=$3 mf=""
  [ "$FLOWS" -gt 1 ] && mf=--txonly-multi-flow
  local eal=(--lcores "0@$GEN_CPU,1@$GEN_CPU" --main-lcore 0 --no-pci --in-memory --file-prefix twpg
             --log-level=lib.eal:error)
  local tp=(-- --forward-mode=txonly --txpkts=$((SIZE - 4)) --tx-ip="$SRC_IP,$DST_IP"
            --tx-udp="$SPORT,$DPORT" --eth-peer="0,$DST_MAC" $mf --stats-period=5)
  case $1 in
    twill|twill-b32) local b=0; [ "$1" = twill-b32 ] && b=32
           ip netns exec $NS_G timeout -s INT $((secs + 5)) taskset -c "$GEN_CPU" "$PKTGEN" --dev vA \
             --dst-mac $DST_MAC --src-ip $SRC_IP --dst-ip $DST_IP --sport "$SPORT-$ports_hi" \
             --dport $DPORT --size "$SIZE" --duration "$secs" --budget $b > "$log" 2>&1 & ;;
    testpmd-xdp) ip netns exec $NS_G sh -c 'mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; exec "$@"' sh \
             timeout -s INT "$secs" taskset -c "$GEN_CPU" dpdk-testpmd "${eal[@]}" \
             --vdev net_af_xdp0,iface=vA,busy_budget=0 "${tp[@]}" > "$log" 2>&1 & ;;
    testpmd-packet) ip netns exec $NS_G timeout -s INT "$secs" taskset -c "$GEN_CPU" dpdk-testpmd "${eal[@]}" \
             --vdev net_af_packet0,iface=vA "${tp[@]}" > "$log" 2>&1 & ;;
    *) die "unknown generator $1" ;;
  esac
  GEN_PID=$!; track "$GEN_PID"
}

snapshot() {  # -> "t tx txdrop xdpdrops cpu_busy cpu_total cpu_steal cpu_si proc_ticks"
  local t tx txd xd pt=0 p
  t=$(date +%s.%N)
  tx=$(ip netns exec $NS_G cat /sys/class/net/vA/statistics/tx_packets)
  txd=$(ip netns exec $NS_G cat /sys/class/net/vA/statistics/tx_dropped)
  xd=$(ip netns exec $NS_S ethtool -S vB | awk '/rx_queue_0_xdp_drops/{print $2}')
  # the generator process (child of timeout), all threads: utime + stime
  # plus ksoftirqd on its CPU (softirq work deferred out of the generator's context)
  for p in $(pgrep -P "$GEN_PID") $KSOFTIRQD; do
    pt=$((pt + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done
  echo "$t $tx $txd $xd $(awk -v c="cpu$GEN_CPU" '$1==c{b=$2+$3+$4+$7+$8; print b, b+$5+$6+$9, $9, $7+$8}' /proc/stat) $pt"
}

KSOFTIRQD=$(pgrep -x "ksoftirqd/$GEN_CPU")
RES=$WORK/gen-vs-testpmd-$(date +%Y%m%d-%H%M%S).txt
log "results: $RES (size=$SIZE flows=$FLOWS secs=$SECS runs=$RUNS, generator on CPU$GEN_CPU)"
echo "# $(date -Is) $(uname -r) size=$SIZE flows=$FLOWS secs=$SECS warmup=$WARMUP cpu=$GEN_CPU" > "$RES"
for r in $(seq 1 "$RUNS"); do
  for g in $GENS; do
    wait_quiet 10
    start_gen "$g" $((WARMUP + SECS + 2)) "$WORK/gen-$g.log"
    sleep "$WARMUP"
    kill -0 "$GEN_PID" 2>/dev/null || { tail -5 "$WORK/gen-$g.log" >&2; die "$g exited"; }
    a=$(snapshot); sleep "$SECS"; b=$(snapshot)
    kill -INT "$GEN_PID" 2>/dev/null; wait "$GEN_PID" 2>/dev/null; untrack
    line=$(awk -v a="$a" -v b="$b" -v g="$g" -v r="$r" 'BEGIN{split(a,x," "); split(b,y," "); dt=y[1]-x[1];
      off=((y[2]-x[2])+(y[3]-x[3]))/dt; del=(y[4]-x[4])/dt; ct=y[6]-x[6]; if(ct<1)ct=1;
      own=(y[9]-x[9])/ct; if(own<=0)own=1e-9;
      printf "run=%d gen=%s offered_pps=%.0f delivered_pps=%.0f txdrop_pps=%.0f cpu_busy=%.1f cpu_steal=%.1f own_cpu=%.1f offered_per_own_cpu_s=%.0f",
        r, g, off, del, (y[3]-x[3])/dt, 100*(y[5]-x[5])/ct, 100*(y[7]-x[7])/ct, 100*own, off/own}')
    echo "$line" | tee -a "$RES"
  done
done
sum=$(summarize_gens "$RES" "$GENS"); echo "$sum" >> "$RES"; echo "$sum"
