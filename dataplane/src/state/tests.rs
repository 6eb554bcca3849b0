use super::demo::*;
use super::*;

#[test]
fn demo_tables_route_pods_remote_cidrs_node_and_services() {
    let t = demo_tables().expect("demo builds");
    assert_eq!(t.route4(CLIENT_V4.octets()), RouteTarget::LocalPod(0));
    assert_eq!(t.route6(&WEB_LOCAL_V6.octets()), RouteTarget::LocalPod(1));
    assert_eq!(t.route4([10, 244, 2, 77]), RouteTarget::RemoteNode(0));
    assert_eq!(
        t.route6(&"fd00:244:3::9".parse::<Ipv6Addr>().unwrap().octets()),
        RouteTarget::RemoteNode(1)
    );
    assert_eq!(t.route4([10, 244, 1, 200]), RouteTarget::ClusterCidr);
    assert_eq!(t.route4([10, 244, 9, 1]), RouteTarget::ClusterCidr);
    assert_eq!(t.route4(NODE_V4.octets()), RouteTarget::Node);
    assert_eq!(t.route4(GATEWAY_V4.octets()), RouteTarget::Node);
    assert_eq!(t.route6(&GATEWAY_V6.octets()), RouteTarget::Node);
    assert_eq!(t.route4([10, 96, 1, 1]), RouteTarget::ServiceCidr);
    assert_eq!(t.route4([8, 8, 8, 8]), RouteTarget::Outside);
    assert_eq!(t.route4(NODE3_V4.octets()), RouteTarget::RemoteNode(1));
    assert_eq!(t.route4([192, 168, 50, 9]), RouteTarget::Outside);
}

#[test]
fn ports_map_to_the_uplink_pods_or_nothing() {
    let t = demo_tables().unwrap();
    assert_eq!(t.port(UPLINK), PortKind::Uplink);
    assert_eq!(t.port(CLIENT_PORT), PortKind::Pod(0));
    assert_eq!(t.port(OTHER_PORT), PortKind::Pod(2));
    assert_eq!(t.port(77), PortKind::None);
    assert_eq!(t.pod(0).unwrap().mac, CLIENT_MAC);
    assert_eq!(t.remote(1).unwrap().ipv4, Some(NODE3_V4.octets()));
}

#[test]
fn a_port_used_twice_is_refused() {
    let mut b = builder();
    b.add_pod(PodSpec {
        port: UPLINK,
        mac: [2, 0, 0, 0, 0, 9],
        ipv4: Some(Ipv4Addr::new(10, 244, 1, 9)),
        ipv6: None,
        name: "x".into(),
    });
    assert!(matches!(b.build(), Err(BuildError::DuplicatePort(UPLINK))));
}

#[test]
fn a_pod_address_used_twice_is_refused() {
    let mut b = builder();
    b.add_pod(PodSpec {
        port: 9,
        mac: [2, 0, 0, 0, 0, 9],
        ipv4: Some(CLIENT_V4),
        ipv6: None,
        name: "x".into(),
    });
    assert!(matches!(b.build(), Err(BuildError::DuplicatePodAddress(_))));
}

#[test]
fn a_snat_range_overlapping_node_ports_is_refused() {
    let cfg = NodeConfig {
        snat_ports: (30000, 40000),
        ..node_config()
    };
    assert!(matches!(
        TablesBuilder::new(cfg).build(),
        Err(BuildError::BadSnatRange(30000, 40000))
    ));
}

#[test]
fn each_build_has_a_new_generation() {
    let a = demo_tables().unwrap();
    let b = demo_tables().unwrap();
    assert_ne!(a.generation(), b.generation());
}

#[test]
fn scaled_tables_hold_ten_thousand_services() {
    let t = scaled_tables(10_000, 10).unwrap();
    let vip = IpAddr::V4(Ipv4Addr::new(10, 100, 39, 15));
    assert!(t
        .services()
        .lookup_vip(vip, 80, crate::proto::TCP)
        .is_some());
}

#[test]
fn tables_can_be_shared_between_worker_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Tables>();
    let t = std::sync::Arc::new(demo_tables().unwrap());
    let t2 = t.clone();
    let h = std::thread::spawn(move || t2.route4(CLIENT_V4.octets()));
    assert_eq!(h.join().unwrap(), RouteTarget::LocalPod(0));
}

#[test]
fn outer_headers_are_precomputed_for_each_remote_family() {
    let t = demo_tables().unwrap();
    let r = t.remote(0).unwrap();
    let o4 = r.outer4.as_ref().expect("both ends have IPv4");
    assert_eq!(&o4.hdr[0..6], &NODE2_MAC);
    assert_eq!(&o4.hdr[26..30], &NODE_V4.octets());
    assert_eq!(&o4.hdr[30..34], &NODE2_V4.octets());
    assert_eq!(u16::from_be_bytes([o4.hdr[36], o4.hdr[37]]), 8472);
    // The fast path's line: the same headers, the folded partial sum in
    // the checksum field, then the inner Ethernet header.
    let p = t.pre4(0).expect("a remote node has one");
    assert_eq!(&p.0[..PRE4_SUM], &o4.hdr[..PRE4_SUM]);
    assert_eq!(&p.0[PRE4_SUM + 2..50], &o4.hdr[PRE4_SUM + 2..]);
    let sum = u16::from_ne_bytes([p.0[PRE4_SUM], p.0[PRE4_SUM + 1]]);
    assert_eq!(sum, crate::wire::checksum::fold(o4.sum));
    assert_eq!(&p.0[50..56], &r.vtep_mac);
    assert_eq!(&p.0[56..62], &t.config().vtep_mac);
    assert_eq!(&p.0[62..], &[0x08, 0x00]);
    assert!(r.outer6.is_some());
    let mut b = builder();
    b.config_mut().node_ipv4 = None;
    let t = b.build().unwrap();
    assert!(t.remote(0).unwrap().outer4.is_none());
}
