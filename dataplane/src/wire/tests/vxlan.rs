use crate::wire::vxlan::{Packet, Repr, FLAG_I, HEADER_LEN};
use crate::wire::Error;

/// A flannel VXLAN header (RFC 7348 §5): I flag, VNI 1, then the inner frame.
const FLANNEL: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x00, 0x01, 0x00, 0xaa, 0xbb];

#[test]
fn a_flannel_header_deconstructs_into_flags_and_vni() {
    let p = Packet::new_checked(&FLANNEL[..]).unwrap();
    assert_eq!(p.flags(), FLAG_I);
    assert!(p.has_vni());
    assert_eq!(p.vni(), 1);
    assert_eq!(p.header_len(), HEADER_LEN);
    assert_eq!(p.payload(), &[0xaa, 0xbb]);
}

#[test]
fn emit_sets_the_i_flag_and_zeroes_reserved_bytes() {
    let mut buf = [0xffu8; 10];
    Repr { vni: 1 }.emit(&mut Packet::new_unchecked(&mut buf[..]));
    assert_eq!(&buf[..8], &FLANNEL[..8]);
    let mut buf = [0xffu8; 8];
    Packet::new_unchecked(&mut buf[..]).emit(0x00ab_cdef);
    assert_eq!(buf, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
}

#[test]
fn set_vni_keeps_the_flags_and_the_reserved_byte() {
    let mut buf = [0x08, 1, 2, 3, 0, 0, 0, 0x77];
    let mut p = Packet::new_checked(&mut buf[..]).unwrap();
    p.set_vni(0x0100_0042); // bits above 24 are ignored
    assert_eq!(p.vni(), 0x42);
    assert_eq!(buf, [0x08, 1, 2, 3, 0, 0, 0x42, 0x77]);
}

#[test]
fn a_short_header_is_truncated() {
    assert_eq!(
        Packet::new_checked(&FLANNEL[..7]).unwrap_err(),
        Error::Truncated
    );
}
