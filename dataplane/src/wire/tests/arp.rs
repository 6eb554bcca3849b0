use std::net::Ipv4Addr;

use crate::wire::arp::{Operation, Packet, Repr, PACKET_LEN};
use crate::wire::Error;

/// An ARP request as captured on the wire (RFC 826 layout): who has 10.244.1.1? tell
/// 10.244.1.5 (02:00:00:00:00:0a).
const REQUEST: [u8; 28] = [
    0x00, 0x01, // hardware: Ethernet
    0x08, 0x00, // protocol: IPv4
    0x06, 0x04, // hlen, plen
    0x00, 0x01, // request
    0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, // sender MAC
    0x0a, 0xf4, 0x01, 0x05, // sender IP
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target MAC
    0x0a, 0xf4, 0x01, 0x01, // target IP
];

/// The reply: 10.244.1.1 is at ee:ee:ee:ee:ee:ee.
const REPLY: [u8; 28] = [
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
    0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0x0a, 0xf4, 0x01, 0x01, //
    0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0xf4, 0x01, 0x05,
];

#[test]
fn a_captured_request_deconstructs_into_its_fields() {
    let p = Packet::new_checked(&REQUEST[..]).unwrap();
    assert_eq!(p.operation(), Operation::Request);
    assert_eq!(p.sender_hw_addr(), [2, 0, 0, 0, 0, 0x0a]);
    assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 244, 1, 5));
    assert_eq!(p.target_hw_addr(), [0; 6]);
    assert_eq!(p.target_ip(), Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(p.header_len(), PACKET_LEN);
}

#[test]
fn an_emitted_reply_matches_the_reference_bytes() {
    let mut buf = [0xffu8; 28];
    let repr = Repr {
        operation: Operation::Reply,
        sender_hw: [0xee; 6],
        sender_ip: Ipv4Addr::new(10, 244, 1, 1),
        target_hw: [2, 0, 0, 0, 0, 0x0a],
        target_ip: Ipv4Addr::new(10, 244, 1, 5),
    };
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(buf, REPLY);
    assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), repr);
}

#[test]
fn setters_turn_a_request_into_the_reply_in_place() {
    let mut buf = REQUEST;
    let mut p = Packet::new_checked(&mut buf[..]).unwrap();
    let (sha, spa, tpa) = (p.sender_hw_addr(), p.sender_ip(), p.target_ip());
    p.set_operation(Operation::Reply);
    p.set_target_hw_addr(sha);
    p.set_target_ip(spa);
    p.set_sender_hw_addr([0xee; 6]);
    p.set_sender_ip(tpa);
    assert_eq!(buf, REPLY);
}

#[test]
fn an_unknown_operation_is_a_value() {
    let mut buf = REQUEST;
    buf[7] = 9;
    let p = Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(p.operation(), Operation::Unknown(9));
    assert_eq!(u16::from(p.operation()), 9);
}

#[test]
fn a_short_packet_is_truncated() {
    assert_eq!(
        Packet::new_checked(&REQUEST[..27]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_non_ethernet_or_non_ipv4_packet_is_unsupported() {
    for (at, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
        let mut buf = REQUEST;
        buf[at] = v;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            Error::Unsupported
        );
    }
}

#[test]
fn trailing_ethernet_padding_is_accepted() {
    let mut buf = [0u8; 46];
    buf[..28].copy_from_slice(&REQUEST);
    assert!(Packet::new_checked(&buf[..]).is_ok());
}
