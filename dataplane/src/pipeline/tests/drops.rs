//! Every drop reason is reachable: a crafted frame (or sequence) per reason, and
//! its counter must move. The `match` has no wildcard, so a new reason does not
//! compile until it has a case here.

use super::*;
use crate::state::RemoteNodeSpec;

fn client_udp(dst: Ipv4Addr) -> Vec<u8> {
    udp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, dst, 5000, 53, b"x")
}

/// Drives frames to `r`; returns the pipeline that counted it.
fn reach(r: DropReason) -> Pipeline {
    let mut p = pipe();
    let c = CLIENT_PORT;
    match r {
        DropReason::UnknownPort => {
            run(&mut p, &from_client4(WEB_LOCAL_V4, 1, 2), 77, NOW);
        }
        DropReason::Truncated => {
            run(&mut p, &[0u8; 10], c, NOW);
        }
        DropReason::VlanOnPodPort => {
            let mut f = from_client4(WEB_LOCAL_V4, 1, 2);
            f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
            run(&mut p, &f, c, NOW);
        }
        DropReason::UnknownEthertype => {
            let mut f = from_client4(WEB_LOCAL_V4, 1, 2);
            f[12..14].copy_from_slice(&[0x88, 0xcc]);
            run(&mut p, &f, c, NOW);
        }
        DropReason::BadIpHeader => {
            let mut f = from_client4(WEB_LOCAL_V4, 1, 2);
            f[14] = 0x55;
            run(&mut p, &f, c, NOW);
        }
        DropReason::BadIpv6ExtHeader => {
            let mut f = from_client6(WEB_LOCAL_V6, 1, 2);
            f[20] = 0; // next header: hop-by-hop, claiming a length past the end
            f[54 + 1] = 200;
            run(&mut p, &f, c, NOW);
        }
        DropReason::ArpMalformed => {
            let mut f = arp_request(CLIENT_MAC, CLIENT_V4, GATEWAY_V4);
            f[15] = 6;
            run(&mut p, &f, c, NOW);
        }
        DropReason::ArpIgnored => {
            run(
                &mut p,
                &arp_request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, CLIENT_V4),
                c,
                NOW,
            );
        }
        DropReason::NdIgnored => {
            run(
                &mut p,
                &neighbor_solicit(CLIENT_MAC, CLIENT_V6, GATEWAY_V6, 64),
                c,
                NOW,
            );
        }
        DropReason::Spoofed => {
            run(
                &mut p,
                &tcp4(CLIENT_MAC, GATEWAY_MAC, OTHER_V4, WEB_LOCAL_V4, 1, 2, 64),
                c,
                NOW,
            );
        }
        DropReason::Multicast => {
            run(&mut p, &client_udp(Ipv4Addr::new(224, 0, 0, 251)), c, NOW);
        }
        DropReason::TtlExceeded => {
            let inner = tcp4(
                NODE2_VTEP_MAC,
                VTEP_MAC,
                Ipv4Addr::new(10, 244, 2, 7),
                CLIENT_V4,
                80,
                1234,
                1,
            );
            run(&mut p, &vxlan_from_node2(&inner, 1), UPLINK, NOW);
        }
        DropReason::UnknownPod => {
            run(&mut p, &client_udp(Ipv4Addr::new(10, 244, 1, 200)), c, NOW);
        }
        DropReason::NoService => {
            run(
                &mut p,
                &from_client4(Ipv4Addr::new(10, 96, 1, 1), 1, 80),
                c,
                NOW,
            );
        }
        DropReason::NoLocalEndpoint => {
            let f = tcp4(
                UPLINK_GATEWAY_MAC,
                UPLINK_MAC,
                CLIENT_EXT,
                LB_REMOTE_ONLY_V4,
                50000,
                80,
                60,
            );
            run(&mut p, &f, UPLINK, NOW);
        }
        DropReason::NoBackend => {
            // No ICMP error may be sent to an unspecified source.
            let f = tcp4(
                UPLINK_GATEWAY_MAC,
                UPLINK_MAC,
                Ipv4Addr::UNSPECIFIED,
                EMPTY_V4,
                1,
                80,
                60,
            );
            run(&mut p, &f, UPLINK, NOW);
        }
        DropReason::SnatExhausted => {
            let cfg = NodeConfig {
                snat_ports: (40000, 40000),
                ..node_config()
            };
            p = pipe_with(pods_only(cfg));
            run(&mut p, &client_udp(OUTSIDE), c, NOW);
            let f = udp4(
                WEB_LOCAL_MAC,
                GATEWAY_MAC,
                WEB_LOCAL_V4,
                OUTSIDE,
                5000,
                53,
                b"x",
            );
            run(&mut p, &f, WEB_LOCAL_PORT, NOW);
        }
        DropReason::ConntrackFull => {
            let cfg = NodeConfig {
                conntrack_capacity: 16,
                ..node_config()
            };
            p = pipe_with(pods_only(cfg));
            // Replied (assured) flows are not evicted: the table fills up.
            for sp in 1..=200u16 {
                let f = udp4(CLIENT_MAC, GATEWAY_MAC, CLIENT_V4, OUTSIDE, sp, 53, b"x");
                let (v, out) = run(&mut p, &f, c, NOW);
                if v == Verdict::Drop(DropReason::ConntrackFull) {
                    break;
                }
                let reply = udp4(
                    UPLINK_GATEWAY_MAC,
                    UPLINK_MAC,
                    OUTSIDE,
                    NODE_V4,
                    53,
                    ports(&out).0,
                    b"y",
                );
                run(&mut p, &reply, UPLINK, NOW);
            }
        }
        DropReason::ReplyTupleTaken => {
            // Two Services with the same backend: the second flow from the same
            // client port would get the first one's reply tuple.
            let mut b = builder();
            for (name, last) in [("a", 77), ("b", 78)] {
                b.add_service(service(
                    name,
                    proto::TCP,
                    80,
                    &[IpAddr::V4(Ipv4Addr::new(10, 96, 0, last))],
                    vec![backend(IpAddr::V4(WEB_LOCAL_V4), 8080, true)],
                ));
            }
            p = pipe_with(b.build().unwrap());
            run(
                &mut p,
                &from_client4(Ipv4Addr::new(10, 96, 0, 77), 40000, 80),
                c,
                NOW,
            );
            run(
                &mut p,
                &from_client4(Ipv4Addr::new(10, 96, 0, 78), 40000, 80),
                c,
                NOW,
            );
        }
        DropReason::UnsupportedProtocol => {
            let mut f = client_udp(OUTSIDE);
            f[23] = 47; // GRE
            set_df(&mut f, false);
            run(&mut p, &f, c, NOW);
        }
        DropReason::NoSourceAddress => {
            let cfg = NodeConfig {
                node_ipv4: None,
                ..node_config()
            };
            p = pipe_with(pods_only(cfg));
            run(&mut p, &client_udp(OUTSIDE), c, NOW);
        }
        DropReason::VxlanMalformed => {
            let mut f = vxlan_from_node2(&from_client4(CLIENT_V4, 1, 2), 1);
            f[42] = 0; // flags without I
            run(&mut p, &f, UPLINK, NOW);
        }
        DropReason::BadVni => {
            run(
                &mut p,
                &vxlan_from_node2(&from_client4(CLIENT_V4, 1, 2), 2),
                UPLINK,
                NOW,
            );
        }
        DropReason::DecapNotLocal => {
            let inner = tcp4(
                NODE2_VTEP_MAC,
                VTEP_MAC,
                Ipv4Addr::new(10, 244, 2, 7),
                Ipv4Addr::new(10, 244, 3, 5),
                1,
                2,
                64,
            );
            run(&mut p, &vxlan_from_node2(&inner, 1), UPLINK, NOW);
        }
        DropReason::NoRemoteUnderlay => {
            let mut b = builder();
            b.add_remote_node(RemoteNodeSpec {
                pod_cidrs: vec!["10.244.9.0/24".parse().unwrap()],
                ipv4: None,
                ipv6: None,
                vtep_mac: [2, 0, 0, 0, 0, 9],
                underlay_mac: [2, 0, 0, 0, 0, 9],
                name: "no-address".into(),
            });
            p = pipe_with(b.build().unwrap());
            run(&mut p, &client_udp(Ipv4Addr::new(10, 244, 9, 9)), c, NOW);
        }
        DropReason::TooBig => {
            let mut f = udp4(
                CLIENT_MAC,
                GATEWAY_MAC,
                CLIENT_V4,
                Ipv4Addr::new(10, 244, 2, 7),
                1,
                2,
                &[0; 1460],
            );
            set_df(&mut f, false);
            run(&mut p, &f, c, NOW);
        }
        DropReason::IcmpErrorMalformed => {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(UPLINK_GATEWAY_MAC, UPLINK_MAC)
                .ipv4(o4(OUTSIDE), o4(NODE_V4), 64)
                .icmpv4_raw(3, 3, [0; 4])
                .write(&mut f, &[0x45, 0, 0])
                .unwrap();
            run(&mut p, &f, UPLINK, NOW);
        }
        DropReason::FragStashed => {
            run(&mut p, &udp_fragments(OUTSIDE, 1).1, c, NOW);
        }
        DropReason::FragStashFull => {
            for id in 0..=STASH_SLOTS as u16 {
                run(&mut p, &udp_fragments(OUTSIDE, id).1, c, NOW);
            }
        }
        DropReason::FragTimeout => {
            run(&mut p, &udp_fragments(OUTSIDE, 1).1, c, NOW);
            run(
                &mut p,
                &from_client4(WEB_LOCAL_V4, 1, 2),
                c,
                NOW + FRAG_TIMEOUT_NS,
            );
        }
        DropReason::FragDropped => {
            let (first, later) = udp_fragments(Ipv4Addr::new(10, 244, 1, 200), 5);
            run(&mut p, &first, c, NOW);
            run(&mut p, &later, c, NOW);
        }
    }
    p
}

/// The demo node's pods only, under `cfg`.
fn pods_only(cfg: NodeConfig) -> Tables {
    let mut b = TablesBuilder::new(cfg);
    for (port, mac, a4) in [
        (CLIENT_PORT, CLIENT_MAC, CLIENT_V4),
        (WEB_LOCAL_PORT, WEB_LOCAL_MAC, WEB_LOCAL_V4),
    ] {
        b.add_pod(PodSpec {
            port,
            mac,
            ipv4: Some(a4),
            ipv6: None,
            name: format!("pod-{port}"),
        });
    }
    b.build().unwrap()
}

#[test]
fn every_drop_reason_is_reachable_and_counted() {
    let mut missing = Vec::new();
    for &r in DropReason::ALL {
        let p = reach(r);
        if p.counters().drop_count(r) == 0 {
            missing.push(r);
        }
    }
    assert!(missing.is_empty(), "never counted: {missing:?}");
}

#[test]
fn counters_sum_drops_by_reason() {
    let p = reach(DropReason::FragStashFull);
    let c = p.counters();
    assert_eq!(c.drop_count(DropReason::FragStashFull), 1);
    assert_eq!(c.drop_count(DropReason::FragStashed), STASH_SLOTS as u64);
    assert_eq!(c.dropped, c.drops.iter().sum::<u64>());
    let listed: u64 = c.drops_by_reason().map(|(_, n)| n).sum();
    assert_eq!(listed, c.dropped);
    assert_eq!(c.drops_by_reason().count(), DropReason::COUNT);
}
