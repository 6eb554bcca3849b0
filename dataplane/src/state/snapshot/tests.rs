use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::config::{MacSpec, PodSection, RemoteSection};
use crate::lb::{BackendSpec, ServiceSpec, VipKind};
use crate::route::Prefix;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sample() -> Snapshot {
    Snapshot {
        revision: 42,
        built_ns: 123_456_789,
        services: vec![
            ServiceSpec {
                name: "default/web:http".into(),
                proto: crate::proto::TCP,
                port: 80,
                vips: vec![
                    (ip("10.96.0.10"), VipKind::ClusterIp),
                    (ip("fd00::10"), VipKind::ClusterIp),
                    (ip("192.0.2.7"), VipKind::LoadBalancer),
                    (ip("198.51.100.1"), VipKind::ExternalIp),
                ],
                node_port: Some(30080),
                ext_local: true,
                int_local: false,
                affinity_timeout_s: Some(10800),
                backends: vec![
                    BackendSpec {
                        ip: ip("10.244.1.5"),
                        port: 8080,
                        ready: true,
                        serving: true,
                        terminating: false,
                        local: true,
                    },
                    BackendSpec {
                        ip: ip("fd00:244::5"),
                        port: 8080,
                        ready: false,
                        serving: true,
                        terminating: true,
                        local: false,
                    },
                ],
            },
            ServiceSpec {
                name: "kube-system/dns:53/UDP".into(),
                proto: crate::proto::UDP,
                port: 53,
                vips: vec![(ip("10.96.0.53"), VipKind::ClusterIp)],
                node_port: None,
                ext_local: false,
                int_local: true,
                affinity_timeout_s: None,
                backends: vec![],
            },
        ],
        remotes: vec![RemoteSection {
            name: "node-b".into(),
            ipv4: Some("192.168.1.2".parse().unwrap()),
            ipv6: None,
            pod_cidrs: vec![
                Prefix::new(ip("10.244.2.0"), 24).unwrap(),
                Prefix::new(ip("fd00:244:2::"), 64).unwrap(),
            ],
            vtep_mac: [2, 0, 0, 0, 0, 2],
            underlay_mac: MacSpec::Mac([2, 0, 0, 0, 1, 2]),
        }],
        pods: vec![PodSection {
            name: "default/web-1".into(),
            interface: "veth1234".into(),
            mac: [2, 0, 0, 0, 0, 5],
            ipv4: Some("10.244.1.5".parse().unwrap()),
            ipv6: Some("fd00:244::5".parse().unwrap()),
            worker: Some(1),
        }],
    }
}

#[test]
fn a_snapshot_survives_encode_and_decode_field_by_field() {
    let s = sample();
    let d = Snapshot::decode(&s.encode()).unwrap();
    assert_eq!(d.revision, 42);
    assert_eq!(d.built_ns, 123_456_789);
    assert_eq!(d.services, s.services);
    assert_eq!(d.remotes, s.remotes);
    assert_eq!(d.pods.len(), 1);
    let (a, b) = (&d.pods[0], &s.pods[0]);
    assert_eq!(
        (&a.name, &a.interface, a.mac, a.ipv4, a.ipv6, a.worker),
        (&b.name, &b.interface, b.mac, b.ipv4, b.ipv6, b.worker)
    );
}

#[test]
fn an_empty_snapshot_round_trips() {
    let d = Snapshot::decode(&Snapshot::default().encode()).unwrap();
    assert!(d.services.is_empty() && d.remotes.is_empty() && d.pods.is_empty());
}

#[test]
fn another_version_is_refused_naming_both() {
    let mut b = sample().encode();
    b[4..8].copy_from_slice(&7u32.to_le_bytes());
    let e = Snapshot::decode(&b).unwrap_err();
    assert_eq!(
        e,
        DecodeError::Version {
            found: 7,
            supported: SNAPSHOT_VERSION
        }
    );
    assert!(e.to_string().contains('7') && e.to_string().contains('1'));
}

#[test]
fn bytes_that_are_not_a_snapshot_are_refused() {
    assert!(matches!(
        Snapshot::decode(b"garbage garbage garbage"),
        Err(DecodeError::BadMagic { .. })
    ));
    assert!(matches!(
        Snapshot::decode(&[]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let b = sample().encode();
    for n in 0..b.len() {
        assert!(Snapshot::decode(&b[..n]).is_err(), "prefix of {n} bytes");
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut b = sample().encode();
    b.push(0);
    assert_eq!(
        Snapshot::decode(&b).unwrap_err(),
        DecodeError::Trailing { extra: 1 }
    );
}

#[test]
fn a_huge_count_is_refused_before_allocating() {
    let mut b = Snapshot::default().encode();
    // The services count (after magic, version, revision, built_ns).
    b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Snapshot::decode(&b),
        Err(DecodeError::Truncated {
            what: "services",
            ..
        })
    ));
}

#[test]
fn a_prefix_longer_than_its_family_is_refused() {
    let mut s = sample();
    s.remotes[0].pod_cidrs = vec![Prefix {
        addr: ip("10.0.0.0"),
        len: 33,
    }];
    assert!(matches!(
        Snapshot::decode(&s.encode()),
        Err(DecodeError::BadValue {
            what: "pod_cidr length",
            ..
        })
    ));
}

proptest! {
    #[test]
    fn flipped_bytes_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut b = sample().encode();
        for (i, v) in flips {
            let n = b.len();
            b[i % n] ^= v;
        }
        let _ = Snapshot::decode(&b);
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut v = sample().encode()[..8].to_vec();
        v.extend_from_slice(&b);
        let _ = Snapshot::decode(&v);
    }
}
