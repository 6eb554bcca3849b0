//! The test fixtures checked against themselves, without the pipeline: a
//! failing pipeline test should mean a pipeline bug, not a fixture bug.
mod common;

use common::*;

#[test]
fn built_frames_parse_back_with_valid_checksums() {
    for f in [Fam::V4, Fam::V6] {
        for l4 in [
            udp(1, 2),
            tcp(3, 4, tcpf::SYN | tcpf::ACK),
            L4::EchoRequest { id: 5, seq: 6 },
            L4::EchoReply { id: 7, seq: 8 },
        ] {
            let p = Pkt::from_pod1(f, f.pod2(), l4).ttl(9).payload(b"abc");
            let s = parse(&p.build());
            assert_eq!((s.src, s.dst, s.ttl), (f.pod1(), f.pod2(), 9));
            assert_eq!(s.payload, b"abc");
            match l4 {
                L4::Udp { sport, dport } | L4::Tcp { sport, dport, .. } => {
                    assert_eq!((s.sport, s.dport), (sport, dport))
                }
                L4::EchoRequest { id, .. } | L4::EchoReply { id, .. } => assert_eq!(s.sport, id),
            }
        }
    }
}

#[test]
#[should_panic(expected = "checksum")]
fn the_parser_rejects_a_corrupted_l4_checksum() {
    let mut fr = Pkt::from_pod1(Fam::V4, Fam::V4.pod2(), udp(1, 2)).build();
    let n = fr.len();
    fr[n - 1] ^= 1;
    parse(&fr);
}

#[test]
#[should_panic(expected = "IPv4 header checksum")]
fn the_parser_rejects_a_corrupted_ipv4_header_checksum() {
    let mut fr = Pkt::from_pod1(Fam::V4, Fam::V4.pod2(), udp(1, 2)).build();
    fr[14 + 8] -= 1; // TTL changed without a checksum update
    parse(&fr);
}

#[test]
fn ip_len_pads_to_the_requested_ip_length() {
    for f in [Fam::V4, Fam::V6] {
        let fr = Pkt::from_pod1(f, f.pod2(), udp(1, 2)).ip_len(1450).build();
        assert_eq!(fr.len(), 14 + 1450);
    }
}

#[test]
fn fragments_reassemble_into_the_original_datagram() {
    for f in [Fam::V4, Fam::V6] {
        let payload: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
        let whole = Pkt::from_pod1(f, f.outside(), udp(1, 2))
            .payload(&payload)
            .build();
        let frags = fragment(&whole, 256, 99);
        assert_eq!(frags.len(), 3);
        let seen: Vec<_> = frags.iter().rev().map(|fr| parse(fr).ip).collect();
        let dgram = reassemble(&seen);
        let (s, d, p) = check_udp_datagram(f.pod1(), f.outside(), &dgram);
        assert_eq!((s, d, p), (1, 2, payload));
    }
}

#[test]
fn vxlan_frames_expose_the_inner_frame() {
    for u in [Fam::V4, Fam::V6] {
        let inner = inner_from_b(Fam::V4.remote_pod(0), Fam::V4.pod1(), udp(1, 2)).build();
        let s = parse(&vxlan_from_b(u, 50000, 7, &inner));
        assert_eq!(s.dport, VXLAN_PORT);
        let (flags, vni, got) = s.vxlan();
        assert_eq!((flags, vni), (0x08, 7));
        assert_eq!(got, inner);
    }
}

#[test]
fn icmp_errors_and_neighbor_solicitations_parse_with_valid_checksums() {
    for f in [Fam::V4, Fam::V6] {
        let q = Pkt::from_pod1(f, f.outside(), udp(1, 2)).build();
        let e = icmp_error(
            ROUTER_MAC,
            A_UPLINK_MAC,
            f.router(),
            f.node_a(),
            3,
            3,
            [0, 0, 5, 0],
            &q[14..],
        );
        let s = parse(&e);
        assert_eq!(
            (s.icmp_type, s.icmp_code, s.icmp_rest),
            (3, 3, [0, 0, 5, 0])
        );
        let inner = parse_ip(s.quoted_bytes(), true);
        assert_eq!((inner.sport, inner.dport), (1, 2));
    }
    let ns = parse(&neighbor_solicit(POD1_MAC, Fam::V6.pod1(), Fam::V6.gw()));
    assert_eq!((ns.icmp_type, ns.ttl), (135, 255));
    assert_eq!(ns.eth.destination, [0x33, 0x33, 0xff, 0, 0, 1]);
}

#[test]
fn the_ipv6_fragment_header_follows_rfc_8200_bit_order() {
    // 3a 00 00 01 ...: next header 58, offset 0, M = 1 (etherparse issue #150).
    let h = FragHeader6::parse(&[0x3a, 0, 0x00, 0x01, 0x59, 0xad, 0x9b, 0x98]);
    assert_eq!(
        (h.next_header, h.offset, h.more, h.ident),
        (58, 0, true, 0x59ad_9b98)
    );
    // Offset 256 bytes = 32 units: word 32 << 3 = 0x0100, M clear.
    let b = FragHeader6 {
        next_header: 17,
        offset: 256,
        more: false,
        ident: 7,
    }
    .to_bytes();
    assert_eq!(b, [17, 0, 0x01, 0x00, 0, 0, 0, 7]);
}

#[test]
fn extra_header_helpers_keep_frames_valid() {
    let f4 = Pkt::from_pod1(Fam::V4, Fam::V4.pod2(), udp(1, 2))
        .payload(b"p")
        .build();
    let s = parse(&with_ipv4_options(&f4, &[1, 1, 1, 0]));
    assert_eq!(s.v4.as_ref().unwrap().header_len(), 24);
    assert_eq!((s.sport, s.dport, s.payload.as_slice()), (1, 2, &b"p"[..]));
    let f6 = Pkt::from_pod1(Fam::V6, Fam::V6.pod2(), udp(1, 2))
        .payload(b"p")
        .build();
    let s = parse(&with_ipv6_dest_opts(&f6));
    assert_eq!(
        (s.proto, s.sport, s.dport, s.payload.as_slice()),
        (17, 1, 2, &b"p"[..])
    );
}
