//! Pods reaching outside the cluster (SNAT to the node, replies translated
//! back) and hairpin (a pod reaching its own Service lands on itself).
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::Verdict;
use std::collections::HashSet;

fn in_snat_range(port: u16) -> bool {
    (SNAT_PORTS.0..=SNAT_PORTS.1).contains(&port)
}

fn pod_to_outside_is_masqueraded_and_the_reply_translated_back(f: Fam) {
    let mut a = node_a();
    for l4 in [udp(40000, 53), tcp(40001, 443, tcpf::SYN)] {
        let p = Pkt::from_pod1(f, f.outside(), l4).payload(b"out");
        let s = a.send(POD1_PORT, &p.build()).tx(UPLINK);
        assert_eq!(s.eth.source, A_UPLINK_MAC, "out the uplink");
        assert_eq!(s.eth.destination, ROUTER_MAC, "to the off-cluster next hop");
        assert_eq!(s.src, f.node_a(), "SNAT to the node address");
        assert!(in_snat_range(s.sport), "SNAT port {}", s.sport);
        assert_eq!(s.dst, f.outside(), "destination kept");
        let (osport, dport) = match l4 {
            L4::Udp { sport, dport } | L4::Tcp { sport, dport, .. } => (sport, dport),
            _ => unreachable!(),
        };
        assert_eq!(s.dport, dport);
        assert_eq!(s.ttl, 63);
        assert_eq!(s.payload, b"out");
        let snat_port = s.sport;

        let back = match l4 {
            L4::Udp { .. } => udp(dport, snat_port),
            _ => tcp(dport, snat_port, tcpf::SYN | tcpf::ACK),
        };
        let r = Pkt::from_uplink(f.outside(), f.node_a(), back).payload(b"back");
        let s = a.send(UPLINK, &r.build()).tx(POD1_PORT);
        assert_eq!(s.eth.source, A_GW_MAC);
        assert_eq!(s.eth.destination, POD1_MAC);
        assert_eq!((s.src, s.sport), (f.outside(), dport), "remote end kept");
        assert_eq!(
            (s.dst, s.dport),
            (f.pod1(), osport),
            "back to the pod's own port"
        );
        assert_eq!(s.ttl, 63);
        assert_eq!(s.payload, b"back");
    }
}

fn ping_to_outside_is_masqueraded_by_identifier(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.outside(), L4::EchoRequest { id: 4242, seq: 7 });
    let s = a.send(POD1_PORT, &p.build()).tx(UPLINK);
    assert_eq!(s.src, f.node_a());
    let id = s.sport;
    assert_eq!(&s.icmp_rest[2..], &7u16.to_be_bytes(), "sequence kept");
    let r = Pkt::from_uplink(f.outside(), f.node_a(), L4::EchoReply { id, seq: 7 });
    let s = a.send(UPLINK, &r.build()).tx(POD1_PORT);
    assert_eq!(s.dst, f.pod1());
    assert_eq!(s.src, f.outside());
    assert_eq!(s.sport, 4242, "echo identifier translated back");
    let want_type = if f == Fam::V4 { 0 } else { 129 };
    assert_eq!(s.icmp_type, want_type);
}

fn two_pods_using_the_same_source_port_get_distinct_snat_ports(f: Fam) {
    let mut a = node_a();
    let mut seen = HashSet::new();
    for (port, p) in [
        (POD1_PORT, Pkt::from_pod1(f, f.outside(), udp(40000, 53))),
        (POD2_PORT, Pkt::from_pod2(f, f.outside(), udp(40000, 53))),
    ] {
        let s = a.send(port, &p.build()).tx(UPLINK);
        assert_eq!(s.src, f.node_a());
        assert!(seen.insert(s.sport), "SNAT port {} given twice", s.sport);
    }
}

fn a_reply_to_an_unknown_snat_port_is_not_delivered_to_a_pod(f: Fam) {
    let mut a = node_a();
    let r = Pkt::from_uplink(f.outside(), f.node_a(), udp(53, 33333)).build();
    let out = a.send(UPLINK, &r);
    assert!(
        matches!(out.verdict, Verdict::Pass | Verdict::Drop(_)),
        "{:?}",
        out.verdict
    );
}

fn pod_to_a_remote_pod_is_not_masqueraded(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 53)).build();
    let s = a.send(POD1_PORT, &p).tx(UPLINK);
    let i = parse(&s.vxlan().2);
    assert_eq!(
        (i.src, i.sport),
        (f.pod1(), 40000),
        "pod-to-pod keeps the pod address"
    );
}

fn hairpin_to_own_service_is_dnated_and_snatted_to_the_gateway(f: Fam) {
    let mut a = node_a();
    // pod2 reaches web, whose only backend is pod2 itself.
    let p = Pkt::from_pod2(f, f.vip(svc::WEB), tcp(40000, 80, tcpf::SYN)).payload(b"me?");
    let s = a.send(POD2_PORT, &p.build()).tx(POD2_PORT);
    assert_eq!(s.eth.source, A_GW_MAC);
    assert_eq!(s.eth.destination, POD2_MAC);
    assert_eq!((s.dst, s.dport), (f.pod2(), 8080), "DNAT to itself");
    assert_eq!(s.src, f.gw(), "SNAT to the gateway so the reply comes back");
    assert!(in_snat_range(s.sport), "hairpin SNAT port {}", s.sport);
    assert_eq!(s.ttl, 63);
    assert_eq!(s.payload, b"me?");
    let snat_port = s.sport;

    let r = Pkt::from_pod2(f, f.gw(), tcp(8080, snat_port, tcpf::SYN | tcpf::ACK)).payload(b"yes");
    let s = a.send(POD2_PORT, &r.build()).tx(POD2_PORT);
    assert_eq!(s.eth.destination, POD2_MAC);
    assert_eq!(
        (s.src, s.sport),
        (f.vip(svc::WEB), 80),
        "reply from the VIP"
    );
    assert_eq!(
        (s.dst, s.dport),
        (f.pod2(), 40000),
        "to the original socket"
    );
    assert_eq!(s.ttl, 63);
    assert_eq!(s.payload, b"yes");
}

fn an_unanswered_udp_flow_expires_after_its_timeout(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.outside(), udp(40000, 53)).build();
    let s = a.send(POD1_PORT, &p).tx(UPLINK);
    let port = s.sport;
    // Linux's unreplied UDP timeout is 30 s: a reply 31 s later finds no flow.
    a.advance_secs(31);
    let r = Pkt::from_uplink(f.outside(), f.node_a(), udp(53, port)).build();
    let out = a.send(UPLINK, &r);
    assert!(
        !matches!(out.verdict, Verdict::Tx(_)),
        "expired flow still translated: {:?}",
        out.verdict
    );
}

fn an_answered_udp_flow_outlives_the_unreplied_timeout(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.outside(), udp(40000, 53)).build();
    let port = a.send(POD1_PORT, &p).tx(UPLINK).sport;
    let r = Pkt::from_uplink(f.outside(), f.node_a(), udp(53, port)).build();
    a.send(UPLINK, &r).tx(POD1_PORT);
    // Assured UDP lives 120 s: 60 s later the reply still gets through.
    a.advance_secs(60);
    let s = a.send(UPLINK, &r).tx(POD1_PORT);
    assert_eq!((s.dst, s.dport), (f.pod1(), 40000));
}

fn pod_to_another_nodes_address_is_not_masqueraded(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.node_b(), tcp(40000, 10250, tcpf::SYN)).build();
    let s = a.send(POD1_PORT, &p).tx(UPLINK);
    // Through the overlay or straight out: either way the pod's own address.
    let i = if s.eth.destination == B_UPLINK_MAC && s.proto == 17 && s.dport == VXLAN_PORT {
        parse(&s.vxlan().2)
    } else {
        s
    };
    assert_eq!((i.src, i.sport), (f.pod1(), 40000));
    assert_eq!((i.dst, i.dport), (f.node_b(), 10250));
    assert_eq!(i.ttl, 63);
}

/// One TCP exchange pod1:40000 <-> outside:443 through masquerade, ending
/// with `close` from the pod; returns the SNAT port used.
fn tcp_session(a: &mut Node, f: Fam, close: u8) -> u16 {
    let out = |a: &mut Node, flags: u8| {
        let p = Pkt::from_pod1(f, f.outside(), tcp(40000, 443, flags)).build();
        let s = a.send(POD1_PORT, &p).tx(UPLINK);
        assert_eq!(s.src, f.node_a());
        s.sport
    };
    let back = |a: &mut Node, port: u16, flags: u8| {
        let r = Pkt::from_uplink(f.outside(), f.node_a(), tcp(443, port, flags)).build();
        let s = a.send(UPLINK, &r).tx(POD1_PORT);
        assert_eq!((s.dst, s.dport), (f.pod1(), 40000));
    };
    let port = out(a, tcpf::SYN);
    back(a, port, tcpf::SYN | tcpf::ACK);
    assert_eq!(out(a, tcpf::ACK), port);
    assert_eq!(out(a, tcpf::ACK | tcpf::PSH), port);
    assert_eq!(out(a, close), port);
    if close & tcpf::FIN != 0 {
        back(a, port, tcpf::FIN | tcpf::ACK);
        assert_eq!(out(a, tcpf::ACK), port);
    }
    port
}

fn a_closed_tcp_connection_can_be_reopened_with_the_same_ports(f: Fam) {
    for close in [tcpf::FIN | tcpf::ACK, tcpf::RST] {
        let mut a = node_a();
        tcp_session(&mut a, f, close);
        // The pod reuses its port at once (TIME_WAIT / CLOSE on our side).
        a.advance_secs(1);
        tcp_session(&mut a, f, close);
        // And long after every timeout.
        a.advance_secs(3600);
        tcp_session(&mut a, f, close);
    }
}

both_families!(
    a_closed_tcp_connection_can_be_reopened_with_the_same_ports,
    pod_to_another_nodes_address_is_not_masqueraded,
    an_unanswered_udp_flow_expires_after_its_timeout,
    an_answered_udp_flow_outlives_the_unreplied_timeout,
    pod_to_outside_is_masqueraded_and_the_reply_translated_back,
    ping_to_outside_is_masqueraded_by_identifier,
    two_pods_using_the_same_source_port_get_distinct_snat_ports,
    a_reply_to_an_unknown_snat_port_is_not_delivered_to_a_pod,
    pod_to_a_remote_pod_is_not_masqueraded,
    hairpin_to_own_service_is_dnated_and_snatted_to_the_gateway,
);
