//! Kubernetes objects → the node's view, with kube-proxy's semantics.
//!
//! Input: a [`ClusterState`] and who this node is ([`NodeIdentity`]).
//! [`build`] computes the view from scratch; [`Model`] keeps each Service's
//! results and recomputes only the Services whose objects changed (what
//! control's loop uses: one EndpointSlice change costs one Service).
//! Output: a [`NodeView`]: one [`ServiceSpec`] per Service port the dataplane
//! must answer on, the other nodes reached over VXLAN, the health-check ports
//! to serve, and reports about objects that could not be used. Pure and
//! synchronous: the tests drive it with real manifests.
//!
//! The work is split the way kube-proxy splits it:
//! - `services`: a Service → its ports, VIPs, NodePort, traffic policies and
//!   affinity (kube-proxy's `pkg/proxy/serviceport.go`);
//! - `endpoints`: the EndpointSlices of a Service → the endpoints of one port,
//!   with their conditions, deduplicated (`pkg/proxy/endpointslicecache.go`);
//! - `topology`: hints for this node's zone or name (`pkg/proxy/topology.go`);
//! - `nodes`: the other nodes' pod CIDRs and VTEPs (flannel's annotations).
//!
//! What the model leaves to the dataplane: choosing among ready endpoints, else
//! serving-and-terminating ones, per scope (Cluster / Local) and family, is done
//! by `dataplane::lb` from the conditions passed in each [`BackendSpec`]; the
//! model marks the conditions faithfully and does not filter on them. Topology
//! hints are not expressible in a `BackendSpec`, so the model applies them by
//! leaving out the endpoints meant for other zones (see `topology`).
//!
//! Limits: the dataplane refuses a Service with more than 65,535 distinct
//! backends and a table with more than [`dataplane::lb::MAX_BACKENDS`]; the model
//! keeps every Service under [`MAX_ENDPOINTS_PER_SERVICE`] and the node under
//! `MAX_BACKENDS` (reporting what it left out), so a snapshot always builds.
//!
//! [`BackendSpec`]: dataplane::lb::BackendSpec

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use dataplane::config::RemoteSection;
use dataplane::lb::{ServiceSpec, MAX_BACKENDS};

use crate::source::{ClusterState, Report};

mod endpoints;
mod incremental;
mod nodes;
mod services;
#[cfg(test)]
mod tests;
mod topology;

pub use incremental::Model;

pub use nodes::{
    own_node_annotations, FLANNEL_BACKEND_DATA, FLANNEL_BACKEND_TYPE, FLANNEL_BACKEND_V6_DATA,
    FLANNEL_PUBLIC_IP, FLANNEL_PUBLIC_IPV6, FLANNEL_SUBNET_MANAGER, TWILL_PUBLIC_IP,
    TWILL_PUBLIC_IPV6, TWILL_VTEP_MAC,
};

/// The most endpoints one Service port keeps: the largest Maglev table
/// (`dataplane::lb::DEFAULT_MAGLEV_MAX_SIZE`), so every kept usable endpoint can
/// own a slot, and below the dataplane's 65,535 distinct backends per Service.
/// Beyond it the model keeps ready endpoints first, then serving-terminating
/// ones, then the rest, local before remote, and reports the cut.
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 65_521;

/// sessionAffinityConfig.clientIP.timeoutSeconds when not given (the API
/// server's default: 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// The node label kube-proxy reads this node's zone from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The EndpointSlice label naming the Service the slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Who this node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `Node.metadata.name` of this node.
    pub name: String,
    /// The IP families the node's dataplane carries (a Service of another
    /// family only is skipped, as kube-proxy does).
    pub ipv4: bool,
    pub ipv6: bool,
}

impl NodeIdentity {
    /// Whether the node carries `ip`'s family.
    pub fn carries(&self, ip: std::net::IpAddr) -> bool {
        if ip.is_ipv4() {
            self.ipv4
        } else {
            self.ipv6
        }
    }
}

/// A healthCheckNodePort to serve (externalTrafficPolicy Local services).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    /// `namespace/name` of the Service.
    pub service: String,
    /// Ready endpoints of that Service on this node (kube-proxy answers 200
    /// with `localEndpoints` when > 0, else 503).
    pub local_endpoints: u32,
}

/// The node's view of the cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeView {
    /// Sorted by name, then protocol and port (stable across rebuilds).
    pub services: Vec<ServiceSpec>,
    /// Every other node with a pod CIDR and a VTEP, sorted by name.
    pub remotes: Vec<RemoteSection>,
    /// Sorted by Service, then port.
    pub health_checks: Vec<HealthCheck>,
    /// Sorted by origin, then reason; no duplicates.
    pub reports: Vec<Report>,
}

/// Builds the node's view from scratch (the reference the incremental
/// [`Model`] must equal).
pub fn build(state: &ClusterState, node: &NodeIdentity) -> NodeView {
    let mut reports = Vec::new();
    let zone = nodes::zone_of(state, &node.name);
    own_node_report(state, node, &mut reports);
    let mut slices = endpoints::SliceIndex::new(state, &mut reports);
    let ctx = services::Ctx { node, zone };

    let mut out = services::Out::default();
    let mut scratch = Vec::new();
    // `state.services` iterates in (namespace, name) order, as the index wants.
    for (key, svc) in &state.services {
        let mine = slices.take(&key.namespace, &key.name, &mut reports);
        services::service(key, svc, mine, &ctx, &mut out, &mut scratch);
    }
    slices.finish(&mut reports);
    reports.append(&mut out.reports);
    finish(out.specs, out.health, reports, state, node)
}

/// Reports this node's own Node missing from a state that has Nodes.
fn own_node_report(state: &ClusterState, node: &NodeIdentity, reports: &mut Vec<Report>) {
    if !state.nodes.is_empty() && !state.nodes.contains_key(&node.name) {
        reports.push(Report {
            origin: format!("Node {}", node.name),
            reason: "this node's own Node object is not among the Nodes: no zone, so zone \
                     hints are not used"
                .into(),
        });
    }
}

/// The steps over the whole node, after the Services' own: order, VIP and
/// NodePort conflicts, the node's backend cap, the remote nodes, reports
/// sorted and deduplicated. `services` must come in the Services' key order
/// (then port order), so equal names keep one order whoever built them.
fn finish(
    mut services: Vec<ServiceSpec>,
    health_checks: Vec<HealthCheck>,
    mut reports: Vec<Report>,
    state: &ClusterState,
    node: &NodeIdentity,
) -> NodeView {
    sort_specs(&mut services);
    resolve(&mut services, &mut reports, &mut Vec::new());
    complete(services, health_checks, reports, state, node)
}

/// The node's order of specs: by name, then protocol and port (stable).
fn sort_specs(services: &mut [ServiceSpec]) {
    services.sort_by(|a, b| spec_order(a).cmp(&spec_order(b)));
}

/// What the node's order sorts specs by.
fn spec_order(s: &ServiceSpec) -> (&str, u8, u16) {
    (&s.name, s.proto, s.port)
}

/// VIP and NodePort conflicts, then the node's backend cap, over sorted
/// specs; the indexes of the specs they changed are added to `touched`.
fn resolve(specs: &mut [ServiceSpec], reports: &mut Vec<Report>, touched: &mut Vec<usize>) {
    drop_conflicts(specs, reports, touched);
    cap_backends(specs, reports, touched);
}

/// The rest of the view around resolved specs: health checks in order, the
/// remote nodes, reports sorted and deduplicated.
fn complete(
    services: Vec<ServiceSpec>,
    mut health_checks: Vec<HealthCheck>,
    mut reports: Vec<Report>,
    state: &ClusterState,
    node: &NodeIdentity,
) -> NodeView {
    health_checks.sort_by(|a, b| (&a.service, a.port).cmp(&(&b.service, b.port)));

    let remotes = nodes::remotes(state, node, &mut reports);

    reports.sort_by(|a, b| (&a.origin, &a.reason).cmp(&(&b.origin, &b.reason)));
    reports.dedup();
    NodeView {
        services,
        remotes,
        health_checks,
        reports,
    }
}

/// Keeps the node's total under the dataplane's [`MAX_BACKENDS`]: the Services
/// past the budget (in name order) lose their backends, reported.
#[cfg(test)]
fn cap_total_backends(specs: &mut [ServiceSpec], reports: &mut Vec<Report>) {
    cap_backends(specs, reports, &mut Vec::new());
}

/// [`MAX_BACKENDS`] over the node, recording the specs cut in `touched`.
fn cap_backends(specs: &mut [ServiceSpec], reports: &mut Vec<Report>, touched: &mut Vec<usize>) {
    let max = MAX_BACKENDS as usize;
    let mut total = 0usize;
    for (i, s) in specs.iter_mut().enumerate() {
        let room = max.saturating_sub(total);
        if s.backends.len() > room {
            reports.push(Report {
                origin: format!("Service {}", service_of(&s.name)),
                reason: format!(
                    "port {}: {} endpoints would pass the node's limit of {max} backends; \
                     kept {room}",
                    s.name,
                    s.backends.len()
                ),
            });
            s.backends.truncate(room);
            touched.push(i);
        }
        total += s.backends.len();
    }
}

/// FxHash's mixing step (rustc's hasher): the conflict maps hash a few
/// integers per spec on every update, where SipHash's resistance to chosen
/// keys buys nothing (the keys are the cluster's own Services).
#[derive(Default)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// A VIP (address, port, protocol) or NodePort (port, protocol) claimed by two
/// Service ports: the first in name order keeps it (as the dataplane's table
/// builder would), the later loses it, reported, so the view shows exactly
/// what is served.
fn drop_conflicts(specs: &mut [ServiceSpec], reports: &mut Vec<Report>, touched: &mut Vec<usize>) {
    let mut vips: FxMap<(IpAddr, u16, u8), usize> =
        FxMap::with_capacity_and_hasher(specs.len() * 2, Default::default());
    let mut node_ports: FxMap<(u16, u8), usize> = FxMap::default();
    for i in 0..specs.len() {
        let (before, rest) = specs.split_at_mut(i);
        let Some(s) = rest.first_mut() else {
            break;
        };
        let (port, proto) = (s.port, s.proto);
        let mut lost = Vec::new();
        s.vips
            .retain(|&(ip, _)| match vips.entry((ip, port, proto)) {
                Entry::Vacant(v) => {
                    v.insert(i);
                    true
                }
                Entry::Occupied(o) => {
                    lost.push(format!("{ip} port {port} is {}'s", before[*o.get()].name));
                    false
                }
            });
        if let Some(np) = s.node_port {
            match node_ports.entry((np, proto)) {
                Entry::Vacant(v) => {
                    v.insert(i);
                }
                Entry::Occupied(o) => {
                    lost.push(format!("nodePort {np} is {}'s", before[*o.get()].name));
                    s.node_port = None;
                }
            }
        }
        if !lost.is_empty() {
            touched.push(i);
        }
        for l in lost {
            reports.push(Report {
                origin: format!("Service {}", service_of(&s.name)),
                reason: format!("port {}: {l}: not served for this one", s.name),
            });
        }
    }
}

/// `ns/svc` of a spec name `ns/svc:port`.
fn service_of(spec_name: &str) -> &str {
    spec_name
        .rsplit_once(':')
        .map(|(s, _)| s)
        .unwrap_or(spec_name)
}

/// Annotations or labels of an object (empty when absent).
fn meta_map(m: &Option<BTreeMap<String, String>>) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    m.as_ref().unwrap_or(&EMPTY)
}
