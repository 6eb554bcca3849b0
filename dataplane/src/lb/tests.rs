use super::*;
use crate::proto::{TCP, UDP};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const SEC: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ready(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        ip: ip(addr),
        port,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    }
}

fn not_ready(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        ready: false,
        serving: false,
        ..ready(addr, port)
    }
}

/// Serving but shutting down: kube-proxy's fallback set.
fn draining(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        ready: false,
        serving: true,
        terminating: true,
        ..ready(addr, port)
    }
}

/// Terminating and no longer serving: never used.
fn gone(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        ready: false,
        serving: false,
        terminating: true,
        ..ready(addr, port)
    }
}

fn local(mut b: BackendSpec) -> BackendSpec {
    b.local = true;
    b
}

fn cluster_ip(name: &str, vip: &str, port: u16, backends: Vec<BackendSpec>) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        proto: TCP,
        port,
        vips: vec![(ip(vip), VipKind::ClusterIp)],
        node_port: None,
        ext_local: false,
        int_local: false,
        affinity_timeout_s: None,
        backends,
    }
}

fn build(specs: Vec<ServiceSpec>) -> ServiceTable {
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in specs {
        b.add(s);
    }
    b.build().unwrap()
}

/// Deterministic pseudo-random flow hashes (xorshift), independent of the code under
/// test.
fn flow_hashes(n: usize, seed: u64) -> impl Iterator<Item = u64> {
    let mut s = seed | 1;
    (0..n).map(move |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    })
}

/// The set of `ip:port` a service's `select` can return for a scope, over many flows.
fn chosen(t: &ServiceTable, svc: SvcId, scope: Scope, client: &str) -> HashSet<String> {
    let aff = AffinityTable::new(64);
    flow_hashes(5000, 7)
        .filter_map(|h| t.select(svc, scope, h, ip(client), 0, &aff))
        .map(|b| {
            let b = t.backend(b).unwrap();
            format!("{}:{}", b.ip(), b.port())
        })
        .collect()
}

fn set(items: &[&str]) -> HashSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn only_ready_backends_are_chosen_when_any_is_ready() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            ready("10.244.1.2", 8080),
            not_ready("10.244.1.3", 8080),
            draining("10.244.1.4", 8080),
            ready("10.244.2.2", 8080),
            gone("10.244.2.3", 8080),
        ],
    )]);
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "10.244.1.9"),
        set(&["10.244.1.2:8080", "10.244.2.2:8080"])
    );
}

#[test]
fn serving_terminating_backends_are_the_fallback_when_none_is_ready() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            not_ready("10.244.1.3", 8080),
            draining("10.244.1.4", 8080),
            gone("10.244.2.3", 8080),
            draining("10.244.2.4", 8080),
        ],
    )]);
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "10.244.1.9"),
        set(&["10.244.1.4:8080", "10.244.2.4:8080"])
    );
}

#[test]
fn a_service_with_no_usable_backend_selects_none() {
    let t = build(vec![
        cluster_ip(
            "down",
            "10.96.0.10",
            80,
            vec![not_ready("10.244.1.3", 80), gone("10.244.1.4", 80)],
        ),
        cluster_ip("empty", "10.96.0.11", 80, vec![]),
    ]);
    let aff = AffinityTable::new(64);
    for svc in [SvcId(0), SvcId(1)] {
        for scope in [Scope::Cluster, Scope::Local] {
            assert_eq!(t.select(svc, scope, 42, ip("10.0.0.1"), 0, &aff), None);
            assert_eq!(t.service(svc).unwrap().maglev_size(scope, 4), 0);
        }
    }
    assert_eq!(t.maglev_entries(), 0);
}

#[test]
fn local_scope_uses_only_backends_on_this_node() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            local(ready("10.244.1.2", 80)),
            local(not_ready("10.244.1.3", 80)),
            ready("10.244.2.2", 80),
            ready("10.244.3.2", 80),
        ],
    )]);
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Local, "1.2.3.4"),
        set(&["10.244.1.2:80"])
    );
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "1.2.3.4"),
        set(&["10.244.1.2:80", "10.244.2.2:80", "10.244.3.2:80"])
    );
    let b = t.backend(BackendId(0)).unwrap();
    assert!(b.local() && b.usable(Scope::Local) && b.usable(Scope::Cluster));
    assert!(!t.backend(BackendId(2)).unwrap().usable(Scope::Local));
}

#[test]
fn local_scope_falls_back_to_local_terminating_even_when_remote_ones_are_ready() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            local(draining("10.244.1.4", 80)),
            local(gone("10.244.1.5", 80)),
            ready("10.244.2.2", 80),
        ],
    )]);
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Local, "1.2.3.4"),
        set(&["10.244.1.4:80"])
    );
    // Cluster scope has a ready backend, so the draining one is not used there.
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "1.2.3.4"),
        set(&["10.244.2.2:80"])
    );
}

#[test]
fn local_scope_with_no_local_backend_selects_none() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![ready("10.244.2.2", 80), local(not_ready("10.244.1.3", 80))],
    )]);
    let aff = AffinityTable::new(64);
    assert_eq!(
        t.select(SvcId(0), Scope::Local, 1, ip("1.2.3.4"), 0, &aff),
        None
    );
    assert!(t
        .select(SvcId(0), Scope::Cluster, 1, ip("1.2.3.4"), 0, &aff)
        .is_some());
}

#[test]
fn an_all_local_service_shares_one_table_between_scopes() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            local(ready("10.244.1.2", 80)),
            local(ready("10.244.1.3", 80)),
        ],
    )]);
    assert_eq!(t.maglev(SvcId(0), Scope::Local, 4).len(), 251);
    assert_eq!(t.maglev_entries(), 251);
}

#[test]
fn vips_of_every_kind_and_family_are_found_by_ip_port_and_protocol() {
    let mut web = cluster_ip("web", "10.96.0.10", 80, vec![ready("10.244.1.2", 8080)]);
    web.vips.push((ip("192.0.2.10"), VipKind::ExternalIp));
    web.vips.push((ip("198.51.100.7"), VipKind::LoadBalancer));
    web.vips.push((ip("fd00:96::10"), VipKind::ClusterIp));
    let mut dns = cluster_ip("dns", "10.96.0.10", 53, vec![ready("10.244.1.3", 53)]);
    dns.proto = UDP;
    let t = build(vec![web, dns]);
    let web = Some(SvcId(0));
    let kind = |a: &str, port, proto| t.lookup_vip(ip(a), port, proto);
    assert_eq!(
        kind("10.96.0.10", 80, TCP),
        web.map(|s| (s, VipKind::ClusterIp))
    );
    assert_eq!(
        kind("192.0.2.10", 80, TCP),
        web.map(|s| (s, VipKind::ExternalIp))
    );
    assert_eq!(
        kind("198.51.100.7", 80, TCP),
        web.map(|s| (s, VipKind::LoadBalancer))
    );
    assert_eq!(
        kind("fd00:96::10", 80, TCP),
        web.map(|s| (s, VipKind::ClusterIp))
    );
    assert_eq!(
        kind("10.96.0.10", 53, UDP),
        Some((SvcId(1), VipKind::ClusterIp))
    );
    assert_eq!(kind("10.96.0.10", 53, TCP), None);
    assert_eq!(kind("10.96.0.10", 81, TCP), None);
    assert_eq!(kind("10.96.0.11", 80, TCP), None);
    // An IPv4 address must not match the IPv6 VIP with the same leading bytes.
    assert_eq!(kind("253.0.0.150", 80, TCP), None);
    assert_eq!(kind("::a60:a", 80, TCP), None);
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&[10, 96, 0, 10]);
    assert_eq!(
        t.lookup_vip_bytes(&raw, 4, 80, TCP),
        web.map(|s| (s, VipKind::ClusterIp))
    );
    assert_eq!(t.lookup_vip_bytes(&raw, 6, 80, TCP), None);
}

#[test]
fn nodeports_are_found_by_port_and_protocol() {
    let mut web = cluster_ip("web", "10.96.0.10", 80, vec![ready("10.244.1.2", 8080)]);
    web.node_port = Some(30080);
    let mut dns = cluster_ip("dns", "10.96.0.53", 53, vec![ready("10.244.1.3", 53)]);
    dns.proto = UDP;
    dns.node_port = Some(30080);
    let t = build(vec![web, dns]);
    assert_eq!(t.lookup_nodeport(30080, TCP), Some(SvcId(0)));
    assert_eq!(t.lookup_nodeport(30080, UDP), Some(SvcId(1)));
    assert_eq!(t.lookup_nodeport(30081, TCP), None);
    assert!(t.conflicts().is_empty());
    assert_eq!(t.service(SvcId(0)).unwrap().node_port(), Some(30080));
}

#[test]
fn a_vip_or_nodeport_claimed_twice_stays_with_the_first_service() {
    let mut a = cluster_ip("a", "10.96.0.10", 80, vec![ready("10.244.1.2", 80)]);
    a.node_port = Some(30000);
    let mut b = cluster_ip("b", "10.96.0.10", 80, vec![ready("10.244.1.3", 80)]);
    b.node_port = Some(30000);
    let t = build(vec![a, b]);
    assert_eq!(
        t.lookup_vip(ip("10.96.0.10"), 80, TCP),
        Some((SvcId(0), VipKind::ClusterIp))
    );
    assert_eq!(t.lookup_nodeport(30000, TCP), Some(SvcId(0)));
    assert_eq!(t.conflicts().len(), 2);
    assert!(matches!(
        t.conflicts()[0],
        Conflict::Vip {
            kept: SvcId(0),
            dropped: SvcId(1),
            ..
        }
    ));
}

#[test]
fn service_and_backend_accessors_report_the_spec() {
    let mut s = cluster_ip(
        "ns/web:http",
        "fd00:96::10",
        443,
        vec![BackendSpec {
            local: true,
            ..draining("fd00:244:1::2", 8443)
        }],
    );
    s.ext_local = true;
    s.int_local = true;
    s.affinity_timeout_s = Some(10800);
    let t = build(vec![s]);
    let svc = t.service(SvcId(0)).unwrap();
    assert_eq!(svc.name(), "ns/web:http");
    assert_eq!((svc.proto(), svc.port()), (TCP, 443));
    assert!(svc.ext_local() && svc.int_local());
    assert_eq!(svc.affinity_timeout_s(), Some(10800));
    assert_eq!(svc.backend_ids().collect::<Vec<_>>(), vec![BackendId(0)]);
    let b = t.backend(BackendId(0)).unwrap();
    assert_eq!(b.ip(), ip("fd00:244:1::2"));
    assert_eq!(
        b.ip_bytes(),
        "fd00:244:1::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
    );
    assert_eq!((b.family(), b.port()), (6, 8443));
    assert!(!b.ready() && b.serving() && b.terminating() && b.local());
    assert_eq!(b.service(), SvcId(0));
    let t4 = build(vec![cluster_ip(
        "v4",
        "10.96.0.1",
        1,
        vec![ready("10.244.1.2", 2)],
    )]);
    let b = t4.backend(BackendId(0)).unwrap();
    assert_eq!(b.family(), 4);
    assert_eq!(b.ipv4_bytes(), [10, 244, 1, 2]);
    assert_eq!(
        b.ip_bytes(),
        [10, 244, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(t4.service(SvcId(1)).is_none());
    assert!(t4.backend(BackendId(1)).is_none());
}

#[test]
fn a_dual_stack_service_gives_each_client_a_backend_of_its_family() {
    let mut s = cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            ready("10.244.1.2", 80),
            ready("fd00:244:1::2", 80),
            ready("10.244.2.2", 80),
            ready("fd00:244:2::2", 80),
        ],
    );
    s.vips.push((ip("fd00:96::10"), VipKind::ClusterIp));
    let t = build(vec![s]);
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "10.244.5.5"),
        set(&["10.244.1.2:80", "10.244.2.2:80"])
    );
    assert_eq!(
        chosen(&t, SvcId(0), Scope::Cluster, "fd00:244:5::5"),
        set(&["fd00:244:1::2:80", "fd00:244:2::2:80"])
    );
}

#[test]
fn an_endpoint_listed_twice_is_one_backend() {
    let t = build(vec![cluster_ip(
        "web",
        "10.96.0.10",
        80,
        vec![
            ready("10.244.1.2", 80),
            ready("10.244.1.2", 80),
            ready("10.244.1.2", 81),
        ],
    )]);
    assert_eq!(t.backend_count(), 2);
    assert_eq!(
        t.service(SvcId(0)).unwrap().usable_count(Scope::Cluster, 4),
        2
    );
}

#[test]
fn table_sizes_follow_the_prime_list_and_the_cap() {
    assert_eq!(table_size(0, 65521), 0);
    assert_eq!(table_size(1, 65521), 251);
    assert_eq!(table_size(3, 65521), 509);
    assert_eq!(table_size(10, 65521), 1021);
    assert_eq!(table_size(11, 65521), 2039);
    assert_eq!(table_size(100, 65521), 16381);
    assert_eq!(table_size(10_000, 65521), 65521);
    assert_eq!(table_size(100, 1021), 1021);
    assert_eq!(table_size(1, 101), 101);
    // A prime cap above the list is used as it is once the list runs out.
    assert_eq!(table_size(1000, 131071), 131071);
    assert_eq!(table_size(100, 131071), 16381);
    for p in MAGLEV_SIZES {
        assert!(is_prime(p), "{p}");
    }
    assert!(!is_prime(0) && !is_prime(1) && !is_prime(65536) && !is_prime(1023));
    assert!(is_prime(2) && is_prime(131071));
}

#[test]
fn a_maglev_cap_that_is_not_prime_is_refused() {
    for bad in [0, 1, 1000, 65536] {
        let mut b = ServiceTableBuilder::new(bad);
        b.add(cluster_ip(
            "web",
            "10.96.0.10",
            80,
            vec![ready("10.244.1.2", 80)],
        ));
        assert_eq!(b.build().unwrap_err(), BuildError::MaglevSizeNotPrime(bad));
    }
    let mut b = ServiceTableBuilder::new(1021);
    let many = (0..20)
        .map(|i| ready(&format!("10.244.1.{i}"), 80))
        .collect();
    b.add(cluster_ip("web", "10.96.0.10", 80, many));
    let t = b.build().unwrap();
    assert_eq!(t.maglev(SvcId(0), Scope::Cluster, 4).len(), 1021);
}

#[test]
fn a_service_with_more_than_65535_backends_is_refused() {
    let many = (0..65536u32)
        .map(|i| ready(&Ipv4Addr::from(0x0af4_0000 + i).to_string(), 80))
        .collect();
    let mut b = ServiceTableBuilder::new(251);
    b.add(cluster_ip("huge", "10.96.0.10", 80, many));
    assert!(matches!(
        b.build(),
        Err(BuildError::TooManyBackendsInService { count: 65536, .. })
    ));
}

fn n_backends(n: u32) -> Vec<BackendSpec> {
    (0..n)
        .map(|i| ready(&format!("10.244.{}.{}", i / 200, i % 200 + 2), 8080))
        .collect()
}

/// The `ip:port` in each slot of a service's cluster table.
fn slots(t: &ServiceTable, svc: SvcId) -> Vec<String> {
    let first = t.service(svc).unwrap().backend_ids().next().unwrap().0;
    t.maglev(svc, Scope::Cluster, 4)
        .iter()
        .map(|&i| {
            let b = t.backend(BackendId(first + u32::from(i))).unwrap();
            format!("{}:{}", b.ip(), b.port())
        })
        .collect()
}

#[test]
fn every_backend_gets_an_even_share_of_maglev_slots() {
    let t = build(vec![cluster_ip("web", "10.96.0.10", 80, n_backends(10))]);
    let mut count: HashMap<String, usize> = HashMap::new();
    for s in slots(&t, SvcId(0)) {
        *count.entry(s).or_default() += 1;
    }
    assert_eq!(count.len(), 10);
    // Backends fill in turns, so shares differ by at most one slot: 1021 / 10.
    assert!(count.values().all(|&c| c == 102 || c == 103), "{count:?}");
}

#[test]
fn flows_spread_evenly_over_backends() {
    let t = build(vec![cluster_ip("web", "10.96.0.10", 80, n_backends(10))]);
    let aff = AffinityTable::new(64);
    let mut count: HashMap<BackendId, usize> = HashMap::new();
    let n = 200_000;
    for h in flow_hashes(n, 99) {
        let b = t
            .select(SvcId(0), Scope::Cluster, h, ip("10.0.0.1"), 0, &aff)
            .unwrap();
        *count.entry(b).or_default() += 1;
    }
    assert_eq!(count.len(), 10);
    for (b, c) in count {
        let share = c as f64 / n as f64;
        assert!((share - 0.1).abs() < 0.005, "{b:?} got {share}");
    }
}

#[test]
fn listing_order_of_endpoints_does_not_change_the_table() {
    let mut reversed = n_backends(10);
    reversed.reverse();
    let t = build(vec![
        cluster_ip("a", "10.96.0.10", 80, n_backends(10)),
        cluster_ip("b", "10.96.0.11", 80, reversed),
    ]);
    assert_eq!(slots(&t, SvcId(0)), slots(&t, SvcId(1)));
}

/// Fraction of slots whose backend differs between two tables of the same size.
fn moved(a: &[String], b: &[String]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / a.len() as f64
}

#[test]
fn removing_one_of_ten_backends_moves_about_a_tenth_of_the_flows() {
    let all = n_backends(10);
    let mut fewer = all.clone();
    let removed = fewer.remove(4);
    let t = build(vec![
        cluster_ip("a", "10.96.0.10", 80, all),
        cluster_ip("b", "10.96.0.10", 81, fewer),
    ]);
    let (before, after) = (slots(&t, SvcId(0)), slots(&t, SvcId(1)));
    let gone = format!("{}:{}", removed.ip, removed.port);
    let f = moved(&before, &after);
    // Its own ~10% must move; the others' slots should mostly stay.
    let collateral = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| **x != gone && x != y)
        .count() as f64
        / before.len() as f64;
    println!(
        "removal: {:.1}% moved, {:.1}% collateral",
        f * 100.0,
        collateral * 100.0
    );
    assert!((0.095..0.16).contains(&f), "moved {f}");
    assert!(collateral < 0.06, "collateral {collateral}");
}

#[test]
fn adding_an_eleventh_backend_moves_about_an_eleventh_of_the_flows() {
    let ten = n_backends(10);
    let eleven = n_backends(11);
    // Cap both at the same size so slots compare one to one (11 backends would
    // otherwise get a bigger table).
    let mut b = ServiceTableBuilder::new(1021);
    b.add(cluster_ip("a", "10.96.0.10", 80, ten));
    b.add(cluster_ip("b", "10.96.0.10", 81, eleven));
    let t = b.build().unwrap();
    let (before, after) = (slots(&t, SvcId(0)), slots(&t, SvcId(1)));
    let f = moved(&before, &after);
    println!("addition: {:.1}% moved", f * 100.0);
    assert!((0.085..0.15).contains(&f), "moved {f}");
}

#[test]
fn affinity_keeps_a_client_on_one_backend_across_flows() {
    let mut s = cluster_ip("web", "10.96.0.10", 80, n_backends(10));
    s.affinity_timeout_s = Some(10);
    let t = build(vec![s]);
    let aff = AffinityTable::new(1024);
    for client in ["10.0.0.1", "10.0.0.2", "fd00::1"] {
        let picks: HashSet<_> = flow_hashes(100, 3)
            .map(|h| t.select(SvcId(0), Scope::Cluster, h, ip(client), SEC, &aff))
            .collect();
        if client.contains(':') {
            // No IPv6 backend: nothing to stick to.
            assert_eq!(picks, HashSet::from([None]));
        } else {
            assert_eq!(picks.len(), 1, "{client}: {picks:?}");
        }
    }
    // Different clients do not all land on one backend.
    let distinct: HashSet<_> = (0..50)
        .map(|i| {
            let c = IpAddr::V4(Ipv4Addr::new(10, 1, 0, i));
            t.select(SvcId(0), Scope::Cluster, 0, c, SEC, &aff)
        })
        .collect();
    assert!(distinct.len() >= 5, "{distinct:?}");
}

/// A table where the affinity answer is observable: plant an entry pointing at a
/// backend Maglev would not pick for this client.
fn planted() -> (ServiceTable, AffinityTable, BackendId, BackendId) {
    let mut s = cluster_ip("web", "10.96.0.10", 80, n_backends(10));
    s.affinity_timeout_s = Some(10);
    let t = build(vec![s]);
    let aff = AffinityTable::new(1024);
    let client = ip("10.0.0.1");
    let natural = t
        .select(
            SvcId(0),
            Scope::Cluster,
            0,
            client,
            0,
            &AffinityTable::new(8),
        )
        .unwrap();
    let other = BackendId((natural.0 + 1) % 10);
    assert!(aff.record(SvcId(0), client, other, 100 * SEC));
    (t, aff, natural, other)
}

#[test]
fn an_affinity_entry_is_honoured_until_its_timeout() {
    let (t, aff, natural, other) = planted();
    let c = ip("10.0.0.1");
    let sel = |now| t.select(SvcId(0), Scope::Cluster, 12345, c, now, &aff);
    assert_eq!(sel(100 * SEC), Some(other));
    assert_eq!(sel(110 * SEC), Some(other)); // 10 s later: still within the timeout
                                             // Each use refreshed it: 10 s after the last use it still holds.
    assert_eq!(sel(120 * SEC + SEC / 2), Some(other));
    // 11 s of silence: expired, Maglev decides again and that is recorded.
    assert_eq!(sel(131 * SEC + SEC / 2), Some(natural));
    assert_eq!(aff.lookup(SvcId(0), c, 132 * SEC, 10), Some(natural));
}

#[test]
fn an_affinity_entry_for_a_backend_no_longer_usable_is_ignored() {
    let (t, aff, natural, _) = planted();
    let c = ip("10.0.0.1");
    // Points at a backend of no service in this table.
    aff.record(SvcId(0), c, BackendId(999), 100 * SEC);
    assert_eq!(
        t.select(SvcId(0), Scope::Cluster, 1, c, 101 * SEC, &aff),
        Some(natural)
    );
    // Points at a backend of another service.
    let mut specs = vec![cluster_ip("web", "10.96.0.10", 80, n_backends(10))];
    specs[0].affinity_timeout_s = Some(10);
    specs.push(cluster_ip("other", "10.96.0.11", 80, n_backends(3)));
    let t2 = build(specs);
    aff.record(SvcId(0), c, BackendId(11), 100 * SEC);
    assert_eq!(
        t2.select(SvcId(0), Scope::Cluster, 1, c, 101 * SEC, &aff),
        Some(natural)
    );
    // Points at a backend that is no longer ready.
    let mut backends = n_backends(10);
    let stale = BackendId((natural.0 + 3) % 10);
    backends[stale.0 as usize].ready = false;
    let mut s = cluster_ip("web", "10.96.0.10", 80, backends);
    s.affinity_timeout_s = Some(10);
    let t3 = build(vec![s]);
    aff.record(SvcId(0), c, stale, 100 * SEC);
    let got = t3
        .select(SvcId(0), Scope::Cluster, 1, c, 101 * SEC, &aff)
        .unwrap();
    assert_ne!(got, stale);
    assert!(t3.backend(got).unwrap().ready());
}

#[test]
fn affinity_entries_are_per_service_and_per_client() {
    let aff = AffinityTable::new(1024);
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    aff.record(SvcId(1), a, BackendId(5), 0);
    assert_eq!(aff.lookup(SvcId(1), a, 0, 60), Some(BackendId(5)));
    assert_eq!(aff.lookup(SvcId(2), a, 0, 60), None);
    assert_eq!(aff.lookup(SvcId(1), b, 0, 60), None);
    assert_eq!(aff.lookup(SvcId(1), ip("::ffff:10.0.0.1"), 0, 60), None);
    aff.record(SvcId(1), a, BackendId(6), SEC);
    assert_eq!(aff.lookup(SvcId(1), a, SEC, 60), Some(BackendId(6)));
    assert_eq!(aff.lookup(SvcId(1), a, 62 * SEC, 60), None);
    assert!(!aff.record(SvcId(1), a, BackendId(MAX_BACKENDS), 0));
    aff.clear();
    assert_eq!(aff.lookup(SvcId(1), a, SEC, 60), None);
}

#[test]
fn a_full_bucket_evicts_its_least_recently_used_entry() {
    // Capacity 8 is one bucket: every key shares it.
    let aff = AffinityTable::new(8);
    assert_eq!(aff.capacity(), WAYS);
    let client = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
    for i in 0..8u8 {
        aff.record(
            SvcId(0),
            client(i),
            BackendId(u32::from(i)),
            u64::from(i) * SEC,
        );
    }
    // Touch client 0 so client 1 becomes the oldest.
    aff.record(SvcId(0), client(0), BackendId(0), 10 * SEC);
    aff.record(SvcId(0), client(8), BackendId(8), 11 * SEC);
    let now = 12 * SEC;
    assert_eq!(aff.lookup(SvcId(0), client(1), now, 100), None);
    for i in [0u8, 2, 3, 4, 5, 6, 7, 8] {
        assert_eq!(
            aff.lookup(SvcId(0), client(i), now, 100),
            Some(BackendId(u32::from(i))),
            "client {i}"
        );
    }
}

#[test]
fn affinity_timestamps_survive_the_24_bit_seconds_wrap() {
    let aff = AffinityTable::new(64);
    let c = ip("10.0.0.1");
    let t0 = ((1u64 << 24) - 5) * SEC;
    aff.record(SvcId(0), c, BackendId(3), t0);
    assert_eq!(
        aff.lookup(SvcId(0), c, t0 + 10 * SEC, 10),
        Some(BackendId(3))
    );
    assert_eq!(aff.lookup(SvcId(0), c, t0 + 11 * SEC, 10), None);
}

#[test]
fn the_affinity_table_is_shared_by_threads_without_mixing_entries() {
    let aff = Arc::new(AffinityTable::new(4096));
    let keys = 64u32;
    let threads = 4u32;
    let handles: Vec<_> = (0..threads)
        .map(|tid| {
            let aff = Arc::clone(&aff);
            std::thread::spawn(move || {
                let mut seen = 0u32;
                for round in 0..20_000u32 {
                    let k = (round * 7 + tid) % keys;
                    let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + k));
                    let svc = SvcId(k % 3);
                    let now = u64::from(round / 1000) * SEC;
                    // Every writer of key k writes a backend in k*threads..k*threads+threads.
                    aff.record(svc, client, BackendId(k * threads + tid), now);
                    if let Some(b) = aff.lookup(svc, client, now, 3600) {
                        assert_eq!(b.0 / threads, k, "key {k} read {b:?}");
                        seen += 1;
                    }
                }
                seen
            })
        })
        .collect();
    let seen: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // A lookup right after one's own record finds the key (another thread may have
    // rewritten it, with a value for the same key).
    assert!(seen > threads * 19_000, "{seen}");
}

/// 10,000 Services x 10 backends, as in a big cluster. Run it in release
/// (`cargo test --release -p dataplane building_ten_thousand`) for the real figure.
#[test]
fn building_ten_thousand_services_of_ten_backends_is_fast() {
    let specs: Vec<ServiceSpec> = (0..10_000u32)
        .map(|i| {
            let vip = Ipv4Addr::from(0x0a60_0000 + i);
            let backends = (0..10u32)
                .map(|j| BackendSpec {
                    local: j == 0,
                    ..ready(&Ipv4Addr::from(0x0af4_0000 + i * 10 + j).to_string(), 8080)
                })
                .collect();
            let mut s = cluster_ip(&format!("ns/svc-{i}"), &vip.to_string(), 80, backends);
            s.node_port = Some(30000 + (i % 2768) as u16);
            s
        })
        .collect();
    let start = std::time::Instant::now();
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in specs {
        b.add(s);
    }
    let t = b.build().unwrap();
    let took = start.elapsed();
    println!(
        "built 10000 services x 10 backends in {:?} ({} Maglev entries, {} KiB)",
        took,
        t.maglev_entries(),
        t.maglev_entries() * 2 / 1024
    );
    let limit = if cfg!(debug_assertions) { 60.0 } else { 5.0 };
    assert!(took.as_secs_f64() < limit, "{took:?}");
    assert_eq!(t.len(), 10_000);
    assert_eq!(t.backend_count(), 100_000);
    // Cluster tables of 1021 plus a 251 Local table (one local backend) each.
    assert_eq!(t.maglev_entries(), 10_000 * (1021 + 251));

    // Per-new-flow cost: VIP lookup + select, over all services.
    let aff = AffinityTable::new(1 << 16);
    let n = 1_000_000u32;
    let start = std::time::Instant::now();
    let mut sum = 0u64;
    for (k, h) in flow_hashes(n as usize, 5).enumerate() {
        let vip = IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + (k as u32 % 10_000)));
        let (svc, _) = t.lookup_vip(vip, 80, TCP).unwrap();
        let b = t
            .select(svc, Scope::Cluster, h, ip("10.0.0.1"), 0, &aff)
            .unwrap();
        sum += u64::from(b.0);
    }
    let per = start.elapsed().as_nanos() as f64 / f64::from(n);
    println!("lookup_vip + select: {per:.1} ns per new flow (checksum {sum})");
}
