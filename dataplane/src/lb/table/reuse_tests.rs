//! `build_reusing`: the same table as `build`, at the cost of the changed
//! Services only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::{BackendSpec, Scope, ServiceSpec, ServiceTable, ServiceTableBuilder, VipKind};
use crate::lb::DEFAULT_MAGLEV_MAX_SIZE;
use crate::proto::TCP;

fn be(ip: IpAddr, ready: bool, local: bool) -> BackendSpec {
    BackendSpec {
        ip,
        port: 8080,
        ready,
        serving: ready,
        terminating: false,
        local,
    }
}

fn svc(i: u32, backends: Vec<BackendSpec>) -> ServiceSpec {
    ServiceSpec {
        name: format!("ns/svc-{i}"),
        proto: TCP,
        port: 80,
        vips: vec![(
            IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)),
            VipKind::ClusterIp,
        )],
        node_port: None,
        ext_local: false,
        int_local: false,
        affinity_timeout_s: None,
        backends,
    }
}

fn v4(i: u32, j: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * 16 + j))
}

fn v6(i: u32, j: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        0xfd00_0000_0000_0000_0000_0000_0000_0000u128 + u128::from(i * 16 + j),
    ))
}

fn specs(n: u32, per: u32) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| {
            let mut b: Vec<_> = (0..per).map(|j| be(v4(i, j), true, j == 0)).collect();
            if i % 3 == 0 {
                b.push(be(v6(i, 0), true, false));
                b.push(be(v6(i, 1), false, true));
            }
            svc(i, b)
        })
        .collect()
}

fn build(s: Vec<ServiceSpec>, max: u32) -> ServiceTable {
    let mut b = ServiceTableBuilder::new(max);
    for x in s {
        b.add(x);
    }
    b.build().unwrap()
}

fn build_reusing(s: Vec<ServiceSpec>, max: u32, old: &ServiceTable) -> ServiceTable {
    let mut b = ServiceTableBuilder::new(max);
    for x in s {
        b.add(x);
    }
    b.build_reusing(old).unwrap()
}

/// Every Service's backends and Maglev tables, through the public API.
fn assert_same(a: &ServiceTable, b: &ServiceTable) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.backend_count(), b.backend_count());
    assert_eq!(a.maglev_entries(), b.maglev_entries());
    for ((ia, sa), (ib, sb)) in a.services().zip(b.services()) {
        assert_eq!(sa.name(), sb.name());
        let ba: Vec<_> = sa
            .backend_ids()
            .map(|i| a.backend(i).unwrap())
            .map(|x| {
                (
                    x.ip(),
                    x.port(),
                    x.usable(Scope::Cluster),
                    x.usable(Scope::Local),
                )
            })
            .collect();
        let bb: Vec<_> = sb
            .backend_ids()
            .map(|i| b.backend(i).unwrap())
            .map(|x| {
                (
                    x.ip(),
                    x.port(),
                    x.usable(Scope::Cluster),
                    x.usable(Scope::Local),
                )
            })
            .collect();
        assert_eq!(ba, bb, "{}", sa.name());
        for scope in [Scope::Cluster, Scope::Local] {
            for fam in [4, 6] {
                assert_eq!(
                    a.maglev(ia, scope, fam),
                    b.maglev(ib, scope, fam),
                    "{} {scope:?} {fam}",
                    sa.name()
                );
                assert_eq!(sa.usable_count(scope, fam), sb.usable_count(scope, fam));
            }
        }
    }
}

#[test]
fn reusing_an_identical_table_gives_the_same_table() {
    let max = DEFAULT_MAGLEV_MAX_SIZE;
    let old = build(specs(50, 10), max);
    let new = build_reusing(specs(50, 10), max, &old);
    assert_same(&new, &build(specs(50, 10), max));
}

#[test]
fn changed_services_get_the_tables_a_full_build_gives() {
    let max = DEFAULT_MAGLEV_MAX_SIZE;
    let old = build(specs(60, 10), max);
    let mut s = specs(60, 10);
    // A backend removed; one added; one no longer ready; the list reordered
    // (same usable set: a relabelled copy); a non-usable backend added (same
    // usable set); the local backend no longer local; a Service renamed
    // away and one moved to another position.
    s[1].backends.remove(3);
    s[2].backends.push(be(v4(2, 15), true, false));
    s[4].backends[5].ready = false;
    s[5].backends.reverse();
    s[6].backends.push(be(v4(6, 14), false, false));
    s[7].backends[0].local = false;
    s[8].name = "ns/renamed".into();
    let moved = s.remove(10);
    s.push(moved);
    s[9].backends.swap(0, 9);
    let new = build_reusing(s.clone(), max, &old);
    assert_same(&new, &build(s, max));
}

#[test]
fn another_size_cap_is_not_reused() {
    let old = build(specs(10, 10), DEFAULT_MAGLEV_MAX_SIZE);
    let new = build_reusing(specs(10, 10), 251, &old);
    assert_same(&new, &build(specs(10, 10), 251));
    assert_eq!(
        new.maglev(super::super::SvcId(0), Scope::Cluster, 4).len(),
        251
    );
}

/// One EndpointSlice change at 10,000 Services × 10 backends: a reusing
/// build against a full one (`cargo test --release -p dataplane
/// one_endpoint_change -- --nocapture` prints the figures).
#[test]
fn one_endpoint_change_at_ten_thousand_services_rebuilds_fast() {
    let max = DEFAULT_MAGLEV_MAX_SIZE;
    let base: Vec<ServiceSpec> = (0..10_000u32)
        .map(|i| svc(i, (0..10).map(|j| be(v4(i, j), true, j == 0)).collect()))
        .collect();
    let t0 = std::time::Instant::now();
    let old = build(base.clone(), max);
    let full = t0.elapsed();
    let mut changed = base.clone();
    changed[4321].backends.remove(2);
    changed[4321].backends.push(be(v4(4321, 12), true, false));
    let mut best = std::time::Duration::MAX;
    let mut new = None;
    for _ in 0..5 {
        let s = changed.clone();
        let t1 = std::time::Instant::now();
        let t = build_reusing(s, max, &old);
        best = best.min(t1.elapsed());
        new = Some(t);
    }
    let new = new.unwrap();
    println!("10000 services x 10: full build {full:?}, reusing build after one change {best:?} (best of 5)");
    assert_same(&new, &build(changed, max));
    // Goal 10 ms (about 2.5 ms on a quiet machine); the bound leaves room
    // for a loaded CI machine.
    let limit = if cfg!(debug_assertions) { 5.0 } else { 0.1 };
    assert!(best.as_secs_f64() < limit, "{best:?}");
}
