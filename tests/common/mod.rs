//! Shared fixtures for the pipeline path tests: a fixed two-node topology,
//! frame builders on top of etherparse's `PacketBuilder`, and a parser that
//! reads the pipeline's output back with etherparse and checks every checksum.
//!
//! The oracle is etherparse (and RFC byte layouts for ARP, NS/NA and VXLAN,
//! which etherparse does not build): nothing here uses the dataplane's own wire
//! code, so a bug there cannot hide itself.
//!
//! All contact with the dataplane API lives in the "Node" section, so an API
//! change is fixed in one place.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dataplane::conntrack;
use dataplane::lb::{self, BackendSpec, ServiceSpec, VipKind};
use dataplane::pipeline::{DropReason, Frame, Pipeline, Verdict, FRAME_SIZE, HEADROOM};
use dataplane::route::Prefix;
use dataplane::state::{NodeConfig, PodSpec, RemoteNodeSpec, TablesBuilder};
use dataplane::{Mac, PortId};
use etherparse::{
    Ethernet2Header, Icmpv4Header, Icmpv6Header, Icmpv6Slice, Icmpv6Type, IpFragOffset, IpNumber,
    Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader, UdpHeader,
};

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
pub const SNAT_PORTS: (u16, u16) = (32768, 60999);

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
/// backend; `multi`: four remote backends; `dns`: UDP, local backend pod2:5353;
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
            None,
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
        let pipeline = Pipeline::new(Arc::new(tables), ct.clone(), affinity);
        Node {
            pipeline,
            ct,
            now: 1_000_000_000,
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
// Frame builders (etherparse)
// ---------------------------------------------------------------------------

pub mod tcpf {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The transport part of a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp { sport: u16, dport: u16 },
    Tcp { sport: u16, dport: u16, flags: u8 },
    EchoRequest { id: u16, seq: u16 },
    EchoReply { id: u16, seq: u16 },
}

pub fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
    }
}

/// A packet to build: Ethernet + IPv4/IPv6 + L4 + payload.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Pkt {
    pub fn new(eth_src: Mac, eth_dst: Mac, src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        Pkt {
            eth_src,
            eth_dst,
            src,
            dst,
            ttl: 64,
            l4,
            payload: b"twill test payload".to_vec(),
        }
    }

    /// From pod1 (port 1) to `dst` via the gateway MAC.
    pub fn from_pod1(f: Fam, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(POD1_MAC, A_GW_MAC, f.pod1(), dst, l4)
    }

    pub fn from_pod2(f: Fam, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(POD2_MAC, A_GW_MAC, f.pod2(), dst, l4)
    }

    /// Arriving on node A's uplink from the router.
    pub fn from_uplink(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(ROUTER_MAC, A_UPLINK_MAC, src, dst, l4)
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Pkt {
        self.payload = p.to_vec();
        self
    }

    /// Pads the payload so that the IP packet is `ip_len` bytes long.
    pub fn ip_len(mut self, ip_len: usize) -> Pkt {
        let ip_hdr = if self.src.is_ipv4() { 20 } else { 40 };
        let l4_hdr = match self.l4 {
            L4::Udp { .. } | L4::EchoRequest { .. } | L4::EchoReply { .. } => 8,
            L4::Tcp { .. } => 20,
        };
        self.payload = (0..ip_len - ip_hdr - l4_hdr).map(|i| i as u8).collect();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.eth_src, self.eth_dst);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => panic!("mixed families"),
        };
        let v6 = self.src.is_ipv6();
        let mut out = Vec::new();
        match self.l4 {
            L4::Udp { sport, dport } => ip.udp(sport, dport).write(&mut out, &self.payload),
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut t = ip.tcp(sport, dport, 0x1000_0000, 64240);
                if flags & tcpf::SYN != 0 {
                    t = t.syn();
                }
                if flags & tcpf::ACK != 0 {
                    t = t.ack(0x2000_0000);
                }
                if flags & tcpf::FIN != 0 {
                    t = t.fin();
                }
                if flags & tcpf::RST != 0 {
                    t = t.rst();
                }
                if flags & tcpf::PSH != 0 {
                    t = t.psh();
                }
                t.write(&mut out, &self.payload)
            }
            L4::EchoRequest { id, seq } if v6 => ip
                .icmpv6_echo_request(id, seq)
                .write(&mut out, &self.payload),
            L4::EchoRequest { id, seq } => ip
                .icmpv4_echo_request(id, seq)
                .write(&mut out, &self.payload),
            L4::EchoReply { id, seq } if v6 => {
                ip.icmpv6_echo_reply(id, seq).write(&mut out, &self.payload)
            }
            L4::EchoReply { id, seq } => {
                ip.icmpv4_echo_reply(id, seq).write(&mut out, &self.payload)
            }
        }
        .expect("etherparse builds the test frame");
        out
    }
}

/// Rewrites the IPv4 header of an Ethernet frame (then recomputes its
/// checksum with etherparse).
pub fn edit_ipv4(frame: &mut [u8], f: impl FnOnce(&mut Ipv4Header)) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).expect("ipv4 header");
    let len = h.header_len();
    f(&mut h);
    h.header_checksum = h.calc_header_checksum();
    frame[14..14 + len].copy_from_slice(&h.to_bytes());
}

/// An ARP request (RFC 826, Ethernet/IPv4) broadcast by `sender`.
pub fn arp_request(sender_mac: Mac, sender_ip: IpAddr, target_ip: IpAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ip4(sender_ip).octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip4(target_ip).octets());
    f
}

/// The IPv6 solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A Neighbor Solicitation (RFC 4861 4.3) for `target` with a source
/// link-layer address option, sent to the solicited-node multicast group.
pub fn neighbor_solicit(sender_mac: Mac, sender_ip: IpAddr, target: IpAddr) -> Vec<u8> {
    let target = ip6(target);
    let dst = solicited_node(target);
    let d = dst.octets();
    let eth_dst = [0x33, 0x33, d[12], d[13], d[14], d[15]];
    let mut body = Vec::new();
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&sender_mac);
    let ty = Icmpv6Type::Unknown {
        type_u8: 135,
        code_u8: 0,
        bytes5to8: [0; 4],
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(sender_mac, eth_dst)
        .ipv6(ip6(sender_ip).octets(), d, 255)
        .icmpv6(ty)
        .write(&mut out, &body)
        .expect("NS");
    out
}

/// An ICMPv4/ICMPv6 error (`ty`/`code`, bytes 5..8 `rest`) from `src` to
/// `dst` quoting `quoted` (an IP packet, no Ethernet), as Ethernet `eth_src`
/// -> `eth_dst`.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    eth_src: Mac,
    eth_dst: Mac,
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2(eth_src, eth_dst);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ty = etherparse::Icmpv4Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            };
            eth.ipv4(s.octets(), d.octets(), 64)
                .icmpv4(ty)
                .write(&mut out, quoted)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ty = Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            };
            eth.ipv6(s.octets(), d.octets(), 64)
                .icmpv6(ty)
                .write(&mut out, quoted)
        }
        _ => panic!("mixed families"),
    }
    .expect("icmp error");
    out
}

/// The VXLAN header (RFC 7348 5): I flag, reserved zero, VNI.
pub fn vxlan_header(vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [0x08, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// `inner` (an Ethernet frame) wrapped in VXLAN/UDP/IP/Ethernet from node B
/// to node A as node B would send it.
pub fn vxlan_from_b(underlay: Fam, sport: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vxlan_header(vni).to_vec();
    payload.extend_from_slice(inner);
    let mut p = Pkt::new(
        B_UPLINK_MAC,
        A_UPLINK_MAC,
        underlay.node_b(),
        underlay.node_a(),
        udp(sport, VXLAN_PORT),
    );
    p.payload = payload;
    let mut f = p.build();
    if underlay == Fam::V4 {
        // Tunnel endpoints send outer IPv4 UDP without a checksum and DF clear.
        edit_ipv4(&mut f, |h| h.dont_fragment = false);
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
    }
    f
}

/// The inner Ethernet frame node B's VTEP sends for an IP packet.
pub fn inner_from_b(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
    Pkt::new(B_VTEP_MAC, A_VTEP_MAC, src, dst, l4)
}

// ---------------------------------------------------------------------------
// Parsing the output back (etherparse) with every checksum checked
// ---------------------------------------------------------------------------

/// A frame read back with etherparse. Constructing it checks the IPv4 header
/// checksum and, when the whole L4 segment is present, the L4 checksum.
#[derive(Clone, Debug)]
pub struct Seen {
    pub eth: Ethernet2Header,
    pub ip: SeenIp,
}

#[derive(Clone, Debug)]
pub struct SeenIp {
    pub v4: Option<Ipv4Header>,
    pub v6: Option<Ipv6Header>,
    pub frag6: Option<FragHeader6>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of this fragment in bytes (0 for unfragmented packets).
    pub frag_offset: u16,
    pub more_frags: bool,
    /// The IP payload after extension headers, trimmed to the length fields.
    pub l4: Vec<u8>,
    /// Ports for TCP/UDP; ICMP echo identifier as `sport` (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ICMP bytes 5..8 (echo id/seq, MTU ...).
    pub icmp_rest: [u8; 4],
    /// The L4 payload (after the TCP/UDP/ICMP header).
    pub payload: Vec<u8>,
    pub l4_checksum: u16,
}

#[track_caller]
pub fn parse(frame: &[u8]) -> Seen {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("ethernet header");
    let ip = match eth.ether_type.0 {
        0x0800 | 0x86dd => parse_ip(rest, true),
        other => panic!("not IP: ethertype {other:#06x}"),
    };
    Seen { eth, ip }
}

/// Parses an IP packet (no Ethernet). With `whole`, the packet must be
/// complete and its checksums are verified; without it (an ICMP quote), only
/// the IPv4 header checksum is.
#[track_caller]
pub fn parse_ip(bytes: &[u8], whole: bool) -> SeenIp {
    let version = bytes.first().expect("empty IP packet") >> 4;
    let (v4h, v6h, frag6, src, dst, ttl, proto, frag_offset, more_frags, l4) = if version == 4 {
        let (h, _) = Ipv4Header::from_slice(bytes).expect("ipv4 header");
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let end = if whole {
            assert!(bytes.len() >= h.total_len as usize, "IPv4 total length");
            h.total_len as usize
        } else {
            bytes.len().min(h.total_len as usize)
        };
        let l4 = bytes[h.header_len()..end].to_vec();
        (
            Some(h.clone()),
            None,
            None,
            IpAddr::from(h.source),
            IpAddr::from(h.destination),
            h.time_to_live,
            h.protocol.0,
            h.fragment_offset.value() * 8,
            h.more_fragments,
            l4,
        )
    } else if version == 6 {
        let (h, _) = Ipv6Header::from_slice(bytes).expect("ipv6 header");
        let end = if whole {
            assert!(
                bytes.len() >= 40 + h.payload_length as usize,
                "IPv6 payload length"
            );
            40 + h.payload_length as usize
        } else {
            bytes.len().min(40 + h.payload_length as usize)
        };
        let mut l4 = bytes[40..end].to_vec();
        let mut frag = None;
        let mut proto = h.next_header.0;
        // Hop-by-hop (0) and destination options (60): skip (RFC 8200 4.3/4.6).
        while proto == 0 || proto == 60 {
            assert!(l4.len() >= 8, "extension header");
            let len = (l4[1] as usize + 1) * 8;
            proto = l4[0];
            l4 = l4[len..].to_vec();
        }
        if proto == 44 {
            let fh = FragHeader6::parse(&l4);
            proto = fh.next_header;
            l4 = l4[8..].to_vec();
            frag = Some(fh);
        }
        let (off, more) = frag
            .as_ref()
            .map(|f| (f.offset, f.more))
            .unwrap_or((0, false));
        (
            None,
            Some(h.clone()),
            frag,
            IpAddr::from(h.source),
            IpAddr::from(h.destination),
            h.hop_limit,
            proto,
            off,
            more,
            l4,
        )
    } else {
        panic!("IP version {version}");
    };
    let mut s = SeenIp {
        v4: v4h,
        v6: v6h,
        frag6,
        src,
        dst,
        ttl,
        proto,
        frag_offset,
        more_frags,
        l4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        icmp_rest: [0; 4],
        payload: Vec::new(),
        l4_checksum: 0,
    };
    if frag_offset != 0 {
        // A non-first fragment: no L4 header here.
        s.payload = s.l4.clone();
        return s;
    }
    let fragmented = more_frags;
    let check = whole && !fragmented;
    match proto {
        17 => {
            let (u, payload) = UdpHeader::from_slice(&s.l4).expect("udp header");
            s.sport = u.source_port;
            s.dport = u.destination_port;
            s.l4_checksum = u.checksum;
            let plen = (u.length as usize).saturating_sub(8).min(payload.len());
            s.payload = payload[..if check { plen } else { payload.len() }].to_vec();
            if check {
                assert_eq!(u.length as usize, s.l4.len(), "UDP length");
                let want = match (&s.v4, &s.v6) {
                    (Some(h), _) => u.calc_checksum_ipv4(h, &s.payload),
                    (_, Some(h)) => u.calc_checksum_ipv6(h, &s.payload),
                    _ => unreachable!(),
                }
                .expect("udp checksum");
                if !(s.v4.is_some() && u.checksum == 0) {
                    assert_eq!(u.checksum, want, "UDP checksum");
                }
            }
        }
        6 => {
            let (t, payload) = TcpHeader::from_slice(&s.l4).expect("tcp header");
            s.sport = t.source_port;
            s.dport = t.destination_port;
            s.l4_checksum = t.checksum;
            s.tcp_flags = (t.fin as u8)
                | (t.syn as u8) << 1
                | (t.rst as u8) << 2
                | (t.psh as u8) << 3
                | (t.ack as u8) << 4;
            s.payload = payload.to_vec();
            if check {
                let want = match (&s.v4, &s.v6) {
                    (Some(h), _) => t.calc_checksum_ipv4(h, payload),
                    (_, Some(h)) => t.calc_checksum_ipv6(h, payload),
                    _ => unreachable!(),
                }
                .expect("tcp checksum");
                assert_eq!(t.checksum, want, "TCP checksum");
            }
        }
        1 => {
            let (h, payload) = Icmpv4Header::from_slice(&s.l4).expect("icmpv4 header");
            let b = &s.l4;
            s.icmp_type = b[0];
            s.icmp_code = b[1];
            s.icmp_rest = [b[4], b[5], b[6], b[7]];
            s.l4_checksum = h.checksum;
            s.payload = payload.to_vec();
            if s.icmp_type == 0 || s.icmp_type == 8 {
                s.sport = u16::from_be_bytes([b[4], b[5]]);
            }
            if check {
                // RFC 1071: the sum over the whole message, checksum
                // included, is all ones. (etherparse's typed re-encoding
                // drops bytes 5..8 of some types, so sum the raw bytes.)
                assert_eq!(rfc1071_sum(&s.l4), 0xffff, "ICMPv4 checksum");
            }
        }
        58 => {
            let (h, payload) = Icmpv6Header::from_slice(&s.l4).expect("icmpv6 header");
            let b = &s.l4;
            s.icmp_type = b[0];
            s.icmp_code = b[1];
            s.icmp_rest = [b[4], b[5], b[6], b[7]];
            s.l4_checksum = h.checksum;
            s.payload = payload.to_vec();
            if s.icmp_type == 128 || s.icmp_type == 129 {
                s.sport = u16::from_be_bytes([b[4], b[5]]);
            }
            if check {
                let sl = Icmpv6Slice::from_slice(&s.l4).expect("icmpv6");
                let (src, dst) = match (s.src, s.dst) {
                    (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets(), b.octets()),
                    _ => unreachable!(),
                };
                assert!(sl.is_checksum_valid(src, dst), "ICMPv6 checksum");
            }
        }
        _ => {}
    }
    s
}

/// The folded RFC 1071 one's-complement sum of `data`.
pub fn rfc1071_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

impl std::ops::Deref for Seen {
    type Target = SeenIp;
    fn deref(&self) -> &SeenIp {
        &self.ip
    }
}

impl Seen {
    /// For an encapsulated frame: the VXLAN header's flags byte, its VNI, and
    /// the inner Ethernet frame. Checks the reserved bytes are zero.
    #[track_caller]
    pub fn vxlan(&self) -> (u8, u32, Vec<u8>) {
        assert_eq!(self.proto, 17, "VXLAN rides on UDP");
        let p = &self.payload;
        assert!(p.len() >= 8, "VXLAN header");
        assert_eq!(&p[1..4], &[0, 0, 0], "VXLAN reserved bytes");
        assert_eq!(p[7], 0, "VXLAN reserved byte");
        let vni = u32::from_be_bytes([0, p[4], p[5], p[6]]);
        (p[0], vni, p[8..].to_vec())
    }

    /// The IP packet quoted by an ICMP error (parsed without L4 checks).
    #[track_caller]
    pub fn quoted(&self) -> SeenIp {
        parse_ip(&self.payload, false)
    }

    pub fn quoted_bytes(&self) -> &[u8] {
        &self.payload
    }
}

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

/// Splits the IP packet in an Ethernet frame into fragments whose payloads
/// are at most `chunk` bytes (a multiple of 8), IPv4 style or with an IPv6
/// fragment header, all with identification `ident`.
pub fn fragment(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let eth = &frame[..14];
    let ip = &frame[14..];
    let mut out = Vec::new();
    if ip[0] >> 4 == 4 {
        let (h, _) = Ipv4Header::from_slice(ip).expect("ipv4");
        let payload = &ip[h.header_len()..h.total_len as usize];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mut fh = h.clone();
            fh.identification = ident as u16;
            fh.dont_fragment = false;
            fh.more_fragments = end < payload.len();
            fh.fragment_offset = IpFragOffset::try_new((off / 8) as u16).expect("offset");
            fh.total_len = (fh.header_len() + end - off) as u16;
            fh.header_checksum = fh.calc_header_checksum();
            let mut f = eth.to_vec();
            f.extend_from_slice(&fh.to_bytes());
            f.extend_from_slice(&payload[off..end]);
            out.push(f);
            off = end;
        }
    } else {
        let (h, _) = Ipv6Header::from_slice(ip).expect("ipv6");
        let payload = &ip[40..40 + h.payload_length as usize];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let fragh = FragHeader6 {
                next_header: h.next_header.0,
                offset: off as u16,
                more: end < payload.len(),
                ident,
            };
            let mut nh = h.clone();
            nh.next_header = IpNumber(44);
            nh.payload_length = (8 + end - off) as u16;
            let mut f = eth.to_vec();
            let mut hb = Vec::new();
            nh.write(&mut hb).expect("ipv6 header");
            f.extend_from_slice(&hb);
            f.extend_from_slice(&fragh.to_bytes());
            f.extend_from_slice(&payload[off..end]);
            out.push(f);
            off = end;
        }
    }
    out
}

/// The IPv6 Fragment header (RFC 8200 4.5), written and read by hand from
/// the RFC's bit layout: etherparse before 0.20 swapped the offset's low
/// bits and the M flag (its issue #150), so these bytes stay pinned to the
/// RFC whatever etherparse version is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragHeader6 {
    pub next_header: u8,
    /// Offset in bytes (a multiple of 8).
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

impl FragHeader6 {
    /// Bytes 2..4 are one big-endian word: offset (8-byte units) in the top
    /// 13 bits, 2 reserved bits, M in the least significant bit.
    pub fn to_bytes(self) -> [u8; 8] {
        let w = (self.offset / 8) << 3 | self.more as u16;
        let w = w.to_be_bytes();
        let id = self.ident.to_be_bytes();
        [self.next_header, 0, w[0], w[1], id[0], id[1], id[2], id[3]]
    }

    #[track_caller]
    pub fn parse(b: &[u8]) -> FragHeader6 {
        assert!(b.len() >= 8, "fragment header");
        let w = u16::from_be_bytes([b[2], b[3]]);
        FragHeader6 {
            next_header: b[0],
            offset: (w >> 3) * 8,
            more: w & 1 == 1,
            ident: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Reassembles parsed fragments (any order) into the upper-layer bytes.
#[track_caller]
pub fn reassemble(frags: &[SeenIp]) -> Vec<u8> {
    let mut parts: Vec<(u16, &[u8])> = frags
        .iter()
        .map(|s| (s.frag_offset, s.l4.as_slice()))
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (off, data) in parts {
        assert_eq!(off as usize, out.len(), "fragments leave no holes");
        out.extend_from_slice(data);
    }
    assert!(
        !frags
            .iter()
            .any(|f| f.frag_offset as usize + f.l4.len() == out.len() && f.more_frags),
        "the last fragment has MF clear"
    );
    out
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

/// Checks a reassembled UDP datagram (header + payload) against the given
/// addresses with etherparse and returns (sport, dport, payload).
#[track_caller]
pub fn check_udp_datagram(src: IpAddr, dst: IpAddr, dgram: &[u8]) -> (u16, u16, Vec<u8>) {
    let (u, payload) = UdpHeader::from_slice(dgram).expect("udp header");
    assert_eq!(u.length as usize, dgram.len(), "UDP length");
    let want = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => u.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => u.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => panic!("mixed families"),
    }
    .expect("checksum");
    assert_eq!(u.checksum, want, "reassembled UDP checksum");
    (u.source_port, u.destination_port, payload.to_vec())
}

/// Adds IPv4 options (a multiple of 4 bytes) to the frame's IPv4 header,
/// fixing IHL, total length and the header checksum (L4 is unchanged: its
/// pseudo-header does not cover options).
pub fn with_ipv4_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv4Header::from_slice(&frame[14..]).expect("ipv4");
    let payload = &rest[..h.total_len as usize - h.header_len()];
    h.options = etherparse::Ipv4Options::try_from(opts).expect("options");
    h.total_len = (h.header_len() + payload.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut f = frame[..14].to_vec();
    f.extend_from_slice(&h.to_bytes());
    f.extend_from_slice(payload);
    f
}

/// Inserts an IPv6 Destination Options header (next header 60, one PadN
/// option) between the IPv6 header and the upper layer.
pub fn with_ipv6_dest_opts(frame: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv6Header::from_slice(&frame[14..]).expect("ipv6");
    let upper = h.next_header.0;
    let payload = &rest[..h.payload_length as usize];
    h.next_header = IpNumber(60);
    h.payload_length += 8;
    let mut f = frame[..14].to_vec();
    h.write(&mut f).expect("ipv6 header");
    // RFC 8200 4.6: next header, length 0 (8 bytes), PadN of 4 data bytes.
    f.extend_from_slice(&[upper, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}
