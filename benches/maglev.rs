//! Stage bench: the Service lookup and the Maglev backend pick, on 1,000
//! Services x 10 backends (cost must not grow with the table).
use std::net::{IpAddr, Ipv4Addr};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::lb::{AffinityTable, BackendSpec, Scope, ServiceSpec, ServiceTableBuilder, VipKind};

const SERVICES: u32 = 1000;

fn vip(s: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a60_0001 + s))
}

fn bench(c: &mut Criterion) {
    let mut b = ServiceTableBuilder::new(65537);
    for s in 0..SERVICES {
        b.add(ServiceSpec {
            name: format!("svc-{s}"),
            proto: 17,
            port: 53,
            vips: vec![(vip(s), VipKind::ClusterIp)],
            node_port: None,
            ext_local: false,
            int_local: false,
            affinity_timeout_s: None,
            backends: (0..10)
                .map(|j| BackendSpec {
                    ip: IpAddr::V4(Ipv4Addr::from(0x0a10_0000 + s * 10 + j)),
                    port: 5353,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: false,
                })
                .collect(),
        });
    }
    let table = b.build().expect("services build");
    let aff = AffinityTable::new(1024);
    let client = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2));
    let mut g = c.benchmark_group("lb");
    let mut s = 0u32;
    g.bench_function("lookup_vip", |bch| {
        bch.iter(|| {
            s = (s + 17) % SERVICES;
            table.lookup_vip(black_box(vip(s)), 53, 17)
        })
    });
    let (svc, _) = table.lookup_vip(vip(7), 53, 17).expect("vip");
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("maglev_select", |bch| {
        bch.iter(|| {
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(17);
            table.select(svc, Scope::Cluster, black_box(h), client, 0, &aff)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
