#!/usr/bin/env bash
# The main job: builds twill and runs the demo node.
#  1. the packet pipeline alone (no I/O) in each scenario, packets/s;
#  2. a node in network namespaces, as root: `twill-control` reads the demo
#     cluster's manifests (configs/demo, the `file:` source) and the pods'
#     attachments, and publishes the node's tables in shared memory;
#     `twill-dataplane run` attaches to the uplink and two pod veths with
#     XDP + AF_XDP and serves what control published. The client pod pings
#     the web pod and fetches http://10.96.0.10/ (ClusterIP, DNAT to the web
#     pod's :8080); the underlay fetches the NodePort; then twillctl and the
#     dataplane's counters.
# Everything it creates carries the prefix twdemo<pid> and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release -p dataplane -p control --bins
BIN=$PWD/target/release/twill-dataplane
CTL=$PWD/target/release/twill-control
TWILLCTL=$PWD/target/release/twillctl

echo "== 1. the pipeline alone: synthetic frames, no I/O"
for s in pod-to-pod service-encap decap-reverse new-flow; do
  "$BIN" bench-pipeline --scenario "$s" --packets 1000000 | sed -n '2,3p'
done

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: part 2 needs root (network namespaces, XDP, AF_XDP)" >&2
  exit 1
fi

echo "== 2. a node in network namespaces"
P=twdemo$$
DIR=$(mktemp -d)
DP_PID=""
CTL_PID=""
WEB_PID=""
cleanup() {
  [ -n "$DP_PID" ] && kill -TERM "$DP_PID" 2>/dev/null && wait "$DP_PID" 2>/dev/null || true
  [ -n "$CTL_PID" ] && kill -TERM "$CTL_PID" 2>/dev/null && wait "$CTL_PID" 2>/dev/null || true
  [ -n "$WEB_PID" ] && kill "$WEB_PID" 2>/dev/null || true
  for ns in client web under node; do ip netns del "$P-$ns" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

GW_MAC=02:44:00:00:00:01
for ns in node under client web; do ip netns add "$P-$ns"; done
ip -n "$P-node" link set lo up
ip -n "$P-node" link add up0 type veth peer name eth0 netns "$P-under"
ip -n "$P-node" addr add 192.168.77.1/24 dev up0
ip -n "$P-under" addr add 192.168.77.254/24 dev eth0
ip -n "$P-node" link set up0 up
ip -n "$P-under" link set eth0 up
# Like a NIC, the underlay hands over finished checksums (a veth would
# otherwise pass partial ones that XDP cannot finish).
ip netns exec "$P-under" ethtool -K eth0 tx off >/dev/null
pod() { # host-side veth, namespace, MAC, IP
  ip -n "$P-node" link add "$1" type veth peer name eth0 netns "$P-$2"
  ip -n "$P-node" link set "$1" address $GW_MAC up
  ip -n "$P-node" route add "$4/32" dev "$1"
  ip -n "$P-$2" link set eth0 address "$3" up
  ip -n "$P-$2" link set lo up
  ip -n "$P-$2" addr add "$4/32" dev eth0
  ip -n "$P-$2" route add 10.244.1.1 dev eth0 scope link
  ip -n "$P-$2" route add default via 10.244.1.1 dev eth0
  # XDP sees frames before the stack would finish their checksums.
  ip netns exec "$P-$2" ethtool -K eth0 tx off >/dev/null
}
pod veth-client client 0a:58:0a:f4:01:02 10.244.1.2
pod veth-web web 0a:58:0a:f4:01:03 10.244.1.3

# The node config both processes read: the node itself, and the shared
# memory through which control publishes what the cluster says.
cat > "$DIR/node.toml" <<CFG
[node]
name = "demo-1"
ipv4 = "192.168.77.1"
uplink = "up0"
uplink_mac = "auto"
underlay_gateway_ipv4 = "192.168.77.254"
underlay_gateway_mac = "auto"
pod_gateway_ipv4 = "10.244.1.1"
pod_gateway_mac = "$GW_MAC"
vtep_mac = "02:ee:00:00:00:01"
snat_ports = [61000, 65535]
cluster_cidrs = ["10.244.0.0/16"]
service_cidrs = ["10.96.0.0/12"]
conntrack_capacity = 65536

[workers]
cpus = []

[shm]
path = "$DIR/node.shm"

[control]
source = "file:$DIR/manifests"
socket = "$DIR/cni.sock"
attachments = "$DIR/attachments.json"
metrics = "127.0.0.1:0"
CFG
# The cluster: configs/demo (a Service web with ClusterIP 10.96.0.10 and
# NodePort 30080, its EndpointSlice, the nodes).
cp -r configs/demo "$DIR/manifests"
# The two pods as the CNI plugin registers them with control.
att() { # container id, host veth, MAC, IP, pod name
  printf '{"containerId":"%s","ifname":"eth0","network":"twill","netns":"/var/run/netns/%s","hostVeth":"%s","mac":"%s","mtu":1450,"ips":["%s/32"],"podNamespace":"demo","podName":"%s"}' \
    "$1" "$P-$5" "$2" "$3" "$4" "$5"
}
printf '{"version":1,"attachments":[%s,%s]}\n' \
  "$(att c0ffee01 veth-client 0a:58:0a:f4:01:02 10.244.1.2 client)" \
  "$(att c0ffee02 veth-web 0a:58:0a:f4:01:03 10.244.1.3 web)" > "$DIR/attachments.json"

mkdir -p "$DIR/www"; echo "hello from the web pod, through twill" > "$DIR/www/index.html"
# A plain HTTP server (http.server's own would first look its name up in DNS).
(cd "$DIR/www" && exec ip netns exec "$P-web" python3 -c '
import http.server, socketserver
class S(socketserver.TCPServer):
    allow_reuse_address = True
S(("10.244.1.3", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()' >/dev/null 2>&1) &
WEB_PID=$!
ip netns exec "$P-node" "$CTL" --config "$DIR/node.toml" > "$DIR/control.log" 2>&1 &
CTL_PID=$!
for _ in $(seq 1 50); do grep -q "published generation" "$DIR/control.log" 2>/dev/null && break; sleep 0.1; done
ip netns exec "$P-node" "$BIN" run --config "$DIR/node.toml" --stats-interval 0 > "$DIR/dp.log" 2>&1 &
DP_PID=$!
for _ in $(seq 1 50); do grep -q "running" "$DIR/dp.log" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
echo "-- control: $(grep -m1 'published generation' "$DIR/control.log" | sed 's/.*INFO *\] //')"

echo "-- ping client -> web pod (10.244.1.3)"
ip netns exec "$P-client" ping -c 3 -i 0.2 -W 2 10.244.1.3 | tail -2
echo "-- HTTP client -> ClusterIP 10.96.0.10:80 (DNAT to 10.244.1.3:8080)"
for _ in $(seq 1 20); do
  if out=$(ip netns exec "$P-client" python3 -c \
      'import urllib.request;print(urllib.request.urlopen("http://10.96.0.10/index.html",timeout=2).read().decode().strip())' 2>/dev/null); then
    echo "$out"; break
  fi
  sleep 0.2
done
[ -n "${out:-}" ] || { echo "demo: the ClusterIP fetch failed"; cat "$DIR/control.log" "$DIR/dp.log"; exit 1; }
echo "-- HTTP underlay -> NodePort 192.168.77.1:30080 (DNAT + SNAT to the node)"
out=""
for _ in $(seq 1 20); do
  if out=$(ip netns exec "$P-under" python3 -c \
      'import urllib.request;print(urllib.request.urlopen("http://192.168.77.1:30080/index.html",timeout=2).read().decode().strip())' 2>/dev/null); then
    echo "$out"; break
  fi
  sleep 0.2
done
[ -n "${out:-}" ] || { echo "demo: the NodePort fetch failed"; cat "$DIR/control.log" "$DIR/dp.log"; exit 1; }
if [ -x "$TWILLCTL" ]; then
  echo "-- twillctl (reads the shared memory)"
  "$TWILLCTL" --shm "$DIR/node.shm" status || true
  "$TWILLCTL" --shm "$DIR/node.shm" services || true
fi

echo "-- the dataplane's counters (on SIGTERM)"
kill -TERM "$DP_PID"; wait "$DP_PID" || true; DP_PID=""
cat "$DIR/dp.log"
