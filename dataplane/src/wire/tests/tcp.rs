use etherparse::{PacketBuilder, TcpHeader, TcpOptionElement};

use super::{IP4_A, IP4_B, IP6_A, IP6_B};
use crate::wire::tcp::{self, Packet, HEADER_LEN};
use crate::wire::{checksum, Error};

fn v4_segment(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(IP4_A, IP4_B, 64)
        .tcp(43210, 80, 0x0102_0304, 65000)
        .syn()
        .ack(0x0a0b_0c0d)
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap()
        .write(&mut out, payload)
        .unwrap();
    out[20..].to_vec()
}

fn v6_segment(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 64)
        .tcp(443, 55555, 1, 1000)
        .fin()
        .psh()
        .rst()
        .urg(3)
        .write(&mut out, payload)
        .unwrap();
    out[40..].to_vec()
}

#[test]
fn an_etherparse_segment_deconstructs_and_verifies_over_ipv4() {
    let bytes = v4_segment(b"GET /");
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!((p.src_port(), p.dst_port()), (43210, 80));
    assert_eq!(p.seq_number(), 0x0102_0304);
    assert_eq!(p.ack_number(), 0x0a0b_0c0d);
    assert_eq!(p.header_len(), 28);
    assert_eq!(p.flags(), tcp::SYN | tcp::ACK);
    assert_eq!(p.window(), 65000);
    assert_eq!(p.urgent(), 0);
    assert_eq!(p.options(), &[2, 4, 0x05, 0xb4, 1, 3, 3, 7]);
    assert_eq!(p.payload(), b"GET /");
    let (h, _) = TcpHeader::from_slice(&bytes).unwrap();
    assert_eq!(p.checksum(), h.checksum);
    assert!(p.verify_checksum_v4(&IP4_A, &IP4_B));
    assert!(!p.verify_checksum_v4(&IP4_A, &[10, 0, 0, 2]));
}

#[test]
fn an_etherparse_segment_verifies_over_ipv6() {
    let bytes = v6_segment(b"odd");
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.header_len(), HEADER_LEN);
    assert_eq!(p.flags(), tcp::FIN | tcp::PSH | tcp::RST | tcp::URG);
    assert_eq!(p.urgent(), 3);
    assert!(p.verify_checksum_v6(&IP6_A, &IP6_B));
    assert!(!p.verify_checksum_v6(&IP6_B, &[0; 16]));
}

#[test]
fn setters_then_fill_checksum_agree_with_etherparse() {
    let mut bytes = v4_segment(b"payload");
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_src_port(1);
    p.set_dst_port(2);
    p.set_seq_number(3);
    p.set_ack_number(4);
    p.set_flags(tcp::RST);
    p.set_window(5);
    p.set_urgent(6);
    p.options_mut()[4] = 1;
    p.payload_mut()[0] = b'P';
    p.fill_checksum_v4(&IP4_B, &IP4_A);
    let (h, rest) = TcpHeader::from_slice(&bytes).unwrap();
    assert_eq!((h.source_port, h.destination_port), (1, 2));
    assert_eq!((h.sequence_number, h.acknowledgment_number), (3, 4));
    assert!(h.rst && !h.syn && !h.ack);
    assert_eq!((h.window_size, h.urgent_pointer), (5, 6));
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv4_raw(IP4_B, IP4_A, rest).unwrap()
    );

    let mut bytes = v6_segment(b"x");
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_dst_port(8080);
    p.fill_checksum_v6(&IP6_A, &IP6_B);
    let (h, rest) = TcpHeader::from_slice(&bytes).unwrap();
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv6_raw(IP6_A, IP6_B, rest).unwrap()
    );
}

#[test]
fn a_nat_rewrite_with_incremental_updates_matches_etherparse() {
    // DNAT: destination address (pseudo-header) and port change.
    let mut bytes = v4_segment(b"GET /");
    let new_dst = [10, 244, 2, 9];
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    let mut c = checksum::update32(p.checksum(), IP4_B, new_dst);
    c = checksum::update16(c, p.dst_port(), 8080);
    p.set_dst_port(8080);
    p.set_checksum(c);
    assert!(p.verify_checksum_v4(&IP4_A, &new_dst));
    let (h, rest) = TcpHeader::from_slice(&bytes).unwrap();
    assert_eq!(
        h.checksum,
        h.calc_checksum_ipv4_raw(IP4_A, new_dst, rest).unwrap()
    );
}

#[test]
fn set_header_len_keeps_the_reserved_bits() {
    let mut bytes = v4_segment(b"");
    bytes[12] |= 0x01; // the old NS bit
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    p.set_header_len(20);
    assert_eq!(p.header_len(), 20);
    assert_eq!(bytes[12], 0x51);
}

#[test]
fn a_buffer_shorter_than_20_bytes_is_truncated() {
    let bytes = v6_segment(b"");
    assert_eq!(
        Packet::new_checked(&bytes[..19]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_data_offset_below_5_is_bad_header_len() {
    let mut bytes = v6_segment(b"");
    bytes[12] = 0x40;
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadHeaderLen
    );
}

#[test]
fn a_data_offset_beyond_the_buffer_is_truncated() {
    let bytes = v4_segment(b"");
    assert_eq!(
        Packet::new_checked(&bytes[..27]).unwrap_err(),
        Error::Truncated
    );
}
