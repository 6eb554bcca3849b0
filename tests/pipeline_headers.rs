//! Header shapes beyond the minimum: IPv4 options and IPv6 extension headers
//! are carried through forwarding, NAT and encapsulation, and every checksum
//! still holds.
#[macro_use]
mod common;

use common::*;

/// A 4-byte IPv4 option block: NOP, NOP, NOP, End of Options (RFC 791).
const OPTS: [u8; 4] = [1, 1, 1, 0];

fn with_extra_headers(f: Fam, frame: &[u8]) -> Vec<u8> {
    match f {
        Fam::V4 => with_ipv4_options(frame, &OPTS),
        Fam::V6 => with_ipv6_dest_opts(frame),
    }
}

#[track_caller]
fn assert_extra_headers_kept(f: Fam, s: &SeenIp) {
    match f {
        Fam::V4 => {
            let h = s.v4.as_ref().expect("ipv4");
            assert_eq!(h.options.as_slice(), &OPTS, "IPv4 options kept");
        }
        Fam::V6 => {
            let h = s.v6.as_ref().expect("ipv6");
            assert_eq!(h.next_header.0, 60, "destination options header kept");
        }
    }
}

fn extra_headers_to_a_local_pod_are_forwarded_intact(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.pod2(), udp(40000, 53)).payload(b"opts");
    let frame = with_extra_headers(f, &p.build());
    let s = a.send(POD1_PORT, &frame).tx(POD2_PORT);
    assert_extra_headers_kept(f, &s);
    assert_eq!((s.src, s.dst, s.ttl), (f.pod1(), f.pod2(), 63));
    assert_eq!((s.sport, s.dport), (40000, 53));
    assert_eq!(s.payload, b"opts");
}

fn extra_headers_through_service_dnat_keep_the_l4_checksum_valid(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.vip(svc::WEB), tcp(40000, 80, tcpf::SYN)).payload(b"x");
    let frame = with_extra_headers(f, &p.build());
    let s = a.send(POD1_PORT, &frame).tx(POD2_PORT);
    assert_extra_headers_kept(f, &s);
    assert_eq!(
        (s.dst, s.dport),
        (f.pod2(), 8080),
        "DNAT found the L4 header"
    );
    assert_eq!(s.ttl, 63);
    // The reply, also with extra headers, is reverse-NATed.
    let r = Pkt::from_pod2(f, f.pod1(), tcp(8080, 40000, tcpf::SYN | tcpf::ACK));
    let frame = with_extra_headers(f, &r.build());
    let s = a.send(POD2_PORT, &frame).tx(POD1_PORT);
    assert_extra_headers_kept(f, &s);
    assert_eq!((s.src, s.sport), (f.vip(svc::WEB), 80));
}

fn extra_headers_are_carried_inside_vxlan(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.remote_pod(0), udp(40000, 53)).payload(b"tunnel");
    let frame = with_extra_headers(f, &p.build());
    let s = a.send(POD1_PORT, &frame).tx(UPLINK);
    let (_, _, inner) = s.vxlan();
    assert_eq!(inner.len(), frame.len());
    let i = parse(&inner);
    assert_extra_headers_kept(f, &i);
    assert_eq!(
        (i.dst, i.ttl, i.payload.as_slice()),
        (f.remote_pod(0), 63, &b"tunnel"[..])
    );
}

fn extra_headers_through_masquerade_keep_the_l4_checksum_valid(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.outside(), udp(40000, 53)).payload(b"m");
    let frame = with_extra_headers(f, &p.build());
    let s = a.send(POD1_PORT, &frame).tx(UPLINK);
    assert_extra_headers_kept(f, &s);
    assert_eq!(s.src, f.node_a(), "SNAT found the L4 header");
}

/// Ethernet trailer after the IP packet (padding, or bytes a NIC leaves).
const TRAILER: [u8; 6] = [0xde, 0xad, 0xbe, 0xef, 0x55, 0xaa];

fn padded(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f.extend_from_slice(&TRAILER);
    f
}

fn trailing_bytes_after_the_ip_packet_do_not_break_service_nat(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.vip(svc::DNS), udp(40000, 53)).payload(b"q");
    let s = a.send(POD1_PORT, &padded(&p.build())).tx(POD2_PORT);
    assert_eq!((s.dst, s.dport), (f.pod2(), 5353));
    assert_eq!(s.payload, b"q");
    let r = Pkt::from_pod2(f, f.pod1(), udp(5353, 40000)).payload(b"a");
    let s = a.send(POD2_PORT, &padded(&r.build())).tx(POD1_PORT);
    assert_eq!((s.src, s.sport), (f.vip(svc::DNS), 53));
}

fn trailing_bytes_after_an_icmp_error_do_not_break_its_translation(f: Fam) {
    let mut a = node_a();
    let q = Pkt::from_pod1(f, f.outside(), udp(40000, 53)).build();
    let out = a.send(POD1_PORT, &q);
    let left = out.tx(UPLINK);
    let (ty, code) = if f == Fam::V4 { (3, 3) } else { (1, 4) };
    let err = icmp_error(
        ROUTER_MAC,
        A_UPLINK_MAC,
        f.outside(),
        f.node_a(),
        ty,
        code,
        [0; 4],
        &out.bytes[14..],
    );
    // `parse` checks the ICMP checksum over the IP payload only, as a
    // receiver does: the trailer must not be summed in.
    let s = a.send(UPLINK, &padded(&err)).tx(POD1_PORT);
    assert_eq!(s.dst, f.pod1());
    let inner = parse_ip(s.quoted_bytes(), true);
    assert_eq!((inner.src, inner.sport), (f.pod1(), 40000));
    assert_eq!(left.src, f.node_a());
}

fn ipv4_udp_without_a_checksum_stays_valid_through_nat_for(f: Fam) {
    let mut a = node_a();
    let mut frame = Pkt::from_pod1(f, f.vip(svc::DNS), udp(40000, 53))
        .payload(b"no checksum")
        .build();
    frame[14 + 20 + 6] = 0;
    frame[14 + 20 + 7] = 0;
    let s = a.send(POD1_PORT, &frame).tx(POD2_PORT);
    assert_eq!((s.dst, s.dport), (f.pod2(), 5353));
    // Zero means "no checksum" (RFC 768); anything else must be correct,
    // which `parse` checked.
    let _ = s.l4_checksum;
}

both_families!(
    trailing_bytes_after_the_ip_packet_do_not_break_service_nat,
    trailing_bytes_after_an_icmp_error_do_not_break_its_translation,
    extra_headers_to_a_local_pod_are_forwarded_intact,
    extra_headers_through_service_dnat_keep_the_l4_checksum_valid,
    extra_headers_are_carried_inside_vxlan,
    extra_headers_through_masquerade_keep_the_l4_checksum_valid,
);

#[test]
fn ipv4_udp_without_a_checksum_stays_valid_through_nat() {
    ipv4_udp_without_a_checksum_stays_valid_through_nat_for(Fam::V4);
}
