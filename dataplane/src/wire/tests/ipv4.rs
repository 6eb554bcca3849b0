use std::net::Ipv4Addr;

use etherparse::{IpFragOffset, IpNumber, Ipv4Header};

use super::{IP4_A, IP4_B};
use crate::wire::ipv4::{Packet, Repr, HEADER_LEN};
use crate::wire::{checksum, Error};

/// An IPv4 header with 4 bytes of options, written by etherparse, and `payload`.
fn with_options(payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(payload.len() as u16, 17, IpNumber::UDP, IP4_A, IP4_B).unwrap();
    h.options = [0x94, 0x04, 0x00, 0x00].into(); // router alert
    h.total_len = (h.header_len() + payload.len()) as u16;
    h.identification = 0xbeef;
    h.dont_fragment = true;
    h.dscp = etherparse::IpDscp::try_new(46).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut out = h.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn an_etherparse_header_with_options_deconstructs_into_its_fields() {
    let bytes = with_options(b"0123456789");
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.version(), 4);
    assert_eq!(p.header_len(), 24);
    assert_eq!(p.dscp_ecn(), 46 << 2);
    assert_eq!(p.total_len(), 34);
    assert_eq!(p.ident(), 0xbeef);
    assert!(p.dont_frag());
    assert!(!p.more_frags());
    assert_eq!(p.frag_offset(), 0);
    assert!(!p.is_fragment());
    assert_eq!(p.ttl(), 17);
    assert_eq!(p.protocol(), crate::proto::UDP);
    assert_eq!(p.src_addr(), Ipv4Addr::from(IP4_A));
    assert_eq!(p.dst_bytes(), IP4_B);
    assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
    assert_eq!(p.payload(), b"0123456789");
    let (eh, _) = Ipv4Header::from_slice(&bytes).unwrap();
    assert_eq!(p.checksum(), eh.header_checksum);
    assert!(p.verify_checksum());
}

#[test]
fn a_corrupted_header_fails_checksum_verification() {
    let mut bytes = with_options(b"x");
    bytes[8] ^= 1;
    assert!(!Packet::new_checked(&bytes[..]).unwrap().verify_checksum());
}

#[test]
fn a_non_first_fragment_is_recognised() {
    let mut h = Ipv4Header::new(8, 64, IpNumber::UDP, IP4_A, IP4_B).unwrap();
    h.more_fragments = true;
    h.fragment_offset = IpFragOffset::try_new(185).unwrap();
    let mut bytes = h.to_bytes().to_vec();
    bytes.extend_from_slice(&[0; 8]);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert!(p.more_frags());
    assert_eq!(p.frag_offset(), 1480);
    assert!(p.is_fragment());
}

#[test]
fn an_emitted_header_parses_with_etherparse_with_a_valid_checksum() {
    let repr = Repr {
        src: Ipv4Addr::from(IP4_A),
        dst: Ipv4Addr::from(IP4_B),
        protocol: crate::proto::TCP,
        payload_len: 100,
        ttl: 63,
        ident: 0x1234,
        dont_frag: true,
        dscp_ecn: 0xb8,
    };
    let mut buf = vec![0xa5u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    let (h, rest) = Ipv4Header::from_slice(&buf).unwrap();
    assert_eq!(rest.len(), 100);
    assert_eq!(h.total_len, 120);
    assert_eq!(h.time_to_live, 63);
    assert_eq!(h.protocol, IpNumber::TCP);
    assert_eq!(h.identification, 0x1234);
    assert!(h.dont_fragment && !h.more_fragments);
    assert_eq!(h.fragment_offset.value(), 0);
    assert_eq!(h.dscp.value(), 0xb8 >> 2);
    assert_eq!((h.source, h.destination), (IP4_A, IP4_B));
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn setters_then_fill_checksum_agree_with_etherparse() {
    let mut bytes = with_options(b"abc");
    {
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_bytes([198, 51, 100, 7]);
        p.set_ttl(3);
        p.set_ident(7);
        p.set_dont_frag(false);
        p.set_more_frags(true);
        p.set_frag_offset(64);
        p.set_protocol(6);
        p.set_dscp_ecn(1);
        p.fill_checksum();
    }
    let (h, _) = Ipv4Header::from_slice(&bytes).unwrap();
    assert_eq!(h.source, [192, 0, 2, 1]);
    assert_eq!(h.destination, [198, 51, 100, 7]);
    assert_eq!((h.time_to_live, h.identification), (3, 7));
    assert!(!h.dont_fragment && h.more_fragments);
    assert_eq!(h.fragment_offset.value(), 8);
    assert_eq!(h.protocol, IpNumber::TCP);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn decrement_ttl_updates_the_checksum_like_a_recomputation() {
    let mut bytes = with_options(b"abc");
    let ttl = Packet::new_checked(&mut bytes[..]).unwrap().decrement_ttl();
    assert_eq!(ttl, 16);
    let (h, _) = Ipv4Header::from_slice(&bytes).unwrap();
    assert_eq!(h.time_to_live, 16);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn incremental_address_rewrite_matches_etherparse() {
    let mut bytes = with_options(b"abc");
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    let new = [203, 0, 113, 9];
    let c = checksum::update32(p.checksum(), p.dst_bytes(), new);
    p.set_dst_bytes(new);
    p.set_checksum(c);
    let (h, _) = Ipv4Header::from_slice(&bytes).unwrap();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn a_buffer_shorter_than_20_bytes_is_truncated() {
    let bytes = with_options(b"");
    assert_eq!(
        Packet::new_checked(&bytes[..19]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_version_other_than_4_is_bad_version() {
    let mut bytes = with_options(b"");
    bytes[0] = 0x66;
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadVersion
    );
}

#[test]
fn an_ihl_below_5_is_bad_header_len() {
    let mut bytes = with_options(b"");
    bytes[0] = 0x44;
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadHeaderLen
    );
}

#[test]
fn an_ihl_beyond_the_buffer_is_truncated() {
    let mut bytes = with_options(b"");
    bytes[0] = 0x4f; // 60-byte header in a 24-byte buffer
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_total_len_below_the_header_is_bad_total_len() {
    let mut bytes = with_options(b"abcd");
    bytes[2..4].copy_from_slice(&20u16.to_be_bytes()); // header is 24
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadTotalLen
    );
}

#[test]
fn a_total_len_beyond_the_buffer_is_bad_total_len() {
    let bytes = with_options(b"abcd");
    assert_eq!(
        Packet::new_checked(&bytes[..bytes.len() - 1]).unwrap_err(),
        Error::BadTotalLen
    );
}

#[test]
fn ethernet_padding_after_total_len_is_accepted_and_trimmed() {
    let mut bytes = with_options(b"ab");
    bytes.extend_from_slice(&[0; 20]);
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    assert_eq!(p.payload(), b"ab");
    assert_eq!(p.payload_mut().len(), 2);
    assert_eq!(HEADER_LEN, 20);
}

#[test]
fn a_header_quoted_in_an_icmp_error_is_viewed_with_new_checked_header() {
    // ICMP errors quote the IP header and 8 payload bytes; total_len says more.
    let bytes = with_options(&[0xaa; 100]);
    let quoted = &bytes[..24 + 8];
    assert_eq!(Packet::new_checked(quoted).unwrap_err(), Error::BadTotalLen);
    let p = Packet::new_checked_header(quoted).unwrap();
    assert_eq!(p.total_len(), 124);
    assert_eq!(p.payload(), &[0xaa; 8]);
    assert!(p.verify_checksum());
    let mut bad = quoted.to_vec();
    bad[0] = 0x44;
    assert_eq!(
        Packet::new_checked_header(&bad[..]).unwrap_err(),
        Error::BadHeaderLen
    );
    bad[0] = 0x65;
    assert_eq!(
        Packet::new_checked_header(&bad[..]).unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(
        Packet::new_checked_header(&quoted[..23]).unwrap_err(),
        Error::Truncated
    );
}
