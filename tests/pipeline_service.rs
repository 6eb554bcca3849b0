//! Pods reaching Services: ClusterIP, external IP and LoadBalancer IP DNAT to
//! local and remote backends, the reverse NAT of replies (locally and arriving
//! by VXLAN), Maglev spreading and stickiness, no-backend rejects.
#[macro_use]
mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// pod1 -> `vip`:80 -> web's backend pod2:8080 over a whole TCP exchange;
/// every packet each way is translated, and the replies come from the VIP.
fn tcp_exchange_with_local_backend(f: Fam, vip: IpAddr) {
    let mut a = node_a();
    let steps: [(bool, u8, &[u8]); 6] = [
        (true, tcpf::SYN, b""),
        (false, tcpf::SYN | tcpf::ACK, b""),
        (true, tcpf::ACK, b""),
        (true, tcpf::ACK | tcpf::PSH, b"GET / HTTP/1.1\r\n\r\n"),
        (false, tcpf::ACK | tcpf::PSH, b"HTTP/1.1 200 OK\r\n\r\n"),
        (true, tcpf::FIN | tcpf::ACK, b""),
    ];
    for (i, (from_client, flags, data)) in steps.into_iter().enumerate() {
        if from_client {
            let p = Pkt::from_pod1(f, vip, tcp(40000, 80, flags)).payload(data);
            let s = a.send(POD1_PORT, &p.build()).tx(POD2_PORT);
            assert_eq!(s.eth.source, A_GW_MAC, "step {i}");
            assert_eq!(s.eth.destination, POD2_MAC, "step {i}");
            assert_eq!(s.src, f.pod1(), "step {i}: client address kept");
            assert_eq!(s.dst, f.pod2(), "step {i}: DNAT to the backend");
            assert_eq!((s.sport, s.dport), (40000, 8080), "step {i}: ports");
            assert_eq!(s.ttl, 63, "step {i}");
            assert_eq!(s.tcp_flags, flags, "step {i}");
            assert_eq!(s.payload, data, "step {i}");
        } else {
            let p = Pkt::from_pod2(f, f.pod1(), tcp(8080, 40000, flags)).payload(data);
            let s = a.send(POD2_PORT, &p.build()).tx(POD1_PORT);
            assert_eq!(s.eth.source, A_GW_MAC, "step {i}");
            assert_eq!(s.eth.destination, POD1_MAC, "step {i}");
            assert_eq!(s.src, vip, "step {i}: reply reverse-NATed to the VIP");
            assert_eq!(s.dst, f.pod1(), "step {i}");
            assert_eq!((s.sport, s.dport), (80, 40000), "step {i}: ports");
            assert_eq!(s.ttl, 63, "step {i}");
            assert_eq!(s.payload, data, "step {i}");
        }
    }
}

fn pod_to_cluster_ip_with_a_local_backend_is_dnated_and_the_reply_reverse_natted(f: Fam) {
    tcp_exchange_with_local_backend(f, f.vip(svc::WEB));
}

fn pod_to_external_ip_is_dnated_like_a_cluster_ip(f: Fam) {
    tcp_exchange_with_local_backend(f, f.ext_ip(svc::WEB_EXT));
}

fn pod_to_load_balancer_ip_is_dnated_like_a_cluster_ip(f: Fam) {
    tcp_exchange_with_local_backend(f, f.ext_ip(svc::WEB_LB));
}

fn pod_to_cluster_ip_with_a_remote_backend_is_dnated_then_encapsulated(f: Fam) {
    let mut a = node_a();
    let p = Pkt::from_pod1(f, f.vip(svc::REMOTE), udp(40000, 53)).payload(b"query");
    let frame = p.build();
    let s = a.send(POD1_PORT, &frame).tx(UPLINK);
    assert_eq!(s.eth.destination, B_UPLINK_MAC);
    assert_eq!((s.src, s.dst), (Fam::V4.node_a(), Fam::V4.node_b()));
    assert_eq!(s.dport, VXLAN_PORT);
    let (_, vni, inner) = s.vxlan();
    assert_eq!(vni, VNI);
    let i = parse(&inner);
    assert_eq!(i.eth.source, A_VTEP_MAC);
    assert_eq!(i.eth.destination, B_VTEP_MAC);
    assert_eq!(i.src, f.pod1(), "client address kept");
    assert_eq!(i.dst, f.remote_pod(0), "DNAT to the remote backend");
    assert_eq!((i.sport, i.dport), (40000, 5353));
    assert_eq!(i.ttl, 63);
    assert_eq!(i.payload, b"query");
}

fn a_reply_from_a_remote_backend_arriving_by_vxlan_is_reverse_natted(f: Fam) {
    let mut a = node_a();
    let q = Pkt::from_pod1(f, f.vip(svc::REMOTE), udp(40000, 53)).build();
    assert_eq!(
        a.send(POD1_PORT, &q).verdict,
        dataplane::pipeline::Verdict::Tx(UPLINK)
    );
    let reply = inner_from_b(f.remote_pod(0), f.pod1(), udp(5353, 40000))
        .ttl(63)
        .payload(b"answer")
        .build();
    for underlay in [Fam::V4, Fam::V6] {
        let frame = vxlan_from_b(underlay, 51000, VNI, &reply);
        let s = a.send(UPLINK, &frame).tx(POD1_PORT);
        assert_eq!(s.eth.source, A_GW_MAC);
        assert_eq!(s.eth.destination, POD1_MAC);
        assert_eq!(s.src, f.vip(svc::REMOTE), "reply comes from the VIP");
        assert_eq!(s.dst, f.pod1());
        assert_eq!((s.sport, s.dport), (53, 40000));
        assert_eq!(s.ttl, 62);
        assert_eq!(s.payload, b"answer");
    }
}

fn cluster_ip_without_backends_is_rejected_with_port_unreachable(f: Fam) {
    let mut a = node_a();
    let frame = Pkt::from_pod1(f, f.vip(svc::EMPTY), tcp(40000, 80, tcpf::SYN)).build();
    let s = a.send(POD1_PORT, &frame).reply();
    assert_eq!(s.eth.destination, POD1_MAC);
    assert_eq!(s.eth.source, A_GW_MAC);
    assert_eq!(s.dst, f.pod1());
    assert!(
        s.src == f.vip(svc::EMPTY) || s.src == f.gw(),
        "the reject comes from the VIP or the gateway, not {}",
        s.src
    );
    match f {
        Fam::V4 => assert_eq!((s.proto, s.icmp_type, s.icmp_code), (1, 3, 3)),
        Fam::V6 => assert_eq!((s.proto, s.icmp_type, s.icmp_code), (58, 1, 4)),
    }
    let q = s.quoted();
    assert_eq!((q.src, q.dst), (f.pod1(), f.vip(svc::EMPTY)));
    assert_eq!((q.sport, q.dport), (40000, 80));
    let hdr = if f == Fam::V4 { 28 } else { 48 };
    assert_eq!(
        &s.quoted_bytes()[..hdr],
        &frame[14..14 + hdr],
        "quote is the original"
    );
}

fn maglev_spreads_flows_over_backends_and_each_flow_sticks_to_one(f: Fam) {
    let mut a = node_a();
    let backends: HashSet<IpAddr> = (0..4).map(|n| f.remote_pod(n)).collect();
    let mut chosen: HashMap<u16, IpAddr> = HashMap::new();
    for sport in 41000..41064u16 {
        let p = Pkt::from_pod1(f, f.vip(svc::MULTI), tcp(sport, 80, tcpf::SYN)).build();
        let s = a.send(POD1_PORT, &p).tx(UPLINK);
        let i = parse(&s.vxlan().2);
        assert!(
            backends.contains(&i.dst),
            "backend {} is one of the service's",
            i.dst
        );
        assert_eq!(i.dport, 8080);
        assert_eq!(i.sport, sport);
        chosen.insert(sport, i.dst);
    }
    for sport in 41000..41064u16 {
        let p = Pkt::from_pod1(f, f.vip(svc::MULTI), tcp(sport, 80, tcpf::ACK)).build();
        let s = a.send(POD1_PORT, &p).tx(UPLINK);
        let i = parse(&s.vxlan().2);
        assert_eq!(i.dst, chosen[&sport], "flow {sport} keeps its backend");
    }
    let used: HashSet<_> = chosen.values().collect();
    assert!(
        used.len() >= 3,
        "64 flows used only {} of 4 backends",
        used.len()
    );
}

fn a_service_flow_and_a_direct_flow_from_the_same_port_do_not_mix(f: Fam) {
    let mut a = node_a();
    // Direct pod1 -> pod2:8080 first, then the same source port to the VIP.
    let direct = Pkt::from_pod1(f, f.pod2(), tcp(40000, 8080, tcpf::SYN)).build();
    let s = a.send(POD1_PORT, &direct).tx(POD2_PORT);
    assert_eq!(s.dst, f.pod2());
    // pod2 answers the direct flow: it must come from pod2, not the VIP.
    let reply = Pkt::from_pod2(f, f.pod1(), tcp(8080, 40000, tcpf::SYN | tcpf::ACK)).build();
    let s = a.send(POD2_PORT, &reply).tx(POD1_PORT);
    assert_eq!(s.src, f.pod2(), "an un-NATed flow's reply is not rewritten");
    assert_eq!(s.sport, 8080);
}

fn session_affinity_sends_every_flow_of_a_client_to_one_backend(f: Fam) {
    let mut a = node_a();
    let mut chosen = HashSet::new();
    for sport in 43000..43032u16 {
        let p = Pkt::from_pod1(f, f.vip(svc::STICKY), tcp(sport, 80, tcpf::SYN)).build();
        let s = a.send(POD1_PORT, &p).tx(UPLINK);
        let i = parse(&s.vxlan().2);
        assert_eq!((i.src, i.sport, i.dport), (f.pod1(), sport, 8080));
        chosen.insert(i.dst);
        a.advance_secs(60);
    }
    assert_eq!(
        chosen.len(),
        1,
        "one backend for all of pod1's flows: {chosen:?}"
    );
}

both_families!(
    session_affinity_sends_every_flow_of_a_client_to_one_backend,
    pod_to_cluster_ip_with_a_local_backend_is_dnated_and_the_reply_reverse_natted,
    pod_to_external_ip_is_dnated_like_a_cluster_ip,
    pod_to_load_balancer_ip_is_dnated_like_a_cluster_ip,
    pod_to_cluster_ip_with_a_remote_backend_is_dnated_then_encapsulated,
    a_reply_from_a_remote_backend_arriving_by_vxlan_is_reverse_natted,
    cluster_ip_without_backends_is_rejected_with_port_unreachable,
    maglev_spreads_flows_over_backends_and_each_flow_sticks_to_one,
    a_service_flow_and_a_direct_flow_from_the_same_port_do_not_mix,
);
