//! Pipeline unit tests: frames built with etherparse (or by hand from the RFC
//! layouts), results parsed back with etherparse. The cross-module suite lives in
//! the root package's tests/; here: each path once, and every drop reason reached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::{
    Icmpv6Type, LinkHeader, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};

use super::*;
use crate::proto;
use crate::state::demo::*;
use crate::state::{NodeConfig, PodSpec, Tables, TablesBuilder};
use crate::{Mac, PortId};

const NOW: u64 = 1_000_000_000;
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const CLIENT_EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

fn pipe_with(t: Tables) -> Pipeline {
    Pipeline::standalone(Arc::new(t))
}

fn pipe() -> Pipeline {
    pipe_with(demo_tables().expect("demo tables build"))
}

/// Runs one frame; returns its verdict and bytes afterwards.
fn run(p: &mut Pipeline, bytes: &[u8], port: PortId, now: u64) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; FRAME_SIZE];
    buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
    let mut frames = [Frame::new(&mut buf, HEADROOM, bytes.len(), port)];
    let mut v = [Verdict::Pass];
    p.process(&mut frames, &mut v, now);
    (v[0], frames[0].data().to_vec())
}

fn o4(a: Ipv4Addr) -> [u8; 4] {
    a.octets()
}

fn o6(a: Ipv6Addr) -> [u8; 16] {
    a.octets()
}

fn tcp4(smac: Mac, dmac: Mac, src: Ipv4Addr, dst: Ipv4Addr, sp: u16, dp: u16, ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac, dmac)
        .ipv4(o4(src), o4(dst), ttl)
        .tcp(sp, dp, 1000, 65535)
        .syn()
        .write(&mut v, b"hello tcp")
        .unwrap();
    v
}

fn tcp6(smac: Mac, dmac: Mac, src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16, hop: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac, dmac)
        .ipv6(o6(src), o6(dst), hop)
        .tcp(sp, dp, 1000, 65535)
        .syn()
        .write(&mut v, b"hello tcp6")
        .unwrap();
    v
}

fn udp4(
    smac: Mac,
    dmac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sp: u16,
    dp: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac, dmac)
        .ipv4(o4(src), o4(dst), 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn from_client4(dst: Ipv4Addr, sp: u16, dp: u16) -> Vec<u8> {
    tcp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, dst, sp, dp, 64)
}

fn from_client6(dst: Ipv6Addr, sp: u16, dp: u16) -> Vec<u8> {
    tcp6(CLIENT_MAC, GATEWAY_MAC, CLIENT_V6, dst, sp, dp, 64)
}

fn headers(b: &[u8]) -> PacketHeaders<'_> {
    PacketHeaders::from_ethernet_slice(b).expect("etherparse parses the output")
}

fn eth(b: &[u8]) -> (Mac, Mac) {
    match headers(b).link {
        Some(LinkHeader::Ethernet2(e)) => (e.source, e.destination),
        other => panic!("no ethernet: {other:?}"),
    }
}

fn ip4(b: &[u8]) -> etherparse::Ipv4Header {
    match headers(b).net {
        Some(NetHeaders::Ipv4(h, _)) => h,
        other => panic!("not ipv4: {other:?}"),
    }
}

fn ip6(b: &[u8]) -> etherparse::Ipv6Header {
    match headers(b).net {
        Some(NetHeaders::Ipv6(h, _)) => h,
        other => panic!("not ipv6: {other:?}"),
    }
}

/// Asserts the IPv4 header checksum and the TCP/UDP checksum (by etherparse).
fn assert_checksums(b: &[u8]) {
    let h = headers(b);
    let payload = h.payload.slice();
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "ipv4 header checksum"
            );
            match t {
                Some(TransportHeader::Tcp(tcp)) => {
                    assert_eq!(
                        tcp.checksum,
                        tcp.calc_checksum_ipv4(ip, payload).unwrap(),
                        "tcp checksum"
                    )
                }
                Some(TransportHeader::Udp(udp)) if udp.checksum != 0 => {
                    assert_eq!(
                        udp.checksum,
                        udp.calc_checksum_ipv4(ip, payload).unwrap(),
                        "udp checksum"
                    )
                }
                _ => {}
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), t) => match t {
            Some(TransportHeader::Tcp(tcp)) => {
                assert_eq!(
                    tcp.checksum,
                    tcp.calc_checksum_ipv6(ip, payload).unwrap(),
                    "tcp checksum"
                )
            }
            Some(TransportHeader::Udp(udp)) => {
                assert_eq!(
                    udp.checksum,
                    udp.calc_checksum_ipv6(ip, payload).unwrap(),
                    "udp checksum"
                )
            }
            _ => {}
        },
        other => panic!("no ip: {other:?}"),
    }
}

fn ports(b: &[u8]) -> (u16, u16) {
    match headers(b).transport {
        Some(TransportHeader::Tcp(t)) => (t.source_port, t.destination_port),
        Some(TransportHeader::Udp(u)) => (u.source_port, u.destination_port),
        other => panic!("no ports: {other:?}"),
    }
}

/// A one's-complement sum check written for the tests (RFC 1071): a message with
/// a correct checksum sums to 0xffff.
fn ones_complement_ok(data: &[u8], pseudo: &[u8]) -> bool {
    let mut s: u32 = 0;
    for chunk in [pseudo, data] {
        for w in chunk.chunks(2) {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                (w[0] as u16) << 8
            };
            s += v as u32;
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Splits a VXLAN frame into (outer UDP ports, VNI, inner frame), checking the
/// outer headers' basics.
fn unwrap_vxlan(b: &[u8]) -> ((u16, u16), u32, Vec<u8>) {
    let h = headers(b);
    let Some(TransportHeader::Udp(u)) = h.transport else {
        panic!("outer is not udp")
    };
    let vx = h.payload.slice();
    assert_eq!(vx[0], 0x08, "VXLAN I flag");
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    ((u.source_port, u.destination_port), vni, vx[8..].to_vec())
}

/// Wraps an inner frame in VXLAN from demo-2 to this node.
fn vxlan_from_node2(inner: &[u8], vni: u32) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(NODE2_MAC, UPLINK_MAC)
        .ipv4(o4(NODE2_V4), o4(NODE_V4), 64)
        .udp(50000, 8472)
        .write(&mut v, &payload)
        .unwrap();
    v
}

fn arp_request(smac: Mac, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&smac);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    v.extend_from_slice(&smac);
    v.extend_from_slice(&sip.octets());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tip.octets());
    v.resize(60, 0); // Ethernet padding
    v
}

fn neighbor_solicit(smac: Mac, src: Ipv6Addr, target: Ipv6Addr, hop: u8) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&smac);
    let snm = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | target.octets()[13] as u16,
        target.segments()[7],
    );
    let ty = Icmpv6Type::Unknown {
        type_u8: 135,
        code_u8: 0,
        bytes5to8: [0; 4],
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac, [0x33, 0x33, 0xff, 0, 0, 1])
        .ipv6(o6(src), o6(snm), hop)
        .icmpv6(ty)
        .write(&mut v, &body)
        .unwrap();
    v
}

// ---------------------------------------------------------------- ARP / ND

#[test]
fn an_arp_request_for_the_gateway_is_answered_with_the_gateway_mac() {
    let mut p = pipe();
    let (v, out) = run(
        &mut p,
        &arp_request(CLIENT_MAC, CLIENT_V4, GATEWAY_V4),
        CLIENT_PORT,
        NOW,
    );
    assert_eq!(v, Verdict::Reply);
    assert_eq!(&out[0..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &GATEWAY_MAC);
    assert_eq!(&out[20..22], &[0, 2], "ARP reply");
    assert_eq!(&out[22..28], &GATEWAY_MAC, "sender hw");
    assert_eq!(&out[28..32], &GATEWAY_V4.octets(), "sender ip");
    assert_eq!(&out[32..38], &CLIENT_MAC, "target hw");
    assert_eq!(&out[38..42], &CLIENT_V4.octets(), "target ip");
    assert_eq!(p.counters().arp_replies, 1);
}

#[test]
fn a_neighbor_solicitation_for_the_gateway_is_answered_with_a_solicited_override_advert() {
    let mut p = pipe();
    let ns = neighbor_solicit(CLIENT_MAC, CLIENT_V6, GATEWAY_V6, 255);
    let (v, out) = run(&mut p, &ns, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(eth(&out), (GATEWAY_MAC, CLIENT_MAC));
    let ip = ip6(&out);
    assert_eq!(
        (ip.source, ip.destination, ip.hop_limit),
        (o6(GATEWAY_V6), o6(CLIENT_V6), 255)
    );
    let icmp = &out[54..];
    assert_eq!(icmp.len(), 32);
    assert_eq!(icmp[0], 136);
    assert_eq!(icmp[4] & 0x60, 0x60, "solicited + override");
    assert_eq!(&icmp[8..24], &o6(GATEWAY_V6));
    assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&icmp[26..32], &GATEWAY_MAC);
    let s = etherparse::Icmpv6Slice::from_slice(icmp).unwrap();
    assert!(s.is_checksum_valid(ip.source, ip.destination));
}

#[test]
fn a_pods_multicast_listener_report_is_ignored_not_counted_as_spoofing() {
    let mut p = pipe();
    let ll: Ipv6Addr = "fe80::858:aff:fef4:102".parse().unwrap();
    let ty = Icmpv6Type::Unknown {
        type_u8: 143,
        code_u8: 0,
        bytes5to8: [0, 0, 0, 1],
    };
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0x33, 0x33, 0, 0, 0, 0x16])
        .ipv6(o6(ll), o6("ff02::16".parse().unwrap()), 1)
        .icmpv6(ty)
        .write(
            &mut f,
            &[
                4, 0, 0, 0, 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2,
            ],
        )
        .unwrap();
    let (v, _) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Drop(DropReason::NdIgnored));
}

// ---------------------------------------------------------------- local

#[test]
fn pod_to_local_pod_is_delivered_with_gateway_mac_and_ttl_decremented() {
    let mut p = pipe();
    let (v, out) = run(
        &mut p,
        &from_client4(WEB_LOCAL_V4, 1234, 8080),
        CLIENT_PORT,
        NOW,
    );
    assert_eq!(v, Verdict::Tx(WEB_LOCAL_PORT));
    assert_eq!(eth(&out), (GATEWAY_MAC, WEB_LOCAL_MAC));
    assert_eq!(ip4(&out).time_to_live, 63);
    assert_checksums(&out);
    let (v, out) = run(
        &mut p,
        &from_client6(WEB_LOCAL_V6, 1234, 8080),
        CLIENT_PORT,
        NOW,
    );
    assert_eq!(v, Verdict::Tx(WEB_LOCAL_PORT));
    assert_eq!(eth(&out), (GATEWAY_MAC, WEB_LOCAL_MAC));
    assert_eq!(ip6(&out).hop_limit, 63);
    assert_checksums(&out);
}

#[test]
fn a_spoofed_source_is_dropped() {
    let mut p = pipe();
    let f = tcp4(CLIENT_MAC, GATEWAY_MAC, OTHER_V4, WEB_LOCAL_V4, 1, 2, 64);
    assert_eq!(
        run(&mut p, &f, CLIENT_PORT, NOW).0,
        Verdict::Drop(DropReason::Spoofed)
    );
    assert_eq!(p.counters().drop_count(DropReason::Spoofed), 1);
}

#[test]
fn ttl_one_gets_icmp_time_exceeded_from_the_gateway() {
    let mut p = pipe();
    let f = tcp4(
        CLIENT_MAC,
        GATEWAY_MAC,
        CLIENT_V4,
        WEB_LOCAL_V4,
        1234,
        8080,
        1,
    );
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    assert_eq!(eth(&out), (GATEWAY_MAC, CLIENT_MAC));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(GATEWAY_V4), o4(CLIENT_V4)));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (11, 0));
    assert!(ones_complement_ok(icmp, &[]));
    assert_eq!(&icmp[8..], &f[14..], "the whole original packet is quoted");
    let f6 = tcp6(
        CLIENT_MAC,
        GATEWAY_MAC,
        CLIENT_V6,
        WEB_LOCAL_V6,
        1234,
        8080,
        1,
    );
    let (v, out) = run(&mut p, &f6, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    let ip = ip6(&out);
    assert_eq!((ip.source, ip.destination), (o6(GATEWAY_V6), o6(CLIENT_V6)));
    let s = etherparse::Icmpv6Slice::from_slice(&out[54..]).unwrap();
    assert_eq!((s.type_u8(), s.code_u8()), (3, 0));
    assert!(s.is_checksum_valid(ip.source, ip.destination));
}

// ---------------------------------------------------------------- overlay

#[test]
fn pod_to_remote_pod_is_vxlan_encapsulated_flannel_style() {
    let mut p = pipe();
    let dst = Ipv4Addr::new(10, 244, 2, 7);
    let f = from_client4(dst, 1234, 80);
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(eth(&out), (UPLINK_MAC, NODE2_MAC));
    let ip = ip4(&out);
    assert_eq!(
        (ip.source, ip.destination, ip.time_to_live),
        (o4(NODE_V4), o4(NODE2_V4), 64)
    );
    assert!(!ip.dont_fragment);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let Some(TransportHeader::Udp(u)) = headers(&out).transport else {
        panic!()
    };
    assert_eq!(u.checksum, 0, "IPv4 outer UDP checksum is 0");
    let ((sport, dport), vni, inner) = unwrap_vxlan(&out);
    assert!(sport >= 49152);
    assert_eq!((dport, vni), (8472, 1));
    assert_eq!(eth(&inner), (VTEP_MAC, NODE2_VTEP_MAC));
    assert_eq!(ip4(&inner).time_to_live, 63);
    assert_eq!(ip4(&inner).destination, o4(dst));
    assert_checksums(&inner);
    assert_eq!(&inner[34..], &f[34..], "payload untouched");
}

#[test]
fn ipv6_pod_to_remote_pod_goes_over_the_ipv4_underlay_when_there_is_one() {
    let mut p = pipe();
    let dst: Ipv6Addr = "fd00:244:3::9".parse().unwrap();
    let (v, out) = run(&mut p, &from_client6(dst, 1234, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(NODE_V4), o4(NODE3_V4)));
    let (_, _, inner) = unwrap_vxlan(&out);
    assert_eq!(ip6(&inner).destination, o6(dst));
}

#[test]
fn an_ipv6_only_underlay_has_an_ipv6_outer_with_a_udp_checksum() {
    let mut b = builder();
    b.config_mut().node_ipv4 = None;
    let mut p = pipe_with(b.build().unwrap());
    let dst: Ipv6Addr = "fd00:244:3::9".parse().unwrap();
    let (v, out) = run(&mut p, &from_client6(dst, 1234, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(eth(&out), (UPLINK_MAC, NODE3_MAC));
    let ip = ip6(&out);
    assert_eq!((ip.source, ip.destination), (o6(NODE_V6), o6(NODE3_V6)));
    assert_checksums(&out);
    let ((sport, _), vni, inner) = unwrap_vxlan(&out);
    assert!(sport >= 49152);
    assert_eq!(vni, 1);
    assert_eq!(eth(&inner), (VTEP_MAC, NODE3_VTEP_MAC));
    assert_eq!(ip6(&inner).hop_limit, 63);
}

#[test]
fn a_packet_too_big_for_the_overlay_gets_frag_needed_or_packet_too_big() {
    let mut p = pipe();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(o4(CLIENT_V4), [10, 244, 2, 7], 64)
        .udp(1, 2)
        .write(&mut f, &[0u8; 1460])
        .unwrap();
    set_df(&mut f, true);
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
    assert_eq!(
        &icmp[8..28],
        &f[14..34],
        "original header quoted, TTL untouched"
    );
    assert!(ones_complement_ok(icmp, &[]));
    // DF clear: dropped (we do not fragment).
    set_df(&mut f, false);
    assert_eq!(
        run(&mut p, &f, CLIENT_PORT, NOW).0,
        Verdict::Drop(DropReason::TooBig)
    );
    let mut f6 = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(o6(CLIENT_V6), o6("fd00:244:2::7".parse().unwrap()), 64)
        .udp(1, 2)
        .write(&mut f6, &[0u8; 1400])
        .unwrap();
    let (v, out) = run(&mut p, &f6, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    let s = etherparse::Icmpv6Slice::from_slice(&out[54..]).unwrap();
    assert_eq!((s.type_u8(), s.code_u8()), (2, 0));
    assert_eq!(u32::from_be_bytes(s.bytes5to8()), 1430);
}

fn set_df(f: &mut [u8], df: bool) {
    if df {
        f[20] |= 0x40;
    } else {
        f[20] &= !0x40;
    }
    f[24] = 0;
    f[25] = 0;
    let h = etherparse::Ipv4HeaderSlice::from_slice(&f[14..])
        .unwrap()
        .to_header();
    let c = h.calc_header_checksum();
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn vxlan_for_a_local_pod_is_decapsulated_and_delivered() {
    let mut p = pipe();
    let inner = tcp4(
        NODE2_VTEP_MAC,
        VTEP_MAC,
        Ipv4Addr::new(10, 244, 2, 7),
        CLIENT_V4,
        80,
        1234,
        64,
    );
    let (v, out) = run(&mut p, &vxlan_from_node2(&inner, 1), UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    assert_eq!(eth(&out), (GATEWAY_MAC, CLIENT_MAC));
    assert_eq!(ip4(&out).time_to_live, 63);
    assert_checksums(&out);
    assert_eq!(p.counters().decap, 1);
    let (v, _) = run(&mut p, &vxlan_from_node2(&inner, 7), UPLINK, NOW);
    assert_eq!(v, Verdict::Drop(DropReason::BadVni));
}

#[test]
fn vxlan_outside_the_fast_decap_shape_is_decapsulated_the_same_way() {
    let inner = tcp4(
        NODE2_VTEP_MAC,
        VTEP_MAC,
        Ipv4Addr::new(10, 244, 2, 7),
        CLIENT_V4,
        80,
        1234,
        64,
    );
    let plain = vxlan_from_node2(&inner, 1);
    let (want_v, want) = run(&mut pipe(), &plain, UPLINK, NOW);
    assert_eq!(want_v, Verdict::Tx(CLIENT_PORT));
    // Ethernet padding after the outer packet is trimmed on either path.
    let mut padded = plain.clone();
    padded.extend_from_slice(&[0xee; 7]);
    assert_eq!(
        run(&mut pipe(), &padded, UPLINK, NOW),
        (want_v, want.clone())
    );
    // Outer IPv4 options (a no-op and end of list) take the general parse.
    let mut opts = plain[..34].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]);
    opts.extend_from_slice(&plain[34..]);
    opts[14] = 0x46;
    let total = u16::from_be_bytes([opts[16], opts[17]]) + 4;
    opts[16..18].copy_from_slice(&total.to_be_bytes());
    opts[24..26].copy_from_slice(&[0, 0]);
    let c = crate::wire::checksum::finish(crate::wire::checksum::sum(&opts[14..38]));
    opts[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run(&mut pipe(), &opts, UPLINK, NOW), (want_v, want));
    // A bad outer header checksum is dropped, not decapsulated.
    let mut bad = plain;
    bad[24] ^= 0x40;
    let mut p = pipe();
    assert_eq!(
        run(&mut p, &bad, UPLINK, NOW).0,
        Verdict::Drop(DropReason::BadIpChecksum)
    );
    assert_eq!(p.counters().decap, 0);
}

// ---------------------------------------------------------------- services

/// Demo tables plus Service `solo` 10.96.0.77:80 -> `backend`:8080.
fn with_solo_service(backend_ip: Ipv4Addr, local: bool) -> Tables {
    let mut b = builder();
    b.add_service(service(
        "solo",
        proto::TCP,
        80,
        &[IpAddr::V4(Ipv4Addr::new(10, 96, 0, 77))],
        vec![backend(IpAddr::V4(backend_ip), 8080, local)],
    ));
    b.build().unwrap()
}

const SOLO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 77);

#[test]
fn pod_to_cluster_ip_is_dnated_to_a_local_backend_and_the_reply_reverse_nated() {
    let mut p = pipe_with(with_solo_service(WEB_LOCAL_V4, true));
    let (v, out) = run(&mut p, &from_client4(SOLO, 40000, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(WEB_LOCAL_PORT));
    let ip = ip4(&out);
    assert_eq!(
        (ip.source, ip.destination),
        (o4(CLIENT_V4), o4(WEB_LOCAL_V4))
    );
    assert_eq!(ports(&out), (40000, 8080));
    assert_checksums(&out);
    let reply = tcp4(
        WEB_LOCAL_MAC,
        GATEWAY_MAC,
        WEB_LOCAL_V4,
        CLIENT_V4,
        8080,
        40000,
        64,
    );
    let (v, out) = run(&mut p, &reply, WEB_LOCAL_PORT, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(SOLO), o4(CLIENT_V4)));
    assert_eq!(ports(&out), (80, 40000));
    assert_checksums(&out);
    assert_eq!((p.counters().ct_new, p.counters().ct_hits), (1, 1));
}

#[test]
fn pod_to_cluster_ip_with_remote_backends_is_encapsulated_and_the_reply_decapsulated() {
    let mut p = pipe();
    let (v, out) = run(&mut p, &from_client4(API_V4, 40001, 443), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, inner) = unwrap_vxlan(&out);
    let ip = ip4(&inner);
    let backend = Ipv4Addr::from(ip.destination);
    assert!(backend == Ipv4Addr::new(10, 244, 2, 10) || backend == Ipv4Addr::new(10, 244, 3, 10));
    assert_eq!(ports(&inner), (40001, 8443));
    assert_eq!(ip.time_to_live, 63);
    assert_checksums(&inner);
    let reply = tcp4(
        NODE2_VTEP_MAC,
        VTEP_MAC,
        backend,
        CLIENT_V4,
        8443,
        40001,
        63,
    );
    let (v, out) = run(&mut p, &vxlan_from_node2(&reply, 1), UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(API_V4), o4(CLIENT_V4)));
    assert_eq!(ports(&out), (443, 40001));
    assert_checksums(&out);
}

#[test]
fn ipv6_pod_to_cluster_ip_is_dnated_and_encapsulated() {
    let mut p = pipe();
    let (v, out) = run(&mut p, &from_client6(API_V6, 40002, 443), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, inner) = unwrap_vxlan(&out);
    assert_eq!(ports(&inner), (40002, 8443));
    assert_checksums(&inner);
}

#[test]
fn a_service_without_endpoints_answers_port_unreachable_from_its_address() {
    let mut p = pipe();
    let f = from_client4(EMPTY_V4, 40003, 80);
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(EMPTY_V4), o4(CLIENT_V4)));
    assert_eq!((out[34], out[35]), (3, 3));
    assert!(ones_complement_ok(&out[34..], &[]));
    let (v, out) = run(&mut p, &from_client6(EMPTY_V6, 40003, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    let s = etherparse::Icmpv6Slice::from_slice(&out[54..]).unwrap();
    assert_eq!((s.type_u8(), s.code_u8()), (1, 4));
    let ip = ip6(&out);
    assert!(s.is_checksum_valid(ip.source, ip.destination));
}

#[test]
fn node_port_from_outside_is_dnated_and_snated_to_the_node_and_the_reply_returns() {
    let mut p = pipe_with(with_solo_service(WEB_LOCAL_V4, true));
    let f = tcp4(
        UPLINK_GATEWAY_MAC,
        UPLINK_MAC,
        CLIENT_EXT,
        NODE_V4,
        55555,
        WEB_NODE_PORT,
        60,
    );
    let (v, out) = run(&mut p, &f, UPLINK, NOW);
    // web's backends: one local, two remote.
    let (inner, local) = match v {
        Verdict::Tx(WEB_LOCAL_PORT) => (out.clone(), true),
        Verdict::Tx(UPLINK) => (unwrap_vxlan(&out).2, false),
        other => panic!("unexpected {other:?}"),
    };
    let ip = ip4(&inner);
    assert_eq!(ip.source, o4(NODE_V4), "SNAT to the node address");
    let (sp, dp) = ports(&inner);
    assert!((61000..=65535).contains(&sp));
    assert_eq!(dp, 8080);
    assert_checksums(&inner);
    let backend = Ipv4Addr::from(ip.destination);
    let reply = tcp4(WEB_LOCAL_MAC, GATEWAY_MAC, backend, NODE_V4, 8080, sp, 64);
    let (v, out) = if local {
        run(&mut p, &reply, WEB_LOCAL_PORT, NOW)
    } else {
        run(&mut p, &vxlan_from_node2(&reply, 1), UPLINK, NOW)
    };
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(eth(&out), (UPLINK_MAC, UPLINK_GATEWAY_MAC));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(NODE_V4), o4(CLIENT_EXT)));
    assert_eq!(ports(&out), (WEB_NODE_PORT, 55555));
    assert_checksums(&out);
}

#[test]
fn external_traffic_policy_local_keeps_the_client_address_and_uses_local_endpoints_only() {
    let mut p = pipe();
    for port in 50000..50016 {
        let f = tcp4(
            UPLINK_GATEWAY_MAC,
            UPLINK_MAC,
            CLIENT_EXT,
            LB_LOCAL_V4,
            port,
            80,
            60,
        );
        let (v, out) = run(&mut p, &f, UPLINK, NOW);
        assert_eq!(v, Verdict::Tx(WEB_LOCAL_PORT));
        let ip = ip4(&out);
        assert_eq!(
            (ip.source, ip.destination),
            (o4(CLIENT_EXT), o4(WEB_LOCAL_V4))
        );
        assert_eq!(ports(&out), (port, 8080));
    }
    let f = tcp4(
        UPLINK_GATEWAY_MAC,
        UPLINK_MAC,
        CLIENT_EXT,
        LB_REMOTE_ONLY_V4,
        50000,
        80,
        60,
    );
    assert_eq!(
        run(&mut p, &f, UPLINK, NOW).0,
        Verdict::Drop(DropReason::NoLocalEndpoint)
    );
}

#[test]
fn internal_traffic_policy_local_without_a_local_endpoint_drops_and_without_any_rejects() {
    let mut b = builder();
    let remote = vec![backend(
        IpAddr::V4(Ipv4Addr::new(10, 244, 2, 2)),
        8080,
        false,
    )];
    let mut s = service("itp", proto::TCP, 80, &[IpAddr::V4(SOLO)], remote);
    s.int_local = true;
    b.add_service(s);
    let none = Ipv4Addr::new(10, 96, 0, 78);
    let mut s = service("itp-empty", proto::TCP, 80, &[IpAddr::V4(none)], Vec::new());
    s.int_local = true;
    b.add_service(s);
    let mut p = pipe_with(b.build().unwrap());
    let (v, _) = run(&mut p, &from_client4(SOLO, 40030, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Drop(DropReason::NoLocalEndpoint));
    let (v, out) = run(&mut p, &from_client4(none, 40031, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply);
    assert_eq!((out[34], out[35]), (3, 3), "port unreachable");
}

#[test]
fn pod_to_outside_is_masqueraded_and_the_reply_translated_back() {
    let mut p = pipe();
    let f = udp4(
        CLIENT_MAC,
        GATEWAY_MAC,
        CLIENT_V4,
        OUTSIDE,
        5353,
        53,
        b"query",
    );
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(eth(&out), (UPLINK_MAC, UPLINK_GATEWAY_MAC));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(NODE_V4), o4(OUTSIDE)));
    let (sp, dp) = ports(&out);
    assert!((61000..=65535).contains(&sp));
    assert_eq!(dp, 53);
    assert_checksums(&out);
    let reply = udp4(
        UPLINK_GATEWAY_MAC,
        UPLINK_MAC,
        OUTSIDE,
        NODE_V4,
        53,
        sp,
        b"answer",
    );
    let (v, out) = run(&mut p, &reply, UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(OUTSIDE), o4(CLIENT_V4)));
    assert_eq!(ports(&out), (53, 5353));
    assert_checksums(&out);
}

#[test]
fn masquerade_takes_the_next_port_when_the_reply_tuple_is_taken() {
    let cfg = NodeConfig {
        snat_ports: (40000, 40001),
        ..node_config()
    };
    let mut b = TablesBuilder::new(cfg);
    for (port, mac, a4) in [
        (1, CLIENT_MAC, CLIENT_V4),
        (2, WEB_LOCAL_MAC, WEB_LOCAL_V4),
        (3, OTHER_MAC, OTHER_V4),
    ] {
        b.add_pod(PodSpec {
            port,
            mac,
            ipv4: Some(a4),
            ipv6: None,
            name: format!("p{port}"),
        });
    }
    let mut p = pipe_with(b.build().unwrap());
    let mut seen = Vec::new();
    for (port, mac, src) in [(1, CLIENT_MAC, CLIENT_V4), (2, WEB_LOCAL_MAC, WEB_LOCAL_V4)] {
        let (v, out) = run(
            &mut p,
            &udp4(mac, GATEWAY_MAC, src, OUTSIDE, 7000, 53, b"q"),
            port,
            NOW,
        );
        assert_eq!(v, Verdict::Tx(UPLINK));
        seen.push(ports(&out).0);
    }
    seen.sort();
    assert_eq!(seen, vec![40000, 40001]);
    let (v, _) = run(
        &mut p,
        &udp4(OTHER_MAC, GATEWAY_MAC, OTHER_V4, OUTSIDE, 7000, 53, b"q"),
        3,
        NOW,
    );
    assert_eq!(v, Verdict::Drop(DropReason::SnatExhausted));
    assert!(p.counters().snat_port_retries >= 1);
}

#[test]
fn a_pod_reaching_its_own_service_is_hairpinned_through_the_gateway_address() {
    let mut p = pipe_with(with_solo_service(CLIENT_V4, true));
    let (v, out) = run(&mut p, &from_client4(SOLO, 40004, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(GATEWAY_V4), o4(CLIENT_V4)));
    let (sp, dp) = ports(&out);
    assert_eq!(dp, 8080);
    assert_checksums(&out);
    let reply = tcp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, GATEWAY_V4, 8080, sp, 64);
    let (v, out) = run(&mut p, &reply, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(SOLO), o4(CLIENT_V4)));
    assert_eq!(ports(&out), (80, 40004));
    assert_checksums(&out);
}

#[test]
fn traffic_not_ours_passes_to_the_kernel() {
    let mut p = pipe();
    let ssh = tcp4(
        UPLINK_GATEWAY_MAC,
        UPLINK_MAC,
        CLIENT_EXT,
        NODE_V4,
        40000,
        22,
        64,
    );
    assert_eq!(run(&mut p, &ssh, UPLINK, NOW).0, Verdict::Pass);
    assert_eq!(
        run(
            &mut p,
            &from_client4(NODE_V4, 40000, 10250),
            CLIENT_PORT,
            NOW
        )
        .0,
        Verdict::Pass
    );
    assert_eq!(
        run(
            &mut p,
            &arp_request(NODE2_MAC, NODE2_V4, NODE_V4),
            UPLINK,
            NOW
        )
        .0,
        Verdict::Pass
    );
}

#[test]
fn ipv6_node_port_from_outside_is_snated_to_the_node_ipv6_address() {
    let mut p = pipe();
    let client: Ipv6Addr = "2001:db8::5".parse().unwrap();
    let f = tcp6(
        UPLINK_GATEWAY_MAC,
        UPLINK_MAC,
        client,
        NODE_V6,
        55555,
        WEB_NODE_PORT,
        60,
    );
    let (v, out) = run(&mut p, &f, UPLINK, NOW);
    let inner = match v {
        Verdict::Tx(WEB_LOCAL_PORT) => out.clone(),
        Verdict::Tx(UPLINK) => unwrap_vxlan(&out).2,
        other => panic!("unexpected {other:?}"),
    };
    let ip = ip6(&inner);
    assert_eq!(ip.source, o6(NODE_V6));
    assert_eq!(ports(&inner).1, 8080);
    assert_checksums(&inner);
}

#[test]
fn a_pod_reaching_a_load_balancer_ip_may_use_any_endpoint_and_keeps_its_address() {
    // lb-remote-only has externalTrafficPolicy Local and no local endpoint: from
    // outside it drops, from a pod it is served by the remote one.
    let mut p = pipe();
    let (v, out) = run(
        &mut p,
        &from_client4(LB_REMOTE_ONLY_V4, 40010, 80),
        CLIENT_PORT,
        NOW,
    );
    assert_eq!(v, Verdict::Tx(UPLINK));
    let (_, _, inner) = unwrap_vxlan(&out);
    let ip = ip4(&inner);
    assert_eq!(
        (ip.source, ip.destination),
        (o4(CLIENT_V4), [10, 244, 2, 2])
    );
    assert_checksums(&inner);
}

#[test]
fn a_pod_reaching_its_nodes_node_port_is_dnated_without_snat() {
    let mut p = pipe_with(with_solo_service(WEB_LOCAL_V4, true));
    let (v, out) = run(
        &mut p,
        &from_client4(NODE_V4, 40011, WEB_NODE_PORT),
        CLIENT_PORT,
        NOW,
    );
    let inner = match v {
        Verdict::Tx(WEB_LOCAL_PORT) => out,
        Verdict::Tx(UPLINK) => unwrap_vxlan(&out).2,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(ip4(&inner).source, o4(CLIENT_V4));
    assert_eq!(ports(&inner), (40011, 8080));
}

#[test]
fn session_affinity_sends_every_connection_of_a_client_to_one_backend() {
    let mut b = builder();
    let mut s = service(
        "sticky",
        proto::TCP,
        80,
        &[IpAddr::V4(SOLO)],
        (2..12)
            .map(|h| backend(IpAddr::V4(Ipv4Addr::new(10, 244, 2, h)), 8080, false))
            .collect(),
    );
    s.affinity_timeout_s = Some(60);
    b.add_service(s);
    let mut p = pipe_with(b.build().unwrap());
    let mut seen = std::collections::HashSet::new();
    for sp in 41000..41020 {
        let (v, out) = run(&mut p, &from_client4(SOLO, sp, 80), CLIENT_PORT, NOW);
        assert_eq!(v, Verdict::Tx(UPLINK));
        seen.insert(ip4(&unwrap_vxlan(&out).2).destination);
    }
    assert_eq!(seen.len(), 1, "one backend for the client: {seen:?}");
}

#[test]
fn pod_ping_to_outside_is_masqueraded_by_identifier_and_the_reply_returns() {
    let mut p = pipe();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv4(o4(CLIENT_V4), o4(OUTSIDE), 64)
        .icmpv4_echo_request(0x77, 1)
        .write(&mut f, b"ping")
        .unwrap();
    let (v, out) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip4(&out).source, o4(NODE_V4));
    assert!(ones_complement_ok(&out[34..], &[]));
    let ident = u16::from_be_bytes([out[38], out[39]]);
    let mut reply = Vec::new();
    PacketBuilder::ethernet2(UPLINK_GATEWAY_MAC, UPLINK_MAC)
        .ipv4(o4(OUTSIDE), o4(NODE_V4), 60)
        .icmpv4_echo_reply(ident, 1)
        .write(&mut reply, b"ping")
        .unwrap();
    let (v, out) = run(&mut p, &reply, UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    assert_eq!(ip4(&out).destination, o4(CLIENT_V4));
    assert_eq!(u16::from_be_bytes([out[38], out[39]]), 0x77);
    assert!(ones_complement_ok(&out[34..], &[]));
}

// ---------------------------------------------------------------- ICMP errors

#[test]
fn an_icmp_error_about_a_masqueraded_flow_is_translated_to_the_pod() {
    let mut p = pipe();
    let f = udp4(
        CLIENT_MAC,
        GATEWAY_MAC,
        CLIENT_V4,
        OUTSIDE,
        5353,
        53,
        b"query",
    );
    let (_, sent) = run(&mut p, &f, CLIENT_PORT, NOW);
    let quoted = &sent[14..14 + 28];
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(UPLINK_GATEWAY_MAC, UPLINK_MAC)
        .ipv4(o4(router), o4(NODE_V4), 64)
        .icmpv4_raw(3, 4, [0, 0, 0x05, 0x78])
        .write(&mut err, quoted)
        .unwrap();
    let (v, out) = run(&mut p, &err, UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(router), o4(CLIENT_V4)));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    let icmp = &out[34..];
    assert!(ones_complement_ok(icmp, &[]), "ICMP checksum");
    let emb = etherparse::Ipv4HeaderSlice::from_slice(&icmp[8..])
        .unwrap()
        .to_header();
    assert_eq!((emb.source, emb.destination), (o4(CLIENT_V4), o4(OUTSIDE)));
    assert_eq!(
        emb.header_checksum,
        emb.calc_header_checksum(),
        "embedded IP checksum"
    );
    assert_eq!(
        &icmp[28..32],
        &[0x14, 0xe9, 0, 53],
        "embedded ports: 5353 -> 53"
    );
    assert_eq!(
        &icmp[34..36],
        &f[40..42],
        "embedded UDP checksum back to the original"
    );
    assert_eq!(p.counters().icmp_errors_translated, 1);
}

#[test]
fn an_icmp_error_from_a_backend_is_translated_as_from_the_service() {
    // The backend answers port unreachable: the client must see it from the VIP,
    // about its own packet to the VIP.
    let mut b = builder();
    let backends = vec![backend(IpAddr::V4(WEB_LOCAL_V4), 8080, true)];
    b.add_service(service(
        "solo-udp",
        proto::UDP,
        80,
        &[IpAddr::V4(SOLO)],
        backends,
    ));
    let mut p = pipe_with(b.build().unwrap());
    let f = udp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, SOLO, 40020, 80, b"x");
    let (v, sent) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(WEB_LOCAL_PORT));
    let mut err = Vec::new();
    PacketBuilder::ethernet2(WEB_LOCAL_MAC, GATEWAY_MAC)
        .ipv4(o4(WEB_LOCAL_V4), o4(CLIENT_V4), 64)
        .icmpv4_raw(3, 3, [0; 4])
        .write(&mut err, &sent[14..])
        .unwrap();
    let (v, out) = run(&mut p, &err, WEB_LOCAL_PORT, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip4(&out);
    assert_eq!((ip.source, ip.destination), (o4(SOLO), o4(CLIENT_V4)));
    let icmp = &out[34..];
    assert!(ones_complement_ok(icmp, &[]));
    // The quoted packet is the client's (with the TTL the backend saw).
    assert_eq!(
        &icmp[8 + 12..],
        &f[14 + 12..],
        "addresses, ports, checksum and payload"
    );
    let q = etherparse::Ipv4HeaderSlice::from_slice(&icmp[8..])
        .unwrap()
        .to_header();
    assert_eq!(q.header_checksum, q.calc_header_checksum());
}

#[test]
fn an_icmpv6_error_about_a_masqueraded_flow_is_translated_with_its_pseudo_header() {
    let mut p = pipe();
    let outside: Ipv6Addr = "2001:db8::53".parse().unwrap();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(o6(CLIENT_V6), o6(outside), 64)
        .udp(5353, 53)
        .write(&mut f, b"query")
        .unwrap();
    let (v, sent) = run(&mut p, &f, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&sent).source, o6(NODE_V6));
    let router: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut err = Vec::new();
    PacketBuilder::ethernet2(UPLINK_GATEWAY_MAC, UPLINK_MAC)
        .ipv6(o6(router), o6(NODE_V6), 64)
        .icmpv6_raw(1, 4, [0; 4])
        .write(&mut err, &sent[14..])
        .unwrap();
    let (v, out) = run(&mut p, &err, UPLINK, NOW);
    assert_eq!(v, Verdict::Tx(CLIENT_PORT));
    let ip = ip6(&out);
    assert_eq!((ip.source, ip.destination), (o6(router), o6(CLIENT_V6)));
    let s = etherparse::Icmpv6Slice::from_slice(&out[54..]).unwrap();
    assert!(
        s.is_checksum_valid(ip.source, ip.destination),
        "ICMPv6 checksum over the new pseudo-header"
    );
    let quoted = &out[54 + 8..];
    let q = etherparse::Ipv6HeaderSlice::from_slice(quoted).unwrap();
    assert_eq!((q.source(), q.destination()), (o6(CLIENT_V6), o6(outside)));
    assert_eq!(
        &quoted[40..48],
        &f[54..62],
        "quoted UDP header back to the original, checksum included"
    );
}

// ---------------------------------------------------------------- fragments

/// Fragments of a UDP datagram from the client to `dst`, split at 24 bytes of
/// payload: (first, later).
fn udp_fragments(dst: Ipv4Addr, ident: u16) -> (Vec<u8>, Vec<u8>) {
    let whole = udp4(
        CLIENT_MAC,
        GATEWAY_MAC,
        CLIENT_V4,
        dst,
        5353,
        53,
        &[7u8; 40],
    );
    let l4 = &whole[34..];
    let mk = |data: &[u8], off: u16, more: bool| {
        let mut h = etherparse::Ipv4Header::new(
            data.len() as u16,
            64,
            etherparse::IpNumber::UDP,
            o4(CLIENT_V4),
            o4(dst),
        )
        .unwrap();
        h.identification = ident;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new(off / 8).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut v = whole[..14].to_vec();
        h.write(&mut v).unwrap();
        v.extend_from_slice(data);
        v
    };
    (mk(&l4[..24], 0, true), mk(&l4[24..], 24, false))
}

#[test]
fn a_later_fragment_arriving_first_is_stashed_then_released_translated() {
    let mut p = pipe();
    let (first, later) = udp_fragments(OUTSIDE, 0x1234);
    assert_eq!(
        run(&mut p, &later, CLIENT_PORT, NOW).0,
        Verdict::Drop(DropReason::FragStashed)
    );
    assert_eq!(p.stashed(), 1);
    let (v, out) = run(&mut p, &first, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip4(&out).source, o4(NODE_V4));
    let mut released = Vec::new();
    p.take_released(&mut released);
    assert_eq!(released.len(), 1);
    let (bytes, v) = &released[0];
    assert_eq!(*v, Verdict::Tx(UPLINK));
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&bytes[14..])
        .unwrap()
        .to_header();
    assert_eq!((ip.source, ip.destination), (o4(NODE_V4), o4(OUTSIDE)));
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(ip.fragment_offset.value(), 3);
    assert_eq!(p.stashed(), 0);
    // A later fragment after its first follows directly.
    let (first2, later2) = udp_fragments(OUTSIDE, 0x1235);
    assert_eq!(
        run(&mut p, &first2, CLIENT_PORT, NOW).0,
        Verdict::Tx(UPLINK)
    );
    let (v, out) = run(&mut p, &later2, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip4(&out).source, o4(NODE_V4));
}

#[test]
fn a_stashed_fragment_whose_first_never_comes_times_out_counted() {
    let mut p = pipe();
    let (_, later) = udp_fragments(OUTSIDE, 0x4321);
    run(&mut p, &later, CLIENT_PORT, NOW);
    assert_eq!(p.stashed(), 1);
    run(
        &mut p,
        &from_client4(WEB_LOCAL_V4, 1, 2),
        CLIENT_PORT,
        NOW + FRAG_TIMEOUT_NS,
    );
    assert_eq!(p.stashed(), 0);
    assert_eq!(p.counters().drop_count(DropReason::FragTimeout), 1);
}

/// IPv6 fragments (RFC 8200 fragment header, built by hand) of a UDP datagram
/// from the client to `dst`: (first, later).
fn udp6_fragments(dst: Ipv6Addr, ident: u32) -> (Vec<u8>, Vec<u8>) {
    let mut whole = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, GATEWAY_MAC)
        .ipv6(o6(CLIENT_V6), o6(dst), 64)
        .udp(5353, 53)
        .write(&mut whole, &[9u8; 40])
        .unwrap();
    let l4 = &whole[54..];
    let mk = |data: &[u8], off: u16, more: bool| {
        let mut v = whole[..54].to_vec();
        v[18..20].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        v[20] = 44;
        v.push(proto::UDP);
        v.push(0);
        v.extend_from_slice(&(off | more as u16).to_be_bytes());
        v.extend_from_slice(&ident.to_be_bytes());
        v.extend_from_slice(data);
        v
    };
    (mk(&l4[..24], 0, true), mk(&l4[24..], 24, false))
}

#[test]
fn ipv6_fragments_follow_the_first_fragments_snat_in_any_order() {
    let mut p = pipe();
    let outside: Ipv6Addr = "2001:db8::53".parse().unwrap();
    let (first, later) = udp6_fragments(outside, 0xabcdef);
    assert_eq!(
        run(&mut p, &later, CLIENT_PORT, NOW).0,
        Verdict::Drop(DropReason::FragStashed)
    );
    let (v, out) = run(&mut p, &first, CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Tx(UPLINK));
    assert_eq!(ip6(&out).source, o6(NODE_V6));
    let mut released = Vec::new();
    p.take_released(&mut released);
    assert_eq!(released.len(), 1);
    let (bytes, v) = &released[0];
    assert_eq!(*v, Verdict::Tx(UPLINK));
    let ip = etherparse::Ipv6HeaderSlice::from_slice(&bytes[14..]).unwrap();
    assert_eq!((ip.source(), ip.destination()), (o6(NODE_V6), o6(outside)));
    assert_eq!(ip.hop_limit(), 63);
    assert_eq!(&bytes[56..58], &[0, 24], "offset 24, last fragment");
}

// ---------------------------------------------------------------- batches

#[test]
fn a_batch_of_mixed_frames_gets_one_verdict_each() {
    let mut p = pipe();
    let inputs = [
        (from_client4(WEB_LOCAL_V4, 1, 2), CLIENT_PORT),
        (from_client4(API_V4, 3, 443), CLIENT_PORT),
        (
            tcp4(CLIENT_MAC, GATEWAY_MAC, OTHER_V4, WEB_LOCAL_V4, 1, 2, 64),
            CLIENT_PORT,
        ),
        (arp_request(CLIENT_MAC, CLIENT_V4, GATEWAY_V4), CLIENT_PORT),
    ];
    let mut bufs: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(b, _)| {
            let mut v = vec![0u8; FRAME_SIZE];
            v[HEADROOM..HEADROOM + b.len()].copy_from_slice(b);
            v
        })
        .collect();
    let mut frames: Vec<Frame> = bufs
        .iter_mut()
        .zip(inputs.iter())
        .map(|(buf, (b, port))| Frame::new(buf, HEADROOM, b.len(), *port))
        .collect();
    let mut v = vec![Verdict::Pass; frames.len()];
    p.process(&mut frames, &mut v, NOW);
    assert_eq!(
        v,
        vec![
            Verdict::Tx(WEB_LOCAL_PORT),
            Verdict::Tx(UPLINK),
            Verdict::Drop(DropReason::Spoofed),
            Verdict::Reply
        ]
    );
    let c = p.counters();
    assert_eq!((c.rx, c.tx, c.reply, c.dropped), (4, 2, 1, 1));
}

#[test]
fn arbitrary_bytes_never_panic_and_always_get_a_verdict() {
    use proptest::prelude::*;
    let tables = Arc::new(demo_tables().unwrap());
    let p = std::cell::RefCell::new(Pipeline::standalone(tables));
    let seeds: Vec<Vec<u8>> = vec![
        from_client4(API_V4, 1, 443),
        from_client6(API_V6, 1, 443),
        vxlan_from_node2(&from_client4(CLIENT_V4, 1, 2), 1),
        neighbor_solicit(CLIENT_MAC, CLIENT_V6, GATEWAY_V6, 255),
        udp_fragments(OUTSIDE, 9).1,
    ];
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    runner
        .run(
            &(
                0usize..seeds.len(),
                proptest::collection::vec((0usize..200, any::<u8>()), 0..8),
                0usize..300,
                0u16..5,
            ),
            |(seed, edits, cut, port)| {
                let mut b = seeds[seed].clone();
                for (i, x) in edits {
                    if let Some(y) = b.get_mut(i) {
                        *y = x;
                    }
                }
                b.truncate(b.len().saturating_sub(cut % 40));
                let _ = run(&mut p.borrow_mut(), &b, port, NOW);
                Ok(())
            },
        )
        .unwrap();
    assert!(p.borrow().counters().rx > 0);
}

mod drops;
mod rewrite;
mod service_counters;

#[test]
fn a_pipeline_can_move_to_its_worker_thread() {
    fn movable<T: Send>() {}
    movable::<Pipeline>();
}

#[test]
fn new_tables_replace_cached_routes() {
    let mut p = pipe();
    let dst = Ipv4Addr::new(10, 244, 2, 7);
    assert_eq!(
        run(&mut p, &client_udp_to(dst), CLIENT_PORT, NOW).0,
        Verdict::Tx(UPLINK)
    );
    // The pod at 10.244.2.7 is now on this node, on port 7.
    let mut b = builder();
    b.add_pod(PodSpec {
        port: 7,
        mac: [2, 0, 0, 0, 0, 7],
        ipv4: Some(dst),
        ipv6: None,
        name: "moved".into(),
    });
    p.set_tables(Arc::new(b.build().unwrap()));
    assert_eq!(
        run(&mut p, &client_udp_to(dst), CLIENT_PORT, NOW).0,
        Verdict::Tx(7)
    );
}

fn client_udp_to(dst: Ipv4Addr) -> Vec<u8> {
    udp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, dst, 5000, 5000, b"x")
}
