//! Shared-memory state at the scale, 10,000 Services × 10 backends:
//! the snapshot codec (encode, decode), a publish into a slot of a real
//! file (encode + copy + checksum + one store), a read by the dataplane's
//! reader (copy + checksum + decode), a Service table built reusing the
//! previous one after one EndpointSlice change, and the three together:
//! one change from control's publish to a table the workers can take.
use std::net::{IpAddr, Ipv4Addr};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::lb::{
    BackendSpec, ServiceSpec, ServiceTableBuilder, VipKind, DEFAULT_MAGLEV_MAX_SIZE,
};
use dataplane::state::shm::{Layout, Publisher, Reader, Shm};
use dataplane::state::snapshot::Snapshot;

const SERVICES: u32 = 10_000;
const BACKENDS: u32 = 10;

fn services() -> Vec<ServiceSpec> {
    (0..SERVICES)
        .map(|i| ServiceSpec {
            name: format!("ns-{}/svc-{i}:http", i % 100),
            proto: 6,
            port: 80,
            vips: vec![(
                IpAddr::V4(Ipv4Addr::from(0x0a60_0000 + i)),
                VipKind::ClusterIp,
            )],
            node_port: Some(30000 + (i % 2768) as u16),
            ext_local: false,
            int_local: false,
            affinity_timeout_s: None,
            backends: (0..BACKENDS)
                .map(|j| BackendSpec {
                    ip: IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + i * 16 + j)),
                    port: 8080,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: j == 0,
                })
                .collect(),
        })
        .collect()
}

fn table(
    specs: Vec<ServiceSpec>,
    old: Option<&dataplane::lb::ServiceTable>,
) -> dataplane::lb::ServiceTable {
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in specs {
        b.add(s);
    }
    match old {
        Some(o) => b.build_reusing(o),
        None => b.build(),
    }
    .expect("services build")
}

fn bench(c: &mut Criterion) {
    let snap = Snapshot {
        revision: 1,
        built_ns: 0,
        services: services(),
        remotes: vec![],
        pods: vec![],
    };
    let bytes = snap.encode();
    let dir = std::env::temp_dir().join(format!("twill-bench-shm-{}", std::process::id()));
    let path = dir.join("node.shm");
    let layout = Layout {
        slot_bytes: 32 << 20,
        ..Layout::default()
    };
    let shm = Shm::create_or_open(&path, &layout).expect("shm file");
    let mut publisher = Publisher::new(&shm);
    let mut reader = Reader::new(&shm);
    println!(
        "snapshot of {SERVICES} services x {BACKENDS}: {} bytes",
        bytes.len()
    );

    let mut g = c.benchmark_group("shm_10k_x_10");
    g.sample_size(20);
    let mut buf = Vec::with_capacity(bytes.len());
    g.bench_function("snapshot_encode", |b| {
        b.iter(|| {
            buf.clear();
            snap.encode_into(&mut buf);
            black_box(buf.len())
        })
    });
    g.bench_function("snapshot_decode", |b| {
        b.iter(|| black_box(Snapshot::decode(&bytes).expect("decode").services.len()))
    });
    g.bench_function("publish", |b| {
        b.iter(|| black_box(publisher.publish(&snap, 0).expect("publish").generation))
    });
    g.bench_function("publish_and_read", |b| {
        b.iter(|| {
            publisher.publish(&snap, 0).expect("publish");
            black_box(reader.poll(0).expect("read").expect("new").0)
        })
    });
    let base = table(snap.services.clone(), None);
    let mut changed = snap.clone();
    changed.services[4321].backends.remove(2);
    g.bench_function("tables_build_reusing_after_one_change", |b| {
        b.iter_batched(
            || changed.services.clone(),
            |specs| black_box(table(specs, Some(&base)).len()),
            criterion::BatchSize::LargeInput,
        )
    });
    // One EndpointSlice change, end to end: control publishes the changed
    // snapshot, the dataplane reads it and builds its Service table reusing
    // the live one.
    g.bench_function("one_change_publish_read_build", |b| {
        b.iter(|| {
            publisher.publish(&changed, 0).expect("publish");
            let (_, s) = reader.poll(0).expect("read").expect("new");
            black_box(table(s.services, Some(&base)).len())
        })
    });
    g.sample_size(10);
    g.bench_function("tables_full_build", |b| {
        b.iter_batched(
            || snap.services.clone(),
            |specs| black_box(table(specs, None).len()),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
    drop(shm);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
