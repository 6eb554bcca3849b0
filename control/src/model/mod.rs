//! Kubernetes objects → the node's view, with kube-proxy's semantics.
//!
//! Input: a [`ClusterState`] and who this node is ([`NodeIdentity`]).
//! Output: a [`NodeView`]: one [`ServiceSpec`] per Service port the dataplane
//! must answer on, the other nodes reached over VXLAN, the health-check ports
//! to serve, and reports about objects that could not be used. Pure and
//! synchronous: the tests drive it with real manifests.

use dataplane::config::RemoteSection;
use dataplane::lb::ServiceSpec;

use crate::source::{ClusterState, Report};

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
    pub health_checks: Vec<HealthCheck>,
    pub reports: Vec<Report>,
}

/// Builds the node's view.
pub fn build(state: &ClusterState, node: &NodeIdentity) -> NodeView {
    let _ = (state, node);
    todo!("model helper")
}
