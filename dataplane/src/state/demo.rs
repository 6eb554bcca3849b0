//! The embedded demo node: the tables the bench binary, `scripts/demo.sh` and the
//! pipeline tests run against, named by constants so callers need not repeat them.
//!
//! Node `demo-1`: underlay 192.168.50.1 / fd00:50::1 on port 0 (the uplink), pod CIDR
//! 10.244.1.0/24 / fd00:244:1::/64, pods' gateway 10.244.1.1 / fd00:244:1::1.
//! Pods on ports 1..=3: `client` 10.244.1.2, `web-local` 10.244.1.3, `other` 10.244.1.4
//! (and fd00:244:1::2.. likewise). Remote nodes `demo-2` (192.168.50.2, 10.244.2.0/24,
//! fd00:244:2::/64) and `demo-3` (192.168.50.3, 10.244.3.0/24, fd00:244:3::/64).
//! Services (all TCP unless said; dual-stack ones have a VIP and backends per family):
//! - `web` 10.96.0.10:80 / fd00:96::10 -> 8080 on 10.244.1.3 (local), 10.244.2.2,
//!   10.244.3.2 / fd00:244:1::3 (local), fd00:244:2::2, fd00:244:3::2; NodePort 30080
//!   (externalTrafficPolicy Cluster);
//! - `api` 10.96.0.20:443 / fd00:96::20 -> 8443 on remote pods only (10.244.2.10,
//!   10.244.3.10 / fd00:244:2::10, fd00:244:3::10): the `service-encap` bench scenario;
//! - `dns` UDP 10.96.0.53:53 -> 10.244.2.53:53, 10.244.3.53:53;
//! - `lb-local` LoadBalancer 192.168.50.100:80 and externalIP 192.168.50.101:80,
//!   NodePort 30081, externalTrafficPolicy Local -> 10.244.1.3:8080 (local) and
//!   10.244.2.2:8080;
//! - `lb-remote-only` LoadBalancer 192.168.50.102:80, NodePort 30082, eTP Local,
//!   only a remote backend (so outside traffic has no local endpoint);
//! - `empty` 10.96.0.99:80 / fd00:96::99: no endpoints (answers port unreachable).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{BuildError, NodeConfig, PodSpec, RemoteNodeSpec, Tables, TablesBuilder};
use crate::lb::{BackendSpec, ServiceSpec, VipKind};
use crate::{proto, Mac, PortId};

pub const UPLINK: PortId = 0;
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 1);
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 1);
pub const UPLINK_MAC: Mac = [0x02, 0x50, 0, 0, 0, 0x01];
pub const UPLINK_GATEWAY_MAC: Mac = [0x02, 0x50, 0, 0, 0, 0xfe];
pub const GATEWAY_MAC: Mac = [0x02, 0x44, 0, 0, 0, 0x01];
pub const VTEP_MAC: Mac = [0x02, 0xee, 0, 0, 0, 0x01];

/// The pods' ports (pod indexes 0, 1, 2 in this order).
pub const CLIENT_PORT: PortId = 1;
pub const WEB_LOCAL_PORT: PortId = 2;
pub const OTHER_PORT: PortId = 3;

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 2);
pub const CLIENT_MAC: Mac = [0x0a, 0x58, 10, 244, 1, 2];
pub const WEB_LOCAL_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
pub const WEB_LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 3);
pub const WEB_LOCAL_MAC: Mac = [0x0a, 0x58, 10, 244, 1, 3];
pub const OTHER_V4: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);
pub const OTHER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x244, 1, 0, 0, 0, 0, 4);
pub const OTHER_MAC: Mac = [0x0a, 0x58, 10, 244, 1, 4];

pub const NODE2_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
pub const NODE2_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);
pub const NODE2_VTEP_MAC: Mac = [0x02, 0xee, 0, 0, 0, 0x02];
pub const NODE2_MAC: Mac = [0x02, 0x50, 0, 0, 0, 0x02];
pub const NODE3_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 3);
pub const NODE3_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 3);
pub const NODE3_VTEP_MAC: Mac = [0x02, 0xee, 0, 0, 0, 0x03];
pub const NODE3_MAC: Mac = [0x02, 0x50, 0, 0, 0, 0x03];

pub const WEB_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const WEB_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
pub const WEB_NODE_PORT: u16 = 30080;
pub const API_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
pub const API_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x20);
pub const DNS_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 53);
pub const LB_LOCAL_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
pub const EXTERNAL_IP_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 101);
pub const LB_LOCAL_NODE_PORT: u16 = 30081;
pub const LB_REMOTE_ONLY_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 102);
pub const LB_REMOTE_ONLY_NODE_PORT: u16 = 30082;
pub const EMPTY_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 99);
pub const EMPTY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x99);

/// The demo node's configuration.
pub fn node_config() -> NodeConfig {
    NodeConfig {
        node_ipv4: Some(NODE_V4),
        node_ipv6: Some(NODE_V6),
        uplink: UPLINK,
        uplink_mac: UPLINK_MAC,
        uplink_gateway_mac: UPLINK_GATEWAY_MAC,
        gateway_ipv4: Some(GATEWAY_V4),
        gateway_ipv6: Some(GATEWAY_V6),
        gateway_mac: GATEWAY_MAC,
        vtep_mac: VTEP_MAC,
        cluster_cidrs: vec![p("10.244.0.0/16"), p("fd00:244::/48")],
        service_cidrs: vec![p("10.96.0.0/12"), p("fd00:96::/108")],
        ..NodeConfig::default()
    }
}

fn p(s: &str) -> crate::route::Prefix {
    match s.parse() {
        Ok(p) => p,
        Err(_) => unreachable!("demo prefix {s} is valid"),
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(node: u16, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x244, node, 0, 0, 0, 0, host))
}

/// A ready backend.
pub fn backend(ip: IpAddr, port: u16, local: bool) -> BackendSpec {
    BackendSpec {
        ip,
        port,
        ready: true,
        serving: true,
        terminating: false,
        local,
    }
}

/// A ClusterIP-only Service with the given VIPs and backends.
pub fn service(
    name: &str,
    proto: u8,
    port: u16,
    vips: &[IpAddr],
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        proto,
        port,
        vips: vips.iter().map(|ip| (*ip, VipKind::ClusterIp)).collect(),
        node_port: None,
        ext_local: false,
        int_local: false,
        affinity_timeout_s: None,
        backends,
    }
}

/// The demo node's pods, remote nodes and Services, ready to build.
pub fn builder() -> TablesBuilder {
    let mut b = TablesBuilder::new(node_config());
    for (name, port, mac, a4, a6) in [
        ("client", CLIENT_PORT, CLIENT_MAC, CLIENT_V4, CLIENT_V6),
        (
            "web-local",
            WEB_LOCAL_PORT,
            WEB_LOCAL_MAC,
            WEB_LOCAL_V4,
            WEB_LOCAL_V6,
        ),
        ("other", OTHER_PORT, OTHER_MAC, OTHER_V4, OTHER_V6),
    ] {
        b.add_pod(PodSpec {
            port,
            mac,
            ipv4: Some(a4),
            ipv6: Some(a6),
            name: name.to_string(),
        });
    }
    for (name, n, a4, a6, vtep, mac) in [
        ("demo-2", 2u8, NODE2_V4, NODE2_V6, NODE2_VTEP_MAC, NODE2_MAC),
        ("demo-3", 3u8, NODE3_V4, NODE3_V6, NODE3_VTEP_MAC, NODE3_MAC),
    ] {
        b.add_remote_node(RemoteNodeSpec {
            pod_cidrs: vec![
                p(&format!("10.244.{n}.0/24")),
                p(&format!("fd00:244:{n}::/64")),
            ],
            ipv4: Some(a4),
            ipv6: Some(a6),
            vtep_mac: vtep,
            underlay_mac: mac,
            name: name.to_string(),
        });
    }
    // Dual-stack Services: one VIP and one set of backends per family (lb
    // selects among the client's family).
    let mut web = service(
        "web",
        proto::TCP,
        80,
        &[IpAddr::V4(WEB_V4), IpAddr::V6(WEB_V6)],
        vec![
            backend(v4(10, 244, 1, 3), 8080, true),
            backend(v4(10, 244, 2, 2), 8080, false),
            backend(v4(10, 244, 3, 2), 8080, false),
            backend(v6(1, 3), 8080, true),
            backend(v6(2, 2), 8080, false),
            backend(v6(3, 2), 8080, false),
        ],
    );
    web.node_port = Some(WEB_NODE_PORT);
    b.add_service(web);
    b.add_service(service(
        "api",
        proto::TCP,
        443,
        &[IpAddr::V4(API_V4), IpAddr::V6(API_V6)],
        vec![
            backend(v4(10, 244, 2, 10), 8443, false),
            backend(v4(10, 244, 3, 10), 8443, false),
            backend(v6(2, 0x10), 8443, false),
            backend(v6(3, 0x10), 8443, false),
        ],
    ));
    b.add_service(service(
        "dns",
        proto::UDP,
        53,
        &[IpAddr::V4(DNS_V4)],
        vec![
            backend(v4(10, 244, 2, 53), 53, false),
            backend(v4(10, 244, 3, 53), 53, false),
        ],
    ));
    let mut lb_local = service(
        "lb-local",
        proto::TCP,
        80,
        &[],
        vec![
            backend(v4(10, 244, 1, 3), 8080, true),
            backend(v4(10, 244, 2, 2), 8080, false),
        ],
    );
    lb_local.vips = vec![
        (IpAddr::V4(LB_LOCAL_V4), VipKind::LoadBalancer),
        (IpAddr::V4(EXTERNAL_IP_V4), VipKind::ExternalIp),
    ];
    lb_local.node_port = Some(LB_LOCAL_NODE_PORT);
    lb_local.ext_local = true;
    b.add_service(lb_local);
    let mut lb_remote = service(
        "lb-remote-only",
        proto::TCP,
        80,
        &[],
        vec![backend(v4(10, 244, 2, 2), 8080, false)],
    );
    lb_remote.vips = vec![(IpAddr::V4(LB_REMOTE_ONLY_V4), VipKind::LoadBalancer)];
    lb_remote.node_port = Some(LB_REMOTE_ONLY_NODE_PORT);
    lb_remote.ext_local = true;
    b.add_service(lb_remote);
    b.add_service(service(
        "empty",
        proto::TCP,
        80,
        &[IpAddr::V4(EMPTY_V4)],
        Vec::new(),
    ));
    b.add_service(service(
        "empty-v6",
        proto::TCP,
        80,
        &[IpAddr::V6(EMPTY_V6)],
        Vec::new(),
    ));
    b
}

/// The demo node's tables.
pub fn demo_tables() -> Result<Tables, BuildError> {
    builder().build()
}

/// The demo node plus `services` extra ClusterIP Services (10.100.0.0/16 upward,
/// TCP port 80) with `backends` remote backends each (on demo-2 and demo-3), for
/// the scale bench: lookups must cost the same as with the demo alone.
pub fn scaled_tables(services: u32, backends: u32) -> Result<Tables, BuildError> {
    let mut b = builder();
    for s in 0..services {
        let vip = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + s));
        let bes = (0..backends)
            .map(|i| {
                let node = 2 + (i % 2) as u8;
                let host = 0x1_0000 + s * backends + i;
                backend(
                    v4(10, 244, node, (host % 250 + 2) as u8),
                    8000 + (host / 250 % 1000) as u16,
                    false,
                )
            })
            .collect();
        b.add_service(service(&format!("svc-{s}"), proto::TCP, 80, &[vip], bes));
    }
    b.build()
}
