//! Unit tests of the model's helpers; the semantics as a whole are tested from
//! real manifests in `tests/control_model.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::lb::{ServiceSpec, MAX_BACKENDS};
use k8s_openapi::api::discovery::v1::{EndpointHints, ForNode, ForZone};

use super::endpoints::{dedup, Ep};
use super::nodes::vtep_from;
use super::services::cap;
use super::topology::{apply, mode, Mode, Place};
use super::*;

fn ep<'a>(ip: &str, ready: bool, local: bool, hints: Option<&'a EndpointHints>) -> Ep<'a> {
    Ep {
        ip: ip.parse().unwrap(),
        port: 8080,
        ready,
        serving: ready,
        terminating: false,
        local,
        hints,
    }
}

fn zones(z: &[&str]) -> EndpointHints {
    EndpointHints {
        for_zones: Some(
            z.iter()
                .map(|n| ForZone {
                    name: n.to_string(),
                })
                .collect(),
        ),
        for_nodes: None,
    }
}

const AT_A: Place<'static> = Place {
    node: "node-a",
    zone: Some("zone-a"),
};

#[test]
fn zone_hints_are_used_when_every_ready_endpoint_has_one_and_one_is_for_this_zone() {
    let (a, b) = (zones(&["zone-a"]), zones(&["zone-b"]));
    let eps = [
        ep("10.0.0.1", true, false, Some(&a)),
        ep("10.0.0.2", true, false, Some(&b)),
        // Not ready and without hints: not looked at.
        ep("10.0.0.3", false, false, None),
    ];
    assert_eq!(mode(eps.iter(), AT_A), Mode::SameZone);
}

#[test]
fn zone_hints_are_ignored_when_one_ready_endpoint_has_none() {
    let a = zones(&["zone-a"]);
    let eps = [
        ep("10.0.0.1", true, false, Some(&a)),
        ep("10.0.0.2", true, false, None),
    ];
    assert_eq!(mode(eps.iter(), AT_A), Mode::All);
}

#[test]
fn zone_hints_are_ignored_when_none_is_for_this_zone_or_the_node_has_no_zone() {
    let b = zones(&["zone-b"]);
    let eps = [ep("10.0.0.1", true, false, Some(&b))];
    assert_eq!(mode(eps.iter(), AT_A), Mode::All);
    let no_zone = Place {
        node: "node-a",
        zone: None,
    };
    let a = zones(&["zone-a"]);
    let eps = [ep("10.0.0.1", true, false, Some(&a))];
    assert_eq!(mode(eps.iter(), no_zone), Mode::All);
}

#[test]
fn no_ready_endpoint_means_no_topology() {
    let a = zones(&["zone-a"]);
    let eps = [ep("10.0.0.1", false, false, Some(&a))];
    assert_eq!(mode(eps.iter(), AT_A), Mode::All);
}

#[test]
fn node_hints_win_over_zone_hints_when_every_ready_endpoint_has_one() {
    let mine = EndpointHints {
        for_nodes: Some(vec![ForNode {
            name: "node-a".into(),
        }]),
        for_zones: Some(vec![ForZone {
            name: "zone-a".into(),
        }]),
    };
    let other = EndpointHints {
        for_nodes: Some(vec![ForNode {
            name: "node-b".into(),
        }]),
        for_zones: Some(vec![ForZone {
            name: "zone-a".into(),
        }]),
    };
    let mut eps = vec![
        ep("10.0.0.1", true, true, Some(&mine)),
        ep("10.0.0.2", true, false, Some(&other)),
    ];
    assert_eq!(apply(&mut eps, AT_A, false), [Mode::SameNode, Mode::All]);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].ip, "10.0.0.1".parse::<IpAddr>().unwrap());
}

#[test]
fn topology_keeps_local_endpoints_for_a_service_using_local_endpoints() {
    let (a, b) = (zones(&["zone-a"]), zones(&["zone-b"]));
    let fresh = || {
        vec![
            ep("10.0.0.1", true, false, Some(&a)),
            // On this node but hinted to another zone (the controller balances
            // zones by moving endpoints).
            ep("10.0.0.2", true, true, Some(&b)),
            ep("10.0.0.3", true, false, Some(&b)),
        ]
    };
    let mut eps = fresh();
    apply(&mut eps, AT_A, false);
    let ips: Vec<String> = eps.iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(ips, ["10.0.0.1"]);
    let mut eps = fresh();
    apply(&mut eps, AT_A, true);
    let ips: Vec<String> = eps.iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn topology_is_decided_per_family() {
    let a = zones(&["zone-a"]);
    let mut eps = vec![
        ep("10.0.0.1", true, false, Some(&a)),
        ep("10.0.0.2", true, false, Some(&a)),
        ep("fd00::1", true, false, None),
    ];
    assert_eq!(apply(&mut eps, AT_A, false), [Mode::SameZone, Mode::All]);
    assert_eq!(eps.len(), 3);
}

#[test]
fn duplicate_endpoints_keep_the_local_copy_and_come_out_sorted() {
    let mut eps = vec![
        ep("10.0.0.9", true, false, None),
        ep("10.0.0.2", false, false, None),
        ep("10.0.0.2", true, true, None),
        ep("10.0.0.9", false, false, None),
    ];
    dedup(&mut eps);
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].ip.to_string(), "10.0.0.2");
    assert!(eps[0].local && eps[0].ready);
    // Among non-local copies, the first listed wins.
    assert_eq!(eps[1].ip.to_string(), "10.0.0.9");
    assert!(eps[1].ready);
}

#[test]
fn the_cap_keeps_ready_then_terminating_then_the_rest_local_first() {
    let n = MAX_ENDPOINTS_PER_SERVICE + 10;
    let mut eps: Vec<Ep<'_>> = (0..n as u32)
        .map(|i| {
            let mut e = ep("10.0.0.1", i % 3 == 0, i % 7 == 0, None);
            e.ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            if i % 3 == 1 {
                e.serving = true;
                e.terminating = true;
            }
            e
        })
        .collect();
    let ready = eps.iter().filter(|e| e.ready).count();
    cap(&mut eps);
    assert_eq!(eps.len(), MAX_ENDPOINTS_PER_SERVICE);
    assert_eq!(eps.iter().filter(|e| e.ready).count(), ready);
    assert_eq!(
        eps.iter().filter(|e| e.serving && e.terminating).count(),
        n.div_ceil(3) - (n % 3 == 1) as usize
    );
    assert!(eps.windows(2).all(|w| w[0].ip < w[1].ip), "sorted again");
}

#[test]
fn the_node_total_is_kept_under_the_dataplane_limit() {
    let b = |i: u32| dataplane::lb::BackendSpec {
        ip: IpAddr::V4(Ipv4Addr::from(i)),
        port: 80,
        ready: true,
        serving: true,
        terminating: false,
        local: false,
    };
    let spec = |name: &str, n: u32, from: u32| ServiceSpec {
        name: name.into(),
        proto: dataplane::proto::TCP,
        port: 80,
        vips: vec![],
        node_port: None,
        ext_local: false,
        int_local: false,
        affinity_timeout_s: None,
        backends: (from..from + n).map(b).collect(),
    };
    let mut specs = vec![
        spec("ns/a:http", MAX_BACKENDS - 5, 0),
        spec("ns/b:http", 10, MAX_BACKENDS),
        spec("ns/c:http", 3, MAX_BACKENDS + 100),
    ];
    let mut reports = Vec::new();
    cap_total_backends(&mut specs, &mut reports);
    assert_eq!(specs[1].backends.len(), 5);
    assert_eq!(specs[2].backends.len(), 0);
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].origin, "Service ns/b");
}

#[test]
fn own_node_annotations_are_exactly_what_flannel_writes_plus_twills() {
    let a = own_node_annotations(
        [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff],
        Some(Ipv4Addr::new(192, 168, 50, 1)),
        Some("fd00:50::1".parse::<Ipv6Addr>().unwrap()),
        1,
    );
    let want: Vec<(&str, &str)> = vec![
        (
            "flannel.alpha.coreos.com/backend-data",
            r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:ff"}"#,
        ),
        ("flannel.alpha.coreos.com/backend-type", "vxlan"),
        (
            "flannel.alpha.coreos.com/backend-v6-data",
            r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:01:ff"}"#,
        ),
        ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
        ("flannel.alpha.coreos.com/public-ip", "192.168.50.1"),
        ("flannel.alpha.coreos.com/public-ipv6", "fd00:50::1"),
        ("twill.io/public-ip", "192.168.50.1"),
        ("twill.io/public-ipv6", "fd00:50::1"),
        ("twill.io/vtep-mac", "0a:58:0a:f4:01:ff"),
    ];
    let got: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
    // What we write, we read back.
    assert_eq!(
        vtep_from(a.get(FLANNEL_BACKEND_DATA)),
        Ok(Some([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff]))
    );
}

#[test]
fn an_ipv4_only_node_writes_no_ipv6_annotations() {
    let a = own_node_annotations(
        [2, 0, 0, 0, 0, 1],
        Some(Ipv4Addr::new(10, 0, 0, 1)),
        None,
        4096,
    );
    assert_eq!(
        a[FLANNEL_BACKEND_DATA],
        r#"{"VNI":4096,"VtepMAC":"02:00:00:00:00:01"}"#
    );
    assert!(!a.contains_key(FLANNEL_BACKEND_V6_DATA));
    assert!(!a.contains_key(FLANNEL_PUBLIC_IPV6));
    assert!(!a.contains_key(TWILL_PUBLIC_IPV6));
}

#[test]
fn backend_data_that_is_null_absent_or_broken_gives_no_vtep() {
    assert_eq!(vtep_from(None), Ok(None));
    assert_eq!(vtep_from(Some(&"null".to_string())), Ok(None));
    assert_eq!(vtep_from(Some(&"{}".to_string())), Ok(None));
    assert!(vtep_from(Some(&"{not json".to_string())).is_err());
    assert!(vtep_from(Some(&r#"{"VtepMAC":"zz:00"}"#.to_string())).is_err());
    // flannel's F5 BIG-IP instructions omit the VNI.
    assert_eq!(
        vtep_from(Some(&r#"{"VtepMAC":"fa:16:3e:d5:28:07"}"#.to_string())),
        Ok(Some([0xfa, 0x16, 0x3e, 0xd5, 0x28, 0x07]))
    );
}

#[test]
fn an_empty_cluster_gives_an_empty_view() {
    let node = NodeIdentity {
        name: "node-a".into(),
        ipv4: true,
        ipv6: true,
    };
    assert_eq!(build(&ClusterState::default(), &node), NodeView::default());
}
