//! Traffic from outside the cluster: NodePorts and external/LoadBalancer IPs
//! with externalTrafficPolicy Cluster (DNAT + SNAT to the node) and Local
//! (DNAT only, local endpoints only), and the replies going back out.
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::{DropReason, Verdict};
use std::collections::HashSet;
use std::net::IpAddr;

fn in_snat_range(port: u16) -> bool {
    (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&port)
}

/// An external client reaches `dst`:`dport` (eTP Cluster, local backend
/// pod2:8080): DNAT + SNAT to node A, and the reply goes back out the uplink
/// from `dst`:`dport`.
fn cluster_policy_exchange(f: Fam, dst: IpAddr, dport: u16) {
    let mut a = node_a();
    let p = Pkt::from_uplink(f.client(), dst, tcp(40000, dport, tcpf::SYN)).payload(b"hi");
    let s = a.send(UPLINK, &p.build()).tx(POD2_PORT);
    assert_eq!(s.eth.source, A_GW_MAC);
    assert_eq!(s.eth.destination, POD2_MAC);
    assert_eq!(s.dst, f.pod2(), "DNAT to the backend");
    assert_eq!(s.dport, 8080);
    assert_eq!(s.src, f.node_a(), "SNAT to the node address");
    assert!(in_snat_range(s.sport), "SNAT port {} in range", s.sport);
    assert_eq!(s.ttl, 63);
    assert_eq!(s.payload, b"hi");
    let snat_port = s.sport;

    let r =
        Pkt::from_pod2(f, f.node_a(), tcp(8080, snat_port, tcpf::SYN | tcpf::ACK)).payload(b"ho");
    let s = a.send(POD2_PORT, &r.build()).tx(UPLINK);
    assert_eq!(s.eth.source, A_UPLINK_MAC, "out the uplink");
    assert_eq!(s.eth.destination, ROUTER_MAC, "to the off-cluster next hop");
    assert_eq!(s.src, dst, "reply from the address the client used");
    assert_eq!(s.sport, dport);
    assert_eq!(s.dst, f.client(), "to the client");
    assert_eq!(s.dport, 40000);
    assert_eq!(s.ttl, 63);
    assert_eq!(s.payload, b"ho");

    // The next client packet of the same flow takes the same translation.
    let p = Pkt::from_uplink(f.client(), dst, tcp(40000, dport, tcpf::ACK)).build();
    let s = a.send(UPLINK, &p).tx(POD2_PORT);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (f.node_a(), snat_port, f.pod2(), 8080)
    );
}

fn nodeport_with_cluster_policy_is_dnated_and_snatted_to_the_node(f: Fam) {
    cluster_policy_exchange(f, f.node_a(), f.node_port(svc::WEB_NODEPORT));
}

fn external_ip_from_outside_is_dnated_and_snatted_to_the_node(f: Fam) {
    cluster_policy_exchange(f, f.ext_ip(svc::WEB_EXT), 80);
}

fn load_balancer_ip_from_outside_is_dnated_and_snatted_to_the_node(f: Fam) {
    cluster_policy_exchange(f, f.ext_ip(svc::WEB_LB), 80);
}

fn nodeport_to_a_remote_backend_is_snatted_and_encapsulated_and_the_reply_leaves_by_the_uplink(
    f: Fam,
) {
    let mut a = node_a();
    let np = f.node_port(svc::REMOTE_NODEPORT);
    let p = Pkt::from_uplink(f.client(), f.node_a(), udp(40000, np)).payload(b"q");
    let s = a.send(UPLINK, &p.build()).tx(UPLINK);
    assert_eq!(s.eth.destination, B_UPLINK_MAC);
    assert_eq!(s.dport, VXLAN_PORT);
    let i = parse(&s.vxlan().2);
    assert_eq!(i.dst, f.remote_pod(0));
    assert_eq!(i.dport, 5353);
    assert_eq!(
        i.src,
        f.node_a(),
        "SNAT to the node so the reply comes back here"
    );
    assert!(in_snat_range(i.sport));
    assert_eq!(i.ttl, 63);
    let snat_port = i.sport;

    let reply = inner_from_b(f.remote_pod(0), f.node_a(), udp(5353, snat_port))
        .payload(b"a")
        .build();
    let s = a
        .send(UPLINK, &vxlan_from_b(Fam::V4, 50001, VNI, &reply))
        .tx(UPLINK);
    assert_eq!(s.eth.source, A_UPLINK_MAC);
    assert_eq!(s.eth.destination, ROUTER_MAC);
    assert_eq!(
        (s.src, s.sport),
        (f.node_a(), np),
        "reply from the NodePort"
    );
    assert_eq!((s.dst, s.dport), (f.client(), 40000));
    assert_eq!(s.payload, b"a");
}

fn clients_sharing_a_source_port_get_distinct_snat_ports(f: Fam) {
    let mut a = node_a();
    let np = f.node_port(svc::WEB_NODEPORT);
    let mut ports = HashSet::new();
    for n in 0..16u8 {
        let client = match f {
            Fam::V4 => IpAddr::from([198, 51, 100, 100 + n]),
            Fam::V6 => IpAddr::from([0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x100 + n as u16]),
        };
        let p = Pkt::from_uplink(client, f.node_a(), tcp(40000, np, tcpf::SYN)).build();
        let s = a.send(UPLINK, &p).tx(POD2_PORT);
        assert_eq!(s.src, f.node_a());
        assert!(ports.insert(s.sport), "SNAT port {} reused", s.sport);
    }
}

fn nodeport_with_local_policy_keeps_the_client_address(f: Fam) {
    let mut a = node_a();
    let np = f.node_port(svc::LOCAL_NODEPORT);
    for _ in 0..8 {
        // Several flows: Local scope never picks the remote backend.
        let p = Pkt::from_uplink(f.client(), f.node_a(), tcp(40000, np, tcpf::SYN)).build();
        let s = a.send(UPLINK, &p).tx(POD2_PORT);
        assert_eq!(s.src, f.client(), "client address kept");
        assert_eq!(s.sport, 40000, "client port kept");
        assert_eq!((s.dst, s.dport), (f.pod2(), 8080));
        assert_eq!(s.ttl, 63);
    }
    let r = Pkt::from_pod2(f, f.client(), tcp(8080, 40000, tcpf::SYN | tcpf::ACK)).build();
    let s = a.send(POD2_PORT, &r).tx(UPLINK);
    assert_eq!(s.eth.source, A_UPLINK_MAC);
    assert_eq!(s.eth.destination, ROUTER_MAC);
    assert_eq!((s.src, s.sport), (f.node_a(), np));
    assert_eq!((s.dst, s.dport), (f.client(), 40000));
}

fn nodeport_local_policy_spreads_only_over_local_backends(f: Fam) {
    let mut a = node_a();
    let np = f.node_port(svc::LOCAL_NODEPORT);
    for sport in 42000..42032u16 {
        let p = Pkt::from_uplink(f.client(), f.node_a(), tcp(sport, np, tcpf::SYN)).build();
        let out = a.send(UPLINK, &p);
        assert_eq!(out.verdict, Verdict::Tx(POD2_PORT), "flow {sport}");
    }
}

fn external_ip_with_local_policy_keeps_the_client_address(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_uplink(
        f.client(),
        f.ext_ip(svc::LOCAL_EXT),
        tcp(40000, 80, tcpf::SYN),
    )
    .build();
    let s = a.send(UPLINK, &p).tx(POD2_PORT);
    assert_eq!((s.src, s.sport), (f.client(), 40000));
    assert_eq!((s.dst, s.dport), (f.pod2(), 8080));
}

fn local_policy_without_a_local_endpoint_is_dropped(f: Fam) {
    let mut a = node_a();
    let np = f.node_port(svc::LOCALNONE_NODEPORT);
    let p = Pkt::from_uplink(f.client(), f.node_a(), tcp(40000, np, tcpf::SYN)).build();
    a.send(UPLINK, &p).dropped(DropReason::NoLocalEndpoint);
    let p = Pkt::from_uplink(
        f.client(),
        f.ext_ip(svc::LOCALNONE_EXT),
        tcp(40000, 80, tcpf::SYN),
    )
    .build();
    a.send(UPLINK, &p).dropped(DropReason::NoLocalEndpoint);
    assert_eq!(
        a.drops(DropReason::NoLocalEndpoint),
        2,
        "counted under NoLocalEndpoint"
    );
}

fn a_pod_reaching_a_local_policy_service_by_cluster_ip_may_use_the_remote_backend(f: Fam) {
    // externalTrafficPolicy does not apply to in-cluster traffic.
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.vip(svc::LOCALNONE), tcp(40000, 80, tcpf::SYN)).build();
    let s = a.send(POD1_PORT, &p).tx(UPLINK);
    let i = parse(&s.vxlan().2);
    assert_eq!((i.src, i.dst, i.dport), (f.pod1(), f.remote_pod(0), 8080));
}

fn uplink_traffic_to_the_node_that_is_not_a_service_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    for l4 in [
        tcp(50000, 22, tcpf::SYN),
        tcp(50000, 30999, tcpf::SYN),
        udp(50000, 123),
        L4::EchoRequest { id: 5, seq: 1 },
    ] {
        let p = Pkt::from_uplink(f.client(), f.node_a(), l4).build();
        a.send(UPLINK, &p).pass();
    }
}

fn uplink_traffic_for_another_host_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_uplink(f.client(), f.router(), tcp(50000, 443, tcpf::SYN)).build();
    a.send(UPLINK, &p).pass();
    // ARP on the uplink is the kernel's business too.
    if f == Fam::V4 {
        let arp = arp_request(ROUTER_MAC, f.router(), f.node_a());
        a.send(UPLINK, &arp).pass();
    } else {
        let ns = neighbor_solicit(ROUTER_MAC, f.router(), f.node_a());
        a.send(UPLINK, &ns).pass();
    }
}

both_families!(
    nodeport_with_cluster_policy_is_dnated_and_snatted_to_the_node,
    external_ip_from_outside_is_dnated_and_snatted_to_the_node,
    load_balancer_ip_from_outside_is_dnated_and_snatted_to_the_node,
    nodeport_to_a_remote_backend_is_snatted_and_encapsulated_and_the_reply_leaves_by_the_uplink,
    clients_sharing_a_source_port_get_distinct_snat_ports,
    nodeport_with_local_policy_keeps_the_client_address,
    nodeport_local_policy_spreads_only_over_local_backends,
    external_ip_with_local_policy_keeps_the_client_address,
    local_policy_without_a_local_endpoint_is_dropped,
    a_pod_reaching_a_local_policy_service_by_cluster_ip_may_use_the_remote_backend,
    uplink_traffic_to_the_node_that_is_not_a_service_is_passed_to_the_kernel,
    uplink_traffic_for_another_host_is_passed_to_the_kernel,
);
