//! The node's tables as the dataplane reads them: which port is what, the local
//! pods, the remote nodes (VXLAN peers), the route tables and the Services.
//!
//! Writer: one builder ([`TablesBuilder`]) turns specs (from control, a file, or a
//! test) into an immutable [`Tables`]; readers are the pipeline workers, each holding
//! an `Arc<Tables>` and switching to a new one between batches (a new table has a
//! new [`Tables::generation`], which resets the workers' last-hit caches). Later this
//! same API is presented over a shared-memory region; nothing here is mutated after
//! `build`, so no ordering beyond the `Arc` hand-off is needed today.
//!
//! Routes are two LPM tries (IPv4, IPv6) mapping prefixes to a [`RouteTarget`]: host
//! routes for local pods and the node's own and gateway addresses, the remote nodes'
//! pod CIDRs, the Service and cluster CIDRs; anything else is [`RouteTarget::Outside`].

pub mod demo;
pub mod prefetch;
pub mod shm;
pub mod snapshot;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::conntrack::Timeouts;
use crate::lb::{ServiceSpec, ServiceTable, ServiceTableBuilder};
use crate::route::{Lpm4, Lpm6, Prefix};
use crate::{Mac, PortId};

/// The node's own configuration: addresses, the uplink, VXLAN and NAT parameters,
/// and table sizes.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's IPv4 address on the underlay (VXLAN source, SNAT address).
    pub node_ipv4: Option<Ipv4Addr>,
    /// The node's IPv6 address on the underlay.
    pub node_ipv6: Option<Ipv6Addr>,
    /// The uplink port (the node's NIC).
    pub uplink: PortId,
    /// The uplink's MAC address (source of frames sent on the uplink).
    pub uplink_mac: Mac,
    /// The next hop off-cluster (the underlay router's MAC).
    pub uplink_gateway_mac: Mac,
    /// The pods' default gateway address (answered by ARP on pod ports).
    pub gateway_ipv4: Option<Ipv4Addr>,
    /// The pods' default gateway address (answered by ND on pod ports).
    pub gateway_ipv6: Option<Ipv6Addr>,
    /// The gateway's MAC: ARP/ND answers and the source MAC toward pods.
    pub gateway_mac: Mac,
    /// This node's VTEP MAC (inner source MAC of encapsulated frames).
    pub vtep_mac: Mac,
    /// VXLAN UDP port (flannel: 8472; IANA: 4789).
    pub vxlan_port: u16,
    /// VXLAN network identifier (flannel: 1).
    pub vni: u32,
    /// The underlay MTU: an encapsulated frame's outer IP packet must fit.
    pub underlay_mtu: u16,
    /// Source ports used for SNAT (masquerade, NodePort SNAT, hairpin), inclusive.
    pub snat_ports: (u16, u16),
    /// The NodePort range, inclusive.
    pub nodeport_range: (u16, u16),
    /// The cluster's pod CIDRs (all nodes).
    pub cluster_cidrs: Vec<Prefix>,
    /// The Service CIDRs.
    pub service_cidrs: Vec<Prefix>,
    /// Upper bound on a Service's Maglev table size (a prime).
    pub maglev_max_size: u32,
    /// Conntrack table capacity (flows).
    pub conntrack_capacity: usize,
    /// Conntrack timeouts.
    pub timeouts: Timeouts,
    /// Per-worker fragment table capacity (fragmented datagrams tracked at once).
    pub frag_capacity: usize,
    /// Session affinity table capacity.
    pub affinity_capacity: usize,
}

impl Default for NodeConfig {
    /// No addresses, uplink port 0, flannel's VXLAN defaults, Linux-like sizes.
    fn default() -> Self {
        NodeConfig {
            node_ipv4: None,
            node_ipv6: None,
            uplink: 0,
            uplink_mac: [0x02, 0, 0, 0, 0, 0x01],
            uplink_gateway_mac: [0x02, 0, 0, 0, 0, 0xfe],
            gateway_ipv4: None,
            gateway_ipv6: None,
            gateway_mac: [0x02, 0, 0, 0, 0, 0x02],
            vtep_mac: [0x02, 0, 0, 0, 0, 0x03],
            vxlan_port: 8472,
            vni: 1,
            underlay_mtu: 1500,
            // Above Linux's ephemeral range (32768-60999), so the node's own
            // connections never share a port with SNAT.
            snat_ports: (61000, 65535),
            nodeport_range: (30000, 32767),
            cluster_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
            maglev_max_size: crate::lb::DEFAULT_MAGLEV_MAX_SIZE,
            conntrack_capacity: 1 << 16,
            timeouts: Timeouts::default(),
            frag_capacity: 1024,
            affinity_capacity: 1 << 12,
        }
    }
}

impl NodeConfig {
    /// The configuration of the embedded demo node (see [`demo`]).
    pub fn default_for_tests() -> NodeConfig {
        demo::node_config()
    }
}

/// A pod attached to this node.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// The pod's host-side port.
    pub port: PortId,
    /// The pod's interface MAC (destination of frames delivered to it).
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub name: String,
}

/// Another node of the cluster, reached over VXLAN.
#[derive(Clone, Debug)]
pub struct RemoteNodeSpec {
    /// The node's pod CIDRs (routed to it through the overlay).
    pub pod_cidrs: Vec<Prefix>,
    /// Its underlay addresses (outer destination).
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Its VTEP MAC (inner destination MAC, flannel's `VtepMAC`).
    pub vtep_mac: Mac,
    /// Its underlay MAC (outer destination MAC).
    pub underlay_mac: Mac,
    pub name: String,
}

/// What a port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// Not attached: frames are dropped.
    None,
    /// The node's uplink.
    Uplink,
    /// A local pod (index into [`Tables::pod`]).
    Pod(u32),
}

/// Where a destination address routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// A pod on this node (index into [`Tables::pod`]).
    LocalPod(u32),
    /// A pod CIDR or an address of another node (index into [`Tables::remote`]).
    RemoteNode(u32),
    /// One of this node's own addresses or the pods' gateway address.
    Node,
    /// Inside a Service CIDR but not a Service VIP:port.
    ServiceCidr,
    /// Inside the cluster's pod CIDRs but no known pod or node.
    ClusterCidr,
    /// Off-cluster.
    Outside,
}

/// A local pod as the pipeline reads it.
#[derive(Clone, Debug)]
pub struct Pod {
    pub port: PortId,
    pub mac: Mac,
    pub ipv4: Option<[u8; 4]>,
    pub ipv6: Option<[u8; 16]>,
    pub name: String,
}

/// A remote node as the pipeline reads it.
#[derive(Clone, Debug)]
pub struct RemoteNode {
    pub ipv4: Option<[u8; 4]>,
    pub ipv6: Option<[u8; 16]>,
    pub vtep_mac: Mac,
    pub underlay_mac: Mac,
    pub name: String,
    /// The outer headers toward this node, precomputed (see [`Outer`]).
    pub(crate) outer4: Option<Outer<50>>,
    pub(crate) outer6: Option<Outer<70>>,
    /// The underlay family used toward this node: 4 whenever both ends have an
    /// IPv4 underlay address (one VTEP per node, as flannel's `flannel.1`), else
    /// 6 (an IPv6-only underlay carries both inner families), 0 if neither.
    pub(crate) outer: u8,
    /// The largest inner IP packet for an IPv4 and an IPv6 inner packet: the
    /// underlay MTU minus the outer headers and the inner Ethernet header (50
    /// bytes over IPv4, 70 over IPv6; IPv6 inner packets are held to 70 whatever
    /// the outer family, so the path MTU a pod learns does not depend on it).
    pub(crate) inner_limit: [u16; 2],
}

/// The 64 bytes in front of an inner IPv4 packet sent to a remote node over
/// an IPv4 underlay, built once per table: the outer headers of
/// [`RemoteNode`]'s `outer4` (UDP source port 0: each flow writes its own;
/// in the IPv4 checksum field, [`PRE4_SUM`], the template's partial sum,
/// folded, native byte order: each packet's checksum overwrites it) and
/// the inner Ethernet header (the node's VTEP MAC, this node's, IPv4). One
/// cache line, which the fast path copies whole.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Pre4(pub [u8; 64]);

/// Where a [`Pre4`] keeps the outer checksum's partial sum.
pub(crate) const PRE4_SUM: usize = 24;

fn pre4(c: &NodeConfig, r: &RemoteNodeSpec, o: Option<&Outer<50>>) -> Pre4 {
    let mut p = [0u8; 64];
    if let Some(o) = o {
        p[..50].copy_from_slice(&o.hdr);
        let sum = crate::wire::checksum::fold(o.sum);
        p[PRE4_SUM..PRE4_SUM + 2].copy_from_slice(&sum.to_ne_bytes());
    }
    p[50..56].copy_from_slice(&r.vtep_mac);
    p[56..62].copy_from_slice(&c.vtep_mac);
    p[62..64].copy_from_slice(&[0x08, 0x00]);
    Pre4(p)
}

/// Outer headers of a VXLAN frame toward one remote node, built once per table:
/// Ethernet, IP, UDP and VXLAN with the per-packet fields (lengths, IPv4
/// identification and checksum, UDP source port and checksum, IPv6 flow label)
/// zero, and `sum`, the one's-complement partial sum of the constant words the
/// per-packet checksum covers (the IPv4 header; for IPv6 the pseudo-header's
/// addresses and protocol plus the UDP destination port and the VXLAN header).
#[derive(Clone, Debug)]
pub(crate) struct Outer<const N: usize> {
    pub hdr: [u8; N],
    pub sum: u32,
}

fn outer_family(c: &NodeConfig, r: &RemoteNodeSpec) -> u8 {
    if c.node_ipv4.is_some() && r.ipv4.is_some() {
        4
    } else if c.node_ipv6.is_some() && r.ipv6.is_some() {
        6
    } else {
        0
    }
}

fn inner_limit(mtu: u16, inner: u8, outer: u8) -> u16 {
    // Inner Ethernet + VXLAN + UDP + outer IP.
    let overhead = if inner == 6 || outer == 6 {
        14 + 8 + 8 + 40
    } else {
        14 + 8 + 8 + 20
    };
    mtu.saturating_sub(overhead)
}

fn outer4(c: &NodeConfig, r: &RemoteNodeSpec) -> Option<Outer<50>> {
    let (src, dst) = (c.node_ipv4?, r.ipv4?);
    let mut h = [0u8; 50];
    h[0..6].copy_from_slice(&r.underlay_mac);
    h[6..12].copy_from_slice(&c.uplink_mac);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    h[14] = 0x45;
    h[22] = 64; // TTL; DF clear
    h[23] = crate::proto::UDP;
    h[26..30].copy_from_slice(&src.octets());
    h[30..34].copy_from_slice(&dst.octets());
    h[36..38].copy_from_slice(&c.vxlan_port.to_be_bytes());
    h[42] = 0x08; // VXLAN I flag
    h[46..50].copy_from_slice(&(c.vni << 8).to_be_bytes());
    let sum = crate::wire::checksum::sum(&h[14..34]);
    Some(Outer { hdr: h, sum })
}

fn outer6(c: &NodeConfig, r: &RemoteNodeSpec) -> Option<Outer<70>> {
    let (src, dst) = (c.node_ipv6?, r.ipv6?);
    let mut h = [0u8; 70];
    h[0..6].copy_from_slice(&r.underlay_mac);
    h[6..12].copy_from_slice(&c.uplink_mac);
    h[12..14].copy_from_slice(&[0x86, 0xdd]);
    h[14] = 0x60;
    h[20] = crate::proto::UDP;
    h[21] = 64; // hop limit
    h[22..38].copy_from_slice(&src.octets());
    h[38..54].copy_from_slice(&dst.octets());
    h[56..58].copy_from_slice(&c.vxlan_port.to_be_bytes());
    h[62] = 0x08;
    h[66..70].copy_from_slice(&(c.vni << 8).to_be_bytes());
    use crate::wire::checksum::sum;
    let s = sum(&h[22..54]) + u32::from(crate::proto::UDP) + sum(&h[54..70]);
    Some(Outer { hdr: h, sum: s })
}

/// Why [`TablesBuilder::build`] refused.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("port {0} is used twice (pod or uplink)")]
    DuplicatePort(PortId),
    #[error("pod address {0} is used twice")]
    DuplicatePodAddress(IpAddr),
    #[error("pod {0} has no address")]
    PodWithoutAddress(String),
    #[error("prefix {0:?} has a length longer than its family allows")]
    BadPrefix(Prefix),
    #[error("SNAT port range {0}..={1} is empty or overlaps the NodePort range")]
    BadSnatRange(u16, u16),
    #[error("service table: {0:?}")]
    Services(crate::lb::BuildError),
}

/// The node's immutable tables (see the module doc).
pub struct Tables {
    config: NodeConfig,
    generation: u64,
    published: u64,
    node4: Option<[u8; 4]>,
    node6: Option<[u8; 16]>,
    gw4: Option<[u8; 4]>,
    gw6: Option<[u8; 16]>,
    ports: Vec<PortKind>,
    pods: Vec<Pod>,
    remotes: Vec<RemoteNode>,
    /// Each remote node's [`Pre4`] (by the same index).
    pre4: Vec<Pre4>,
    routes4: Lpm4<RouteTarget>,
    routes6: Lpm6<RouteTarget>,
    services: ServiceTable,
    /// Each Service's stable counter id, by `SvcId` (set by the dataplane
    /// after building, see `shm::ServiceDirectory`; empty: none counted).
    service_ids: Vec<u32>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl Tables {
    #[inline]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// A number unique to this build (caches keyed on tables compare it).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The shared-memory generation these tables were built from (0: not
    /// from shared memory). Workers announce it, so control knows which
    /// table slots are still read.
    #[inline]
    pub fn published_generation(&self) -> u64 {
        self.published
    }

    #[inline]
    pub fn node_v4(&self) -> Option<[u8; 4]> {
        self.node4
    }

    #[inline]
    pub fn node_v6(&self) -> Option<[u8; 16]> {
        self.node6
    }

    #[inline]
    pub fn gateway_v4(&self) -> Option<[u8; 4]> {
        self.gw4
    }

    #[inline]
    pub fn gateway_v6(&self) -> Option<[u8; 16]> {
        self.gw6
    }

    /// What the port is ([`PortKind::None`] for ports never attached).
    #[inline]
    pub fn port(&self, port: PortId) -> PortKind {
        self.ports
            .get(port as usize)
            .copied()
            .unwrap_or(PortKind::None)
    }

    /// A local pod by index (from [`PortKind::Pod`] or [`RouteTarget::LocalPod`]).
    #[inline]
    pub fn pod(&self, idx: u32) -> Option<&Pod> {
        self.pods.get(idx as usize)
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// A remote node by index (from [`RouteTarget::RemoteNode`]).
    #[inline]
    pub fn remote(&self, idx: u32) -> Option<&RemoteNode> {
        self.remotes.get(idx as usize)
    }

    pub fn remotes(&self) -> &[RemoteNode] {
        &self.remotes
    }

    /// A remote node's [`Pre4`] (meaningful when its `outer` is 4).
    #[inline(always)]
    pub(crate) fn pre4(&self, idx: u32) -> Option<&Pre4> {
        self.pre4.get(idx as usize)
    }

    #[inline]
    pub fn route4(&self, dst: [u8; 4]) -> RouteTarget {
        self.routes4.lookup(&dst).unwrap_or(RouteTarget::Outside)
    }

    #[inline]
    pub fn route6(&self, dst: &[u8; 16]) -> RouteTarget {
        self.routes6.lookup(dst).unwrap_or(RouteTarget::Outside)
    }

    /// Routes an address in [`crate::conntrack::FlowKey`] form (family 4 or 6).
    #[inline]
    pub fn route(&self, family: u8, dst: &[u8; 16]) -> RouteTarget {
        if family == 4 {
            self.route4([dst[0], dst[1], dst[2], dst[3]])
        } else {
            self.route6(dst)
        }
    }

    #[inline]
    pub fn services(&self) -> &ServiceTable {
        &self.services
    }

    /// Sets each Service's stable counter id, by `SvcId` (the `user` word
    /// of its flows; see `shm::ServiceDirectory`).
    pub fn set_service_ids(&mut self, ids: Vec<u32>) {
        self.service_ids = ids;
    }

    /// Service `svc`'s stable counter id ([`shm::NO_COUNTER`] when it has
    /// none).
    #[inline]
    pub fn service_id(&self, svc: crate::lb::SvcId) -> u32 {
        self.service_ids
            .get(svc.0 as usize)
            .copied()
            .unwrap_or(shm::NO_COUNTER)
    }
}

/// Builds [`Tables`] from specs.
pub struct TablesBuilder {
    config: NodeConfig,
    pods: Vec<PodSpec>,
    remotes: Vec<RemoteNodeSpec>,
    services: Vec<ServiceSpec>,
    published: u64,
}

impl TablesBuilder {
    pub fn new(config: NodeConfig) -> TablesBuilder {
        TablesBuilder {
            config,
            pods: Vec::new(),
            remotes: Vec::new(),
            services: Vec::new(),
            published: 0,
        }
    }

    /// Marks the tables as built from shared-memory generation `g`.
    pub fn published_generation(&mut self, g: u64) -> &mut Self {
        self.published = g;
        self
    }

    /// The node configuration being built (to adjust a prepared builder).
    pub fn config_mut(&mut self) -> &mut NodeConfig {
        &mut self.config
    }

    pub fn add_pod(&mut self, pod: PodSpec) -> &mut Self {
        self.pods.push(pod);
        self
    }

    pub fn add_remote_node(&mut self, node: RemoteNodeSpec) -> &mut Self {
        self.remotes.push(node);
        self
    }

    pub fn add_service(&mut self, svc: ServiceSpec) -> &mut Self {
        self.services.push(svc);
        self
    }

    pub fn build(self) -> Result<Tables, BuildError> {
        self.build_reusing(None)
    }

    /// As [`build`](Self::build), taking the Maglev tables of `old`'s
    /// Services whose backends did not change (one EndpointSlice change at
    /// 10k Services rebuilds in milliseconds, not a full Maglev rebuild).
    pub fn build_reusing(self, old: Option<&Tables>) -> Result<Tables, BuildError> {
        let c = &self.config;
        let (lo, hi) = c.snat_ports;
        let (nlo, nhi) = c.nodeport_range;
        if lo > hi || (lo <= nhi && nlo <= hi) {
            return Err(BuildError::BadSnatRange(lo, hi));
        }
        let mut routes4 = Lpm4::new();
        let mut routes6 = Lpm6::new();
        let mut add = |p: Prefix, t: RouteTarget| -> Result<(), BuildError> {
            match p.addr {
                IpAddr::V4(_) => routes4.insert(p, t),
                IpAddr::V6(_) => routes6.insert(p, t),
            }
            .map_err(|_| BuildError::BadPrefix(p))
        };
        let host = |ip: IpAddr| Prefix {
            addr: ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        };
        // Least specific first: an LPM insert of an equal prefix replaces.
        for p in &c.cluster_cidrs {
            add(*p, RouteTarget::ClusterCidr)?;
        }
        for p in &c.service_cidrs {
            add(*p, RouteTarget::ServiceCidr)?;
        }
        let mut remotes = Vec::with_capacity(self.remotes.len());
        let mut pre4s = Vec::with_capacity(self.remotes.len());
        for (i, r) in self.remotes.iter().enumerate() {
            for p in &r.pod_cidrs {
                add(*p, RouteTarget::RemoteNode(i as u32))?;
            }
            // The node's own addresses too: a pod reaching another node's address
            // goes through the overlay unmasqueraded, so that node's replies to
            // flows this node translated (NodePort SNAT) come back through it.
            for ip in [r.ipv4.map(IpAddr::V4), r.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                add(host(ip), RouteTarget::RemoteNode(i as u32))?;
            }
            let o4 = outer4(c, r);
            pre4s.push(pre4(c, r, o4.as_ref()));
            remotes.push(RemoteNode {
                ipv4: r.ipv4.map(|a| a.octets()),
                ipv6: r.ipv6.map(|a| a.octets()),
                vtep_mac: r.vtep_mac,
                underlay_mac: r.underlay_mac,
                name: r.name.clone(),
                outer4: o4,
                outer6: outer6(c, r),
                outer: outer_family(c, r),
                inner_limit: [
                    inner_limit(c.underlay_mtu, 4, outer_family(c, r)),
                    inner_limit(c.underlay_mtu, 6, outer_family(c, r)),
                ],
            });
        }
        let max_port = self
            .pods
            .iter()
            .map(|p| p.port)
            .chain(std::iter::once(c.uplink))
            .max()
            .unwrap_or(0);
        let mut ports = vec![PortKind::None; max_port as usize + 1];
        ports[c.uplink as usize] = PortKind::Uplink;
        let mut seen = std::collections::HashSet::new();
        let mut pods = Vec::with_capacity(self.pods.len());
        for (i, p) in self.pods.iter().enumerate() {
            if ports[p.port as usize] != PortKind::None {
                return Err(BuildError::DuplicatePort(p.port));
            }
            ports[p.port as usize] = PortKind::Pod(i as u32);
            if p.ipv4.is_none() && p.ipv6.is_none() {
                return Err(BuildError::PodWithoutAddress(p.name.clone()));
            }
            for ip in [p.ipv4.map(IpAddr::V4), p.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                if !seen.insert(ip) {
                    return Err(BuildError::DuplicatePodAddress(ip));
                }
                add(host(ip), RouteTarget::LocalPod(i as u32))?;
            }
            pods.push(Pod {
                port: p.port,
                mac: p.mac,
                ipv4: p.ipv4.map(|a| a.octets()),
                ipv6: p.ipv6.map(|a| a.octets()),
                name: p.name.clone(),
            });
        }
        let own = [
            c.node_ipv4.map(IpAddr::V4),
            c.node_ipv6.map(IpAddr::V6),
            c.gateway_ipv4.map(IpAddr::V4),
            c.gateway_ipv6.map(IpAddr::V6),
        ];
        for ip in own.into_iter().flatten() {
            add(host(ip), RouteTarget::Node)?;
        }
        let mut sb = ServiceTableBuilder::new(c.maglev_max_size);
        for s in self.services {
            sb.add(s);
        }
        let services = match old {
            Some(o) => sb.build_reusing(&o.services),
            None => sb.build(),
        }
        .map_err(BuildError::Services)?;
        Ok(Tables {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            published: self.published,
            node4: c.node_ipv4.map(|a| a.octets()),
            node6: c.node_ipv6.map(|a| a.octets()),
            gw4: c.gateway_ipv4.map(|a| a.octets()),
            gw6: c.gateway_ipv6.map(|a| a.octets()),
            config: self.config,
            ports,
            pods,
            remotes,
            pre4: pre4s,
            routes4,
            routes6,
            services,
            service_ids: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
