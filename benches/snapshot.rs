//! The two snapshot-time goals at 10,000 Services × 10 endpoints,
//! end to end in one process:
//!
//! 1. `full_model_build_and_publish`: a `ClusterState` as the sources hold
//!    it → a fresh `control::model::Model` (every Service computed) → a
//!    snapshot → published into a slot of a real shared-memory file
//!    (encode, copy, checksum, one store). Goal ≤ 50 ms.
//! 2. `one_slice_change_to_tables`: after a warm start, one EndpointSlice
//!    changed → the incremental model → publish → the dataplane's `Reader`
//!    polls (copy, checksum, decode) → `TablesBuilder::build_reusing` from
//!    the live tables → tables the workers can swap in. Goal ≤ 10 ms.
//!
//! Each iteration of 2 flips one slice between two versions, so every
//! iteration is a real change (a new generation, one Service recomputed and
//! its Maglev tables rebuilt). Freeing what a step replaced (the model
//! built in 1, the old tables in 2) happens outside the timed region. Run: `cargo bench -j2 --bench snapshot`.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model::{build, Model, NodeIdentity, NodeView};
use control::source::{ClusterState, ObjKey};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::state::shm::{Layout, Publisher, Reader, Shm};
use dataplane::state::snapshot::{Snapshot, SnapshotRef};
use dataplane::state::{NodeConfig, Tables, TablesBuilder};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 10;
/// The Service whose slice changes in the second bench.
const CHANGED: u32 = 4321;

fn node() -> NodeIdentity {
    NodeIdentity {
        name: "node-a".into(),
        ipv4: true,
        ipv6: false,
    }
}

fn meta(name: &str, version: u32) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("load".into()),
        resource_version: Some(version.to_string()),
        ..Default::default()
    }
}

fn service(i: u32) -> Service {
    let name = format!("svc-{i:05}");
    Service {
        metadata: meta(&name, i),
        // Every fourth a NodePort Service (the range has room for 2,768).
        spec: Some(ServiceSpec {
            type_: Some(
                if i.is_multiple_of(4) {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i).to_string()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                node_port: i.is_multiple_of(4).then_some(30000 + (i / 4) as i32),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Service `i`'s slice; `first` is the address index of its first endpoint
/// (the second bench moves it).
fn slice(i: u32, first: u32, version: u32) -> EndpointSlice {
    let name = format!("svc-{i:05}");
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: (first..first + ENDPOINTS)
            .map(|j| Endpoint {
                addresses: vec![Ipv4Addr::from(0x0af4_0000 + i * 16 + j).to_string()],
                node_name: Some(if j == 0 { "node-a" } else { "node-b" }.into()),
                ..Default::default()
            })
            .collect(),
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                name.clone(),
            )])),
            ..meta(&format!("{name}-abcde"), version)
        },
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    for i in 0..SERVICES {
        s.services
            .insert(ObjKey::new("load", format!("svc-{i:05}")), service(i));
        s.endpoint_slices.insert(
            ObjKey::new("load", format!("svc-{i:05}-abcde")),
            slice(i, 0, i),
        );
    }
    s
}

/// The snapshot of a view, borrowed (as control's loop publishes it).
fn snapshot(view: &NodeView, revision: u64) -> SnapshotRef<'_> {
    SnapshotRef {
        revision,
        built_ns: 0,
        services: &view.services,
        remotes: &view.remotes,
        pods: &[],
    }
}

/// The dataplane's tables for a snapshot, reusing `old`'s unchanged Services.
fn tables(snap: Snapshot, generation: u64, old: Option<&Tables>) -> Tables {
    let mut b = TablesBuilder::new(NodeConfig::default());
    b.published_generation(generation);
    for s in snap.services {
        b.add_service(s);
    }
    b.build_reusing(old).expect("tables build")
}

fn bench(c: &mut Criterion) {
    let state = Arc::new(state());
    let view = build(&state, &node());
    assert_eq!(view.services.len(), SERVICES as usize);
    assert!(view.reports.is_empty(), "{:?}", &view.reports[..1]);
    drop(view);
    let dir = std::env::temp_dir().join(format!("twill-bench-snapshot-{}", std::process::id()));
    let layout = Layout {
        slot_bytes: 32 << 20,
        ..Layout::default()
    };
    let shm = Shm::create_or_open(&dir.join("node.shm"), &layout).expect("shm file");
    let mut publisher = Publisher::new(&shm);
    let mut reader = Reader::new(&shm);

    let mut g = c.benchmark_group("snapshot_10k_x_10");
    g.sample_size(10);
    g.bench_function("full_model_build_and_publish", |b| {
        // The model is returned: freeing it is not part of the build.
        b.iter_with_large_drop(|| {
            let mut model = Model::new(node());
            let snap = snapshot(model.update(&state), 1);
            publisher.publish_parts(snap, 0).expect("publish");
            model
        })
    });
    g.bench_function("full_build_fn", |b| {
        b.iter_with_large_drop(|| build(&state, &node()))
    });

    // Warm start: the model has seen the state, the dataplane has tables.
    let mut model = Model::new(node());
    publisher
        .publish_parts(snapshot(model.update(&state), 1), 0)
        .expect("publish");
    let (generation, snap) = reader.poll(0).expect("read").expect("new");
    let mut live = tables(snap, generation, None);
    // Two versions of one slice (its first endpoint moved), as a source
    // would publish them: a new map sharing every other object.
    let key = ObjKey::new("load", format!("svc-{CHANGED:05}-abcde"));
    let versions: Vec<Arc<ClusterState>> = (0..2u32)
        .map(|v| {
            let mut s = (*state).clone();
            s.endpoint_slices
                .insert(key.clone(), slice(CHANGED, v * 2 + 1, 1_000_000 + v));
            Arc::new(s)
        })
        .collect();
    let mut flip = 0usize;
    let mut revision = 2;
    g.sample_size(30);
    g.bench_function("one_slice_change_to_tables", |b| {
        // Timed until the new tables are ready; the replaced tables are
        // freed after the swap, outside the timed region (as in the
        // dataplane, where the workers take the new tables first).
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                flip ^= 1;
                revision += 1;
                let t0 = Instant::now();
                let view = model.update(&versions[flip]);
                publisher
                    .publish_parts(snapshot(view, revision), 0)
                    .expect("publish");
                let (generation, snap) = reader.poll(0).expect("read").expect("new");
                let new = tables(snap, generation, Some(&live));
                total += t0.elapsed();
                black_box(new.services().len());
                drop(std::mem::replace(&mut live, new));
            }
            total
        })
    });
    // Its parts, for where the time goes.
    g.bench_function("one_slice_change_model_only", |b| {
        b.iter(|| {
            flip ^= 1;
            black_box(model.update(&versions[flip]).services.len())
        })
    });
    g.finish();
    drop(shm);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
