//! Synthetic workloads for measuring the pipeline: a node with S Services x B
//! backends spread over remote nodes behind VXLAN, local client pods, and the
//! frames of one scenario, built once.
//!
//! Shared by the `bench-pipeline` subcommand and the criterion benches (which
//! include this file by path), so both measure the same thing. Frames are
//! written by hand here (RFC 791/768/7348 layouts with a plain RFC 1071
//! checksum) so this file needs nothing but the dataplane crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use dataplane::conntrack;
use dataplane::lb::{self, BackendSpec, ServiceSpec, VipKind};
use dataplane::pipeline::{Frame, Pipeline, Verdict, FRAME_SIZE, HEADROOM};
use dataplane::route::Prefix;
use dataplane::state::shm::{Layout, ServiceCounters, ServiceDirectory};
use dataplane::state::{NodeConfig, PodSpec, RemoteNodeSpec, TablesBuilder};
use dataplane::{proto, Mac, PortId};

pub const BATCH: usize = 64;
pub const UPLINK: PortId = 0;
pub const UPLINK_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0x01];
pub const ROUTER_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0xfe];
pub const GW_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0xff];
pub const VTEP_MAC: Mac = [0x02, 0, 0, 0, 0x0a, 0xee];
pub const VXLAN_PORT: u16 = 8472;
pub const VNI: u32 = 1;
/// Remote nodes the backends are spread over.
pub const REMOTE_NODES: u32 = 16;
/// UDP payload bytes of every synthesized packet.
pub const PAYLOAD: usize = 64;
pub const SERVICE_PORT: u16 = 53;
pub const BACKEND_PORT: u16 = 5353;
/// Source ports used per client pod.
const PORTS_PER_POD: u32 = 60_000;

/// What a benchmark run exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Established pod -> ClusterIP -> remote pod: conntrack hit, DNAT, encap.
    ServiceEncap,
    /// VXLAN in -> decap -> conntrack hit, reverse NAT -> local pod.
    DecapReverse,
    /// Every packet a new flow to a ClusterIP: Maglev pick + conntrack insert.
    NewFlow,
    /// Plain local pod -> pod forwarding.
    PodToPod,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::ServiceEncap,
        Scenario::DecapReverse,
        Scenario::NewFlow,
        Scenario::PodToPod,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ServiceEncap => "service-encap",
            Scenario::DecapReverse => "decap-reverse",
            Scenario::NewFlow => "new-flow",
            Scenario::PodToPod => "pod-to-pod",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The size of a synthetic node.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Distinct flows the frames cycle over (new-flow: one per packet).
    pub flows: u32,
    pub services: u32,
    pub backends: u32,
    /// Packets a run will push (sizes conntrack for new-flow).
    pub packets: u64,
    /// Pod (inner) IP family, 4 or 6; the underlay is IPv4 either way.
    pub family: u8,
}

fn node_ip() -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, 1)
}

fn remote_node_ip(k: u32) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, k as u8 + 1)
}

fn remote_underlay_mac(k: u32) -> Mac {
    [0x02, 0, 0, 1, 0, k as u8 + 1]
}

fn remote_vtep_mac(k: u32) -> Mac {
    [0x02, 0, 0, 2, 0, k as u8 + 1]
}

/// Client pod `i` (port `i + 1`): 10.1.(i / 250).(i % 250 + 2).
pub fn client_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 2) as u8)
}

/// Client pod `i`'s IPv6 address: fd00:1::(i + 2).
pub fn client_ip6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0)) + u128::from(i) + 2)
}

fn client_addr(family: u8, i: u32) -> IpAddr {
    if family == 6 {
        IpAddr::V6(client_ip6(i))
    } else {
        IpAddr::V4(client_ip(i))
    }
}

pub fn client_mac(i: u32) -> Mac {
    let b = i.to_be_bytes();
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

pub fn client_port(i: u32) -> PortId {
    i as PortId + 1
}

/// The local server pod of pod-to-pod: 10.1.255.2.
pub fn server_ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 255, 2)
}

/// The local server pod's IPv6 address: fd00:1::ff:2.
pub fn server_ip6() -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0xff, 2)
}

fn server_addr(family: u8) -> IpAddr {
    if family == 6 {
        IpAddr::V6(server_ip6())
    } else {
        IpAddr::V4(server_ip())
    }
}

pub const SERVER_MAC: Mac = [0x0a, 0x58, 0xff, 0, 0, 2];
pub const SERVER_PORT: PortId = 4000;

/// Service `s`'s ClusterIP: 10.96.0.0/12 + s + 1.
pub fn vip(s: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + s + 1)
}

/// Service `s`'s IPv6 ClusterIP: fd96::/108 + s + 1.
pub fn vip6(s: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0xfd96, 0, 0, 0, 0, 0, 0, 0)) + u128::from(s) + 1)
}

fn vip_addr(family: u8, s: u32) -> IpAddr {
    if family == 6 {
        IpAddr::V6(vip6(s))
    } else {
        IpAddr::V4(vip(s))
    }
}

/// Backend `j` of service `s` lives on remote node `(s*B + j) % 16`,
/// address 10.(16 + node).x.y (IPv6: fd00:(16 + node)::x).
pub fn backend_ip(shape: &Shape, s: u32, j: u32) -> (u32, IpAddr) {
    let i = s * shape.backends + j;
    let k = i % REMOTE_NODES;
    let h = i / REMOTE_NODES + 2;
    let a = if shape.family == 6 {
        let base = u128::from(Ipv6Addr::new(0xfd00, 16 + k as u16, 0, 0, 0, 0, 0, 0));
        IpAddr::V6(Ipv6Addr::from(base + u128::from(h)))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            10,
            16 + k as u8,
            (h >> 8) as u8,
            (h & 0xff) as u8,
        ))
    };
    (k, a)
}

/// The remote node owning a backend address (inverse of [`backend_ip`]).
fn backend_node(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => u32::from(a.octets()[1]) - 16,
        IpAddr::V6(a) => u32::from(a.segments()[1]) - 16,
    }
}

fn prefix(s: &str) -> Prefix {
    s.parse().expect("static prefix")
}

/// Client pods needed so that `flows` distinct flows fit in their ports.
pub fn client_pods(flows: u32) -> u32 {
    flows.div_ceil(PORTS_PER_POD).max(1)
}

/// Flow `n`: (client pod, source port).
pub fn flow_client(n: u32) -> (u32, u16) {
    (n / PORTS_PER_POD, (1024 + n % PORTS_PER_POD) as u16)
}

pub fn config(conntrack_capacity: usize) -> NodeConfig {
    NodeConfig {
        node_ipv4: Some(node_ip()),
        node_ipv6: None,
        uplink: UPLINK,
        uplink_mac: UPLINK_MAC,
        uplink_gateway_mac: ROUTER_MAC,
        gateway_ipv4: Some(Ipv4Addr::new(10, 1, 0, 1)),
        gateway_ipv6: Some(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1)),
        gateway_mac: GW_MAC,
        vtep_mac: VTEP_MAC,
        vxlan_port: VXLAN_PORT,
        vni: VNI,
        underlay_mtu: 1500,
        snat_ports: (61000, 65535),
        nodeport_range: (30000, 32767),
        cluster_cidrs: vec![prefix("10.0.0.0/10"), prefix("fd00::/16")],
        service_cidrs: vec![prefix("10.96.0.0/12"), prefix("fd96::/108")],
        maglev_max_size: 65537,
        conntrack_capacity,
        timeouts: conntrack::Timeouts::default(),
        frag_capacity: 1024,
        affinity_capacity: 1024,
    }
}

/// A pipeline over the synthetic node's tables.
pub fn build_pipeline(shape: &Shape, scenario: Scenario) -> Pipeline {
    let ct_capacity = match scenario {
        Scenario::NewFlow => (shape.packets as usize)
            .saturating_add(shape.packets as usize / 4)
            .max(1 << 16),
        _ => (shape.flows as usize).saturating_mul(2).max(1 << 16),
    };
    let mut b = TablesBuilder::new(config(ct_capacity));
    for i in 0..client_pods(shape.flows.max(shape.packets.min(u32::MAX as u64) as u32)) {
        b.add_pod(PodSpec {
            port: client_port(i),
            mac: client_mac(i),
            ipv4: Some(client_ip(i)),
            ipv6: Some(client_ip6(i)),
            name: format!("bench/client-{i}"),
        });
    }
    b.add_pod(PodSpec {
        port: SERVER_PORT,
        mac: SERVER_MAC,
        ipv4: Some(server_ip()),
        ipv6: Some(server_ip6()),
        name: "bench/server".to_string(),
    });
    for k in 0..REMOTE_NODES {
        b.add_remote_node(RemoteNodeSpec {
            pod_cidrs: vec![
                prefix(&format!("10.{}.0.0/16", 16 + k)),
                prefix(&format!("fd00:{:x}::/32", 16 + k)),
            ],
            ipv4: Some(remote_node_ip(k)),
            ipv6: None,
            vtep_mac: remote_vtep_mac(k),
            underlay_mac: remote_underlay_mac(k),
            name: format!("remote-{k}"),
        });
    }
    for s in 0..shape.services {
        b.add_service(ServiceSpec {
            name: format!("bench/svc-{s}"),
            proto: proto::UDP,
            port: SERVICE_PORT,
            vips: vec![(vip_addr(shape.family, s), VipKind::ClusterIp)],
            node_port: None,
            ext_local: false,
            int_local: false,
            affinity_timeout_s: None,
            backends: (0..shape.backends)
                .map(|j| BackendSpec {
                    ip: backend_ip(shape, s, j).1,
                    port: BACKEND_PORT,
                    ready: true,
                    serving: true,
                    terminating: false,
                    local: false,
                })
                .collect(),
        });
    }
    let mut tables = b.build().expect("synthetic tables build");
    // Per-Service counters as a worker keeps them: stable ids in the
    // tables, one counter line per id.
    let capacity = Layout::default().services;
    let mut dir = ServiceDirectory::in_memory(capacity);
    let ids = dir.update(tables.services().services().map(|(_, s)| s.name()));
    tables.set_service_ids(ids);
    let ct = Arc::new(conntrack::Table::new(
        ct_capacity,
        conntrack::Timeouts::default(),
    ));
    let affinity = Arc::new(lb::AffinityTable::new(1024));
    let mut p = Pipeline::new(Arc::new(tables), ct, affinity);
    p.set_service_counters(ServiceCounters::owned(capacity as usize));
    p
}

/// RFC 1071 one's-complement sum.
fn csum_add(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u32) << 8;
    }
    acc
}

fn csum_finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Ethernet + IPv4 (DF set) + UDP frame with a valid IP and UDP checksum.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_udp(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
    udp_checksum: bool,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto::UDP, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let c = csum_finish(csum_add(0, &f[ip_start..ip_start + 20]));
    f[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    if udp_checksum {
        let mut acc = csum_add(0, &src.octets());
        acc = csum_add(acc, &dst.octets());
        acc += proto::UDP as u32 + udp_len as u32;
        acc = csum_add(acc, &f[udp_start..]);
        let mut c = csum_finish(acc);
        if c == 0 {
            c = 0xffff;
        }
        f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// Ethernet + IPv6 + UDP frame with a valid UDP checksum.
#[allow(clippy::too_many_arguments)]
pub fn ipv6_udp(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(14 + 40 + udp_len);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[proto::UDP, hop_limit]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    let udp_start = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    // RFC 8200 8.1 pseudo-header: addresses, upper-layer length, next header.
    let mut acc = csum_add(0, &src.octets());
    acc = csum_add(acc, &dst.octets());
    acc += proto::UDP as u32 + udp_len as u32;
    acc = csum_add(acc, &f[udp_start..]);
    let mut c = csum_finish(acc);
    if c == 0 {
        c = 0xffff;
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&c.to_be_bytes());
    f
}

/// A pod's UDP frame of either family (TTL/hop limit 64, checksums valid).
#[allow(clippy::too_many_arguments)]
pub fn ip_udp(
    eth_src: Mac,
    eth_dst: Mac,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6_udp(eth_src, eth_dst, s, d, sport, dport, 64, payload)
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4_udp(eth_src, eth_dst, s, d, sport, dport, 64, payload, true)
        }
        _ => panic!("mixed address families"),
    }
}

/// `inner` in VXLAN (RFC 7348) over IPv4/UDP (checksum 0) from `src` to `dst`.
pub fn vxlan4(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    inner: &[u8],
) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + inner.len());
    let v = VNI.to_be_bytes();
    payload.extend_from_slice(&[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
    payload.extend_from_slice(inner);
    ipv4_udp(
        eth_src, eth_dst, src, dst, sport, VXLAN_PORT, 64, &payload, false,
    )
}

fn payload() -> [u8; PAYLOAD] {
    let mut p = [0u8; PAYLOAD];
    for (i, b) in p.iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// Flow `n`'s client -> ClusterIP frame (service `n % S`).
fn client_to_vip(shape: &Shape, n: u32) -> (PortId, Vec<u8>) {
    let (pod, sport) = flow_client(n);
    let s = n % shape.services.max(1);
    let f = ip_udp(
        client_mac(pod),
        GW_MAC,
        client_addr(shape.family, pod),
        vip_addr(shape.family, s),
        sport,
        SERVICE_PORT,
        &payload(),
    );
    (client_port(pod), f)
}

/// A workload: template frames (with their ingress ports) the measured loop
/// cycles over, and the verdict every one of them must get.
pub struct Workload {
    pub pipeline: Pipeline,
    pub templates: Vec<(PortId, Vec<u8>)>,
    /// The verdict each template must get.
    pub expected: Vec<Verdict>,
    /// Monotonic time to pass in, advanced per batch.
    pub now: u64,
}

/// Builds tables, synthesizes the frames for `scenario` once, and warms the
/// flows where the scenario measures established traffic.
pub fn workload(scenario: Scenario, shape: Shape) -> Workload {
    let mut pipeline = build_pipeline(&shape, scenario);
    let mut now = 1_000_000_000u64;
    let flows = shape.flows.max(1);
    let (templates, expected) = match scenario {
        Scenario::ServiceEncap => {
            let t: Vec<_> = (0..flows).map(|n| client_to_vip(&shape, n)).collect();
            warm(&mut pipeline, &t, &mut now, Verdict::Tx(UPLINK));
            let e = vec![Verdict::Tx(UPLINK); t.len()];
            (t, e)
        }
        Scenario::NewFlow => {
            let n = shape.packets.min(u32::MAX as u64) as u32;
            let t: Vec<_> = (0..n).map(|i| client_to_vip(&shape, i)).collect();
            let e = vec![Verdict::Tx(UPLINK); t.len()];
            (t, e)
        }
        Scenario::DecapReverse => {
            // Create the flows, then replay each backend's reply by VXLAN.
            let fwd: Vec<_> = (0..flows).map(|n| client_to_vip(&shape, n)).collect();
            let replies = warm(&mut pipeline, &fwd, &mut now, Verdict::Tx(UPLINK));
            let t: Vec<_> = replies
                .iter()
                .map(|r| (UPLINK, reply_by_vxlan(r)))
                .collect();
            let e = fwd.iter().map(|(port, _)| Verdict::Tx(*port)).collect();
            (t, e)
        }
        Scenario::PodToPod => {
            let t: Vec<_> = (0..flows)
                .map(|n| {
                    let (pod, sport) = flow_client(n);
                    let f = ip_udp(
                        client_mac(pod),
                        GW_MAC,
                        client_addr(shape.family, pod),
                        server_addr(shape.family),
                        sport,
                        8080,
                        &payload(),
                    );
                    (client_port(pod), f)
                })
                .collect();
            let e = vec![Verdict::Tx(SERVER_PORT); t.len()];
            (t, e)
        }
    };
    Workload {
        pipeline,
        templates,
        expected,
        now,
    }
}

/// Runs every template once (creating the flows) and returns, for each, the
/// reply a backend would send: the inner frame of the encapsulated output
/// with addresses, ports and MACs swapped (TTL fresh, checksums valid).
fn warm(p: &mut Pipeline, t: &[(PortId, Vec<u8>)], now: &mut u64, want: Verdict) -> Vec<Vec<u8>> {
    let mut replies = Vec::with_capacity(t.len());
    let mut bufs = Bufs::new();
    for chunk in t.chunks(BATCH) {
        bufs.load(chunk);
        let mut frames = bufs.frames(chunk);
        let mut verdicts = [Verdict::Pass; BATCH];
        p.process(&mut frames, &mut verdicts[..chunk.len()], *now);
        *now += 1_000;
        for (fr, v) in frames.iter().zip(&verdicts[..chunk.len()]) {
            assert_eq!(*v, want, "warm-up verdict");
            replies.push(backend_reply(fr.data()));
        }
    }
    replies
}

/// From an encapsulated client -> backend frame (outer Eth/IPv4/UDP/VXLAN),
/// the backend's reply as its node would encapsulate it back to us.
fn backend_reply(encapped: &[u8]) -> Vec<u8> {
    let inner = &encapped[14 + 20 + 8 + 8..];
    let (src, dst, l4) = inner_addrs(inner);
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    ip_udp(
        inner[0..6].try_into().expect("mac"),
        inner[6..12].try_into().expect("mac"),
        dst,
        src,
        dport,
        sport,
        &payload(),
    )
}

/// An inner frame's source and destination addresses and its L4 bytes
/// (frames synthesized here: no IPv4 options, no IPv6 extension headers).
fn inner_addrs(frame: &[u8]) -> (IpAddr, IpAddr, &[u8]) {
    let ip = &frame[14..];
    if ip[0] >> 4 == 6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&ip[8..24]);
        d.copy_from_slice(&ip[24..40]);
        (IpAddr::from(s), IpAddr::from(d), &ip[40..])
    } else {
        let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        (IpAddr::V4(s), IpAddr::V4(d), &ip[20..])
    }
}

/// The backend reply wrapped as its node sends it: VXLAN from the node that
/// owns the backend's address to us.
fn reply_by_vxlan(inner: &[u8]) -> Vec<u8> {
    let k = backend_node(inner_addrs(inner).0);
    vxlan4(
        remote_underlay_mac(k),
        UPLINK_MAC,
        remote_node_ip(k),
        node_ip(),
        50000 + (k as u16),
        inner,
    )
}

/// 64 frame buffers reused across batches.
pub struct Bufs {
    pub bufs: Vec<Vec<u8>>,
}

impl Default for Bufs {
    fn default() -> Self {
        Self::new()
    }
}

impl Bufs {
    pub fn new() -> Bufs {
        Bufs {
            bufs: (0..BATCH).map(|_| vec![0u8; FRAME_SIZE]).collect(),
        }
    }

    /// Restores the frame bytes from the templates (the pipeline rewrites
    /// in place, and encap moves the head).
    #[inline]
    pub fn load(&mut self, t: &[(PortId, Vec<u8>)]) {
        for (b, (_, f)) in self.bufs.iter_mut().zip(t) {
            b[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        }
    }

    #[inline]
    pub fn frames<'a>(&'a mut self, t: &[(PortId, Vec<u8>)]) -> Vec<Frame<'a>> {
        self.bufs
            .iter_mut()
            .zip(t)
            .map(|(b, (port, f))| Frame::new(b, HEADROOM, f.len(), *port))
            .collect()
    }
}
