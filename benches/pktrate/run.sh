#!/usr/bin/env bash
# Packet-rate benchmark of twill-dataplane beside its peers, on the shared
# harness (../shared/bench, called by path: BENCH_DIR).
#
#   benches/pktrate/run.sh [--scenarios "pod-to-pod service-encap decap"]
#                          [--peers "twill ceiling kernel"] [--runs 3] [--secs 10]
#                          [--flows "1"] [--services 1] [--endpoints 3]
#                          [--kernel-mode nft|iptables] [--twill-poll "busy idle"]
#
#  pb-gen (CPU0)            pb-dut (DUT pinned to CPU1)                pb-sink
#  generator -> vA ==veth== vB [ DUT ] vC ==veth== vD -> XDP_DROP (counted)
#
# Scenarios (64 B UDP frames from client pod 10.244.1.2):
#   pod-to-pod     plain forwarding between two local pods (vB -> vC)
#   service-encap  pod -> ClusterIP:8080 of the last service -> DNAT to a remote pod,
#                  VXLAN-encapsulated (VNI 1, UDP 8472) out of the uplink vC
#   decap          VXLAN from a remote node arrives on the uplink vB -> decap ->
#                  local pod behind vC (frames 114 B: 64 B inner + 50 B outer)
# Peers, each on the same topology and traffic:
#   twill    twill-dataplane run --config (generated, see mkconfig.py), one worker
#            pinned to CPU1 (custom.sh --cmd twill-dut.sh); --twill-poll busy
#            (--busy-poll, spins) and/or idle (backs off to poll() when idle)
#   ceiling  DPDK testpmd io-forward between net_af_xdp vB and vC (ceiling.sh):
#            moves frames, no processing
#   kernel   pod-to-pod: kernel-forward.sh (IPv4 forwarding);
#            service-encap: kernel-k8s.sh (flannel + kube-proxy, --kernel-mode);
#            decap: kernel-decap.sh here (flannel.1 decap -> cni0 -> pod, same rules)
# Every series is RUNS runs of SECS seconds; the harness reports delivered pps
# (sink XDP drops) and pkts per DUT core-second (delivered / CPU1 busy), min/med/max.
# Added here: pkts per DUT CPU-second counting only the DUT's own CPU time (the
# process's for userspace DUTs, CPU1's softirq time for the kernel), which other
# work on a shared machine does not distort.
# At the end: one table with twill's figures as ratios of the peers' measured in
# the same invocation. Raw harness output: $WORK/pktrate-<stamp>.log.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/benches/pktrate
BENCH_DIR=${BENCH_DIR:-$ROOT/../shared/bench}
DATAPLANE=${DATAPLANE:-$ROOT/target/release/twill-dataplane}
WORK=${WORK:-/tmp/twill-pktrate}
export RESULTS_DIR=${RESULTS_DIR:-$WORK/results}
SCENARIOS="pod-to-pod service-encap decap"
PEERS="twill ceiling kernel"
RUNS=3 SECS=10 FLOWS=1 SERVICES=1 ENDPOINTS=3 KMODE=nft TWILL_POLL=busy
while [ $# -gt 0 ]; do
  case $1 in
    --scenarios) SCENARIOS=$2; shift 2 ;; --peers) PEERS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;; --secs) SECS=$2; shift 2 ;; --flows) FLOWS=$2; shift 2 ;;
    --services) SERVICES=$2; shift 2 ;; --endpoints) ENDPOINTS=$2; shift 2 ;;
    --kernel-mode) KMODE=$2; shift 2 ;; --twill-poll) TWILL_POLL=$2; shift 2 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source "$HERE/lib.sh"
need_root
[ -x "$BENCH_DIR/custom.sh" ] || die "harness not found at BENCH_DIR=$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
mkdir -p "$WORK" "$RESULTS_DIR"
install_tools
build_xdp_drop           # exported XDP_DROP_OBJ: the harness's sink uses it
case " $PEERS " in *" twill "*) [ -x "$DATAPLANE" ] || die "$DATAPLANE not built (cargo build --release -p dataplane)" ;; esac
# the harness reserves 512 hugepages for testpmd and keeps them: give them back at exit
HUGE_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
trap restore_hugepages EXIT
trap 'exit 130' INT TERM
STAMP=$(date +%Y%m%d-%H%M%S)
LOG=$WORK/pktrate-$STAMP.log
SUM=$WORK/pktrate-$STAMP.results
log "harness: $BENCH_DIR; log: $LOG; results: $SUM"
echo "# $(date -Is) $(uname -r) runs=$RUNS secs=$SECS flows=$FLOWS services=$SERVICES endpoints=$ENDPOINTS kernel=$KMODE" > "$SUM"
common=(--runs "$RUNS" --secs "$SECS" --flows "$FLOWS")

# series SCENARIO PEER cmd... : runs one harness script (bounded in time), keeps its
# RESULT lines tagged with the scenario and peer.
series() {
  local sc=$1 peer=$2; shift 2
  log "=== $sc / $peer: $*"
  echo "### $sc / $peer: $*" >> "$LOG"
  local out; out=$(timeout --foreground -s INT $((RUNS * (SECS + 40) + 240)) "$@" 2>&1 | tee -a "$LOG")
  local r; r=$(echo "$out" | grep '^RESULT ' | tail -1)
  [ -n "$r" ] || { log "$sc / $peer: no RESULT (see $LOG)"; echo "$out" | tail -5 >&2; r="RESULT failed |"; }
  # The DUT's own CPU, robust to other work on CPU1: the process's CPU time for
  # userspace DUTs (proc_PID_pct), CPU1's softirq time for kernel DUTs.
  local kind=proc; [ "$peer" = kernel ] && kind=si
  local own; own=$(echo "$out" | grep -E '\] run [0-9]+: ' | awk -v kind=$kind -v si="cpu${DUT_CPU:-1}_si" '{
      sink = 0; cpu = 0
      for (i = 1; i <= NF; i++) { split($i, kv, "=")
        if (kv[1] == "sink_pps") sink = kv[2]
        if (kind == "proc" && kv[1] ~ /^proc_[0-9]+_pct$/) cpu += kv[2]
        if (kind == "si" && kv[1] == si) cpu += kv[2] }
      if (cpu > 0) printf "%.0f\n", sink / (cpu / 100) }' | stats3 | tr ' ' /)
  # the harness's check step (tcpdump on vD before the runs) must have seen frames
  local chk=ok; echo "$out" | grep -q "sink saw nothing" && chk=FAILED
  echo "$out" | grep -q "packets captured" || chk=FAILED
  echo "scenario=$sc peer=$peer check=$chk own_cpu=$kind pkts_per_dut_cpu_s=$own $r" | tee -a "$SUM" >&2
}

twill_cmd() {  # scenario poll
  local busy=""; [ "$2" = busy ] && busy=--busy-poll
  echo "WORK=$WORK DATAPLANE=$DATAPLANE BUSY=$busy $HERE/twill-dut.sh $1"
}

for sc in $SCENARIOS; do
  extra=""; hs=forward; kern=()
  case $sc in
    pod-to-pod) kern=("$BENCH_DIR/kernel-forward.sh") ;;
    service-encap) hs=k8s; kern=("$BENCH_DIR/kernel-k8s.sh" --mode "$KMODE" --services "$SERVICES" --endpoints "$ENDPOINTS") ;;
    decap) extra=--vxlan; kern=(env BENCH_DIR="$BENCH_DIR" "$HERE/kernel-decap.sh" --services "$SERVICES") ;;
    *) die "unknown scenario $sc" ;;
  esac
  for peer in $PEERS; do
    case $peer in
      twill)
        for poll in $TWILL_POLL; do
          k8s=(); [ "$hs" = k8s ] && k8s=(--services "$SERVICES" --endpoints "$ENDPOINTS")
          GEN_PCAP_EXTRA=$extra series "$sc" "twill-$poll" "$BENCH_DIR/custom.sh" --name "twill-$sc-$poll" \
            --scenario $hs "${k8s[@]}" --ready-secs 3 --cmd "$(twill_cmd "$sc" "$poll")" "${common[@]}"
        done ;;
      ceiling) GEN_PCAP_EXTRA=$extra series "$sc" ceiling "$BENCH_DIR/ceiling.sh" "${common[@]}" ;;
      kernel) GEN_PCAP_EXTRA=$extra series "$sc" kernel "${kern[@]}" "${common[@]}" ;;
      *) die "unknown peer $peer" ;;
    esac
  done
done
python3 "$HERE/summary.py" "$SUM" | tee -a "$SUM"
