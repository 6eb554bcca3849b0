//! ICMP the pipeline generates (time exceeded) and ICMP errors about NATed
//! flows coming back: matched through the quoted header and translated in
//! the outer header, the quoted IP header, the quoted ports and all three
//! checksums.
#[macro_use]
mod common;

use common::*;
use std::net::IpAddr;

fn ttl_one_to_a_remote_pod_gets_time_exceeded_and_is_not_encapsulated(f: Fam) {
    let mut a = node_a();
    let frame = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 53))
        .ttl(1)
        .build();
    let s = a.send(POD1_PORT, &frame).reply();
    assert_eq!(s.eth.destination, POD1_MAC);
    assert_eq!(s.eth.source, A_GW_MAC);
    assert_eq!((s.src, s.dst), (f.gw(), f.pod1()));
    let want = if f == Fam::V4 { (1, 11, 0) } else { (58, 3, 0) };
    assert_eq!((s.proto, s.icmp_type, s.icmp_code), want);
    let q = s.quoted();
    assert_eq!(
        (q.src, q.dst, q.sport, q.dport),
        (f.pod1(), f.remote_pod(0), 40000, 53)
    );
}

fn ttl_one_to_a_cluster_ip_gets_time_exceeded_quoting_what_the_pod_sent(f: Fam) {
    let mut a = node_a();
    let frame = Pkt::from_pod1(f, f.vip(svc::WEB), tcp(40000, 80, tcpf::SYN))
        .ttl(1)
        .build();
    let s = a.send(POD1_PORT, &frame).reply();
    assert_eq!(s.dst, f.pod1());
    let want = if f == Fam::V4 { (1, 11, 0) } else { (58, 3, 0) };
    assert_eq!((s.proto, s.icmp_type, s.icmp_code), want);
    let q = s.quoted();
    assert_eq!(
        (q.dst, q.dport),
        (f.vip(svc::WEB), 80),
        "the pod sees its own packet"
    );
}

/// Sends pod1:40000 -> outside:53 (masqueraded) and returns the translated
/// IP packet as it left (no Ethernet) and the frame pod1 sent.
fn masqueraded_query(a: &mut Node, f: Fam) -> (Vec<u8>, Vec<u8>) {
    let sent = Pkt::from_pod1(f, f.outside(), udp(40000, 53))
        .payload(b"a dns query")
        .build();
    let out = a.send(POD1_PORT, &sent);
    let s = out.tx(UPLINK);
    assert_eq!(s.src, f.node_a());
    (out.bytes[14..].to_vec(), sent)
}

/// An ICMP error about the masqueraded flow (from `from`, quoting `quote_len`
/// bytes of the packet as it left) is delivered to pod1 with everything
/// translated back.
fn check_error_about_masqueraded_flow(f: Fam, from: IpAddr, ty: u8, code: u8, rest: [u8; 4]) {
    for quote_len in [usize::MAX, 28 + if f == Fam::V6 { 20 } else { 0 }] {
        let mut a = node_a();
        let (left, sent) = masqueraded_query(&mut a, f);
        let quote = &left[..left.len().min(quote_len)];
        let err = icmp_error(
            ROUTER_MAC,
            A_UPLINK_MAC,
            from,
            f.node_a(),
            ty,
            code,
            rest,
            quote,
        );
        let s = a.send(UPLINK, &err).tx(POD1_PORT);
        assert_eq!(s.eth.source, A_GW_MAC);
        assert_eq!(s.eth.destination, POD1_MAC);
        assert_eq!(s.src, from, "the error's sender kept");
        assert_eq!(
            s.dst,
            f.pod1(),
            "outer destination translated back to the pod"
        );
        assert_eq!((s.icmp_type, s.icmp_code), (ty, code), "type/code kept");
        assert_eq!(s.icmp_rest, rest, "bytes 5..8 (MTU etc.) kept");
        // `parse` verified the ICMP checksum over the translated quote.
        let whole = quote.len() == left.len();
        let q = parse_ip(s.quoted_bytes(), whole);
        assert_eq!(q.src, f.pod1(), "quoted source translated back");
        assert_eq!(q.sport, 40000, "quoted source port translated back");
        assert_eq!(
            (q.dst, q.dport),
            (f.outside(), 53),
            "quoted destination kept"
        );
        let orig = parse(&sent);
        assert_eq!(
            q.l4_checksum, orig.l4_checksum,
            "quoted UDP checksum is the one the pod sent"
        );
        assert_eq!(s.quoted_bytes().len(), quote.len(), "quote length kept");
    }
}

fn port_unreachable_about_a_masqueraded_flow_is_translated_back_to_the_pod(f: Fam) {
    match f {
        Fam::V4 => check_error_about_masqueraded_flow(f, f.outside(), 3, 3, [0; 4]),
        Fam::V6 => check_error_about_masqueraded_flow(f, f.outside(), 1, 4, [0; 4]),
    }
}

fn time_exceeded_from_a_router_about_a_masqueraded_flow_is_translated_back(f: Fam) {
    match f {
        Fam::V4 => check_error_about_masqueraded_flow(f, f.router(), 11, 0, [0; 4]),
        Fam::V6 => check_error_about_masqueraded_flow(f, f.router(), 3, 0, [0; 4]),
    }
}

fn frag_needed_or_packet_too_big_about_a_masqueraded_flow_keeps_the_mtu(f: Fam) {
    match f {
        Fam::V4 => check_error_about_masqueraded_flow(f, f.router(), 3, 4, [0, 0, 0x05, 0x00]),
        Fam::V6 => check_error_about_masqueraded_flow(f, f.router(), 2, 0, [0, 0, 0x05, 0x00]),
    }
}

fn port_unreachable_from_a_remote_backend_is_translated_back_to_the_vip(f: Fam) {
    let mut a = node_a();
    let sent = Pkt::from_pod1(f, f.vip(svc::REMOTE), udp(40000, 53))
        .payload(b"query")
        .build();
    let out = a.send(POD1_PORT, &sent);
    let s = out.tx(UPLINK);
    let inner = s.vxlan().2;
    let left = &inner[14..];
    // Node B's backend pod answers with port unreachable, quoting all.
    let (ty, code) = if f == Fam::V4 { (3, 3) } else { (1, 4) };
    let err = icmp_error(
        B_VTEP_MAC,
        A_VTEP_MAC,
        f.remote_pod(0),
        f.pod1(),
        ty,
        code,
        [0; 4],
        left,
    );
    let s = a
        .send(UPLINK, &vxlan_from_b(Fam::V4, 50002, VNI, &err))
        .tx(POD1_PORT);
    assert_eq!(s.eth.destination, POD1_MAC);
    assert_eq!(s.dst, f.pod1());
    assert!(
        s.src == f.vip(svc::REMOTE) || s.src == f.remote_pod(0),
        "error source {}",
        s.src
    );
    assert_eq!((s.icmp_type, s.icmp_code), (ty, code));
    let q = parse_ip(s.quoted_bytes(), true);
    assert_eq!((q.src, q.sport), (f.pod1(), 40000));
    assert_eq!(
        (q.dst, q.dport),
        (f.vip(svc::REMOTE), 53),
        "quoted destination back to the VIP"
    );
    assert_eq!(q.l4_checksum, parse(&sent).l4_checksum);
}

fn an_icmp_error_about_no_known_flow_is_not_delivered_to_a_pod(f: Fam) {
    let mut a = node_a();
    let stray = Pkt::new(
        A_UPLINK_MAC,
        ROUTER_MAC,
        f.node_a(),
        f.outside(),
        udp(33334, 53),
    )
    .build();
    let (ty, code) = if f == Fam::V4 { (3, 3) } else { (1, 4) };
    let err = icmp_error(
        ROUTER_MAC,
        A_UPLINK_MAC,
        f.outside(),
        f.node_a(),
        ty,
        code,
        [0; 4],
        &stray[14..],
    );
    let out = a.send(UPLINK, &err);
    assert!(
        !matches!(out.verdict, dataplane::pipeline::Verdict::Tx(_)),
        "{:?}",
        out.verdict
    );
}

fn too_big_for_the_tunnel_to_a_service_backend_quotes_what_the_pod_sent(f: Fam) {
    let mut a = node_a();
    let limit = UNDERLAY_MTU as usize - if f == Fam::V4 { 50 } else { 70 };
    let frame = Pkt::from_pod1(f, f.vip(svc::REMOTE), udp(40000, 53))
        .ip_len(limit + 1)
        .build();
    let s = a.send(POD1_PORT, &frame).reply();
    assert_eq!((s.src, s.dst), (f.gw(), f.pod1()));
    let (ty, code) = if f == Fam::V4 { (3, 4) } else { (2, 0) };
    assert_eq!((s.icmp_type, s.icmp_code), (ty, code));
    let mtu = u32::from_be_bytes(s.icmp_rest) & if f == Fam::V4 { 0xffff } else { !0 };
    assert_eq!(mtu as usize, limit);
    let q = s.quoted();
    assert_eq!(
        (q.src, q.sport, q.dst, q.dport),
        (f.pod1(), 40000, f.vip(svc::REMOTE), 53),
        "the pod can only match an error about the packet it sent (to the VIP)"
    );
    let n = if f == Fam::V4 { 28 } else { 48 };
    assert_eq!(&s.quoted_bytes()[..n], &frame[14..14 + n]);
}

fn an_icmp_error_from_a_nodeport_backend_reaches_the_client_with_both_nats_undone(f: Fam) {
    let mut a = node_a();
    let np = f.node_port(svc::DNS_NODEPORT);
    let q = Pkt::from_uplink(f.client(), f.node_a(), udp(40000, np))
        .payload(b"query")
        .build();
    let out = a.send(UPLINK, &q);
    let s = out.tx(POD2_PORT);
    assert_eq!((s.src, s.dst, s.dport), (f.node_a(), f.pod2(), 5353));
    // pod2 has nothing on 5353 after all: port unreachable to the node.
    let (ty, code) = if f == Fam::V4 { (3, 3) } else { (1, 4) };
    let err = icmp_error(
        POD2_MAC,
        A_GW_MAC,
        f.pod2(),
        f.node_a(),
        ty,
        code,
        [0; 4],
        &out.bytes[14..],
    );
    let s = a.send(POD2_PORT, &err).tx(UPLINK);
    assert_eq!(s.eth.destination, ROUTER_MAC);
    assert_eq!(s.dst, f.client(), "outer destination back to the client");
    assert_eq!(
        s.src,
        f.node_a(),
        "the client hears from the address it used, never the pod's"
    );
    assert_eq!((s.icmp_type, s.icmp_code), (ty, code));
    let inner = parse_ip(s.quoted_bytes(), true);
    assert_eq!(
        (inner.src, inner.sport),
        (f.client(), 40000),
        "quoted source"
    );
    assert_eq!(
        (inner.dst, inner.dport),
        (f.node_a(), np),
        "quoted destination"
    );
    assert_eq!(
        inner.l4_checksum,
        parse(&q).l4_checksum,
        "quoted UDP checksum"
    );
}

fn time_exceeded_about_a_masqueraded_ping_is_translated_back_by_identifier(f: Fam) {
    let mut a = node_a();
    let sent = Pkt::from_pod1(f, f.outside(), L4::EchoRequest { id: 4242, seq: 9 })
        .payload(b"ping")
        .build();
    let out = a.send(POD1_PORT, &sent);
    let left = out.tx(UPLINK);
    assert_eq!(left.src, f.node_a());
    let (ty, code) = if f == Fam::V4 { (11, 0) } else { (3, 0) };
    let err = icmp_error(
        ROUTER_MAC,
        A_UPLINK_MAC,
        f.router(),
        f.node_a(),
        ty,
        code,
        [0; 4],
        &out.bytes[14..],
    );
    let s = a.send(UPLINK, &err).tx(POD1_PORT);
    assert_eq!((s.src, s.dst), (f.router(), f.pod1()));
    assert_eq!((s.icmp_type, s.icmp_code), (ty, code));
    // The quoted echo request: source and identifier back to the pod's, its
    // ICMP checksum valid again (`parse_ip` with the whole quote checks it).
    let q = parse_ip(s.quoted_bytes(), true);
    assert_eq!(q.src, f.pod1());
    assert_eq!(q.dst, f.outside());
    assert_eq!(q.sport, 4242, "quoted echo identifier");
    assert_eq!(&q.icmp_rest[2..], &9u16.to_be_bytes(), "quoted sequence");
    assert_eq!(q.l4_checksum, parse(&sent).l4_checksum);
}

both_families!(
    time_exceeded_about_a_masqueraded_ping_is_translated_back_by_identifier,
    too_big_for_the_tunnel_to_a_service_backend_quotes_what_the_pod_sent,
    an_icmp_error_from_a_nodeport_backend_reaches_the_client_with_both_nats_undone,
    ttl_one_to_a_remote_pod_gets_time_exceeded_and_is_not_encapsulated,
    ttl_one_to_a_cluster_ip_gets_time_exceeded_quoting_what_the_pod_sent,
    port_unreachable_about_a_masqueraded_flow_is_translated_back_to_the_pod,
    time_exceeded_from_a_router_about_a_masqueraded_flow_is_translated_back,
    frag_needed_or_packet_too_big_about_a_masqueraded_flow_keeps_the_mtu,
    port_unreachable_from_a_remote_backend_is_translated_back_to_the_vip,
    an_icmp_error_about_no_known_flow_is_not_delivered_to_a_pod,
);
