//! Properties of the whole pipeline: no input panics it; encapsulation on one
//! node then decapsulation on the other gives back the original packet; NAT
//! then reverse NAT is the identity, byte for byte, with valid checksums.
mod common;

use common::*;
use dataplane::pipeline::Verdict;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn fam() -> impl Strategy<Value = Fam> {
    prop_oneof![Just(Fam::V4), Just(Fam::V6)]
}

/// Valid frames of every kind the pipeline handles, as mutation seeds.
fn seeds() -> Vec<(u16, Vec<u8>)> {
    let mut v = Vec::new();
    for f in [Fam::V4, Fam::V6] {
        v.push((POD1_PORT, Pkt::from_pod1(f, f.pod2(), udp(1, 2)).build()));
        v.push((
            POD1_PORT,
            Pkt::from_pod1(f, f.remote_pod(0), tcp(3, 4, tcpf::SYN)).build(),
        ));
        v.push((
            POD1_PORT,
            Pkt::from_pod1(f, f.vip(svc::WEB), tcp(5, 80, tcpf::SYN)).build(),
        ));
        v.push((
            POD1_PORT,
            Pkt::from_pod1(f, f.vip(svc::DNS), udp(6, 53)).build(),
        ));
        v.push((
            POD1_PORT,
            Pkt::from_pod1(f, f.outside(), L4::EchoRequest { id: 1, seq: 2 }).build(),
        ));
        v.push((
            UPLINK,
            Pkt::from_uplink(
                f.client(),
                f.node_a(),
                tcp(7, f.node_port(svc::WEB_NODEPORT), tcpf::SYN),
            )
            .build(),
        ));
        let inner = inner_from_b(f.remote_pod(0), f.pod1(), udp(8, 9)).build();
        v.push((UPLINK, vxlan_from_b(f, 50000, VNI, &inner)));
        let q = Pkt::from_pod1(f, f.outside(), udp(10, 53)).build();
        let (ty, code) = if f == Fam::V4 { (3, 3) } else { (1, 4) };
        v.push((
            UPLINK,
            icmp_error(
                ROUTER_MAC,
                A_UPLINK_MAC,
                f.router(),
                f.node_a(),
                ty,
                code,
                [0; 4],
                &q[14..],
            ),
        ));
        let big = Pkt::from_pod1(f, f.vip(svc::DNS), udp(11, 53))
            .ip_len(600)
            .build();
        for fr in fragment(&big, 256, 77) {
            v.push((POD1_PORT, fr));
        }
    }
    v.push((
        POD1_PORT,
        arp_request(POD1_MAC, Fam::V4.pod1(), Fam::V4.gw()),
    ));
    v.push((
        POD1_PORT,
        neighbor_solicit(POD1_MAC, Fam::V6.pod1(), Fam::V6.gw()),
    ));
    v
}

#[test]
fn arbitrary_bytes_on_any_port_never_panic_the_pipeline() {
    let node = RefCell::new(node_a());
    let strat = (0u16..4, proptest::collection::vec(any::<u8>(), 0..400));
    runner(20000)
        .run(&strat, |(port, bytes)| {
            let out = node.borrow_mut().send(port, &bytes);
            prop_assert!(out.bytes.len() <= 2048);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_valid_frames_never_panic_the_pipeline() {
    let seeds = seeds();
    let node = RefCell::new(node_a());
    let strat = (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    runner(20000)
        .run(&strat, |(i, edits, cut, do_cut)| {
            let (port, mut frame) = seeds[i].clone();
            for (at, byte) in edits {
                let at = at.index(frame.len());
                frame[at] = byte;
            }
            if do_cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            let mut n = node.borrow_mut();
            let out = n.send(port, &frame);
            prop_assert!(out.bytes.len() <= 2048);
            // A whole batch of the same frame too (the batch code path).
            let outs = n.send_batch(&vec![(port, frame.clone()); 8]);
            prop_assert_eq!(outs.len(), 8);
            n.released();
            n.now += 1_000_000;
            Ok(())
        })
        .unwrap();
}

/// The frame `p` after crossing `hops` routers: TTL/hop limit lower, IPv4
/// header checksum recomputed, Ethernet as given.
fn after_hops(p: &Pkt, hops: u8, eth_src: dataplane::Mac, eth_dst: dataplane::Mac) -> Vec<u8> {
    let mut q = p.clone();
    q.ttl -= hops;
    q.eth_src = eth_src;
    q.eth_dst = eth_dst;
    q.build()
}

fn l4_strategy() -> impl Strategy<Value = L4> {
    prop_oneof![
        (1024u16.., 1u16..).prop_map(|(s, d)| udp(s, d)),
        (
            1024u16..,
            1u16..,
            prop_oneof![
                Just(tcpf::SYN),
                Just(tcpf::ACK),
                Just(tcpf::ACK | tcpf::PSH),
                Just(tcpf::FIN | tcpf::ACK)
            ]
        )
            .prop_map(|(s, d, fl)| tcp(s, d, fl)),
        (any::<u16>(), any::<u16>()).prop_map(|(id, seq)| L4::EchoRequest { id, seq }),
    ]
}

#[test]
fn encap_on_one_node_then_decap_on_the_other_gives_back_the_original_packet() {
    let nodes = RefCell::new((node_a(), node_b()));
    let strat = (
        fam(),
        l4_strategy(),
        proptest::collection::vec(any::<u8>(), 0..1200),
        3u8..=255,
    );
    runner(1000)
        .run(&strat, |(f, l4, payload, ttl)| {
            let (a, b) = &mut *nodes.borrow_mut();
            let p = Pkt::from_pod1(f, f.remote_pod(0), l4)
                .ttl(ttl)
                .payload(&payload);
            let out = a.send(POD1_PORT, &p.build());
            prop_assert_eq!(out.verdict, Verdict::Tx(UPLINK));
            let delivered = b.send(UPLINK, &out.bytes);
            prop_assert_eq!(delivered.verdict, Verdict::Tx(BPOD_PORT));
            let want = after_hops(&p, 2, B_GW_MAC, BPOD_MAC);
            prop_assert_eq!(delivered.bytes, want);
            Ok(())
        })
        .unwrap();
}

#[test]
fn dnat_then_reverse_nat_is_the_identity_with_valid_checksums() {
    let node = RefCell::new(node_a());
    let strat = (
        fam(),
        any::<bool>(),
        1024u16..,
        proptest::collection::vec(any::<u8>(), 0..1000),
        proptest::collection::vec(any::<u8>(), 0..1000),
    );
    runner(1000)
        .run(&strat, |(f, use_tcp, sport, q, r)| {
            let mut a = node.borrow_mut();
            a.now += 1_000;
            let (vip, vport, bport, fwd, back) = if use_tcp {
                (
                    f.vip(svc::WEB),
                    80,
                    8080,
                    tcp(sport, 80, tcpf::SYN),
                    tcp(8080, sport, tcpf::SYN | tcpf::ACK),
                )
            } else {
                (f.vip(svc::DNS), 53, 5353, udp(sport, 53), udp(5353, sport))
            };
            let p = Pkt::from_pod1(f, vip, fwd).payload(&q);
            let out = a.send(POD1_PORT, &p.build());
            prop_assert_eq!(out.verdict, Verdict::Tx(POD2_PORT));
            // The forward translation, byte for byte.
            let mut want = p.clone();
            want.dst = f.pod2();
            want.l4 = match fwd {
                L4::Tcp { sport, flags, .. } => tcp(sport, bport, flags),
                _ => udp(sport, bport),
            };
            prop_assert_eq!(&out.bytes, &after_hops(&want, 1, A_GW_MAC, POD2_MAC));

            let reply = Pkt::from_pod2(f, f.pod1(), back).payload(&r);
            let out = a.send(POD2_PORT, &reply.build());
            prop_assert_eq!(out.verdict, Verdict::Tx(POD1_PORT));
            let mut want = reply.clone();
            want.src = vip;
            want.l4 = match back {
                L4::Tcp { flags, .. } => tcp(vport, sport, flags),
                _ => udp(vport, sport),
            };
            prop_assert_eq!(&out.bytes, &after_hops(&want, 1, A_GW_MAC, POD1_MAC));
            Ok(())
        })
        .unwrap();
}

fn outside_addr(f: Fam, r: u32) -> IpAddr {
    match f {
        Fam::V4 => IpAddr::V4(Ipv4Addr::from(0x0800_0000 | (r & 0x00ff_ffff))),
        Fam::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x4860,
            (r >> 16) as u16,
            r as u16,
            0,
            0,
            0,
            0x88,
        )),
    }
}

#[test]
fn masquerade_then_reply_is_the_identity_with_valid_checksums() {
    let node = RefCell::new(node_a());
    let strat = (
        fam(),
        any::<u32>(),
        1024u16..,
        1u16..,
        proptest::collection::vec(any::<u8>(), 0..600),
    );
    runner(1000)
        .run(&strat, |(f, r, sport, dport, payload)| {
            let mut a = node.borrow_mut();
            a.now += 1_000;
            let dst = outside_addr(f, r);
            let p = Pkt::from_pod1(f, dst, udp(sport, dport)).payload(&payload);
            let out = a.send(POD1_PORT, &p.build());
            prop_assert_eq!(out.verdict, Verdict::Tx(UPLINK));
            let s = parse(&out.bytes);
            prop_assert_eq!(s.src, f.node_a());
            prop_assert!((SNAT_PORTS.0..=SNAT_PORTS.1).contains(&s.sport));
            let mut want = p.clone();
            want.src = f.node_a();
            want.l4 = udp(s.sport, dport);
            prop_assert_eq!(&out.bytes, &after_hops(&want, 1, A_UPLINK_MAC, ROUTER_MAC));

            let reply = Pkt::from_uplink(dst, f.node_a(), udp(dport, s.sport)).payload(&payload);
            let back = a.send(UPLINK, &reply.build());
            prop_assert_eq!(back.verdict, Verdict::Tx(POD1_PORT));
            let mut want = reply.clone();
            want.dst = f.pod1();
            want.l4 = udp(dport, sport);
            prop_assert_eq!(&back.bytes, &after_hops(&want, 1, A_GW_MAC, POD1_MAC));
            Ok(())
        })
        .unwrap();
}

#[test]
fn nodeport_dnat_snat_then_reply_is_the_identity_with_valid_checksums() {
    let node = RefCell::new(node_a());
    let strat = (
        fam(),
        any::<u32>(),
        1024u16..,
        proptest::collection::vec(any::<u8>(), 0..600),
    );
    runner(1000)
        .run(&strat, |(f, r, sport, payload)| {
            let mut a = node.borrow_mut();
            a.now += 1_000;
            let client = outside_addr(f, r);
            let np = f.node_port(svc::WEB_NODEPORT);
            let p =
                Pkt::from_uplink(client, f.node_a(), tcp(sport, np, tcpf::SYN)).payload(&payload);
            let out = a.send(UPLINK, &p.build());
            prop_assert_eq!(out.verdict, Verdict::Tx(POD2_PORT));
            let s = parse(&out.bytes);
            let mut want = p.clone();
            want.src = f.node_a();
            want.dst = f.pod2();
            want.l4 = tcp(s.sport, 8080, tcpf::SYN);
            prop_assert_eq!(&out.bytes, &after_hops(&want, 1, A_GW_MAC, POD2_MAC));

            let reply = Pkt::from_pod2(f, f.node_a(), tcp(8080, s.sport, tcpf::SYN | tcpf::ACK))
                .payload(&payload);
            let back = a.send(POD2_PORT, &reply.build());
            prop_assert_eq!(back.verdict, Verdict::Tx(UPLINK));
            let mut want = reply.clone();
            want.src = f.node_a();
            want.dst = client;
            want.l4 = tcp(np, sport, tcpf::SYN | tcpf::ACK);
            prop_assert_eq!(&back.bytes, &after_hops(&want, 1, A_UPLINK_MAC, ROUTER_MAC));
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_batch_gives_the_same_results_as_its_frames_one_by_one() {
    // Fragments are left out: releasing stashed fragments may legitimately
    // happen at a different time within a batch.
    let seeds: Vec<_> = seeds()
        .into_iter()
        .filter(|(_, f)| !is_fragment(f))
        .collect();
    let strat = proptest::collection::vec(0..seeds.len(), 1..=64);
    runner(256)
        .run(&strat, |picks| {
            let frames: Vec<_> = picks.iter().map(|&i| seeds[i].clone()).collect();
            let mut one = node_a();
            let mut all = node_a();
            let singles: Vec<Out> = frames.iter().map(|(p, f)| one.send(*p, f)).collect();
            let batch = all.send_batch(&frames);
            for (i, (s, b)) in singles.iter().zip(&batch).enumerate() {
                prop_assert_eq!(s.verdict, b.verdict, "frame {} ({:?})", i, picks[i]);
                prop_assert_eq!(&s.bytes, &b.bytes, "frame {} ({:?})", i, picks[i]);
            }
            Ok(())
        })
        .unwrap();
}

/// True for IPv4/IPv6 fragments.
fn is_fragment(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let s = parse(frame);
            s.frag_offset != 0 || s.more_frags
        }
        0x86dd => parse(frame).frag6.is_some(),
        _ => false,
    }
}

/// Addresses a random packet may carry: every kind the pipeline tells apart.
fn interesting_addrs(f: Fam) -> Vec<IpAddr> {
    let mut v = vec![
        f.pod1(),
        f.pod2(),
        f.gw(),
        f.node_a(),
        f.node_b(),
        f.outside(),
        f.client(),
        f.router(),
        f.unused_local(),
    ];
    v.extend((0..4).map(|n| f.remote_pod(n)));
    for s in [
        svc::WEB,
        svc::REMOTE,
        svc::EMPTY,
        svc::LOCAL,
        svc::LOCALNONE,
        svc::MULTI,
        svc::DNS,
        svc::STICKY,
    ] {
        v.push(f.vip(s));
    }
    for e in [
        svc::WEB_EXT,
        svc::WEB_LB,
        svc::LOCAL_EXT,
        svc::LOCALNONE_EXT,
    ] {
        v.push(f.ext_ip(e));
    }
    v
}

fn interesting_port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(53u16),
        Just(80),
        Just(8080),
        Just(5353),
        Just(VXLAN_PORT),
        Just(svc::WEB_NODEPORT),
        Just(svc::REMOTE_NODEPORT),
        Just(svc::LOCAL_NODEPORT),
        Just(svc::LOCALNONE_NODEPORT),
        Just(svc::DNS_NODEPORT),
        Just(svc::WEB_NODEPORT + 100),
        Just(svc::DNS_NODEPORT + 100),
        Just(SNAT_PORTS.0),
        any::<u16>(),
    ]
}

#[test]
fn every_frame_the_pipeline_sends_has_valid_checksums() {
    let node = RefCell::new(node_a());
    let strat = (
        fam(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        interesting_port(),
        interesting_port(),
        0u8..4,
        0u8..3,
        1u8..=255,
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    runner(5000)
        .run(
            &strat,
            |(f, si, di, sport, dport, kind, ingress, ttl, payload)| {
                let addrs = interesting_addrs(f);
                let (src, dst) = (*si.get(&addrs), *di.get(&addrs));
                let l4 = match kind {
                    0 => udp(sport, dport),
                    1 => tcp(sport, dport, tcpf::SYN),
                    2 => tcp(sport, dport, tcpf::ACK | tcpf::PSH),
                    _ => L4::EchoRequest {
                        id: sport,
                        seq: dport,
                    },
                };
                let (port, frame) = match ingress {
                    0 => {
                        let p = Pkt::new(POD1_MAC, A_GW_MAC, src, dst, l4);
                        (POD1_PORT, p.ttl(ttl).payload(&payload).build())
                    }
                    1 => {
                        let p = Pkt::from_uplink(src, dst, l4);
                        (UPLINK, p.ttl(ttl).payload(&payload).build())
                    }
                    _ => {
                        let inner = inner_from_b(src, dst, l4).ttl(ttl).payload(&payload);
                        (UPLINK, vxlan_from_b(Fam::V4, 50000, VNI, &inner.build()))
                    }
                };
                let mut n = node.borrow_mut();
                n.now += 1_000_000;
                let out = n.send(port, &frame);
                if let Verdict::Tx(_) | Verdict::Reply = out.verdict {
                    // `parse` asserts every checksum.
                    let s = parse(&out.bytes);
                    prop_assert!(s.ttl > 0, "a forwarded packet never leaves with TTL 0");
                    // Encapsulated toward node B: the inner frame too.
                    if s.eth.destination == B_UPLINK_MAC {
                        let inner = parse(&s.vxlan().2);
                        prop_assert!(inner.ttl > 0);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
