//! Pod-port paths on one node: ARP/ND for the gateway, anti-spoofing, local
//! pod-to-pod forwarding, traffic to the node's own address, TTL expiry.
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::DropReason;
use std::net::IpAddr;

#[test]
fn arp_request_for_the_gateway_gets_a_reply_from_the_gateway_mac() {
    let mut a = node_a();
    let req = arp_request(POD1_MAC, Fam::V4.pod1(), Fam::V4.gw());
    let out = a.send(POD1_PORT, &req);
    assert_eq!(out.verdict, dataplane::pipeline::Verdict::Reply);
    let r = &out.bytes;
    assert!(r.len() >= 42, "ARP reply length {}", r.len());
    assert_eq!(&r[0..6], &POD1_MAC, "eth dst = requester");
    assert_eq!(&r[6..12], &A_GW_MAC, "eth src = gateway MAC");
    assert_eq!(&r[12..14], &[0x08, 0x06], "ethertype ARP");
    // RFC 826: htype 1, ptype 0x0800, hlen 6, plen 4, op 2 (reply).
    assert_eq!(&r[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 2]);
    assert_eq!(&r[22..28], &A_GW_MAC, "sender hw = gateway MAC");
    assert_eq!(
        &r[28..32],
        &key_bytes(Fam::V4.gw())[..],
        "sender ip = gateway"
    );
    assert_eq!(&r[32..38], &POD1_MAC, "target hw = requester");
    assert_eq!(&r[38..42], &key_bytes(Fam::V4.pod1())[..], "target ip");
}

#[test]
fn a_padded_arp_request_for_the_gateway_is_answered() {
    // ARP frames on the wire are padded to the 60-byte Ethernet minimum.
    let mut a = node_a();
    let mut req = arp_request(POD1_MAC, Fam::V4.pod1(), Fam::V4.gw());
    req.resize(60, 0);
    let out = a.send(POD1_PORT, &req);
    assert_eq!(out.verdict, dataplane::pipeline::Verdict::Reply);
    assert_eq!(&out.bytes[20..22], &[0, 2], "ARP reply");
    assert_eq!(&out.bytes[22..28], &A_GW_MAC);
}

#[test]
fn arp_request_for_another_address_is_not_answered_as_the_gateway() {
    let mut a = node_a();
    let req = arp_request(POD1_MAC, Fam::V4.pod1(), Fam::V4.outside());
    let out = a.send(POD1_PORT, &req);
    // Whatever the verdict, the gateway must not claim an address it does not own
    // unless it answers for it as a proxy with its own MAC.
    if out.verdict == dataplane::pipeline::Verdict::Reply {
        assert_eq!(&out.bytes[22..28], &A_GW_MAC);
        assert_eq!(&out.bytes[28..32], &key_bytes(Fam::V4.outside())[..]);
    }
}

#[test]
fn neighbor_solicitation_for_the_gateway_gets_a_solicited_override_advert() {
    let f = Fam::V6;
    let mut a = node_a();
    let ns = neighbor_solicit(POD1_MAC, f.pod1(), f.gw());
    let s = a.send(POD1_PORT, &ns).reply();
    assert_eq!(s.eth.destination, POD1_MAC, "eth dst = solicitor");
    assert_eq!(s.eth.source, A_GW_MAC, "eth src = gateway MAC");
    assert_eq!(s.src, f.gw(), "NA from the gateway address");
    assert_eq!(s.dst, f.pod1(), "NA to the solicitor");
    assert_eq!(s.ttl, 255, "ND hop limit (RFC 4861 7.1.2)");
    assert_eq!(s.proto, 58);
    assert_eq!(s.icmp_type, 136, "neighbor advertisement");
    assert_eq!(s.icmp_code, 0);
    // R=0 (a pod's gateway is not announced as router here), S=1, O=1.
    assert_eq!(
        s.icmp_rest[0] & 0x60,
        0x60,
        "solicited and override flags set: {:#x}",
        s.icmp_rest[0]
    );
    assert_eq!(&s.payload[..16], &key_bytes(f.gw())[..], "target address");
    // Target link-layer address option: type 2, length 1 (8 bytes), the MAC.
    assert!(s.payload.len() >= 24, "NA carries the target lladdr option");
    assert_eq!(&s.payload[16..18], &[2, 1]);
    assert_eq!(&s.payload[18..24], &A_GW_MAC);
}

fn spoofed_source_is_dropped(f: Fam) {
    let mut a = node_a();
    // pod1 claims pod2's address.
    let p = Pkt::new(
        POD1_MAC,
        A_GW_MAC,
        f.pod2(),
        f.remote_pod(0),
        udp(1000, 2000),
    )
    .build();
    a.send(POD1_PORT, &p).dropped(DropReason::Spoofed);
    // pod1 claims an address outside the cluster.
    let p = Pkt::new(POD1_MAC, A_GW_MAC, f.outside(), f.pod2(), udp(1000, 2000)).build();
    a.send(POD1_PORT, &p).dropped(DropReason::Spoofed);
    assert_eq!(a.drops(DropReason::Spoofed), 2, "counted under Spoofed");
}

fn pod_to_local_pod_is_forwarded_with_gateway_mac_and_ttl_decremented(f: Fam) {
    let mut a = node_a();
    for l4 in [
        udp(40000, 5353),
        tcp(40001, 8080, tcpf::SYN),
        L4::EchoRequest { id: 77, seq: 1 },
    ] {
        let p = Pkt::from_pod1(f, f.pod2(), l4).ttl(64);
        let s = a.send(POD1_PORT, &p.build()).tx(POD2_PORT);
        assert_eq!(s.eth.source, A_GW_MAC, "eth src = gateway MAC");
        assert_eq!(s.eth.destination, POD2_MAC, "eth dst = pod2 MAC");
        assert_eq!(s.src, f.pod1(), "source address kept");
        assert_eq!(s.dst, f.pod2(), "destination address kept");
        assert_eq!(s.ttl, 63, "TTL/hop limit decremented");
        match l4 {
            L4::Udp { sport, dport } | L4::Tcp { sport, dport, .. } => {
                assert_eq!((s.sport, s.dport), (sport, dport), "ports kept")
            }
            L4::EchoRequest { id, .. } => assert_eq!(s.sport, id, "echo id kept"),
            L4::EchoReply { .. } => unreachable!(),
        }
        assert_eq!(s.payload, p.payload, "payload kept");
    }
}

fn pod_to_local_pod_keeps_working_in_a_full_batch(f: Fam) {
    let mut a = node_a();
    let frames: Vec<_> = (0..64u16)
        .map(|i| {
            let (port, p) = if i % 2 == 0 {
                (POD1_PORT, Pkt::from_pod1(f, f.pod2(), udp(10000 + i, 53)))
            } else {
                (POD2_PORT, Pkt::from_pod2(f, f.pod1(), udp(20000 + i, 53)))
            };
            (port, p.build())
        })
        .collect();
    let outs = a.send_batch(&frames);
    for (i, o) in outs.iter().enumerate() {
        let (port, mac, dst) = if i % 2 == 0 {
            (POD2_PORT, POD2_MAC, f.pod2())
        } else {
            (POD1_PORT, POD1_MAC, f.pod1())
        };
        let s = o.tx(port);
        assert_eq!(s.eth.destination, mac);
        assert_eq!(s.dst, dst);
        assert_eq!(s.ttl, 63);
    }
}

fn pod_to_an_address_in_the_pod_cidr_with_no_pod_is_not_forwarded_to_a_pod(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.unused_local(), udp(1000, 2000)).build();
    let out = a.send(POD1_PORT, &p);
    assert!(
        !matches!(out.verdict, dataplane::pipeline::Verdict::Tx(_)),
        "no pod owns {}: {:?}",
        f.unused_local(),
        out.verdict
    );
}

fn pod_to_its_node_address_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.node_a(), tcp(40000, 10250, tcpf::SYN)).build();
    a.send(POD1_PORT, &p).pass();
}

fn pod_to_gateway_address_is_passed_to_the_kernel(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.gw(), L4::EchoRequest { id: 1, seq: 1 }).build();
    let out = a.send(POD1_PORT, &p);
    // The gateway address is the node's own: the kernel (or an echo reply)
    // answers, it is never forwarded anywhere.
    assert!(
        matches!(
            out.verdict,
            dataplane::pipeline::Verdict::Pass | dataplane::pipeline::Verdict::Reply
        ),
        "{:?}",
        out.verdict
    );
}

fn ttl_one_to_a_local_pod_gets_time_exceeded_from_the_gateway(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.pod2(), udp(40000, 53)).ttl(1);
    let frame = p.build();
    let s = a.send(POD1_PORT, &frame).reply();
    assert_eq!(s.eth.destination, POD1_MAC, "back to the sender's MAC");
    assert_eq!(s.eth.source, A_GW_MAC);
    assert_eq!(s.src, f.gw(), "from the gateway address");
    assert_eq!(s.dst, f.pod1(), "to the sender");
    assert!(s.ttl >= 64, "a fresh TTL on the error");
    match f {
        Fam::V4 => {
            assert_eq!((s.proto, s.icmp_type, s.icmp_code), (1, 11, 0));
        }
        Fam::V6 => {
            assert_eq!((s.proto, s.icmp_type, s.icmp_code), (58, 3, 0));
        }
    }
    assert_eq!(s.icmp_rest, [0; 4], "unused bytes zero");
    // The quote starts with the original IP header, unchanged (TTL 1 as sent).
    let q = s.quoted();
    assert_eq!(q.src, f.pod1());
    assert_eq!(q.dst, f.pod2());
    assert_eq!(q.ttl, 1);
    assert_eq!((q.sport, q.dport), (40000, 53));
    let orig_ip = &frame[14..];
    let n = s.quoted_bytes().len().min(orig_ip.len());
    assert!(n >= 28, "quote holds at least the IP header + 8 bytes");
    assert_eq!(
        &s.quoted_bytes()[..n],
        &orig_ip[..n],
        "quote is the original"
    );
}

fn ttl_zero_is_never_forwarded(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.pod2(), udp(40000, 53)).ttl(0).build();
    let out = a.send(POD1_PORT, &p);
    assert!(!matches!(out.verdict, dataplane::pipeline::Verdict::Tx(_)));
}

fn a_truncated_frame_is_dropped_not_forwarded(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.pod2(), udp(40000, 53)).build();
    for cut in [13, 14 + 10, p.len() - 1] {
        let out = a.send(POD1_PORT, &p[..cut]);
        assert!(out.is_drop(), "cut at {cut}: {:?}", out.verdict);
    }
}

fn an_ethernet_padded_frame_is_forwarded(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.pod2(), udp(40000, 53))
        .payload(b"x")
        .build();
    let mut padded = p.clone();
    padded.resize(p.len().max(60) + 4, 0);
    let s = a.send(POD1_PORT, &padded).tx(POD2_PORT);
    assert_eq!(s.payload, b"x");
}

both_families!(
    spoofed_source_is_dropped,
    pod_to_local_pod_is_forwarded_with_gateway_mac_and_ttl_decremented,
    pod_to_local_pod_keeps_working_in_a_full_batch,
    pod_to_an_address_in_the_pod_cidr_with_no_pod_is_not_forwarded_to_a_pod,
    pod_to_its_node_address_is_passed_to_the_kernel,
    pod_to_gateway_address_is_passed_to_the_kernel,
    ttl_one_to_a_local_pod_gets_time_exceeded_from_the_gateway,
    ttl_zero_is_never_forwarded,
    a_truncated_frame_is_dropped_not_forwarded,
    an_ethernet_padded_frame_is_forwarded,
);

#[allow(dead_code)]
fn _unused(_: IpAddr) {}
