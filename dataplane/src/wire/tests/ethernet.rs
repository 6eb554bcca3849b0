use etherparse::{Ethernet2Header, PacketBuilder, VlanId};

use super::{IP4_A, IP4_B, IP6_A, IP6_B, MAC_A, MAC_B};
use crate::wire::ethernet::{EtherType, Frame, Repr, HEADER_LEN, VLAN_HEADER_LEN};
use crate::wire::Error;

fn udp_v4_frame() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(IP4_A, IP4_B, 64)
        .udp(1000, 53)
        .write(&mut out, b"hello")
        .unwrap();
    out
}

#[test]
fn an_etherparse_frame_deconstructs_into_its_fields() {
    let bytes = udp_v4_frame();
    let f = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(f.src_addr(), MAC_A);
    assert_eq!(f.dst_addr(), MAC_B);
    assert_eq!(f.ethertype(), EtherType::Ipv4);
    assert!(!f.is_vlan_tagged());
    assert_eq!(f.vlan_id(), None);
    assert_eq!(f.header_len(), HEADER_LEN);
    assert_eq!(f.payload(), &bytes[14..]);
}

#[test]
fn a_vlan_tagged_frame_reports_the_inner_ethertype_and_the_vlan_id() {
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(42).unwrap())
        .ipv6(IP6_A, IP6_B, 64)
        .udp(1, 2)
        .write(&mut bytes, &[])
        .unwrap();
    let f = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(f.ethertype(), EtherType::Ipv6);
    assert_eq!(f.vlan_id(), Some(42));
    assert_eq!(f.header_len(), VLAN_HEADER_LEN);
    assert_eq!(f.payload(), &bytes[18..]);
}

#[test]
fn set_ethertype_on_a_tagged_frame_writes_the_inner_one() {
    let mut bytes = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(7).unwrap())
        .ipv4(IP4_A, IP4_B, 64)
        .udp(1, 2)
        .write(&mut bytes, &[])
        .unwrap();
    let mut f = Frame::new_checked(&mut bytes[..]).unwrap();
    f.set_ethertype(EtherType::Arp);
    assert_eq!(&bytes[12..14], &[0x81, 0x00]);
    assert_eq!(&bytes[16..18], &[0x08, 0x06]);
}

#[test]
fn an_emitted_header_parses_with_etherparse() {
    let mut bytes = [0u8; 14];
    let repr = Repr {
        src: MAC_A,
        dst: MAC_B,
        ethertype: EtherType::Ipv6,
    };
    repr.emit(&mut Frame::new_unchecked(&mut bytes[..]));
    let (h, _) = Ethernet2Header::from_slice(&bytes).unwrap();
    assert_eq!(h.source, MAC_A);
    assert_eq!(h.destination, MAC_B);
    assert_eq!(h.ether_type, etherparse::EtherType::IPV6);
    assert_eq!(Repr::parse(&Frame::new_checked(&bytes[..]).unwrap()), repr);
}

#[test]
fn setters_rewrite_the_addresses() {
    let mut bytes = udp_v4_frame();
    let mut f = Frame::new_checked(&mut bytes[..]).unwrap();
    f.set_src_addr(MAC_B);
    f.set_dst_addr(MAC_A);
    f.payload_mut()[0] = 0x46;
    let (h, _) = Ethernet2Header::from_slice(&bytes).unwrap();
    assert_eq!((h.source, h.destination), (MAC_B, MAC_A));
    assert_eq!(bytes[14], 0x46);
}

#[test]
fn an_unknown_ethertype_is_a_value_not_an_error() {
    let mut bytes = udp_v4_frame();
    bytes[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    let f = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(f.ethertype(), EtherType::Unknown(0x88cc));
    assert_eq!(u16::from(f.ethertype()), 0x88cc);
    for v in [0x0800u16, 0x0806, 0x86dd, 0x1234] {
        assert_eq!(u16::from(EtherType::from(v)), v);
    }
}

#[test]
fn a_frame_shorter_than_the_header_is_truncated() {
    let bytes = udp_v4_frame();
    assert_eq!(
        Frame::new_checked(&bytes[..13]).unwrap_err(),
        Error::Truncated
    );
}

#[test]
fn a_tagged_frame_shorter_than_the_tag_is_truncated() {
    let mut bytes = udp_v4_frame();
    bytes[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(
        Frame::new_checked(&bytes[..17]).unwrap_err(),
        Error::Truncated
    );
    assert!(Frame::new_checked(&bytes[..18]).is_ok());
}

#[test]
fn a_padded_minimum_size_frame_is_accepted() {
    let mut bytes = [0u8; 60];
    bytes[..14].copy_from_slice(&udp_v4_frame()[..14]);
    let f = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(f.payload().len(), 46);
}
