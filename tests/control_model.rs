//! The model from real manifests: each case loads Services, EndpointSlices and
//! Nodes as `kubectl get -o yaml` returns them (tests/data/model/), builds the
//! node's view for node-a (zone-a) and compares it with the view kube-proxy's
//! semantics give, one case per semantic.

use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use control::model::{build, HealthCheck, NodeIdentity, NodeView, MAX_ENDPOINTS_PER_SERVICE};
use control::source::{ClusterState, ObjKey, Report};
use dataplane::config::{MacSpec, RemoteSection};
use dataplane::lb::{
    BackendSpec, ServiceSpec, ServiceTableBuilder, VipKind, DEFAULT_MAGLEV_MAX_SIZE,
};
use dataplane::proto::{TCP, UDP};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::Deserialize;

// ---------------------------------------------------------------------------
// Loading manifests.

/// Adds every object of a manifest file (several documents, `List`s) to `state`.
fn load_into(state: &mut ClusterState, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/model")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = serde_yaml_ng::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
        add(state, v, file);
    }
}

fn add(state: &mut ClusterState, v: serde_yaml_ng::Value, file: &str) {
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let ns_name = |v: &serde_yaml_ng::Value| {
        let m = &v["metadata"];
        ObjKey::new(
            m.get("namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default"),
            m.get("name").and_then(|n| n.as_str()).unwrap_or(""),
        )
    };
    let what = |e: serde_yaml_ng::Error| format!("{file}: {kind}: {e}");
    match kind.as_str() {
        "List" => {
            if let Some(items) = v.get("items").and_then(|i| i.as_sequence()) {
                for item in items {
                    add(state, item.clone(), file);
                }
            }
        }
        "Service" => {
            let key = ns_name(&v);
            let s: Service = serde_yaml_ng::from_value(v).map_err(what).unwrap();
            state.services.insert(key, s);
        }
        "EndpointSlice" => {
            let key = ns_name(&v);
            let s: EndpointSlice = serde_yaml_ng::from_value(v).map_err(what).unwrap();
            state.endpoint_slices.insert(key, s);
        }
        "Node" => {
            let key = ns_name(&v);
            let n: Node = serde_yaml_ng::from_value(v).map_err(what).unwrap();
            state.nodes.insert(key.name, n);
        }
        other => panic!("{file}: kind {other:?} not expected in model manifests"),
    }
}

/// The two nodes (cluster.yaml) plus the case's files.
fn cluster(files: &[&str]) -> ClusterState {
    let mut state = ClusterState::default();
    load_into(&mut state, "cluster.yaml");
    for f in files {
        load_into(&mut state, f);
    }
    state
}

fn node_a() -> NodeIdentity {
    NodeIdentity {
        name: "node-a".into(),
        ipv4: true,
        ipv6: true,
    }
}

fn view(files: &[&str]) -> NodeView {
    view_as(files, &node_a())
}

fn view_as(files: &[&str], node: &NodeIdentity) -> NodeView {
    let v = build(&cluster(files), node);
    // Every view must build into the dataplane's table, with no VIP conflicts.
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in &v.services {
        b.add(s.clone());
    }
    let t = b.build().expect("the view builds into a service table");
    assert!(t.conflicts().is_empty(), "{:?}", t.conflicts());
    v
}

/// The specs of one Service (`ns/name`).
fn specs<'v>(v: &'v NodeView, svc: &str) -> Vec<&'v ServiceSpec> {
    let prefix = format!("{svc}:");
    v.services
        .iter()
        .filter(|s| s.name.starts_with(&prefix))
        .collect()
}

/// The reports about one object (`Kind ns/name`).
fn reports<'v>(v: &'v NodeView, origin: &str) -> Vec<&'v str> {
    v.reports
        .iter()
        .filter(|r| r.origin == origin)
        .map(|r| r.reason.as_str())
        .collect()
}

fn assert_reported(v: &NodeView, origin: &str, needle: &str) {
    assert!(
        reports(v, origin).iter().any(|r| r.contains(needle)),
        "no report about {origin} containing {needle:?}; reports: {:#?}",
        v.reports
    );
}

// ---------------------------------------------------------------------------
// Expected values.

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A ClusterIP Service port with no endpoints yet.
fn spec(name: &str, proto: u8, port: u16, vips: &[(&str, VipKind)]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        proto,
        port,
        vips: vips.iter().map(|(a, k)| (ip(a), *k)).collect(),
        node_port: None,
        ext_local: false,
        int_local: false,
        affinity_timeout_s: None,
        backends: Vec::new(),
    }
}

/// A ready remote endpoint.
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

/// A ready endpoint on node-a.
fn ready_here(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        local: true,
        ..ready(addr, port)
    }
}

/// A terminating endpoint still serving.
fn terminating(addr: &str, port: u16) -> BackendSpec {
    BackendSpec {
        ready: false,
        serving: true,
        terminating: true,
        ..ready(addr, port)
    }
}

use VipKind::{ClusterIp, ExternalIp, LoadBalancer};

// ---------------------------------------------------------------------------
// ClusterIPs and families.

#[test]
fn a_single_stack_cluster_ip_service_gets_its_vip_and_every_endpoint_with_its_locality() {
    let v = view(&["clusterip.yaml"]);
    let want = ServiceSpec {
        backends: vec![
            ready_here("10.244.1.5", 8080),
            ready("10.244.2.7", 8080),
            ready("10.244.2.9", 8080),
        ],
        ..spec("shop/web:http", TCP, 80, &[("10.96.0.10", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/web"), [&want]);
    assert!(reports(&v, "Service shop/web").is_empty());
}

#[test]
fn a_dual_stack_service_is_one_spec_with_both_cluster_ips_and_both_families_of_endpoints() {
    let v = view(&["clusterip.yaml"]);
    let want = ServiceSpec {
        backends: vec![
            ready_here("10.244.1.21", 8080),
            ready("10.244.2.22", 8080),
            ready_here("fd00:244:1::21", 8080),
            ready("fd00:244:2::22", 8080),
        ],
        ..spec(
            "shop/web-dual:http",
            TCP,
            80,
            &[("10.96.0.20", ClusterIp), ("fd00:96::20", ClusterIp)],
        )
    };
    assert_eq!(specs(&v, "shop/web-dual"), [&want]);
}

#[test]
fn an_ipv4_only_node_keeps_the_ipv4_half_of_a_dual_stack_service_and_skips_an_ipv6_one() {
    let v4 = NodeIdentity {
        ipv6: false,
        ..node_a()
    };
    let v = view_as(&["clusterip.yaml"], &v4);
    let want = ServiceSpec {
        backends: vec![ready_here("10.244.1.21", 8080), ready("10.244.2.22", 8080)],
        ..spec("shop/web-dual:http", TCP, 80, &[("10.96.0.20", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/web-dual"), [&want]);
    assert!(specs(&v, "shop/web-v6").is_empty());
    assert_reported(&v, "Service shop/web-v6", "no family this node carries");
    let v6 = view(&["clusterip.yaml"]);
    assert_eq!(
        specs(&v6, "shop/web-v6")[0].vips,
        [(ip("fd00:96::30"), ClusterIp)]
    );
}

// ---------------------------------------------------------------------------
// Ports.

#[test]
fn ports_are_matched_to_slice_ports_by_name_and_protocol() {
    let v = view(&["ports.yaml"]);
    let vip = [("10.96.0.10", ClusterIp)];
    let want = [
        ServiceSpec {
            backends: vec![ready_here("10.244.1.2", 53), ready("10.244.2.3", 53)],
            ..spec("kube-system/kube-dns:dns", UDP, 53, &vip)
        },
        ServiceSpec {
            backends: vec![ready_here("10.244.1.2", 53), ready("10.244.2.3", 53)],
            ..spec("kube-system/kube-dns:dns-tcp", TCP, 53, &vip)
        },
        ServiceSpec {
            backends: vec![ready_here("10.244.1.2", 9153), ready("10.244.2.3", 9153)],
            ..spec("kube-system/kube-dns:metrics", TCP, 9153, &vip)
        },
    ];
    assert_eq!(
        specs(&v, "kube-system/kube-dns"),
        want.iter().collect::<Vec<_>>()
    );
}

#[test]
fn an_sctp_port_is_skipped_with_a_report_and_the_other_ports_still_apply() {
    let v = view(&["ports.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready("10.244.2.40", 8080)],
        ..spec("shop/signal:http", TCP, 80, &[("10.96.1.40", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/signal"), [&want]);
    assert_reported(&v, "Service shop/signal", "SCTP is not supported");
}

#[test]
fn an_unnamed_port_is_named_by_its_number_and_protocol() {
    let v = view(&["ports.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready("10.244.2.50", 8000)],
        ..spec(
            "shop/plain:8000/TCP",
            TCP,
            8000,
            &[("10.96.1.50", ClusterIp)],
        )
    };
    assert_eq!(specs(&v, "shop/plain"), [&want]);
}

#[test]
fn a_target_port_by_name_resolves_per_slice_to_each_pods_own_port() {
    let v = view(&["ports.yaml"]);
    let want = ServiceSpec {
        backends: vec![
            ready_here("10.244.1.60", 8080),
            ready("10.244.2.60", 8080),
            ready("10.244.2.61", 9090),
        ],
        ..spec("shop/named:http", TCP, 80, &[("10.96.1.60", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/named"), [&want]);
}

// ---------------------------------------------------------------------------
// NodePort, LoadBalancer, externalIPs.

#[test]
fn a_node_port_service_answers_on_its_node_port() {
    let v = view(&["exposure.yaml"]);
    let want = ServiceSpec {
        node_port: Some(30080),
        backends: vec![ready("10.244.2.10", 8080)],
        ..spec("shop/web-np:http", TCP, 80, &[("10.96.2.10", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/web-np"), [&want]);
}

#[test]
fn a_load_balancer_gets_its_vip_mode_ingress_ips_of_both_families_but_no_hostname_or_proxy_ip() {
    let v = view(&["exposure.yaml"]);
    let want = ServiceSpec {
        node_port: Some(31443),
        backends: vec![ready("10.244.2.20", 8443), ready("fd00:244:2::20", 8443)],
        ..spec(
            "shop/web-lb:https",
            TCP,
            443,
            &[
                ("10.96.2.20", ClusterIp),
                ("fd00:96::2:20", ClusterIp),
                ("203.0.113.20", LoadBalancer),
                ("2001:db8::20", LoadBalancer),
                ("203.0.113.22", LoadBalancer),
            ],
        )
    };
    assert_eq!(specs(&v, "shop/web-lb"), [&want]);
    assert!(reports(&v, "Service shop/web-lb").is_empty());
}

#[test]
fn a_load_balancer_without_allocated_node_ports_has_no_node_port() {
    let v = view(&["exposure.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready("10.244.2.30", 8080)],
        ..spec(
            "shop/web-lb-nonp:http",
            TCP,
            80,
            &[("10.96.2.30", ClusterIp), ("203.0.113.30", LoadBalancer)],
        )
    };
    assert_eq!(specs(&v, "shop/web-lb-nonp"), [&want]);
}

#[test]
fn external_ips_of_the_services_family_are_vips() {
    let v = view(&["exposure.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready("10.244.2.40", 8080)],
        ..spec(
            "shop/web-ext:http",
            TCP,
            80,
            &[
                ("10.96.2.40", ClusterIp),
                ("198.51.100.40", ExternalIp),
                ("198.51.100.41", ExternalIp),
            ],
        )
    };
    assert_eq!(specs(&v, "shop/web-ext"), [&want]);
}

// ---------------------------------------------------------------------------
// Session affinity.

#[test]
fn client_ip_affinity_keeps_its_timeout() {
    let v = view(&["affinity.yaml"]);
    assert_eq!(specs(&v, "shop/cart")[0].affinity_timeout_s, Some(600));
}

#[test]
fn client_ip_affinity_without_a_timeout_gets_three_hours() {
    let v = view(&["affinity.yaml"]);
    assert_eq!(
        specs(&v, "shop/cart-default")[0].affinity_timeout_s,
        Some(10_800)
    );
    // And no affinity without sessionAffinity ClientIP.
    let v = view(&["clusterip.yaml"]);
    assert_eq!(specs(&v, "shop/web")[0].affinity_timeout_s, None);
}

// ---------------------------------------------------------------------------
// Traffic policies.

#[test]
fn external_traffic_policy_local_marks_the_spec_and_serves_a_health_check_counting_local_ready_endpoints(
) {
    let v = view(&["policies.yaml"]);
    let want = ServiceSpec {
        node_port: Some(30180),
        ext_local: true,
        backends: vec![
            ready_here("10.244.1.10", 8080),
            BackendSpec {
                local: true,
                ..terminating("10.244.1.11", 8080)
            },
            ready("10.244.2.10", 8080),
        ],
        ..spec(
            "shop/web-local:http",
            TCP,
            80,
            &[("10.96.4.10", ClusterIp), ("203.0.113.50", LoadBalancer)],
        )
    };
    assert_eq!(specs(&v, "shop/web-local"), [&want]);
    assert_eq!(
        v.health_checks,
        [HealthCheck {
            port: 32100,
            service: "shop/web-local".into(),
            local_endpoints: 1,
        }]
    );
    // From node-b: its one ready endpoint.
    let b = NodeIdentity {
        name: "node-b".into(),
        ..node_a()
    };
    let vb = view_as(&["policies.yaml"], &b);
    assert_eq!(vb.health_checks[0].local_endpoints, 1);
    let local: Vec<_> = specs(&vb, "shop/web-local")[0]
        .backends
        .iter()
        .filter(|b| b.local)
        .map(|b| b.ip)
        .collect();
    assert_eq!(local, [ip("10.244.2.10")]);
}

#[test]
fn external_traffic_policy_local_on_a_node_port_service_has_no_health_check() {
    let v = view(&["policies.yaml"]);
    let s = specs(&v, "shop/web-np-local");
    assert!(s[0].ext_local);
    assert_eq!(s[0].node_port, Some(30181));
    assert!(v
        .health_checks
        .iter()
        .all(|h| h.service != "shop/web-np-local"));
}

#[test]
fn internal_traffic_policy_local_marks_the_spec_and_keeps_every_endpoint_for_the_dataplane() {
    let v = view(&["policies.yaml"]);
    let want = ServiceSpec {
        int_local: true,
        backends: vec![ready_here("10.244.1.30", 5353), ready("10.244.2.30", 5353)],
        ..spec("shop/node-cache:dns", UDP, 53, &[("10.96.4.30", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/node-cache"), [&want]);
}

// ---------------------------------------------------------------------------
// Topology.

#[test]
fn prefer_close_uses_the_endpoints_hinted_for_this_nodes_zone() {
    let v = view(&["topology.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready_here("10.244.1.10", 8080), ready("10.244.3.10", 8080)],
        ..spec("shop/close:http", TCP, 80, &[("10.96.5.10", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/close"), [&want]);
    // node-b is in zone-b.
    let b = NodeIdentity {
        name: "node-b".into(),
        ..node_a()
    };
    let vb = view_as(&["topology.yaml"], &b);
    let ips: Vec<IpAddr> = specs(&vb, "shop/close")[0]
        .backends
        .iter()
        .map(|b| b.ip)
        .collect();
    assert_eq!(ips, [ip("10.244.2.10"), ip("10.244.2.11")]);
}

#[test]
fn hints_are_ignored_while_one_ready_endpoint_has_none() {
    let v = view(&["topology.yaml"]);
    let ips: Vec<IpAddr> = specs(&v, "shop/partial")[0]
        .backends
        .iter()
        .map(|b| b.ip)
        .collect();
    assert_eq!(ips, [ip("10.244.1.20"), ip("10.244.2.20")]);
}

#[test]
fn hints_are_ignored_when_none_is_for_this_zone() {
    let v = view(&["topology.yaml"]);
    let ips: Vec<IpAddr> = specs(&v, "shop/elsewhere")[0]
        .backends
        .iter()
        .map(|b| b.ip)
        .collect();
    assert_eq!(ips, [ip("10.244.2.30"), ip("10.244.4.30")]);
}

#[test]
fn a_node_without_a_zone_label_uses_every_endpoint() {
    let x = NodeIdentity {
        name: "node-x".into(),
        ..node_a()
    };
    let v = view_as(&["topology.yaml"], &x);
    assert_eq!(specs(&v, "shop/close")[0].backends.len(), 4);
    assert_reported(&v, "Node node-x", "own Node object is not among the Nodes");
}

#[test]
fn prefer_same_node_uses_the_endpoints_hinted_for_this_node() {
    let v = view(&["topology.yaml"]);
    let want = ServiceSpec {
        backends: vec![ready_here("10.244.1.40", 8080)],
        ..spec("shop/same-node:http", TCP, 80, &[("10.96.5.40", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/same-node"), [&want]);
}

// ---------------------------------------------------------------------------
// Endpoint conditions.

#[test]
fn endpoint_conditions_are_passed_as_the_api_defines_them() {
    let v = view(&["conditions.yaml"]);
    let cond = |ready, serving, terminating| (ready, serving, terminating);
    let got: Vec<_> = specs(&v, "shop/rolling")[0]
        .backends
        .iter()
        .map(|b| (b.ip.to_string(), cond(b.ready, b.serving, b.terminating)))
        .collect();
    let want: Vec<_> = [
        ("10.244.2.10", cond(true, true, false)),
        ("10.244.2.11", cond(false, true, true)),
        ("10.244.2.12", cond(false, false, true)),
        ("10.244.2.13", cond(false, false, false)),
        // No conditions, empty conditions: ready, serving, not terminating.
        ("10.244.2.14", cond(true, true, false)),
        ("10.244.2.15", cond(true, true, false)),
        // ready: false alone: serving defaults to true, terminating to false.
        ("10.244.2.16", cond(false, true, false)),
    ]
    .into_iter()
    .map(|(a, c)| (a.to_string(), c))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn ready_endpoints_are_used_and_serving_terminating_ones_only_when_none_is_ready() {
    use dataplane::lb::Scope;
    let v = view(&["conditions.yaml"]);
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in &v.services {
        b.add(s.clone());
    }
    let t = b.build().unwrap();
    let usable = |name: &str| {
        let (id, s) = t.services().find(|(_, s)| s.name() == name).unwrap();
        let ips: Vec<IpAddr> = s
            .backend_ids()
            .filter_map(|b| t.backend(b))
            .filter(|b| b.usable(Scope::Cluster))
            .map(|b| b.ip())
            .collect();
        (t.service(id).unwrap().usable_count(Scope::Cluster, 4), ips)
    };
    assert_eq!(
        usable("shop/rolling:http"),
        (
            3,
            vec![ip("10.244.2.10"), ip("10.244.2.14"), ip("10.244.2.15")]
        )
    );
    assert_eq!(usable("shop/draining:http"), (1, vec![ip("10.244.1.20")]));
}

#[test]
fn an_endpoint_listed_in_two_slices_is_one_backend_and_the_local_copy_wins() {
    let v = view(&["duplicates.yaml"]);
    let want = ServiceSpec {
        backends: vec![
            ready_here("10.244.1.10", 8080),
            ready("10.244.2.10", 8080),
            ready("10.244.2.11", 8080),
        ],
        ..spec("shop/moving:http", TCP, 80, &[("10.96.7.10", ClusterIp)])
    };
    assert_eq!(specs(&v, "shop/moving"), [&want]);
}

// ---------------------------------------------------------------------------
// What gets nothing.

#[test]
fn headless_external_name_and_other_proxies_services_get_nothing_and_fqdn_slices_are_ignored() {
    let v = view(&["skipped.yaml"]);
    for svc in [
        "shop/db",
        "shop/db-headless-unlabelled",
        "shop/payments",
        "shop/meshed",
    ] {
        assert!(specs(&v, svc).is_empty(), "{svc}");
    }
    let want = spec(
        "shop/external-db:pg",
        TCP,
        5432,
        &[("10.96.8.20", ClusterIp)],
    );
    assert_eq!(v.services, [want]);
    assert!(v.reports.is_empty(), "{:#?}", v.reports);
    assert!(v.health_checks.is_empty());
}

// ---------------------------------------------------------------------------
// Bad input.

#[test]
fn bad_input_is_reported_and_the_rest_still_applies() {
    let v = view(&["bad.yaml", "clusterip.yaml"]);
    assert_reported(&v, "Service shop/no-ports", "no ports");
    assert!(specs(&v, "shop/no-ports").is_empty());
    assert_reported(
        &v,
        "Service shop/bad-ips",
        "clusterIP \"10.96.9.300\" is not an IP",
    );
    assert_reported(
        &v,
        "Service shop/bad-ips",
        "externalIP \"198.51.100.999\" is not an IP",
    );
    assert_reported(
        &v,
        "EndpointSlice shop/bad-ips-a9s8d",
        "1 endpoint(s) ignored (first: \"not-an-ip\" is not an IP address)",
    );
    assert_reported(
        &v,
        "EndpointSlice shop/bad-ips-f7g6h",
        "2 endpoint(s) ignored (first: an endpoint without addresses)",
    );
    let want = ServiceSpec {
        backends: vec![ready("fd00:244:2::20", 8080), ready("fd00:244:2::21", 8080)],
        ..spec(
            "shop/bad-ips:http",
            TCP,
            80,
            &[("fd00:96::9:20", ClusterIp)],
        )
    };
    assert_eq!(specs(&v, "shop/bad-ips"), [&want]);
    assert_reported(
        &v,
        "EndpointSlice shop/gone-j5k4l",
        "its Service shop/gone does not exist",
    );
    assert_reported(
        &v,
        "EndpointSlice shop/hand-made",
        "no kubernetes.io/service-name label",
    );
    assert_reported(&v, "Service shop/no-cluster-ip", "no clusterIP");
    assert_reported(
        &v,
        "Service shop/big-port",
        "nodePort 70000 is not a valid port",
    );
    assert_reported(&v, "Service shop/big-port", "port 0 is not a valid port");
    assert_reported(
        &v,
        "EndpointSlice shop/big-port-z1x2c",
        "no valid port number",
    );
    let want = spec("shop/big-port:http", TCP, 80, &[("10.96.9.40", ClusterIp)]);
    assert_eq!(specs(&v, "shop/big-port"), [&want]);
    // The good Services beside them are whole.
    assert_eq!(specs(&v, "shop/web")[0].backends.len(), 3);
    assert_eq!(specs(&v, "shop/web-dual")[0].backends.len(), 4);
}

#[test]
fn services_come_out_sorted_by_name_then_protocol_and_port() {
    let v = view(&[
        "clusterip.yaml",
        "ports.yaml",
        "exposure.yaml",
        "policies.yaml",
        "topology.yaml",
    ]);
    let keys: Vec<_> = v
        .services
        .iter()
        .map(|s| (&s.name, s.proto, s.port))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(v.services.iter().all(|s| s
        .backends
        .windows(2)
        .all(|w| (w[0].ip, w[0].port) < (w[1].ip, w[1].port))));
}

// ---------------------------------------------------------------------------
// Remote nodes.

fn remote(
    name: &str,
    v4: Option<&str>,
    v6: Option<&str>,
    cidrs: &[&str],
    mac: &str,
) -> RemoteSection {
    RemoteSection {
        name: name.into(),
        ipv4: v4.map(|a| a.parse().unwrap()),
        ipv6: v6.map(|a| a.parse().unwrap()),
        pod_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        vtep_mac: dataplane::config::parse_mac(mac).unwrap(),
        underlay_mac: MacSpec::Auto,
    }
}

#[test]
fn remote_nodes_come_from_flannels_annotations_or_twills_with_the_internal_ip_as_fallback() {
    let v = view(&["remote_nodes.yaml"]);
    let want = vec![
        remote(
            "node-b",
            Some("192.168.50.2"),
            Some("fd00:50::2"),
            &["10.244.2.0/24", "fd00:244:2::/64"],
            "02:ee:00:00:00:02",
        ),
        remote(
            "node-c",
            Some("192.168.50.3"),
            Some("fd00:50::3"),
            &["10.244.3.0/24", "fd00:244:3::/64"],
            "02:ee:00:00:00:03",
        ),
        remote(
            "node-f",
            Some("10.0.0.6"),
            None,
            &["10.244.6.0/24"],
            "6e:3b:1a:9f:00:06",
        ),
        remote(
            "node-h",
            None,
            Some("fd00:50::8"),
            &["fd00:244:8::/64"],
            "3a:1f:8e:20:77:08",
        ),
    ];
    assert_eq!(v.remotes, want);
    assert_reported(&v, "Node node-d", "flannel backend-type \"host-gw\"");
    assert_reported(&v, "Node node-e", "no podCIDR");
    assert_reported(
        &v,
        "Node node-g",
        "VtepMAC \"not-a-mac\" is not a MAC address",
    );
    assert_reported(&v, "Node node-g", "no VTEP MAC");
    assert!(reports(&v, "Node node-b").is_empty());
}

#[test]
fn an_ipv4_only_node_routes_only_ipv4_pod_cidrs_and_skips_ipv6_only_nodes() {
    let v4 = NodeIdentity {
        ipv6: false,
        ..node_a()
    };
    let v = view_as(&["remote_nodes.yaml"], &v4);
    let names: Vec<&str> = v.remotes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["node-b", "node-c", "node-f"]);
    assert_eq!(v.remotes[0].pod_cidrs, ["10.244.2.0/24".parse().unwrap()]);
    assert_reported(
        &v,
        "Node node-h",
        "no podCIDR of a family this node carries",
    );
}

#[test]
fn the_annotations_twill_writes_make_its_node_reachable_from_the_others() {
    let mut state = cluster(&[]);
    let ann = control::model::own_node_annotations(
        [0x02, 0xee, 0, 0, 0, 0x01],
        Some("192.168.50.1".parse().unwrap()),
        Some("fd00:50::1".parse().unwrap()),
        1,
    );
    // node-a as a fresh twill node: only what twill writes.
    let a = state.nodes.get_mut("node-a").unwrap();
    a.metadata.annotations = Some(ann);
    if let Some(st) = a.status.as_mut() {
        st.addresses = None;
    }
    let b = NodeIdentity {
        name: "node-b".into(),
        ..node_a()
    };
    let v = build(&state, &b);
    assert_eq!(
        v.remotes,
        [remote(
            "node-a",
            Some("192.168.50.1"),
            Some("fd00:50::1"),
            &["10.244.1.0/24", "fd00:244:1::/64"],
            "02:ee:00:00:00:01",
        )]
    );
}

// ---------------------------------------------------------------------------
// Scale.

/// One Service `big/huge` with `n` ready endpoints in slices of 1000.
fn huge(n: u32) -> ClusterState {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec as KSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mut state = cluster(&[]);
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("huge".into()),
            namespace: Some("big".into()),
            ..Default::default()
        },
        spec: Some(KSpec {
            cluster_ip: Some("10.97.0.1".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    state.services.insert(ObjKey::new("big", "huge"), svc);
    for s in 0..n.div_ceil(1000) {
        let name = format!("huge-{s:04}");
        let endpoints = (s * 1000..((s + 1) * 1000).min(n))
            .map(|i| Endpoint {
                addresses: vec![std::net::Ipv4Addr::from(0x0af0_0000 + i).to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(if i % 100 == 0 { "node-a" } else { "node-b" }.into()),
                ..Default::default()
            })
            .collect();
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some("big".into()),
                labels: Some(
                    [("kubernetes.io/service-name".to_string(), "huge".to_string())].into(),
                ),
                ..Default::default()
            },
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        };
        state
            .endpoint_slices
            .insert(ObjKey::new("big", name), slice);
    }
    state
}

#[test]
fn a_service_with_100000_endpoints_is_capped_reported_and_still_builds_fast() {
    let state = huge(100_000);
    let t0 = Instant::now();
    let v = build(&state, &node_a());
    let model = t0.elapsed();
    let s = specs(&v, "big/huge");
    assert_eq!(s[0].backends.len(), MAX_ENDPOINTS_PER_SERVICE);
    // Every local endpoint (1 in 100) is among those kept.
    assert_eq!(s[0].backends.iter().filter(|b| b.local).count(), 1000);
    assert_reported(&v, "Service big/huge", "100000 endpoints; kept 65521");
    let t1 = Instant::now();
    let mut b = ServiceTableBuilder::new(DEFAULT_MAGLEV_MAX_SIZE);
    for s in &v.services {
        b.add(s.clone());
    }
    let t = b.build().expect("the capped view builds");
    let table = t1.elapsed();
    eprintln!("100,000 endpoints: model {model:?}, service table {table:?}");
    assert_eq!(t.backend_count(), MAX_ENDPOINTS_PER_SERVICE);
    assert!(model.as_millis() < 500, "model took {model:?}");
}

#[test]
fn ten_thousand_services_of_ten_endpoints_build_fast() {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec as KSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let mut state = cluster(&[]);
    for i in 0..10_000u32 {
        let name = format!("svc-{i:05}");
        state.services.insert(
            ObjKey::new("load", name.as_str()),
            Service {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some("load".into()),
                    ..Default::default()
                },
                spec: Some(KSpec {
                    cluster_ip: Some(std::net::Ipv4Addr::from(0x0a60_0000 + i).to_string()),
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                status: None,
            },
        );
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: (0..10)
                .map(|j| Endpoint {
                    addresses: vec![std::net::Ipv4Addr::from(0x0af4_0000 + i * 10 + j).to_string()],
                    node_name: Some("node-b".into()),
                    ..Default::default()
                })
                .collect(),
            metadata: ObjectMeta {
                name: Some(format!("{name}-abcde")),
                namespace: Some("load".into()),
                labels: Some([("kubernetes.io/service-name".to_string(), name.clone())].into()),
                ..Default::default()
            },
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        };
        state
            .endpoint_slices
            .insert(ObjKey::new("load", format!("{name}-abcde")), slice);
    }
    let mut best = std::time::Duration::MAX;
    let mut v = NodeView::default();
    for _ in 0..5 {
        drop(std::mem::take(&mut v));
        let t0 = Instant::now();
        v = build(&state, &node_a());
        best = best.min(t0.elapsed());
    }
    eprintln!("10,000 Services x 10 endpoints: model {best:?} (best of 5)");
    let mut base = std::time::Duration::MAX;
    let mut n = 0usize;
    for _ in 0..5 {
        let t0 = Instant::now();
        for s in state.endpoint_slices.values() {
            for e in &s.endpoints {
                let ipa: IpAddr = e.addresses[0].parse().unwrap();
                let r = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                let l = e.node_name.as_deref() == Some("node-a");
                n += usize::from(r) + usize::from(l) + usize::from(ipa.is_ipv4());
            }
        }
        base = base.min(t0.elapsed());
    }
    // For scale on a loaded machine: the least any model must do, reading
    // each endpoint's address, conditions and node once.
    eprintln!("  a bare walk over the same 100,000 endpoints: {base:?} (best of 5) [{n}]");
    assert_eq!(v.services.len(), 10_000);
    assert!(v.services.iter().all(|s| s.backends.len() == 10));
    assert!(
        v.reports.is_empty(),
        "{:?}",
        &v.reports[..v.reports.len().min(3)]
    );
    assert!(best.as_millis() < 500, "model took {best:?}");
}

#[test]
fn report_origins_name_the_kind_and_object() {
    let v = view(&["bad.yaml"]);
    assert!(v
        .reports
        .iter()
        .all(|r: &Report| r.origin.starts_with("Service ")
            || r.origin.starts_with("EndpointSlice ")
            || r.origin.starts_with("Node ")));
    let mut sorted = v.reports.clone();
    sorted.sort_by(|a, b| (&a.origin, &a.reason).cmp(&(&b.origin, &b.reason)));
    sorted.dedup();
    assert_eq!(v.reports, sorted, "sorted, no duplicates");
}

#[test]
fn a_vip_or_node_port_claimed_twice_stays_with_the_first_service_in_name_order() {
    let v = view(&["conflicts.yaml"]);
    let alpha = specs(&v, "demo/alpha");
    assert_eq!(alpha[0].vips, [(ip("10.96.10.10"), ClusterIp)]);
    assert_eq!(alpha[0].node_port, Some(30500));
    let beta = specs(&v, "demo/beta");
    let http = beta.iter().find(|s| s.port == 80).unwrap();
    assert!(http.vips.is_empty());
    assert_eq!(http.node_port, None);
    // Its other port is not in conflict.
    let admin = beta.iter().find(|s| s.port == 81).unwrap();
    assert_eq!(admin.vips, [(ip("10.96.10.10"), ClusterIp)]);
    assert_reported(
        &v,
        "Service demo/beta",
        "10.96.10.10 port 80 is demo/alpha:http's",
    );
    assert_reported(
        &v,
        "Service demo/beta",
        "nodePort 30500 is demo/alpha:http's",
    );
}

#[test]
fn a_port_repeating_another_ports_number_or_name_is_skipped() {
    let v = view(&["conflicts.yaml"]);
    let names: Vec<_> = specs(&v, "demo/gamma")
        .iter()
        .map(|s| (s.name.clone(), s.proto, s.port))
        .collect();
    assert_eq!(names, [("demo/gamma:http".to_string(), TCP, 80)]);
    assert_reported(
        &v,
        "Service demo/gamma",
        "port 80/TCP (name \"again\") repeats port \"http\"",
    );
    assert_reported(
        &v,
        "Service demo/gamma",
        "port 8080/UDP (name \"http\") repeats port \"http\"",
    );
}

#[test]
fn out_of_range_affinity_timeouts_are_bounded_and_reported() {
    let v = view(&["conflicts.yaml"]);
    assert_eq!(
        specs(&v, "demo/sticky-zero")[0].affinity_timeout_s,
        Some(10_800)
    );
    assert_reported(
        &v,
        "Service demo/sticky-zero",
        "timeoutSeconds 0 is not positive",
    );
    assert_eq!(
        specs(&v, "demo/sticky-long")[0].affinity_timeout_s,
        Some(86_400)
    );
    assert_reported(
        &v,
        "Service demo/sticky-long",
        "timeoutSeconds 100000 is over 86400",
    );
}

#[test]
fn load_balancer_source_ranges_are_reported_as_not_enforced() {
    let v = view(&["conflicts.yaml"]);
    assert_reported(
        &v,
        "Service demo/fenced",
        "loadBalancerSourceRanges are not enforced",
    );
    assert_eq!(
        specs(&v, "demo/fenced")[0].vips,
        [
            (ip("10.96.10.40"), ClusterIp),
            (ip("203.0.113.40"), LoadBalancer)
        ]
    );
}

#[test]
fn external_traffic_policy_local_without_a_health_check_node_port_is_reported_and_still_local() {
    let v = view(&["conflicts.yaml"]);
    assert!(specs(&v, "demo/lb-local-nohc")[0].ext_local);
    assert!(v.health_checks.is_empty());
    assert_reported(
        &v,
        "Service demo/lb-local-nohc",
        "without a valid healthCheckNodePort (None)",
    );
}

/// Every case's manifests fed to one incremental model: added file by file,
/// each file reloaded with its objects as new copies, then removed file by
/// file, and the node's zone label changed between; after each step the
/// model's view is the full build's.
#[test]
fn the_incremental_model_equals_the_full_build_as_manifests_come_and_go() {
    use control::model::Model;
    const FILES: [&str; 12] = [
        "affinity.yaml",
        "bad.yaml",
        "clusterip.yaml",
        "conditions.yaml",
        "conflicts.yaml",
        "duplicates.yaml",
        "exposure.yaml",
        "policies.yaml",
        "ports.yaml",
        "remote_nodes.yaml",
        "skipped.yaml",
        "topology.yaml",
    ];
    let node = node_a();
    let mut model = Model::new(node.clone());
    let check = |model: &mut Model, state: &ClusterState, step: &str| {
        assert_eq!(model.update(state), &build(state, &node), "{step}");
    };
    let mut state = cluster(&[]);
    check(&mut model, &state, "the nodes alone");
    for (i, f) in FILES.iter().enumerate() {
        load_into(&mut state, f);
        check(&mut model, &state, &format!("after adding {f}"));
        // The same file again: equal objects under new `Arc`s.
        load_into(&mut state, f);
        check(&mut model, &state, &format!("after reloading {f}"));
        assert_eq!(model.recomputed(), 0, "reloading {f} recomputed Services");
        if i == 6 {
            let zone = "topology.kubernetes.io/zone";
            let a = state.nodes.get_mut("node-a").expect("node-a");
            let labels = a.metadata.labels.get_or_insert_with(Default::default);
            labels.insert(zone.into(), "zone-b".into());
            check(&mut model, &state, "after node-a moved to zone-b");
            let a = state.nodes.get_mut("node-a").expect("node-a");
            a.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(zone.into(), "zone-a".into());
            check(&mut model, &state, "after node-a came back to zone-a");
        }
    }
    for f in FILES {
        let mut only = ClusterState::default();
        load_into(&mut only, f);
        for k in only.services.keys() {
            state.services.remove(k);
        }
        check(
            &mut model,
            &state,
            &format!("after removing {f}'s Services"),
        );
        for k in only.endpoint_slices.keys() {
            state.endpoint_slices.remove(k);
        }
        check(&mut model, &state, &format!("after removing {f}'s slices"));
    }
    assert!(model.view().services.is_empty());
}
