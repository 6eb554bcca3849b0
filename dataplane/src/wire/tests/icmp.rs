use std::net::Ipv6Addr;

use etherparse::{icmpv4, icmpv6, Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, PacketBuilder};

use super::{IP4_A, IP4_B, IP6_A, IP6_B, MAC_A};
use crate::wire::{icmpv4 as v4, icmpv6 as v6, Error};

fn icmpv4_bytes(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out);
    out[20..].to_vec()
}

#[test]
fn an_etherparse_echo_request_deconstructs_and_verifies() {
    let bytes = icmpv4_bytes(|out| {
        PacketBuilder::ipv4(IP4_A, IP4_B, 64)
            .icmpv4_echo_request(0x1234, 7)
            .write(out, b"ping!")
            .unwrap()
    });
    let p = v4::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.msg_type(), v4::ECHO_REQUEST);
    assert_eq!(p.code(), 0);
    assert_eq!(p.echo_ident(), 0x1234);
    assert_eq!(p.echo_seq(), 7);
    assert!(p.is_echo() && !p.is_error());
    assert_eq!(p.data(), b"ping!");
    assert_eq!(
        p.checksum(),
        Icmpv4Slice::from_slice(&bytes).unwrap().checksum()
    );
    assert!(p.verify_checksum());
}

#[test]
fn an_etherparse_frag_needed_reports_the_next_hop_mtu() {
    let ty =
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1450,
        });
    let bytes = icmpv4_bytes(|out| {
        PacketBuilder::ipv4(IP4_A, IP4_B, 64)
            .icmpv4(ty)
            .write(out, &[0x45; 28])
            .unwrap()
    });
    let p = v4::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(
        (p.msg_type(), p.code()),
        (v4::DST_UNREACHABLE, v4::FRAG_NEEDED)
    );
    assert_eq!(p.next_hop_mtu(), 1450);
    assert!(p.is_error());
    assert_eq!(p.data(), &[0x45; 28]);
    assert!(p.verify_checksum());
}

#[test]
fn emitted_icmpv4_errors_parse_with_etherparse() {
    let data = [0x45u8; 28];
    let cases = [
        (
            v4::Repr::DstUnreachable {
                code: v4::FRAG_NEEDED,
                next_hop_mtu: 1450,
            },
            Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 },
            ),
        ),
        (
            v4::Repr::DstUnreachable {
                code: v4::PORT_UNREACHABLE,
                next_hop_mtu: 0,
            },
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
        ),
        (
            v4::Repr::DstUnreachable {
                code: v4::HOST_UNREACHABLE,
                next_hop_mtu: 0,
            },
            Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Host),
        ),
        (
            v4::Repr::TimeExceeded {
                code: v4::TTL_EXCEEDED,
            },
            Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
        ),
        (
            v4::Repr::EchoReply { ident: 9, seq: 10 },
            Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 9, seq: 10 }),
        ),
        (
            v4::Repr::EchoRequest { ident: 9, seq: 10 },
            Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 9, seq: 10 }),
        ),
    ];
    for (repr, expected) in cases {
        let mut buf = vec![0xffu8; repr.buffer_len(data.len())];
        buf[repr.header_len()..].copy_from_slice(&data);
        repr.emit(&mut v4::Packet::new_unchecked(&mut buf[..]));
        let s = Icmpv4Slice::from_slice(&buf).unwrap();
        assert_eq!(s.icmp_type(), expected);
        assert_eq!(s.checksum(), expected.calc_checksum(&data), "{repr:?}");
    }
}

#[test]
fn icmpv4_setters_then_fill_checksum_agree_with_etherparse() {
    let mut bytes = icmpv4_bytes(|out| {
        PacketBuilder::ipv4(IP4_A, IP4_B, 64)
            .icmpv4_echo_request(1, 2)
            .write(out, b"data")
            .unwrap()
    });
    let mut p = v4::Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_msg_type(v4::ECHO_REPLY);
    p.set_echo_ident(77);
    p.set_echo_seq(78);
    p.data_mut()[0] = b'D';
    p.fill_checksum();
    let s = Icmpv4Slice::from_slice(&bytes).unwrap();
    let ty = Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 77, seq: 78 });
    assert_eq!(s.icmp_type(), ty);
    assert_eq!(s.checksum(), ty.calc_checksum(b"Data"));
}

#[test]
fn an_icmpv4_message_shorter_than_8_bytes_is_truncated() {
    assert_eq!(
        v4::Packet::new_checked(&[8u8, 0, 0, 0, 0, 0, 0][..]).unwrap_err(),
        Error::Truncated
    );
}

fn icmpv6_bytes(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    build(&mut out);
    out[40..].to_vec()
}

#[test]
fn an_etherparse_icmpv6_echo_deconstructs_and_verifies() {
    let bytes = icmpv6_bytes(|out| {
        PacketBuilder::ipv6(IP6_A, IP6_B, 64)
            .icmpv6_echo_reply(0x4321, 9)
            .write(out, b"pong")
            .unwrap()
    });
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.msg_type(), v6::ECHO_REPLY);
    assert_eq!((p.echo_ident(), p.echo_seq()), (0x4321, 9));
    assert!(p.is_echo() && !p.is_error() && !p.is_nd());
    assert_eq!(p.data(), b"pong");
    assert!(p.verify_checksum(&IP6_A, &IP6_B));
    assert!(!p.verify_checksum(&IP6_B, &IP6_A.map(|b| b ^ 1)));
}

#[test]
fn emitted_icmpv6_errors_parse_with_etherparse() {
    let data = [0x60u8; 48];
    let cases = [
        (
            v6::Repr::PacketTooBig { mtu: 1430 },
            Icmpv6Type::PacketTooBig { mtu: 1430 },
        ),
        (
            v6::Repr::DstUnreachable {
                code: v6::PORT_UNREACHABLE,
            },
            Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
        ),
        (
            v6::Repr::TimeExceeded {
                code: v6::HOP_LIMIT_EXCEEDED,
            },
            Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
        ),
        (
            v6::Repr::EchoRequest { ident: 3, seq: 4 },
            Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id: 3, seq: 4 }),
        ),
    ];
    for (repr, expected) in cases {
        let mut buf = vec![0xffu8; repr.buffer_len(data.len())];
        buf[repr.header_len()..].copy_from_slice(&data);
        repr.emit(&mut v6::Packet::new_unchecked(&mut buf[..]), &IP6_A, &IP6_B);
        let s = Icmpv6Slice::from_slice(&buf).unwrap();
        assert_eq!(s.icmp_type(), expected);
        assert!(s.is_checksum_valid(IP6_A, IP6_B), "{repr:?}");
    }
    let mut buf = [0u8; 56];
    v6::Repr::PacketTooBig { mtu: 1430 }.emit(
        &mut v6::Packet::new_unchecked(&mut buf[..]),
        &IP6_A,
        &IP6_B,
    );
    assert_eq!(v6::Packet::new_checked(&buf[..]).unwrap().mtu(), 1430);
}

const TARGET: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01];

/// A neighbor solicitation for TARGET with a source link-layer address option,
/// built by etherparse (raw ICMPv6, checksum by etherparse).
fn solicitation() -> Vec<u8> {
    let mut payload = TARGET.to_vec();
    payload.extend_from_slice(&[1, 1]);
    payload.extend_from_slice(&MAC_A);
    icmpv6_bytes(|out| {
        PacketBuilder::ipv6(IP6_A, IP6_B, 255)
            .icmpv6_raw(135, 0, [0; 4])
            .write(out, &payload)
            .unwrap()
    })
}

#[test]
fn an_etherparse_neighbor_solicitation_deconstructs() {
    let bytes = solicitation();
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert!(p.is_nd());
    assert_eq!(p.msg_type(), v6::NEIGHBOR_SOLICIT);
    assert_eq!(p.header_len(), v6::ND_LEN);
    assert_eq!(p.nd_target(), Ipv6Addr::from(TARGET));
    assert_eq!(p.nd_option_lladdr(v6::OPT_SOURCE_LLADDR), Some(MAC_A));
    assert_eq!(p.nd_option_lladdr(v6::OPT_TARGET_LLADDR), None);
    assert!(p.verify_checksum(&IP6_A, &IP6_B));
}

#[test]
fn an_option_scan_skips_other_options_and_stops_at_a_zero_length() {
    let mut bytes = solicitation();
    // a 16-byte unknown option before the link-layer one
    let mut opts = vec![14u8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    opts.extend_from_slice(&bytes[24..]);
    bytes.truncate(24);
    bytes.extend_from_slice(&opts);
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.nd_option_lladdr(v6::OPT_SOURCE_LLADDR), Some(MAC_A));
    bytes[25] = 0; // first option length 0: malformed, stop
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.nd_option_lladdr(v6::OPT_SOURCE_LLADDR), None);
    bytes[25] = 9; // runs past the end
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.nd_option_lladdr(v6::OPT_SOURCE_LLADDR), None);
}

#[test]
fn an_emitted_neighbor_advertisement_parses_with_etherparse() {
    let repr = v6::Repr::NeighborAdvert {
        flags: v6::NA_SOLICITED | v6::NA_OVERRIDE,
        target: Ipv6Addr::from(TARGET),
        lladdr: Some(MAC_A),
    };
    assert_eq!(repr.header_len(), 32);
    let mut buf = vec![0xffu8; repr.buffer_len(0)];
    repr.emit(
        &mut v6::Packet::new_unchecked(&mut buf[..]),
        &TARGET,
        &IP6_A,
    );
    let s = Icmpv6Slice::from_slice(&buf).unwrap();
    assert_eq!(
        s.icmp_type(),
        Icmpv6Type::NeighborAdvertisement(etherparse::icmpv6::NeighborAdvertisementHeader {
            router: false,
            solicited: true,
            r#override: true,
        })
    );
    assert!(s.is_checksum_valid(TARGET, IP6_A));
    let mut expected = TARGET.to_vec();
    expected.extend_from_slice(&[2, 1]);
    expected.extend_from_slice(&MAC_A);
    assert_eq!(s.payload(), &expected[..]);
    let p = v6::Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(p.na_flags(), v6::NA_SOLICITED | v6::NA_OVERRIDE);
    assert_eq!(p.nd_option_lladdr(v6::OPT_TARGET_LLADDR), Some(MAC_A));
}

#[test]
fn an_emitted_neighbor_solicitation_without_option_parses_with_etherparse() {
    let repr = v6::Repr::NeighborSolicit {
        target: Ipv6Addr::from(TARGET),
        lladdr: None,
    };
    let mut buf = vec![0xffu8; repr.buffer_len(0)];
    repr.emit(&mut v6::Packet::new_unchecked(&mut buf[..]), &IP6_A, &IP6_B);
    assert_eq!(buf.len(), 24);
    let s = Icmpv6Slice::from_slice(&buf).unwrap();
    assert_eq!(s.type_u8(), 135);
    assert_eq!(s.bytes5to8(), [0; 4]);
    assert_eq!(s.payload(), &TARGET);
    assert!(s.is_checksum_valid(IP6_A, IP6_B));
}

#[test]
fn icmpv6_setters_then_fill_checksum_agree_with_etherparse() {
    let mut bytes = solicitation();
    let mut p = v6::Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_msg_type(v6::NEIGHBOR_ADVERT);
    p.set_na_flags(v6::NA_ROUTER | 0x1f);
    p.set_nd_target(Ipv6Addr::LOCALHOST);
    p.fill_checksum(&IP6_B, &IP6_A);
    assert_eq!(p.na_flags(), v6::NA_ROUTER);
    let s = Icmpv6Slice::from_slice(&bytes).unwrap();
    assert_eq!(s.bytes5to8(), [0x80, 0, 0, 0]);
    assert!(s.is_checksum_valid(IP6_B, IP6_A));
}

#[test]
fn a_neighbor_message_shorter_than_its_target_is_truncated() {
    let bytes = solicitation();
    assert_eq!(
        v6::Packet::new_checked(&bytes[..23]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        v6::Packet::new_checked(&bytes[..7]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_short_non_nd_message_has_an_unspecified_target_instead_of_panicking() {
    let bytes = [v6::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1];
    let p = v6::Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.nd_target(), Ipv6Addr::UNSPECIFIED);
    assert_eq!(p.nd_option_lladdr(1), None);
}
