//! "new_checked Ok ⇒ no accessor panics", per view, over arbitrary bytes and over real
//! packets (built by etherparse) with random byte flips and truncations.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::PacketBuilder;
use proptest::prelude::*;

use super::{IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B};
use crate::wire::{arp, ethernet, icmpv4, icmpv6, ipv4, ipv6, tcp, udp, vxlan};

/// Real packets to mutate: IP headers followed by their payloads.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = Vec::new();
    PacketBuilder::ipv4(IP4_A, IP4_B, 64)
        .udp(1, 2)
        .write(&mut b, b"abc")
        .unwrap();
    out.push(b);
    let mut b = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 64)
        .tcp(1, 2, 3, 4)
        .syn()
        .write(&mut b, b"ab")
        .unwrap();
    out.push(b);
    let mut b = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 255)
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut b, &[[0xfd; 16].as_slice(), &[1, 1], &MAC_A].concat())
        .unwrap();
    out.push(b);
    let mut b = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(IP4_A, IP4_B, 64)
        .icmpv4_echo_request(1, 2)
        .write(&mut b, b"x")
        .unwrap();
    out.push(b);
    out
}

/// Arbitrary bytes, or a seed (whole, or from its IP payload on) with byte flips and a
/// random truncation.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    let n = seeds.len();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..120),
        (
            0..n,
            0usize..64,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(i, skip, flips, cut)| {
                let s = &seeds[i];
                let mut v = s[skip.min(s.len())..].to_vec();
                if !v.is_empty() {
                    for (at, byte) in flips {
                        let at = at.index(v.len());
                        v[at] = byte;
                    }
                    let keep = cut.index(v.len() + 1);
                    v.truncate(keep.max(v.len() / 2));
                }
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ethernet_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut f) = ethernet::Frame::new_checked(&mut b[..]) {
            let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_id(), f.header_len());
            let _ = (f.payload().len(), f.is_vlan_tagged());
            let _ = ethernet::Repr::parse(&f);
            f.set_ethertype(ethernet::EtherType::Arp);
            f.set_src_addr([1; 6]);
            f.set_dst_addr([2; 6]);
            let _ = f.payload_mut().len();
        }
    }

    #[test]
    fn arp_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = arp::Packet::new_checked(&mut b[..]) {
            let _ = arp::Repr::parse(&p);
            p.set_operation(arp::Operation::Reply);
            p.set_sender_ip(Ipv4Addr::LOCALHOST);
            p.set_target_ip(Ipv4Addr::LOCALHOST);
            p.set_sender_hw_addr([1; 6]);
            p.set_target_hw_addr([1; 6]);
        }
    }

    #[test]
    fn ipv4_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = ipv4::Packet::new_checked(&mut b[..]) {
            let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident());
            let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment());
            let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
            let _ = (p.src_bytes(), p.dst_bytes(), p.options().len(), p.header().len());
            let _ = (p.verify_checksum(), p.payload().len());
            p.set_ttl(1);
            p.decrement_ttl();
            p.set_src_addr(Ipv4Addr::LOCALHOST);
            p.set_dst_bytes([1; 4]);
            p.set_dont_frag(true);
            p.set_more_frags(true);
            p.set_frag_offset(8);
            p.set_ident(1);
            p.set_protocol(6);
            p.set_dscp_ecn(1);
            p.fill_checksum();
            let _ = (p.options_mut().len(), p.payload_mut().len());
            prop_assert!(p.verify_checksum());
        }
    }

    #[test]
    fn ipv4_accessors_never_panic_after_new_checked_header(b in bytes()) {
        if let Ok(p) = ipv4::Packet::new_checked_header(&b[..]) {
            let _ = (p.total_len(), p.options().len(), p.payload().len(), p.verify_checksum());
        }
    }

    #[test]
    fn ipv6_accessors_never_panic_after_new_checked_header(b in bytes()) {
        if let Ok(p) = ipv6::Packet::new_checked_header(&b[..]) {
            let _ = (p.payload_len(), p.payload().len(), p.upper_layer());
        }
    }

    #[test]
    fn ipv6_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = ipv6::Packet::new_checked(&mut b[..]) {
            let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len());
            let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
            let _ = (p.src_bytes(), p.dst_bytes(), p.payload().len(), p.header_len());
            if let Ok(ul) = p.upper_layer() {
                prop_assert!(ul.offset <= 40 + usize::from(p.payload_len()));
                let _ = ul.is_fragment();
            }
            p.set_traffic_class(1);
            p.set_flow_label(2);
            p.set_hop_limit(3);
            p.set_next_header(4);
            p.set_src_addr(Ipv6Addr::LOCALHOST);
            p.set_dst_bytes([1; 16]);
            let _ = p.payload_mut().len();
        }
    }

    #[test]
    fn ipv6_extension_walk_never_panics_on_any_next_header(
        nh in prop_oneof![Just(0u8), Just(43), Just(44), Just(51), Just(60), any::<u8>()],
        body in prop::collection::vec(
            prop_oneof![Just(0u8), Just(43), Just(44), Just(51), Just(60), any::<u8>()], 0..120),
        extra in 0usize..16,
    ) {
        let mut b = vec![0x60, 0, 0, 0, 0, 0, nh, 64];
        b[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0; 32]);
        b.extend_from_slice(&body);
        b.resize(b.len() + extra, 0xee);
        let p = ipv6::Packet::new_checked(&b[..]).unwrap();
        if let Ok(ul) = p.upper_layer() {
            prop_assert!(ul.offset <= 40 + body.len());
        }
    }

    #[test]
    fn icmpv4_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = icmpv4::Packet::new_checked(&mut b[..]) {
            let _ = (p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq());
            let _ = (p.next_hop_mtu(), p.is_error(), p.is_echo(), p.data().len());
            let _ = (p.verify_checksum(), p.header_len());
            p.set_echo_ident(1);
            p.set_echo_seq(1);
            p.set_next_hop_mtu(1);
            p.set_code(1);
            p.set_msg_type(3);
            let _ = p.data_mut().len();
            p.fill_checksum();
            prop_assert!(p.verify_checksum());
        }
    }

    #[test]
    fn icmpv6_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = icmpv6::Packet::new_checked(&mut b[..]) {
            let _ = (p.msg_type(), p.code(), p.checksum(), p.echo_ident(), p.echo_seq());
            let _ = (p.mtu(), p.is_error(), p.is_echo(), p.is_nd(), p.data().len());
            let _ = (p.nd_target(), p.na_flags(), p.nd_options().len(), p.header_len());
            let _ = (p.nd_option_lladdr(1), p.nd_option_lladdr(2));
            let _ = p.verify_checksum(&IP6_A, &IP6_B);
            p.set_echo_ident(1);
            p.set_echo_seq(1);
            p.set_mtu(1);
            p.set_code(1);
            p.set_na_flags(0xff);
            let _ = p.data_mut().len();
            p.fill_checksum(&IP6_A, &IP6_B);
            prop_assert!(p.verify_checksum(&IP6_A, &IP6_B));
        }
    }

    #[test]
    fn udp_accessors_never_panic_after_new_checked(mut b in bytes()) {
        for checked in [
            udp::Packet::new_checked(&mut b[..]).is_ok(),
            udp::Packet::new_checked_header(&mut b[..]).is_ok(),
        ] {
            if !checked {
                continue;
            }
            let mut p = udp::Packet::new_unchecked(&mut b[..]);
            let _ = (p.src_port(), p.dst_port(), p.len(), p.is_empty(), p.checksum());
            let _ = (p.payload().len(), p.header_len());
            let _ = (p.verify_checksum_v4(&IP4_A, &IP4_B), p.verify_checksum_v6(&IP6_A, &IP6_B));
            p.set_src_port(1);
            p.set_dst_port(2);
            let _ = p.payload_mut().len();
            p.fill_checksum_v4(&IP4_A, &IP4_B);
            p.fill_checksum_v6(&IP6_A, &IP6_B);
            prop_assert!(p.verify_checksum_v6(&IP6_A, &IP6_B));
        }
    }

    #[test]
    fn tcp_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = tcp::Packet::new_checked(&mut b[..]) {
            let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number());
            let _ = (p.header_len(), p.flags(), p.window(), p.checksum(), p.urgent());
            let _ = (p.options().len(), p.payload().len());
            let _ = (p.verify_checksum_v4(&IP4_A, &IP4_B), p.verify_checksum_v6(&IP6_A, &IP6_B));
            p.set_src_port(1);
            p.set_seq_number(1);
            p.set_ack_number(1);
            p.set_flags(0x12);
            p.set_window(1);
            p.set_urgent(1);
            let _ = (p.options_mut().len(), p.payload_mut().len());
            p.fill_checksum_v4(&IP4_A, &IP4_B);
            prop_assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
        }
    }

    #[test]
    fn vxlan_accessors_never_panic_after_new_checked(mut b in bytes()) {
        if let Ok(mut p) = vxlan::Packet::new_checked(&mut b[..]) {
            let _ = (p.flags(), p.has_vni(), p.vni(), p.header_len(), p.payload().len());
            p.set_vni(7);
            p.set_flags(8);
            let _ = p.payload_mut().len();
            p.emit(9);
            prop_assert_eq!(p.vni(), 9);
        }
    }
}
