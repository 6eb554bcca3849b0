#!/usr/bin/env python3
"""twill-dataplane's node config (TOML, configs/node.example.toml's format) for
one packet-rate scenario, from the harness's environment (custom.sh):
PB_IN_IF/PB_OUT_IF (vB/vC), PB_IN_MAC/PB_OUT_MAC/PB_PEER_MAC, PB_DUT_CPU and,
for service-encap, PB_CLUSTER_JSON (the flannel/kube-proxy cluster model the
kernel-k8s peer is configured with).

  pod-to-pod     client pod 10.244.1.2 behind vB -> pod 10.244.2.2 behind vC
                 (the sink, MAC PB_PEER_MAC); the uplink is a spare veth (--uplink)
  service-encap  the cluster of PB_CLUSTER_JSON: client pod behind vB, uplink vC,
                 every service and remote node; ClusterIP -> remote pod via VXLAN
  decap          uplink vB (192.168.50.1) receives VXLAN (UDP 8472, VNI 1) from
                 node 192.168.50.3 (pods 10.244.1.0/24); inner dst 10.244.2.2 is a
                 local pod behind vC (the sink)
"""
import argparse, json, os, sys

ap = argparse.ArgumentParser()
ap.add_argument("--scenario", required=True, choices=["pod-to-pod", "service-encap", "decap"])
ap.add_argument("--uplink", default="twup0", help="pod-to-pod: the spare uplink veth")
ap.add_argument("--busy-poll", action="store_true")
a = ap.parse_args()
env = os.environ.get
in_if, out_if = env("PB_IN_IF", "vB"), env("PB_OUT_IF", "vC")
in_mac, out_mac = env("PB_IN_MAC", "02:00:00:00:0b:0b"), env("PB_OUT_MAC", "02:00:00:00:0c:0c")
peer_mac = env("PB_PEER_MAC", "02:00:00:00:0d:0d")
cpu = int(env("PB_DUT_CPU", "1"))
CLIENT_MAC = "02:00:00:00:0a:0a"   # the generator's vA (lib/common.sh MAC_A)


def q(s):
    return json.dumps(str(s))


out = []
w = out.append


def node(ipv4, uplink, uplink_mac, gw_mac, vtep_mac, underlay_gw_mac):
    w("[node]")
    w(f"name = {q('pktrate-' + a.scenario)}")
    w(f"ipv4 = {q(ipv4)}")
    w(f"uplink = {q(uplink)}")
    w(f"uplink_mac = {q(uplink_mac)}")
    # no traffic leaves the cluster here; a fixed next hop keeps start-up off netlink
    w('underlay_gateway_ipv4 = "192.168.50.254"')
    w(f"underlay_gateway_mac = {q(underlay_gw_mac)}")
    w('pod_gateway_ipv4 = "10.244.1.1"')
    w(f"pod_gateway_mac = {q(gw_mac)}")
    w(f"vtep_mac = {q(vtep_mac)}")
    w("vxlan_port = 8472")
    w("vni = 1")
    w("mtu = 1500")
    w('cluster_cidrs = ["10.244.0.0/16"]')
    w('service_cidrs = ["10.96.0.0/12"]')
    w("conntrack_capacity = 262144")
    w("neighbour_refresh_s = 0")
    w("")
    w("[workers]")
    w(f"cpus = [{cpu}]")
    w(f"busy_poll = {'true' if a.busy_poll else 'false'}")
    w('zero_copy = "off"')   # veth: copy mode (native XDP)
    w("")


def pod(name, ifc, mac, ip):
    w("[[pods]]")
    w(f"name = {q(name)}")
    w(f"interface = {q(ifc)}")
    w(f"mac = {q(mac)}")
    w(f"ipv4 = {q(ip)}")
    w("")


def remote(name, ip, cidrs, vtep, mac):
    w("[[remote_nodes]]")
    w(f"name = {q(name)}")
    w(f"ipv4 = {q(ip)}")
    w("pod_cidrs = [" + ", ".join(q(c) for c in cidrs) + "]")
    w(f"vtep_mac = {q(vtep)}")
    w(f"underlay_mac = {q(mac)}")
    w("")


if a.scenario == "pod-to-pod":
    node("192.168.50.1", a.uplink, "auto", in_mac, "02:fe:00:00:00:01", "02:00:00:00:fe:fe")
    pod("client", in_if, CLIENT_MAC, "10.244.1.2")
    pod("sink", out_if, peer_mac, "10.244.2.2")
elif a.scenario == "decap":
    # The generator's pcap (mkpcap.py --vxlan): outer 02:..:0a:0a -> vB MAC,
    # 192.168.50.3 -> 192.168.50.1, UDP 8472, VNI 1; inner 02:..:1a:1a -> 02:..:1b:1b.
    node("192.168.50.1", in_if, in_mac, out_mac, "02:00:00:00:1b:1b", CLIENT_MAC)
    pod("sink", out_if, peer_mac, "10.244.2.2")
    remote("gen-node", "192.168.50.3", ["10.244.1.0/24"], "02:00:00:00:1a:1a", CLIENT_MAC)
else:
    path = env("PB_CLUSTER_JSON") or sys.exit("service-encap needs PB_CLUSTER_JSON")
    cl = json.load(open(path))
    ln = cl["local_node"]
    node(ln["underlay_ip"], out_if, out_mac, in_mac, ln["vtep_mac"], peer_mac)
    for i, p in enumerate(cl["local_pods"]):
        pod(f"pod{i}", p["host_if"], p["mac"], p["ip"])
    for i, r in enumerate(cl["remote_nodes"]):
        remote(f"node{i + 2}", r["underlay_ip"], [r["pod_cidr"]], r["vtep_mac"], r["underlay_mac"])
    for s in cl["services"]:
        w("[[services]]")
        w(f"name = {q(s['name'])}")
        w(f"protocol = {q(s['protocol'].lower())}")
        w(f"port = {s['port']}")
        w(f"cluster_ips = [{q(s['cluster_ip'])}]")
        w("backends = [" + ", ".join(f"{{ ip = {q(e['ip'])}, port = {e['port']} }}"
                                     for e in s["endpoints"]) + "]")
        w("")
print("\n".join(out))
