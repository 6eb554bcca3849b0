//! `nat::rewrite` against recomputation: any change of addresses and ports on a
//! TCP or UDP packet, IPv4 or IPv6, leaves checksums equal to what etherparse
//! computes from scratch for the rewritten packet.

use proptest::prelude::*;

use super::*;
use crate::conntrack::FlowKey;
use crate::pipeline::nat::rewrite;
use crate::pipeline::parse::{ethertype, parse_ip, Meta};

fn packet(v6: bool, tcp: bool, k: &FlowKey, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
    let mut out = Vec::new();
    let b = if v6 {
        b.ipv6(k.src, k.dst, 64)
    } else {
        b.ipv4(k.src_v4(), k.dst_v4(), 64)
    };
    if tcp {
        b.tcp(k.sport, k.dport, 7, 100)
            .write(&mut out, payload)
            .unwrap();
    } else {
        b.udp(k.sport, k.dport).write(&mut out, payload).unwrap();
    }
    out
}

fn key(v6: bool, tcp: bool, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> FlowKey {
    let proto = if tcp { proto::TCP } else { proto::UDP };
    if v6 {
        FlowKey::v6(src, dst, sport, dport, proto)
    } else {
        FlowKey::v4(
            [src[0], src[1], src[2], src[3]],
            [dst[0], dst[1], dst[2], dst[3]],
            sport,
            dport,
            proto,
        )
    }
}

proptest! {
    #[test]
    fn rewritten_checksums_equal_recomputed_ones(
        v6 in any::<bool>(),
        tcp in any::<bool>(),
        a in any::<([u8; 16], [u8; 16], u16, u16)>(),
        b in any::<([u8; 16], [u8; 16], u16, u16)>(),
        keep in any::<(bool, bool, bool, bool)>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let from = key(v6, tcp, a.0, a.1, a.2, a.3);
        let mut to = key(v6, tcp, b.0, b.1, b.2, b.3);
        // Some fields unchanged, as in real NAT (DNAT keeps the source...).
        if keep.0 { to.src = from.src; }
        if keep.1 { to.dst = from.dst; }
        if keep.2 { to.sport = from.sport; }
        if keep.3 { to.dport = from.dport; }
        let mut bytes = packet(v6, tcp, &from, &payload);
        let expected = packet(v6, tcp, &to, &payload);
        let mut m = Meta::default();
        let (et, l3) = ethertype(&bytes).unwrap();
        parse_ip(&bytes, l3, et, &mut m).unwrap();
        rewrite(&mut bytes, &m, &from, &to);
        // Byte for byte: addresses, ports, IPv4 header checksum, L4 checksum
        // (a UDP checksum computing to 0 is 0xffff on both sides).
        prop_assert_eq!(bytes, expected);
    }
}
