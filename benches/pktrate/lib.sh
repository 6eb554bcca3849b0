# shellcheck shell=bash
# Helpers shared by the benches/pktrate scripts (sourced).

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "run as root (namespaces, XDP, AF_XDP)"; }

# Installs what the benchmarks (and ../shared/bench) call, if missing:
# DPDK testpmd with net_af_xdp, xdp-tools, tcpdump, the kernel path's tools.
install_tools() {
  local pkgs=(dpdk dpdk-dev librte-net-af-xdp23 librte-net-af-packet23 librte-mempool-ring23 xdp-tools tcpdump nftables iptables conntrack ethtool
              bc clang llvm libbpf-dev iproute2) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
    "${missing[@]}" >&2 || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends "${missing[@]}" >&2; } || die "apt-get install ${missing[*]}"
}

# An XDP program that drops everything (xdp-tools' xdp_drop.o is not in
# Debian's package): built once into $WORK.
XDP_DROP_OBJ=${XDP_DROP_OBJ:-}
build_xdp_drop() {
  if [ -n "$XDP_DROP_OBJ" ] && [ -s "$XDP_DROP_OBJ" ]; then return 0; fi
  XDP_DROP_OBJ=$WORK/xdp_drop.o
  [ -s "$XDP_DROP_OBJ" ] && return 0
  printf '%s\n' '#include <linux/bpf.h>' '#include <bpf/bpf_helpers.h>' \
    'SEC("xdp") int xdp_drop(struct xdp_md *ctx) { return XDP_DROP; }' \
    'char _license[] SEC("license") = "GPL";' > "$WORK/xdp_drop.c"
  clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$WORK/xdp_drop.c" \
    -o "$XDP_DROP_OBJ" || die "cannot build xdp_drop.o"
}
export XDP_DROP_OBJ

HUGE_BEFORE=
hugepages() {
  HUGE_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
  [ "$HUGE_BEFORE" -lt "$1" ] && echo "$1" > /proc/sys/vm/nr_hugepages
  mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages; mount -t hugetlbfs none /dev/hugepages; }
}
restore_hugepages() { [ -n "$HUGE_BEFORE" ] && echo "$HUGE_BEFORE" > /proc/sys/vm/nr_hugepages; HUGE_BEFORE=; }

# Processes this script started, stopped by PID only.
TRACKED=()
track() { TRACKED+=("$1"); }
untrack() { TRACKED=(); }
stop_tracked() {
  local p
  for p in "${TRACKED[@]}"; do kill -INT "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${TRACKED[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
  TRACKED=()
}

# Waits (at most $1 s) until the machine is mostly idle: other work on this
# shared 2-CPU VM otherwise lands in the measurement.
wait_quiet() {
  local max=${1:-30} i a b
  for i in $(seq 1 $((max * 2))); do
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat); sleep 0.5
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); bu=y[1]-x[1]; id=y[2]-x[2];
         exit !((bu+id)>0 && bu/(bu+id) < 0.15)}' && return 0
  done
  log "wait_quiet: CPUs still busy after ${max}s (other jobs on the machine): figures are noisy"
}

# "min median max" of numbers on stdin.
stats3() { sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "nan nan nan";exit}
  m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.0f %.0f %.0f\n", a[1], m, a[NR]}'; }

# summarize_gens RESULTS "gen1 gen2 ...": per generator min/median/max of
# offered and delivered pps, and the first generator's ratio to the others
# (median over median, and per round).
summarize_gens() {
  local f=$1 gens=$2 g first="" o d
  for g in $gens; do
    o=$(sed -n "s/.* gen=$g offered_pps=\([0-9]*\).*/\1/p" "$f" | stats3)
    d=$(sed -n "s/.* gen=$g .*delivered_pps=\([0-9]*\).*/\1/p" "$f" | stats3)
    local e; e=$(sed -n "s/.* gen=$g .*offered_per_own_cpu_s=\([0-9]*\).*/\1/p" "$f" | stats3)
    echo "SUMMARY gen=$g offered_pps(min/med/max)=${o// //} delivered_pps(min/med/max)=${d// //} offered_per_own_cpu_s(min/med/max)=${e// //}"
    if [ -z "$first" ]; then first=$g; continue; fi
    awk -v a="$first" -v b="$g" '
      /^run=/ && $2=="gen="a {split($3,x,"="); A[$1]=x[2]} /^run=/ && $2=="gen="b {split($3,x,"="); B[$1]=x[2]}
      END{ for (r in A) if (r in B && B[r]>0) { s=s sprintf(" %s:%.2f", r, A[r]/B[r]) }
           print "RATIO offered " a "/" b " per round:" s }' "$f"
  done
  local mo=() me=(); for g in $gens; do
    mo+=("$(sed -n "s/^run=.* gen=$g offered_pps=\([0-9]*\).*/\1/p" "$f" | stats3 | awk '{print $2}')")
    me+=("$(sed -n "s/^run=.* gen=$g .*offered_per_own_cpu_s=\([0-9]*\).*/\1/p" "$f" | stats3 | awk '{print $2}')"); done
  set -- $gens
  local i=1; for g in "$@"; do
    [ "$i" -gt 1 ] && awk -v a="${mo[0]}" -v b="${mo[$((i-1))]}" -v n1="$1" -v n2="$g" \
      'BEGIN{ if (b>0) printf "HEADLINE offered pps median: %s %d vs %s %d = %.2fx\n", n1, a, n2, b, a/b }'
    [ "$i" -gt 1 ] && awk -v a="${me[0]}" -v b="${me[$((i-1))]}" -v n1="$1" -v n2="$g" \
      'BEGIN{ if (b>0) printf "HEADLINE offered pps per generator CPU-s median: %s %d vs %s %d = %.2fx\n", n1, a, n2, b, a/b }'
    i=$((i + 1))
  done
}
