//! Shared fixtures for the pipeline path tests: a fixed two-node topology,
//! frame builders on top of etherparse's `PacketBuilder`, and a parser that
//! reads the pipeline's output back with etherparse and checks every checksum.
//!
//! The oracle is etherparse (and RFC byte layouts for ARP, NS/NA and VXLAN,
//! which etherparse does not build): nothing here uses the dataplane's own wire
//! code, so a bug there cannot hide itself.
//!
//! - this file: the topology (two nodes, their pods and Services) and `Node`,
//!   the only place that touches the pipeline API;
//! - [`build`]: frames to send (etherparse builders, RFC layouts);
//! - [`parse`]: the output read back, every checksum checked.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dataplane::conntrack;
use dataplane::lb::{self, BackendSpec, ServiceSpec, VipKind};
use dataplane::pipeline::{DropReason, Frame, Pipeline, Verdict, FRAME_SIZE, HEADROOM};
use dataplane::route::Prefix;
use dataplane::state::{NodeConfig, PodSpec, RemoteNodeSpec, TablesBuilder};
use dataplane::{Mac, PortId};

mod build;
mod parse;

pub use build::*;
pub use parse::*;

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

pub const UPLINK: PortId = 0;
pub const POD1_PORT: PortId = 1;
pub const POD2_PORT: PortId = 2;

/// Node A's uplink MAC.
pub const A_UPLINK_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0x01];
/// The off-cluster next hop behind the uplink.
pub const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0xfe];
/// The pods' gateway MAC on node A (answered by ARP/ND).
pub const A_GW_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0xff];
pub const A_VTEP_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0xee];
pub const POD1_MAC: Mac = [0x0a, 0x58, 0, 0, 0x01, 0x10];
pub const POD2_MAC: Mac = [0x0a, 0x58, 0, 0, 0x01, 0x11];

/// Node B's uplink MAC (the underlay next hop node A uses to reach B).
pub const B_UPLINK_MAC: Mac = [0x02, 0, 0, 0, 0x0b, 0x01];
pub const B_GW_MAC: Mac = [0x02, 0, 0, 0, 0x0b, 0xff];
pub const B_VTEP_MAC: Mac = [0x02, 0, 0, 0, 0x0b, 0xee];
pub const BPOD_MAC: Mac = [0x0a, 0x58, 0, 0, 0x02, 0x10];
pub const BPOD_PORT: PortId = 1;

pub const VXLAN_PORT: u16 = 8472;
pub const VNI: u32 = 1;
pub const UNDERLAY_MTU: u16 = 1500;
pub const SNAT_PORTS: (u16, u16) = (61000, 65535);

/// An IP family: every path test runs once per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().expect("test address"))
}

impl Fam {
    pub fn pick(self, a4: IpAddr, a6: &str) -> IpAddr {
        match self {
            Fam::V4 => a4,
            Fam::V6 => v6(a6),
        }
    }
    pub fn pod1(self) -> IpAddr {
        self.pick(v4(10, 244, 1, 10), "fd00:10:244:1::10")
    }
    pub fn pod2(self) -> IpAddr {
        self.pick(v4(10, 244, 1, 11), "fd00:10:244:1::11")
    }
    /// An address in node A's pod CIDR that no pod has.
    pub fn unused_local(self) -> IpAddr {
        self.pick(v4(10, 244, 1, 99), "fd00:10:244:1::99")
    }
    pub fn gw(self) -> IpAddr {
        self.pick(v4(10, 244, 1, 1), "fd00:10:244:1::1")
    }
    pub fn node_a(self) -> IpAddr {
        self.pick(v4(192, 168, 0, 1), "fd00:100::1")
    }
    pub fn node_b(self) -> IpAddr {
        self.pick(v4(192, 168, 0, 2), "fd00:100::2")
    }
    pub fn b_gw(self) -> IpAddr {
        self.pick(v4(10, 244, 2, 1), "fd00:10:244:2::1")
    }
    /// The pod on node B (`n` = 0 is the one node B hosts in its own tables).
    pub fn remote_pod(self, n: u8) -> IpAddr {
        match self {
            Fam::V4 => v4(10, 244, 2, 10 + n),
            Fam::V6 => v6(&format!("fd00:10:244:2::{:x}", 0x10 + n)),
        }
    }
    /// Somewhere on the internet.
    pub fn outside(self) -> IpAddr {
        self.pick(v4(8, 8, 8, 8), "2001:4860:4860::8888")
    }
    /// An external client reaching NodePorts and external IPs.
    pub fn client(self) -> IpAddr {
        self.pick(v4(198, 51, 100, 7), "2001:db8:c::7")
    }
    /// A router on the path that sends ICMP errors.
    pub fn router(self) -> IpAddr {
        self.pick(v4(203, 0, 113, 254), "2001:db8:f::fe")
    }
    /// ClusterIP number `n` (0x10 = web, 0x20 = remote, ...).
    pub fn vip(self, n: u8) -> IpAddr {
        match self {
            Fam::V4 => v4(10, 96, 0, n),
            Fam::V6 => v6(&format!("fd00:10:96::{:x}", n)),
        }
    }
    pub fn ext_ip(self, n: u8) -> IpAddr {
        match self {
            Fam::V4 => v4(203, 0, 113, n),
            Fam::V6 => v6(&format!("2001:db8:e::{:x}", n)),
        }
    }
    /// NodePorts differ per family so the family-agnostic NodePort lookup
    /// never has to choose between the v4 and v6 Service.
    pub fn node_port(self, base: u16) -> u16 {
        match self {
            Fam::V4 => base,
            Fam::V6 => base + 100,
        }
    }
    pub fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "4",
            Fam::V6 => "6",
        }
    }
}

/// The Services on node A, one per family. `web`: local backend pod2:8080,
/// with external and LoadBalancer IPs and a NodePort; `remote`: UDP, backend
/// on node B; `empty`: no backend; `local`: externalTrafficPolicy Local with a
/// local and a remote backend; `localnone`: eTP Local with only a remote
/// backend; `multi`: four remote backends; `dns`: UDP, local backend pod2:5353,
/// NodePort;
/// `sticky`: four remote backends with sessionAffinity ClientIP.
pub mod svc {
    pub const WEB: u8 = 0x10;
    pub const REMOTE: u8 = 0x20;
    pub const EMPTY: u8 = 0x30;
    pub const LOCAL: u8 = 0x40;
    pub const LOCALNONE: u8 = 0x50;
    pub const MULTI: u8 = 0x60;
    pub const DNS: u8 = 0x70;
    pub const STICKY: u8 = 0x80;
    /// external IP of `web`; `WEB_LB` its LoadBalancer IP.
    pub const WEB_EXT: u8 = 0x10;
    pub const WEB_LB: u8 = 0x11;
    pub const LOCAL_EXT: u8 = 0x40;
    pub const LOCALNONE_EXT: u8 = 0x50;
    pub const WEB_NODEPORT: u16 = 30080;
    pub const REMOTE_NODEPORT: u16 = 30081;
    pub const LOCAL_NODEPORT: u16 = 30084;
    pub const LOCALNONE_NODEPORT: u16 = 30085;
    pub const DNS_NODEPORT: u16 = 30087;
}

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

#[allow(clippy::too_many_arguments)]
pub fn service(
    name: &str,
    proto: u8,
    port: u16,
    vips: Vec<(IpAddr, VipKind)>,
    node_port: Option<u16>,
    ext_local: bool,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        proto,
        port,
        vips,
        node_port,
        ext_local,
        int_local: false,
        affinity_timeout_s: None,
        backends,
    }
}

pub fn services_a(f: Fam) -> Vec<ServiceSpec> {
    use dataplane::proto::{TCP, UDP};
    let s = f.suffix();
    vec![
        service(
            &format!("web-{s}"),
            TCP,
            80,
            vec![
                (f.vip(svc::WEB), VipKind::ClusterIp),
                (f.ext_ip(svc::WEB_EXT), VipKind::ExternalIp),
                (f.ext_ip(svc::WEB_LB), VipKind::LoadBalancer),
            ],
            Some(f.node_port(svc::WEB_NODEPORT)),
            false,
            vec![backend(f.pod2(), 8080, true)],
        ),
        service(
            &format!("remote-{s}"),
            UDP,
            53,
            vec![(f.vip(svc::REMOTE), VipKind::ClusterIp)],
            Some(f.node_port(svc::REMOTE_NODEPORT)),
            false,
            vec![backend(f.remote_pod(0), 5353, false)],
        ),
        service(
            &format!("empty-{s}"),
            TCP,
            80,
            vec![(f.vip(svc::EMPTY), VipKind::ClusterIp)],
            None,
            false,
            vec![],
        ),
        service(
            &format!("local-{s}"),
            TCP,
            80,
            vec![
                (f.vip(svc::LOCAL), VipKind::ClusterIp),
                (f.ext_ip(svc::LOCAL_EXT), VipKind::ExternalIp),
            ],
            Some(f.node_port(svc::LOCAL_NODEPORT)),
            true,
            vec![
                backend(f.pod2(), 8080, true),
                backend(f.remote_pod(0), 8080, false),
            ],
        ),
        service(
            &format!("localnone-{s}"),
            TCP,
            80,
            vec![
                (f.vip(svc::LOCALNONE), VipKind::ClusterIp),
                (f.ext_ip(svc::LOCALNONE_EXT), VipKind::ExternalIp),
            ],
            Some(f.node_port(svc::LOCALNONE_NODEPORT)),
            true,
            vec![backend(f.remote_pod(0), 8080, false)],
        ),
        service(
            &format!("multi-{s}"),
            TCP,
            80,
            vec![(f.vip(svc::MULTI), VipKind::ClusterIp)],
            None,
            false,
            (0..4)
                .map(|n| backend(f.remote_pod(n), 8080, false))
                .collect(),
        ),
        service(
            &format!("dns-{s}"),
            UDP,
            53,
            vec![(f.vip(svc::DNS), VipKind::ClusterIp)],
            Some(f.node_port(svc::DNS_NODEPORT)),
            false,
            vec![backend(f.pod2(), 5353, true)],
        ),
        ServiceSpec {
            affinity_timeout_s: Some(10800),
            ..service(
                &format!("sticky-{s}"),
                TCP,
                80,
                vec![(f.vip(svc::STICKY), VipKind::ClusterIp)],
                None,
                false,
                (0..4)
                    .map(|n| backend(f.remote_pod(n), 8080, false))
                    .collect(),
            )
        },
    ]
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

fn ip4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("not v4"),
    }
}

fn ip6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(_) => panic!("not v6"),
    }
}

/// Which underlay families the nodes have addresses in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Underlay {
    Dual,
    V6Only,
}

fn base_config(
    node: (IpAddr, IpAddr),
    gw: (IpAddr, IpAddr),
    uplink_mac: Mac,
    gw_mac: Mac,
    vtep_mac: Mac,
    underlay: Underlay,
) -> NodeConfig {
    NodeConfig {
        node_ipv4: match underlay {
            Underlay::Dual => Some(ip4(node.0)),
            Underlay::V6Only => None,
        },
        node_ipv6: Some(ip6(node.1)),
        uplink: UPLINK,
        uplink_mac,
        uplink_gateway_mac: ROUTER_MAC,
        gateway_ipv4: Some(ip4(gw.0)),
        gateway_ipv6: Some(ip6(gw.1)),
        gateway_mac: gw_mac,
        vtep_mac,
        vxlan_port: VXLAN_PORT,
        vni: VNI,
        underlay_mtu: UNDERLAY_MTU,
        snat_ports: SNAT_PORTS,
        nodeport_range: (30000, 32767),
        cluster_cidrs: vec![prefix("10.244.0.0/16"), prefix("fd00:10:244::/48")],
        service_cidrs: vec![prefix("10.96.0.0/12"), prefix("fd00:10:96::/112")],
        maglev_max_size: 65537,
        conntrack_capacity: 1 << 14,
        timeouts: conntrack::Timeouts::default(),
        frag_capacity: 256,
        affinity_capacity: 1024,
    }
}

/// Node A: pods pod1 and pod2, node B's pods behind VXLAN, the Services of
/// [`services_a`] for both families.
pub fn node_a() -> Node {
    node_a_with(Underlay::Dual)
}

pub fn node_a_with(underlay: Underlay) -> Node {
    let cfg = base_config(
        (Fam::V4.node_a(), Fam::V6.node_a()),
        (Fam::V4.gw(), Fam::V6.gw()),
        A_UPLINK_MAC,
        A_GW_MAC,
        A_VTEP_MAC,
        underlay,
    );
    let mut b = TablesBuilder::new(cfg);
    b.add_pod(PodSpec {
        port: POD1_PORT,
        mac: POD1_MAC,
        ipv4: Some(ip4(Fam::V4.pod1())),
        ipv6: Some(ip6(Fam::V6.pod1())),
        name: "default/pod1".to_string(),
    });
    b.add_pod(PodSpec {
        port: POD2_PORT,
        mac: POD2_MAC,
        ipv4: Some(ip4(Fam::V4.pod2())),
        ipv6: Some(ip6(Fam::V6.pod2())),
        name: "default/pod2".to_string(),
    });
    b.add_remote_node(RemoteNodeSpec {
        pod_cidrs: vec![prefix("10.244.2.0/24"), prefix("fd00:10:244:2::/64")],
        ipv4: match underlay {
            Underlay::Dual => Some(ip4(Fam::V4.node_b())),
            Underlay::V6Only => None,
        },
        ipv6: Some(ip6(Fam::V6.node_b())),
        vtep_mac: B_VTEP_MAC,
        underlay_mac: B_UPLINK_MAC,
        name: "node-b".to_string(),
    });
    for f in [Fam::V4, Fam::V6] {
        for s in services_a(f) {
            b.add_service(s);
        }
    }
    Node::new(b)
}

/// Node B: hosts `remote_pod(0)` on port 1, node A's pods behind VXLAN, no
/// Services.
pub fn node_b() -> Node {
    let cfg = base_config(
        (Fam::V4.node_b(), Fam::V6.node_b()),
        (Fam::V4.b_gw(), Fam::V6.b_gw()),
        B_UPLINK_MAC,
        B_GW_MAC,
        B_VTEP_MAC,
        Underlay::Dual,
    );
    let mut b = TablesBuilder::new(cfg);
    b.add_pod(PodSpec {
        port: BPOD_PORT,
        mac: BPOD_MAC,
        ipv4: Some(ip4(Fam::V4.remote_pod(0))),
        ipv6: Some(ip6(Fam::V6.remote_pod(0))),
        name: "default/bpod".to_string(),
    });
    b.add_remote_node(RemoteNodeSpec {
        pod_cidrs: vec![prefix("10.244.1.0/24"), prefix("fd00:10:244:1::/64")],
        ipv4: Some(ip4(Fam::V4.node_a())),
        ipv6: Some(ip6(Fam::V6.node_a())),
        vtep_mac: A_VTEP_MAC,
        underlay_mac: A_UPLINK_MAC,
        name: "node-a".to_string(),
    });
    Node::new(b)
}

// ---------------------------------------------------------------------------
// Node: the only place that touches the pipeline API
// ---------------------------------------------------------------------------

/// One node's pipeline with its own conntrack, and a fake clock.
pub struct Node {
    pub pipeline: Pipeline,
    pub ct: Arc<conntrack::Table>,
    pub affinity: Arc<lb::AffinityTable>,
    /// Monotonic nanoseconds passed to `process`; tests advance it by hand.
    pub now: u64,
}

/// What the pipeline did with one frame.
#[derive(Clone, Debug)]
pub struct Out {
    pub verdict: Verdict,
    /// The frame as the pipeline left it (from `head` for `len` bytes).
    pub bytes: Vec<u8>,
    /// The frame as it went in.
    pub input: Vec<u8>,
}

impl Node {
    fn new(b: TablesBuilder) -> Node {
        let tables = b.build().expect("test tables build");
        let ct = Arc::new(conntrack::Table::new(
            1 << 14,
            conntrack::Timeouts::default(),
        ));
        let affinity = Arc::new(lb::AffinityTable::new(1024));
        let pipeline = Pipeline::new(Arc::new(tables), ct.clone(), affinity.clone());
        Node {
            pipeline,
            ct,
            affinity,
            now: 1_000_000_000,
        }
    }

    /// Another worker of the same node: its own pipeline over the same
    /// tables, conntrack and affinity table.
    pub fn worker(&self) -> Node {
        let pipeline = Pipeline::new(
            self.pipeline.tables().clone(),
            self.ct.clone(),
            self.affinity.clone(),
        );
        Node {
            pipeline,
            ct: self.ct.clone(),
            affinity: self.affinity.clone(),
            now: self.now,
        }
    }

    /// Runs one frame arriving on `port` through the pipeline.
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> Out {
        self.send_batch(&[(port, frame.to_vec())])
            .pop()
            .expect("one verdict")
    }

    /// Runs up to 64 frames as one batch.
    pub fn send_batch(&mut self, frames: &[(PortId, Vec<u8>)]) -> Vec<Out> {
        assert!(frames.len() <= 64);
        let mut bufs: Vec<Vec<u8>> = frames
            .iter()
            .map(|(_, f)| {
                assert!(HEADROOM + f.len() <= FRAME_SIZE, "test frame too long");
                let mut b = vec![0u8; FRAME_SIZE];
                b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
                b
            })
            .collect();
        let mut batch: Vec<Frame> = bufs
            .iter_mut()
            .zip(frames)
            .map(|(b, (port, f))| Frame::new(b, HEADROOM, f.len(), *port))
            .collect();
        let mut verdicts = vec![Verdict::Pass; frames.len()];
        self.pipeline.process(&mut batch, &mut verdicts, self.now);
        batch
            .iter()
            .zip(verdicts)
            .zip(frames)
            .map(|((fr, verdict), (_, input))| Out {
                verdict,
                bytes: fr.data().to_vec(),
                input: input.clone(),
            })
            .collect()
    }

    /// Frames the pipeline released from its early-fragment stash.
    pub fn released(&mut self) -> Vec<Out> {
        let mut out = Vec::new();
        self.pipeline.take_released(&mut out);
        out.into_iter()
            .map(|(bytes, verdict)| Out {
                verdict,
                bytes,
                input: Vec::new(),
            })
            .collect()
    }

    /// How many frames this worker dropped for `reason` so far.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.pipeline.counters().drop_count(reason)
    }

    pub fn advance_secs(&mut self, s: u64) {
        self.now += s * 1_000_000_000;
    }
}

impl Out {
    /// Asserts `Tx(port)` and returns the parsed, checksum-checked output.
    #[track_caller]
    pub fn tx(&self, port: PortId) -> Seen {
        assert_eq!(self.verdict, Verdict::Tx(port), "verdict");
        parse(&self.bytes)
    }

    /// Asserts `Reply` and returns the parsed, checksum-checked output.
    #[track_caller]
    pub fn reply(&self) -> Seen {
        assert_eq!(self.verdict, Verdict::Reply, "verdict");
        parse(&self.bytes)
    }

    /// Asserts `Pass` with the frame untouched.
    #[track_caller]
    pub fn pass(&self) {
        assert_eq!(self.verdict, Verdict::Pass, "verdict");
        assert_eq!(
            self.bytes, self.input,
            "a passed frame goes to the kernel unchanged"
        );
    }

    #[track_caller]
    pub fn dropped(&self, reason: DropReason) {
        assert_eq!(self.verdict, Verdict::Drop(reason), "verdict");
    }

    pub fn is_drop(&self) -> bool {
        matches!(self.verdict, Verdict::Drop(_))
    }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

pub fn key_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Generates `#[test] fn ipv4()` and `#[test] fn ipv6()` in a module named
/// after a `fn name(f: Fam)` test body, so `cargo test name` runs both.
#[allow(unused_macros)]
macro_rules! both_families {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn ipv4() {
                    super::$name(crate::common::Fam::V4)
                }
                #[test]
                fn ipv6() {
                    super::$name(crate::common::Fam::V6)
                }
            }
        )*
    };
}
