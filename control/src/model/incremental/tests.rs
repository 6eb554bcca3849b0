//! The incremental model against the full build after sequences of changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort, ServiceSpec as KSpec};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointHints, EndpointPort, EndpointSlice, ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::{build, NodeIdentity, ZONE_LABEL};
use super::Model;
use crate::source::{ClusterState, ObjKey};

fn node() -> NodeIdentity {
    NodeIdentity {
        name: "node-a".into(),
        ipv4: true,
        ipv6: true,
    }
}

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    }
}

fn service(name: &str, ip: &str, port: i32, node_port: Option<i32>) -> Service {
    Service {
        metadata: meta("app", name),
        spec: Some(KSpec {
            type_: Some(
                if node_port.is_some() {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            cluster_ip: Some(ip.into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                node_port,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// A slice of Service `svc` with endpoints `ips` (on node-b, unless the
/// address ends in `.1`: node-a), hinted for `zone` when given.
fn slice(svc: &str, ips: &[&str], zone: Option<&str>) -> EndpointSlice {
    let mut m = meta("app", "unused");
    m.labels = Some(BTreeMap::from([(
        "kubernetes.io/service-name".to_string(),
        svc.to_string(),
    )]));
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                node_name: Some(
                    if ip.ends_with(".1") {
                        "node-a"
                    } else {
                        "node-b"
                    }
                    .into(),
                ),
                hints: zone.map(|z| EndpointHints {
                    for_zones: Some(vec![ForZone { name: z.into() }]),
                    for_nodes: None,
                }),
                ..Default::default()
            })
            .collect(),
        metadata: m,
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn node_obj(name: &str, zone: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(ZONE_LABEL.to_string(), zone.to_string())])),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn key(name: &str) -> ObjKey {
    ObjKey::new("app", name)
}

/// Runs `steps` in order on one state and one model, checking after each
/// that the model's view equals a full build's and that `changed` says
/// whether the services or remotes differ from the step before; returns the
/// Services each update recomputed.
fn run(steps: &[&dyn Fn(&mut ClusterState)]) -> Vec<usize> {
    let mut state = ClusterState::default();
    let mut model = Model::new(node());
    let mut recomputed = Vec::new();
    let mut before = build(&state, &node());
    for (i, step) in steps.iter().enumerate() {
        step(&mut state);
        let want = build(&state, &node());
        assert_eq!(model.update(&state), &want, "after step {i}");
        let differs = want.services != before.services || want.remotes != before.remotes;
        assert_eq!(model.changed(), differs || i == 0, "changed after step {i}");
        recomputed.push(model.recomputed());
        before = want;
    }
    recomputed
}

fn base(s: &mut ClusterState) {
    s.nodes
        .insert("node-a".into(), node_obj("node-a", "zone-a"));
    for i in 0..5 {
        let name = format!("web-{i}");
        s.services.insert(
            key(&name),
            service(&name, &format!("10.96.0.{}", 10 + i), 80, None),
        );
        s.endpoint_slices.insert(
            key(&format!("{name}-abc")),
            slice(
                &name,
                &[&format!("10.1.{i}.1"), &format!("10.1.{i}.2")],
                None,
            ),
        );
    }
}

#[test]
fn an_untouched_state_recomputes_nothing_and_one_changed_slice_recomputes_one_service() {
    let r = run(&[&base, &|_| {}, &|s| {
        s.endpoint_slices.insert(
            key("web-3-abc"),
            slice("web-3", &["10.1.3.1", "10.1.3.7"], None),
        );
    }]);
    assert_eq!(r, [5, 0, 1]);
}

#[test]
fn an_equal_object_under_a_new_arc_recomputes_nothing() {
    let r = run(&[&base, &|s| {
        let svc = (*s.services[&key("web-1")]).clone();
        s.services.insert(key("web-1"), svc);
        let sl = (*s.endpoint_slices[&key("web-2-abc")]).clone();
        s.endpoint_slices.insert(key("web-2-abc"), sl);
    }]);
    assert_eq!(r, [5, 0]);
}

#[test]
fn a_changed_object_keeping_its_resource_version_is_still_seen() {
    // A manifest edited by hand keeps the version it was exported with.
    run(&[
        &|s| {
            base(s);
            let mut sl = (*s.endpoint_slices[&key("web-0-abc")]).clone();
            sl.metadata.resource_version = Some("42".into());
            s.endpoint_slices.insert(key("web-0-abc"), sl);
        },
        &|s| {
            let mut sl = slice("web-0", &["10.1.0.9"], None);
            sl.metadata.resource_version = Some("42".into());
            s.endpoint_slices.insert(key("web-0-abc"), sl);
        },
    ]);
}

#[test]
fn slices_added_moved_between_services_and_deleted_follow_the_full_build() {
    run(&[
        &base,
        // A second slice for web-0.
        &|s| {
            s.endpoint_slices
                .insert(key("web-0-xyz"), slice("web-0", &["10.1.0.3"], None));
        },
        // Relabelled to web-1: leaves web-0, joins web-1.
        &|s| {
            s.endpoint_slices
                .insert(key("web-0-xyz"), slice("web-1", &["10.1.0.3"], None));
        },
        // The same endpoint in two slices of one Service, then one deleted.
        &|s| {
            s.endpoint_slices
                .insert(key("web-1-dup"), slice("web-1", &["10.1.0.3"], None));
        },
        &|s| {
            s.endpoint_slices.remove(&key("web-0-xyz"));
        },
        // A slice without the label, then fixed.
        &|s| {
            let mut sl = slice("web-2", &["10.1.2.5"], None);
            sl.metadata.labels = None;
            s.endpoint_slices.insert(key("stray"), sl);
        },
        &|s| {
            s.endpoint_slices
                .insert(key("stray"), slice("web-2", &["10.1.2.5"], None));
        },
        &|s| {
            s.endpoint_slices.clear();
        },
    ]);
}

#[test]
fn a_deleted_service_orphans_its_slices_until_it_comes_back() {
    run(&[
        &base,
        &|s| {
            s.services.remove(&key("web-2"));
        },
        &|s| {
            s.endpoint_slices
                .insert(key("web-2-abc"), slice("web-2", &["10.1.2.8"], None));
        },
        &|s| {
            s.services
                .insert(key("web-2"), service("web-2", "10.96.0.12", 80, None));
        },
        // A slice for a Service never created, then its slice gone.
        &|s| {
            s.endpoint_slices
                .insert(key("ghost-1"), slice("ghost", &["10.9.9.9"], None));
        },
        &|s| {
            s.endpoint_slices.remove(&key("ghost-1"));
        },
    ]);
}

#[test]
fn vip_and_node_port_conflicts_move_when_the_winner_changes_or_goes() {
    run(&[
        &base,
        // web-4 claims web-1's ClusterIP and port: web-1 (first by name) keeps it.
        &|s| {
            s.services
                .insert(key("web-4"), service("web-4", "10.96.0.11", 80, None));
        },
        // web-1 leaves the VIP: web-4 gets it.
        &|s| {
            s.services
                .insert(key("web-1"), service("web-1", "10.96.0.99", 80, None));
        },
        // Two NodePorts on 30080; the first in name order keeps it.
        &|s| {
            s.services.insert(
                key("web-0"),
                service("web-0", "10.96.0.10", 80, Some(30080)),
            );
            s.services.insert(
                key("web-3"),
                service("web-3", "10.96.0.13", 80, Some(30080)),
            );
        },
        &|s| {
            s.services.remove(&key("web-0"));
        },
    ]);
}

#[test]
fn a_zone_change_of_this_node_recomputes_every_service_and_follows_the_hints() {
    let r = run(&[
        &|s| {
            base(s);
            s.endpoint_slices.insert(
                key("web-0-abc"),
                slice("web-0", &["10.1.0.2"], Some("zone-a")),
            );
            s.endpoint_slices.insert(
                key("web-0-def"),
                slice("web-0", &["10.1.0.3"], Some("zone-b")),
            );
        },
        &|s| {
            s.nodes
                .insert("node-a".into(), node_obj("node-a", "zone-b"));
        },
        &|s| {
            s.nodes.clear();
        },
        &|s| {
            s.nodes
                .insert("node-a".into(), node_obj("node-a", "zone-a"));
            s.nodes
                .insert("node-b".into(), node_obj("node-b", "zone-b"));
        },
    ]);
    assert_eq!(r, [5, 5, 5, 5]);
}

#[test]
fn a_shared_state_is_compared_by_pointer() {
    // The sources publish a clone of the maps: the objects are the same
    // `Arc`s, so nothing is compared or recomputed.
    let mut state = ClusterState::default();
    base(&mut state);
    let mut model = Model::new(node());
    model.update(&state);
    let again = Arc::new(state.clone());
    assert!(Arc::ptr_eq(
        &state.services[&key("web-0")],
        &again.services[&key("web-0")]
    ));
    assert_eq!(model.update(&again), &build(&again, &node()));
    assert_eq!(model.recomputed(), 0);
    assert!(!model.changed());
}

#[test]
fn a_service_losing_a_vip_gets_it_back_when_the_winner_changes_only_its_endpoints_and_vip() {
    // The loser's spec is changed by the conflict step, not by its own
    // inputs: it must be restored and resolved again on every update.
    let r = run(&[
        &|s| {
            base(s);
            s.services.insert(
                key("web-4"),
                service("web-4", "10.96.0.11", 80, Some(30001)),
            );
            s.services.insert(
                key("web-1"),
                service("web-1", "10.96.0.11", 80, Some(30001)),
            );
        },
        &|s| {
            s.endpoint_slices
                .insert(key("web-4-abc"), slice("web-4", &["10.1.4.9"], None));
        },
        &|s| {
            s.endpoint_slices
                .insert(key("web-1-abc"), slice("web-1", &["10.1.1.9"], None));
        },
        &|s| {
            s.services.insert(
                key("web-1"),
                service("web-1", "10.96.0.21", 80, Some(30002)),
            );
        },
        &|s| {
            s.services.insert(
                key("web-1"),
                service("web-1", "10.96.0.11", 80, Some(30001)),
            );
        },
    ]);
    assert_eq!(r, [5, 1, 1, 1, 1]);
}

#[test]
fn a_first_state_with_orphans_stray_slices_and_shared_slices_equals_the_full_build() {
    run(&[
        &|s| {
            base(s);
            s.endpoint_slices
                .insert(key("ghost-1"), slice("ghost", &["10.9.9.9"], None));
            s.endpoint_slices.insert(
                key("web-0-b"),
                slice("web-0", &["10.1.0.2", "10.1.0.4"], None),
            );
            let mut sl = slice("web-2", &["10.1.2.5"], None);
            sl.metadata.labels = None;
            s.endpoint_slices.insert(key("stray"), sl);
        },
        &|s| {
            s.services
                .insert(key("ghost"), service("ghost", "10.96.1.1", 80, None));
        },
        // Everything gone, then back: the model starts over.
        &|s| {
            s.services.clear();
            s.endpoint_slices.clear();
        },
        &base,
    ]);
}
