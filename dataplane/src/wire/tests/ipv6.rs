use std::net::Ipv6Addr;

use etherparse::{
    IpAuthHeader, IpNumber, Ipv6FlowLabel, Ipv6Header, Ipv6RawExtHeader, PacketBuilder,
};

use super::{IP6_A, IP6_B};
use crate::wire::ipv6::{ext, Fragment, Packet, Repr, UpperLayer, HEADER_LEN};
use crate::wire::Error;

fn header(next: IpNumber, payload_len: usize) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: 0xb8,
        flow_label: Ipv6FlowLabel::try_new(0xabcde).unwrap(),
        payload_length: payload_len as u16,
        next_header: next,
        hop_limit: 33,
        source: IP6_A,
        destination: IP6_B,
    };
    h.to_bytes().to_vec()
}

#[test]
fn an_etherparse_packet_deconstructs_into_its_fields() {
    let mut bytes = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 47)
        .udp(5353, 53)
        .write(&mut bytes, b"query")
        .unwrap();
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.version(), 6);
    assert_eq!(p.header_len(), HEADER_LEN);
    assert_eq!(p.payload_len(), 13);
    assert_eq!(p.next_header(), crate::proto::UDP);
    assert_eq!(p.hop_limit(), 47);
    assert_eq!(p.src_addr(), Ipv6Addr::from(IP6_A));
    assert_eq!(p.dst_bytes(), IP6_B);
    assert_eq!(p.payload(), &bytes[40..]);
    assert_eq!(
        p.upper_layer(),
        Ok(UpperLayer {
            protocol: 17,
            offset: 40,
            frag: None
        })
    );
}

#[test]
fn traffic_class_and_flow_label_are_read_from_etherparse_bytes() {
    let bytes = header(IpNumber::TCP, 0);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.traffic_class(), 0xb8);
    assert_eq!(p.flow_label(), 0xabcde);
}

#[test]
fn an_emitted_header_parses_with_etherparse() {
    let repr = Repr {
        src: Ipv6Addr::from(IP6_A),
        dst: Ipv6Addr::from(IP6_B),
        next_header: crate::proto::ICMPV6,
        payload_len: 64,
        hop_limit: 255,
        traffic_class: 0x12,
        flow_label: 0x54321,
    };
    let mut buf = vec![0xffu8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]));
    let (h, rest) = Ipv6Header::from_slice(&buf).unwrap();
    assert_eq!(rest.len(), 64);
    assert_eq!(h.payload_length, 64);
    assert_eq!(h.next_header, IpNumber::IPV6_ICMP);
    assert_eq!(h.hop_limit, 255);
    assert_eq!(h.traffic_class, 0x12);
    assert_eq!(h.flow_label.value(), 0x54321);
    assert_eq!((h.source, h.destination), (IP6_A, IP6_B));
}

#[test]
fn setters_agree_with_etherparse() {
    let mut bytes = header(IpNumber::TCP, 4);
    bytes.extend_from_slice(&[0; 4]);
    {
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_traffic_class(0x01);
        p.set_flow_label(0xfffff);
        p.set_hop_limit(1);
        p.set_next_header(17);
        p.set_payload_len(2);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_bytes([9; 16]);
    }
    let (h, _) = Ipv6Header::from_slice(&bytes).unwrap();
    assert_eq!(h.traffic_class, 1);
    assert_eq!(h.flow_label.value(), 0xfffff);
    assert_eq!(h.hop_limit, 1);
    assert_eq!(h.next_header, IpNumber::UDP);
    assert_eq!(h.payload_length, 2);
    assert_eq!(h.source, Ipv6Addr::LOCALHOST.octets());
    assert_eq!(h.destination, [9; 16]);
}

/// hop-by-hop (8) + routing (16) + fragment (8) + UDP (8), all written by etherparse.
fn chain(frag_offset_units: u16, more: bool) -> Vec<u8> {
    let hbh = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_ROUTE_HEADER, &[0; 6]).unwrap();
    let rt = Ipv6RawExtHeader::new_raw(IpNumber::IPV6_FRAGMENTATION_HEADER, &[0; 14]).unwrap();
    // The fragment header by hand from RFC 8200 §4.5 (offset << 3 | M): etherparse 0.16
    // writes these bits in the wrong positions (etherparse issue #150, fixed in 0.20).
    let fo = (frag_offset_units << 3) | u16::from(more);
    let fr = [
        [17u8, 0].as_slice(),
        &fo.to_be_bytes(),
        &0xdead_beefu32.to_be_bytes(),
    ]
    .concat();
    let mut body = Vec::new();
    body.extend_from_slice(&hbh.to_bytes());
    body.extend_from_slice(&rt.to_bytes());
    body.extend_from_slice(&fr);
    body.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 8, 0, 0]);
    let mut bytes = header(IpNumber::IPV6_HEADER_HOP_BY_HOP, body.len());
    bytes.extend_from_slice(&body);
    bytes
}

#[test]
fn the_walk_crosses_hop_by_hop_routing_and_fragment_headers() {
    let bytes = chain(0, true);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    let ul = p.upper_layer().unwrap();
    assert_eq!(ul.protocol, crate::proto::UDP);
    assert_eq!(ul.offset, 40 + 8 + 16 + 8);
    assert_eq!(
        ul.frag,
        Some(Fragment {
            offset: 0,
            more: true,
            ident: 0xdead_beef,
            header_offset: 64
        })
    );
    assert!(ul.is_fragment());
    assert_eq!(&bytes[ul.offset..ul.offset + 2], &[0x13, 0x88]);
}

#[test]
fn a_non_first_fragment_reports_its_byte_offset() {
    let bytes = chain(185, false);
    let ul = Packet::new_checked(&bytes[..])
        .unwrap()
        .upper_layer()
        .unwrap();
    let f = ul.frag.unwrap();
    assert_eq!(f.offset, 1480);
    assert!(!f.more);
    assert!(ul.is_fragment());
}

#[test]
fn an_atomic_fragment_is_not_a_fragment() {
    let bytes = chain(0, false);
    let ul = Packet::new_checked(&bytes[..])
        .unwrap()
        .upper_layer()
        .unwrap();
    assert!(ul.frag.is_some());
    assert!(!ul.is_fragment());
}

#[test]
fn the_walk_crosses_an_authentication_header() {
    let ah = IpAuthHeader::new(IpNumber::TCP, 1, 2, &[0; 12]).unwrap();
    let ah = ah.to_bytes();
    let mut bytes = header(IpNumber::AUTHENTICATION_HEADER, ah.len() + 20);
    bytes.extend_from_slice(&ah);
    bytes.extend_from_slice(&[0; 20]);
    let ul = Packet::new_checked(&bytes[..])
        .unwrap()
        .upper_layer()
        .unwrap();
    assert_eq!(ul.protocol, crate::proto::TCP);
    assert_eq!(ul.offset, 40 + 24);
}

#[test]
fn a_chain_cut_short_by_payload_len_is_truncated() {
    let mut bytes = chain(0, true);
    // payload ends inside the fragment header (which starts at 24 into the payload)
    bytes[4..6].copy_from_slice(&28u16.to_be_bytes());
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::Truncated));
    // and inside the routing header's declared length
    bytes[4..6].copy_from_slice(&20u16.to_be_bytes());
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::Truncated));
    // and before the routing header's length byte
    bytes[4..6].copy_from_slice(&9u16.to_be_bytes());
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::Truncated));
}

#[test]
fn a_hop_by_hop_header_after_another_is_a_bad_ext_header() {
    let mut bytes = chain(0, true);
    bytes[40] = ext::HOP_BY_HOP; // hop-by-hop's next header: hop-by-hop again
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::BadExtHeader));
}

#[test]
fn a_chain_longer_than_the_limit_is_a_bad_ext_header() {
    let n = crate::wire::ipv6::MAX_EXT_HEADERS + 1;
    let mut body = Vec::new();
    for _ in 0..n {
        body.extend_from_slice(&[ext::DEST_OPTS, 0, 0, 0, 0, 0, 0, 0]);
    }
    let mut bytes = header(IpNumber::IPV6_DESTINATION_OPTIONS, body.len());
    bytes.extend_from_slice(&body);
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::BadExtHeader));
}

#[test]
fn a_buffer_shorter_than_40_bytes_is_truncated() {
    let bytes = header(IpNumber::UDP, 0);
    assert_eq!(
        Packet::new_checked(&bytes[..39]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_version_other_than_6_is_bad_version() {
    let mut bytes = header(IpNumber::UDP, 0);
    bytes[0] = 0x45;
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadVersion
    );
}

#[test]
fn a_payload_len_beyond_the_buffer_is_bad_total_len() {
    let mut bytes = header(IpNumber::UDP, 9);
    bytes.extend_from_slice(&[0; 8]);
    assert_eq!(
        Packet::new_checked(&bytes[..]).unwrap_err(),
        Error::BadTotalLen
    );
}

#[test]
fn ethernet_padding_after_the_payload_is_accepted_and_trimmed() {
    let mut bytes = header(IpNumber::UDP, 2);
    bytes.extend_from_slice(&[1, 2, 0, 0, 0, 0]);
    let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
    assert_eq!(p.payload(), &[1, 2]);
    assert_eq!(p.payload_mut().len(), 2);
}

#[test]
fn a_header_quoted_in_an_icmpv6_error_is_viewed_with_new_checked_header() {
    let bytes = chain(0, true);
    let quoted = &bytes[..40 + 36]; // the chain minus the last 4 UDP bytes
    assert_eq!(Packet::new_checked(quoted).unwrap_err(), Error::BadTotalLen);
    let p = Packet::new_checked_header(quoted).unwrap();
    assert_eq!(p.payload().len(), 36);
    assert_eq!(p.upper_layer().unwrap().offset, 72);
    let p = Packet::new_checked_header(&bytes[..60]).unwrap();
    assert_eq!(p.upper_layer(), Err(Error::Truncated));
    assert_eq!(
        Packet::new_checked_header(&bytes[..39]).unwrap_err(),
        Error::Truncated
    );
}
