//! Per-Service counters: a Service flow's packets land on its stable id
//! (the conntrack entry's `user` word), toward the Service and replies, on
//! the fast path and the general one alike; a first packet with no usable
//! endpoint counts as a reject; flows of no Service count nothing.

use super::*;
use crate::state::shm::{ServiceCounters, ServiceCounts, ServiceDirectory};

/// The demo pipeline with stable ids (ids given in reverse table order, so
/// an id that happened to equal the table index would fail the test) and 16
/// counter lines.
fn counting(fast: bool) -> (Pipeline, ServiceDirectory) {
    let mut t = demo_tables().expect("demo tables build");
    let mut dir = ServiceDirectory::in_memory(16);
    let mut names: Vec<String> = t
        .services()
        .services()
        .map(|(_, s)| s.name().to_string())
        .collect();
    names.reverse();
    dir.update(names.iter().map(String::as_str));
    let ids = dir.update(t.services().services().map(|(_, s)| s.name()));
    t.set_service_ids(ids);
    let mut p = pipe_with(t);
    p.set_fast_path(fast);
    p.set_service_counters(ServiceCounters::owned(16));
    (p, dir)
}

fn counts(p: &Pipeline, dir: &ServiceDirectory, name: &str) -> ServiceCounts {
    let id = dir.ids().id(name).expect("the Service has an id");
    p.service_counters().get(id)
}

/// The reply of backend `b` (as the translated request `req` shows it) to
/// the client: from its pod port when local, else VXLAN from node 2 or 3.
fn reply_of(req: &[u8]) -> (Vec<u8>, PortId) {
    let ip = ip4(req);
    let (sport, dport) = ports(req);
    let (backend, client) = (Ipv4Addr::from(ip.destination), Ipv4Addr::from(ip.source));
    if backend == WEB_LOCAL_V4 {
        let f = tcp4(
            WEB_LOCAL_MAC,
            GATEWAY_MAC,
            backend,
            client,
            dport,
            sport,
            64,
        );
        return (f, WEB_LOCAL_PORT);
    }
    let inner = tcp4(NODE2_VTEP_MAC, VTEP_MAC, backend, client, dport, sport, 64);
    (vxlan_from_node2(&inner, node_config().vni), UPLINK)
}

fn a_service_flow_counts_its_packets_both_ways_on_its_id(fast: bool) {
    let (mut p, dir) = counting(fast);
    let syn = from_client4(WEB_V4, 40000, 80);
    let (v, req) = run(&mut p, &syn, CLIENT_PORT, NOW);
    assert!(matches!(v, Verdict::Tx(_)), "{v:?}");
    // The request on the wire may be VXLAN: its inner frame is what counts.
    let inner = if ip4(&req).destination == o4(NODE2_V4) || ip4(&req).destination == o4(NODE3_V4) {
        unwrap_vxlan(&req).2
    } else {
        req.clone()
    };
    let c = counts(&p, &dir, "web");
    assert_eq!(c.connections, 1);
    assert_eq!((c.packets_to, c.bytes_to), (1, syn.len() as u64));
    assert_eq!(c.packets_reply, 0);

    let (again, _) = run(&mut p, &syn, CLIENT_PORT, NOW + 1);
    assert!(matches!(again, Verdict::Tx(_)), "{again:?}");
    let (reply, port) = reply_of(&inner);
    let inner_reply_len = if port == UPLINK {
        reply.len() - 50
    } else {
        reply.len()
    } as u64;
    let (rv, _) = run(&mut p, &reply, port, NOW + 2);
    assert!(matches!(rv, Verdict::Tx(CLIENT_PORT)), "{rv:?}");
    let c = counts(&p, &dir, "web");
    assert_eq!(c.connections, 1, "an established flow is no new connection");
    assert_eq!((c.packets_to, c.bytes_to), (2, 2 * syn.len() as u64));
    assert_eq!((c.packets_reply, c.bytes_reply), (1, inner_reply_len));
    assert_eq!(c.rejects, 0);
    for other in ["api", "dns", "empty"] {
        assert_eq!(counts(&p, &dir, other), ServiceCounts::default(), "{other}");
    }
}

#[test]
fn a_service_flow_counts_its_packets_both_ways_on_its_stable_id_on_the_fast_path() {
    a_service_flow_counts_its_packets_both_ways_on_its_id(true);
}

#[test]
fn a_service_flow_counts_its_packets_both_ways_on_its_stable_id_on_the_general_path() {
    a_service_flow_counts_its_packets_both_ways_on_its_id(false);
}

#[test]
fn a_first_packet_to_a_service_without_endpoints_counts_a_reject() {
    let (mut p, dir) = counting(true);
    let (v, _) = run(&mut p, &from_client4(EMPTY_V4, 40000, 80), CLIENT_PORT, NOW);
    assert_eq!(v, Verdict::Reply, "ICMP port unreachable");
    let c = counts(&p, &dir, "empty");
    assert_eq!((c.rejects, c.connections, c.packets_to), (1, 0, 0));
}

#[test]
fn masqueraded_and_pod_to_pod_flows_count_toward_no_service() {
    let (mut p, _) = counting(true);
    run(&mut p, &from_client4(OUTSIDE, 40000, 443), CLIENT_PORT, NOW);
    run(
        &mut p,
        &from_client4(OUTSIDE, 40000, 443),
        CLIENT_PORT,
        NOW + 1,
    );
    run(
        &mut p,
        &from_client4(OTHER_V4, 40000, 80),
        CLIENT_PORT,
        NOW + 2,
    );
    for id in 0..16 {
        assert_eq!(p.service_counters().get(id), ServiceCounts::default());
    }
}

#[test]
fn a_pipeline_without_counter_lines_still_serves_services() {
    let mut p = pipe();
    assert!(p.service_counters().is_empty());
    let (v, _) = run(&mut p, &from_client4(WEB_V4, 40000, 80), CLIENT_PORT, NOW);
    assert!(matches!(v, Verdict::Tx(_)), "{v:?}");
}
