//! Where the node's Kubernetes objects come from: the API server through
//! kube-rs watchers ([`kube`]) or a directory of manifests ([`file`]).
//!
//! Every source keeps a complete [`ClusterState`] (the last good state: a
//! source that loses the API server or meets a bad manifest keeps serving what
//! it had) and publishes it, with its health and its problem reports, as an
//! [`Update`] on a `tokio::sync::watch` channel. The model reads only the
//! latest update, so bursts of events coalesce for free.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

pub mod file;
pub mod kube;

/// A namespaced object's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjKey {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The objects the node needs, as the API server (or the manifests) has them.
/// Namespaced objects without a namespace are filed under `default`, as
/// kubectl does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub services: BTreeMap<ObjKey, Service>,
    pub endpoint_slices: BTreeMap<ObjKey, EndpointSlice>,
    /// Cluster-scoped: keyed by name.
    pub nodes: BTreeMap<String, Node>,
    /// Cluster-scoped: keyed by name.
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<ObjKey, Pod>,
    pub network_policies: BTreeMap<ObjKey, NetworkPolicy>,
}

/// How a source is doing (exported as a metric and by `twillctl status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// No complete state yet (before the first list / the first scan).
    Starting,
    /// The state is complete and current.
    Synced,
    /// The source has trouble (API away, watch failing); the state is the
    /// last good one.
    Degraded { reason: String },
}

/// A problem with one input that did not stop the rest from applying: a
/// manifest that does not parse, an object of a kind twill ignores, an
/// EndpointSlice for a missing Service...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Where: a file path (with the document's index), or `kind ns/name`.
    pub origin: String,
    pub reason: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.reason)
    }
}

/// What a source publishes after each change (debounced).
#[derive(Clone, Debug)]
pub struct Update {
    pub state: Arc<ClusterState>,
    pub health: Health,
    /// The problems in the inputs behind `state` (the complete current list,
    /// not a delta).
    pub reports: Vec<Report>,
    /// Bumped on every published change.
    pub revision: u64,
    pub at: SystemTime,
}

impl Update {
    pub fn starting() -> Update {
        Update {
            state: Arc::new(ClusterState::default()),
            health: Health::Starting,
            reports: Vec::new(),
            revision: 0,
            at: SystemTime::now(),
        }
    }
}
