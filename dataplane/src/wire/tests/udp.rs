use etherparse::{PacketBuilder, UdpHeader};

use super::{IP4_A, IP4_B, IP6_A, IP6_B};
use crate::wire::udp::{Packet, Repr, HEADER_LEN};
use crate::wire::Error;

fn v4_datagram(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(IP4_A, IP4_B, 64)
        .udp(40000, 8472)
        .write(&mut out, payload)
        .unwrap();
    out[20..].to_vec()
}

fn v6_datagram(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 64)
        .udp(40000, 8472)
        .write(&mut out, payload)
        .unwrap();
    out[40..].to_vec()
}

#[test]
fn an_etherparse_datagram_deconstructs_and_verifies_over_ipv4() {
    let bytes = v4_datagram(b"odd");
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!((p.src_port(), p.dst_port()), (40000, 8472));
    assert_eq!(p.len(), 11);
    assert!(!p.is_empty());
    assert_eq!(p.header_len(), HEADER_LEN);
    assert_eq!(p.payload(), b"odd");
    let (h, _) = UdpHeader::from_slice(&bytes).unwrap();
    assert_eq!(p.checksum(), h.checksum);
    assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
    assert!(!p.verify_checksum_v4(&IP4_B, &[10, 0, 0, 1]));
}

#[test]
fn an_etherparse_datagram_verifies_over_ipv6() {
    let bytes = v6_datagram(b"hello, world");
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert!(p.verify_checksum_v6(&IP6_A, &IP6_B));
    assert!(!p.verify_checksum_v6(&IP6_B, &[0; 16]));
}

#[test]
fn a_zero_checksum_is_valid_over_ipv4_and_invalid_over_ipv6() {
    let mut bytes = v4_datagram(b"x");
    bytes[6..8].copy_from_slice(&[0, 0]);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
    assert!(!p.verify_checksum_v6(&IP6_A, &IP6_B));
}

#[test]
fn emitted_datagrams_carry_etherparse_checksums() {
    let payload = b"vxlan inner frame bytes";
    let repr = Repr {
        src_port: 50000,
        dst_port: 8472,
        payload_len: payload.len(),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[8..].copy_from_slice(payload);
    repr.emit_v4(&mut Packet::new_unchecked(&mut buf[..]), &IP4_A, &IP4_B);
    let (h, _) = UdpHeader::from_slice(&buf).unwrap();
    assert_eq!(
        (h.source_port, h.destination_port, h.length),
        (50000, 8472, 31)
    );
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv4_raw(IP4_A, IP4_B, payload).unwrap()
    );

    repr.emit_v6(&mut Packet::new_unchecked(&mut buf[..]), &IP6_A, &IP6_B);
    let (h, _) = UdpHeader::from_slice(&buf).unwrap();
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv6_raw(IP6_A, IP6_B, payload).unwrap()
    );

    repr.emit_no_checksum(&mut Packet::new_unchecked(&mut buf[..]));
    let (h, _) = UdpHeader::from_slice(&buf).unwrap();
    assert_eq!((h.length, h.checksum), (31, 0));
}

#[test]
fn setters_then_fill_checksum_agree_with_etherparse() {
    let mut bytes = v4_datagram(b"abcdef");
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_src_port(1);
    p.set_dst_port(2);
    p.payload_mut()[0] = b'A';
    p.fill_checksum_v4(&IP4_B, &IP4_A);
    let (h, _) = UdpHeader::from_slice(&bytes).unwrap();
    assert_eq!((h.source_port, h.destination_port), (1, 2));
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv4_raw(IP4_B, IP4_A, b"Abcdef").unwrap()
    );
}

#[test]
fn a_computed_zero_checksum_is_written_as_all_ones() {
    let mut bytes = v4_datagram(&[0, 0]);
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    p.fill_checksum_v4(&IP4_A, &IP4_B);
    // Putting the checksum into the payload word makes the data sum 0xffff, so the
    // computed checksum is 0 (RFC 768: sent as 0xffff).
    let c = p.checksum();
    p.payload_mut().copy_from_slice(&c.to_be_bytes());
    p.fill_checksum_v4(&IP4_A, &IP4_B);
    assert_eq!(p.checksum(), 0xffff);
    assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
    let (h, _) = UdpHeader::from_slice(&bytes).unwrap();
    assert_eq!(
        h.calc_checksum_ipv4_raw(IP4_A, IP4_B, &c.to_be_bytes())
            .unwrap(),
        0xffff
    );
}

#[test]
fn a_buffer_shorter_than_8_bytes_is_truncated() {
    let bytes = v4_datagram(b"");
    assert_eq!(
        Packet::new_checked(&bytes[..7]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        Packet::new_checked_header(&bytes[..7]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_length_field_below_8_is_bad_total_len() {
    let mut bytes = v4_datagram(b"abc");
    bytes[4..6].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadTotalLen
    );
}

#[test]
fn a_length_field_beyond_the_buffer_is_bad_total_len() {
    let bytes = v4_datagram(b"abc");
    assert_eq!(
        Packet::new_checked(&bytes[..10]).unwrap_err(),
        Error::BadTotalLen
    );
}

#[test]
fn trailing_bytes_are_accepted_and_trimmed() {
    let mut bytes = v4_datagram(b"abc");
    bytes.extend_from_slice(&[0xee; 5]);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.payload(), b"abc");
    assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
}

#[test]
fn a_first_fragment_header_view_clamps_its_payload_to_the_buffer() {
    let bytes = v4_datagram(&[7; 100]);
    let p = Packet::new_checked_header(&bytes[..20]).unwrap();
    assert_eq!(p.len(), 108);
    assert_eq!(p.payload(), &[7; 12]);
}
