//! RFC 1624 incremental updates, as the NAT stages use them, against etherparse's full
//! recomputation over random packets.

use etherparse::{IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader};
use proptest::prelude::*;

use crate::wire::{checksum, ipv4, ipv6, tcp, udp};

proptest! {
    #[test]
    fn ipv4_header_rewrites_match_recomputation(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
        ttl in 1u8..=255, ident in any::<u16>(), proto in any::<u8>(), new_proto in any::<u8>(),
    ) {
        let mut h = Ipv4Header::new(0, ttl, IpNumber(proto), src, dst).unwrap();
        h.identification = ident;
        h.header_checksum = h.calc_header_checksum();
        let mut bytes = h.to_bytes().to_vec();
        let mut p = ipv4::Packet::new_checked(&mut bytes[..]).unwrap();
        // 32-bit field: the destination address
        let c = checksum::update32(p.checksum(), p.dst_bytes(), new_dst);
        p.set_dst_bytes(new_dst);
        // 16-bit field: the TTL/protocol word
        let old = u16::from_be_bytes([p.ttl(), p.protocol()]);
        let new = u16::from_be_bytes([p.ttl() - 1, new_proto]);
        let c = checksum::update16(c, old, new);
        p.set_ttl(ttl - 1);
        p.set_protocol(new_proto);
        p.set_checksum(c);
        prop_assert!(p.verify_checksum());
        let (h, _) = Ipv4Header::from_slice(&bytes).unwrap();
        prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
    }

    #[test]
    fn ipv6_tcp_snat_matches_recomputation(
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
        sport in any::<u16>(), new_sport in any::<u16>(), dport in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut out = Vec::new();
        PacketBuilder::ipv6(src, dst, 64).tcp(sport, dport, 1, 100).ack(2)
            .write(&mut out, &payload).unwrap();
        let mut ip = ipv6::Packet::new_checked(&mut out[..]).unwrap();
        ip.set_src_bytes(new_src);
        let mut t = tcp::Packet::new_checked(ip.payload_mut()).unwrap();
        // 128-bit field (in the pseudo-header) and a 16-bit port
        let c = checksum::update128(t.checksum(), &src, &new_src);
        let c = checksum::update16(c, t.src_port(), new_sport);
        t.set_src_port(new_sport);
        t.set_checksum(c);
        prop_assert!(t.verify_checksum_v6(&new_src, &dst));
        let seg = &out[40..];
        let (h, rest) = TcpHeader::from_slice(seg).unwrap();
        prop_assert_eq!(h.checksum, h.calc_checksum_ipv6_raw(new_src, dst, rest).unwrap());
    }

    #[test]
    fn ipv4_udp_dnat_matches_recomputation(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
        dport in any::<u16>(), new_dport in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src, dst, 64).udp(1234, dport).write(&mut out, &payload).unwrap();
        let mut u = udp::Packet::new_checked(&mut out[20..]).unwrap();
        prop_assume!(u.checksum() != 0);
        let c = checksum::update32(u.checksum(), dst, new_dst);
        let c = checksum::update16(c, u.dst_port(), new_dport);
        u.set_dst_port(new_dport);
        // RFC 768: a zero result is sent as all ones (update16 gives 0 only for -0).
        u.set_checksum(if c == 0 { 0xffff } else { c });
        prop_assert!(u.verify_checksum_v4(&src, &new_dst));
        let (h, rest) = UdpHeader::from_slice(&out[20..]).unwrap();
        prop_assert_eq!(h.checksum, h.calc_checksum_ipv4_raw(src, new_dst, rest).unwrap());
    }
}
