//! The overlay: encapsulation toward a remote node's pod CIDR (and the MTU
//! limit), decapsulation of VXLAN arriving on the uplink, VNI checks.
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::{DropReason, Verdict};
use std::collections::HashSet;

/// Checks an encapsulated frame from node A to node B and returns the inner
/// frame parsed.
#[track_caller]
fn check_encap(s: &Seen, underlay: Fam, inner_len: usize) -> Seen {
    assert_eq!(s.eth.source, A_UPLINK_MAC, "outer eth src = uplink MAC");
    assert_eq!(s.eth.destination, B_UPLINK_MAC, "outer eth dst = node B");
    assert_eq!(s.src, underlay.node_a(), "outer src = node A");
    assert_eq!(s.dst, underlay.node_b(), "outer dst = node B");
    assert_eq!(s.proto, 17, "outer UDP");
    assert_eq!(s.dport, VXLAN_PORT, "outer UDP dport");
    assert!(s.sport >= 49152, "outer sport {} in 49152..=65535", s.sport);
    match underlay {
        Fam::V4 => {
            let h = s.v4.as_ref().expect("outer IPv4");
            assert_eq!(h.time_to_live, 64, "outer TTL");
            assert!(!h.dont_fragment, "outer DF clear");
            assert!(!h.more_fragments);
            assert_eq!(h.fragment_offset.value(), 0);
            assert_eq!(s.l4_checksum, 0, "outer IPv4 UDP checksum 0");
            assert_eq!(h.total_len as usize, 20 + 8 + 8 + inner_len);
        }
        Fam::V6 => {
            let h = s.v6.as_ref().expect("outer IPv6");
            assert_eq!(h.hop_limit, 64, "outer hop limit");
            assert_ne!(s.l4_checksum, 0, "outer IPv6 UDP checksum computed");
            assert_eq!(h.payload_length as usize, 8 + 8 + inner_len);
        }
    }
    let (flags, vni, inner) = s.vxlan();
    assert_eq!(flags, 0x08, "VXLAN I flag only");
    assert_eq!(vni, VNI);
    assert_eq!(inner.len(), inner_len, "inner frame length");
    let i = parse(&inner);
    assert_eq!(i.eth.source, A_VTEP_MAC, "inner eth src = our VTEP");
    assert_eq!(
        i.eth.destination, B_VTEP_MAC,
        "inner eth dst = node B's VTEP"
    );
    i
}

fn pod_to_remote_pod_is_encapsulated_to_the_remote_node(f: Fam) {
    let mut a = node_a();
    for l4 in [
        udp(40000, 5353),
        tcp(40001, 8080, tcpf::SYN | tcpf::ACK),
        L4::EchoRequest { id: 9, seq: 3 },
    ] {
        let p = Pkt::from_pod1(f, f.remote_pod(0), l4);
        let frame = p.build();
        let s = a.send(POD1_PORT, &frame).tx(UPLINK);
        let i = check_encap(&s, Fam::V4, frame.len());
        assert_eq!(i.src, f.pod1());
        assert_eq!(i.dst, f.remote_pod(0));
        assert_eq!(i.ttl, 63, "inner TTL decremented");
        assert_eq!(i.proto, parse(&frame).proto);
        assert_eq!(
            (i.sport, i.dport),
            (parse(&frame).sport, parse(&frame).dport)
        );
        assert_eq!(i.payload, p.payload);
    }
}

fn encap_over_an_ipv6_underlay_computes_the_outer_udp_checksum(f: Fam) {
    let mut a = node_a_with(Underlay::V6Only);
    let p = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 5353));
    let frame = p.build();
    let s = a.send(POD1_PORT, &frame).tx(UPLINK);
    let i = check_encap(&s, Fam::V6, frame.len());
    assert_eq!(i.dst, f.remote_pod(0));
    assert_eq!(i.ttl, 63);
}

fn the_outer_source_port_is_stable_per_flow_and_spread_across_flows(f: Fam) {
    let mut a = node_a();
    let mut ports = HashSet::new();
    for sport in 40000..40032u16 {
        let p = Pkt::from_pod1(f, f.remote_pod(0), udp(sport, 5353)).build();
        let first = parse(&a.send(POD1_PORT, &p).bytes).sport;
        let again = parse(&a.send(POD1_PORT, &p).bytes).sport;
        assert_eq!(first, again, "same flow, same outer source port");
        assert!(first >= 49152);
        ports.insert(first);
    }
    assert!(
        ports.len() >= 8,
        "32 flows should spread over many outer source ports, got {}",
        ports.len()
    );
}

fn too_big_for_the_underlay_gets_frag_needed_or_packet_too_big_and_the_limit_fits(f: Fam) {
    let mut a = node_a();
    match f {
        Fam::V4 => {
            let limit = UNDERLAY_MTU as usize - 50;
            let fits = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 5353)).ip_len(limit);
            let frame = fits.build();
            let s = a.send(POD1_PORT, &frame).tx(UPLINK);
            check_encap(&s, Fam::V4, frame.len());

            let big = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 5353)).ip_len(limit + 1);
            let frame = big.build();
            let s = a.send(POD1_PORT, &frame).reply();
            assert_eq!(s.eth.destination, POD1_MAC);
            assert_eq!(s.eth.source, A_GW_MAC);
            assert_eq!(s.src, f.gw());
            assert_eq!(s.dst, f.pod1());
            assert_eq!(
                (s.proto, s.icmp_type, s.icmp_code),
                (1, 3, 4),
                "frag needed"
            );
            let mtu = u16::from_be_bytes([s.icmp_rest[2], s.icmp_rest[3]]);
            assert_eq!(mtu as usize, limit, "next-hop MTU = underlay MTU - 50");
            assert_eq!(&s.icmp_rest[..2], &[0, 0]);
            let q = s.quoted();
            assert_eq!((q.src, q.dst), (f.pod1(), f.remote_pod(0)));
            assert_eq!(&s.quoted_bytes()[..28], &frame[14..14 + 28]);
        }
        Fam::V6 => {
            let limit = UNDERLAY_MTU as usize - 70;
            let fits = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 5353)).ip_len(limit);
            let frame = fits.build();
            let s = a.send(POD1_PORT, &frame).tx(UPLINK);
            check_encap(&s, Fam::V4, frame.len());

            let big = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 5353)).ip_len(limit + 1);
            let frame = big.build();
            let s = a.send(POD1_PORT, &frame).reply();
            assert_eq!(s.eth.destination, POD1_MAC);
            assert_eq!(s.eth.source, A_GW_MAC);
            assert_eq!(s.src, f.gw());
            assert_eq!(s.dst, f.pod1());
            assert_eq!(
                (s.proto, s.icmp_type, s.icmp_code),
                (58, 2, 0),
                "packet too big"
            );
            let mtu = u32::from_be_bytes(s.icmp_rest);
            assert_eq!(mtu as usize, limit, "MTU = underlay MTU - 70");
            let q = s.quoted();
            assert_eq!((q.src, q.dst), (f.pod1(), f.remote_pod(0)));
            assert_eq!(&s.quoted_bytes()[..48], &frame[14..14 + 48]);
            // RFC 4443 2.4(c): the error fits in the IPv6 minimum MTU.
            assert!(s.ttl > 0 && 40 + s.l4.len() <= 1280);
        }
    }
}

fn vxlan_from_a_remote_node_is_decapsulated_and_delivered_to_the_local_pod(f: Fam) {
    for underlay in [Fam::V4, Fam::V6] {
        let mut a = node_a();
        let inner = inner_from_b(f.remote_pod(0), f.pod1(), udp(5353, 40000))
            .ttl(63)
            .payload(b"reply");
        let frame = vxlan_from_b(underlay, 50000, VNI, &inner.build());
        let s = a.send(UPLINK, &frame).tx(POD1_PORT);
        assert_eq!(s.eth.source, A_GW_MAC, "delivered from the gateway MAC");
        assert_eq!(s.eth.destination, POD1_MAC);
        assert_eq!(s.src, f.remote_pod(0));
        assert_eq!(s.dst, f.pod1());
        assert_eq!(s.ttl, 62, "inner TTL decremented once more");
        assert_eq!((s.sport, s.dport), (5353, 40000));
        assert_eq!(s.payload, b"reply");
    }
}

fn vxlan_with_the_wrong_vni_is_dropped(f: Fam) {
    let mut a = node_a();
    let inner = inner_from_b(f.remote_pod(0), f.pod1(), udp(5353, 40000)).build();
    let frame = vxlan_from_b(Fam::V4, 50000, VNI + 1, &inner);
    a.send(UPLINK, &frame).dropped(DropReason::BadVni);
    assert_eq!(a.drops(DropReason::BadVni), 1, "counted under BadVni");
}

fn vxlan_for_an_unknown_local_address_is_not_delivered(f: Fam) {
    let mut a = node_a();
    let inner = inner_from_b(f.remote_pod(0), f.unused_local(), udp(5353, 40000)).build();
    let frame = vxlan_from_b(Fam::V4, 50000, VNI, &inner);
    let out = a.send(UPLINK, &frame);
    assert!(!matches!(out.verdict, Verdict::Tx(_)), "{:?}", out.verdict);
}

fn udp_to_the_node_on_another_port_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_uplink(f.node_b(), f.node_a(), udp(50000, 4789)).build();
    a.send(UPLINK, &p).pass();
}

fn encap_then_decap_across_two_nodes_delivers_the_original_packet(f: Fam) {
    let mut a = node_a();
    let mut b = node_b();
    let p = Pkt::from_pod1(f, f.remote_pod(0), tcp(40000, 8080, tcpf::SYN)).payload(b"hello");
    let out = a.send(POD1_PORT, &p.build());
    assert_eq!(out.verdict, Verdict::Tx(UPLINK));
    let s = b.send(UPLINK, &out.bytes).tx(BPOD_PORT);
    assert_eq!(s.eth.source, B_GW_MAC);
    assert_eq!(s.eth.destination, BPOD_MAC);
    assert_eq!((s.src, s.dst), (f.pod1(), f.remote_pod(0)));
    assert_eq!(s.ttl, 62);
    assert_eq!((s.sport, s.dport, s.tcp_flags), (40000, 8080, tcpf::SYN));
    assert_eq!(s.payload, b"hello");
}

fn vxlan_addressed_to_another_host_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    let inner = inner_from_b(f.remote_pod(0), f.pod1(), udp(5353, 40000)).build();
    let mut payload = vxlan_header(VNI).to_vec();
    payload.extend_from_slice(&inner);
    let mut p = Pkt::from_uplink(f.node_b(), f.router(), udp(50000, VXLAN_PORT));
    p.payload = payload;
    a.send(UPLINK, &p.build()).pass();
}

both_families!(
    vxlan_addressed_to_another_host_is_passed_to_the_kernel,
    pod_to_remote_pod_is_encapsulated_to_the_remote_node,
    encap_over_an_ipv6_underlay_computes_the_outer_udp_checksum,
    the_outer_source_port_is_stable_per_flow_and_spread_across_flows,
    too_big_for_the_underlay_gets_frag_needed_or_packet_too_big_and_the_limit_fits,
    vxlan_from_a_remote_node_is_decapsulated_and_delivered_to_the_local_pod,
    vxlan_with_the_wrong_vni_is_dropped,
    vxlan_for_an_unknown_local_address_is_not_delivered,
    udp_to_the_node_on_another_port_is_passed_to_the_kernel,
    encap_then_decap_across_two_nodes_delivers_the_original_packet,
);
