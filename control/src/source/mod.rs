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
///
/// Each object sits behind an `Arc` ([`Objects`]): a source publishes a new
/// state by cloning the maps (a reference count per object, no deep copy),
/// and the model tells an untouched object by its pointer
/// ([`crate::model::Model`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub services: Objects<ObjKey, Service>,
    pub endpoint_slices: Objects<ObjKey, EndpointSlice>,
    /// Cluster-scoped: keyed by name.
    pub nodes: Objects<String, Node>,
    /// Cluster-scoped: keyed by name.
    pub namespaces: Objects<String, Namespace>,
    pub pods: Objects<ObjKey, Pod>,
    pub network_policies: Objects<ObjKey, NetworkPolicy>,
}

/// One kind's objects by key, each shared (`Arc`): reads go through the
/// map ([`Deref`](std::ops::Deref) to a `BTreeMap<K, Arc<T>>`); [`insert`]
/// takes an object or an `Arc` of one.
///
/// [`insert`]: Objects::insert
#[derive(Debug)]
pub struct Objects<K, T>(BTreeMap<K, Arc<T>>);

impl<K: Ord, T> Objects<K, T> {
    /// Adds or replaces the object at `key`; returns the one replaced.
    pub fn insert(&mut self, key: K, obj: impl Into<Arc<T>>) -> Option<Arc<T>> {
        self.0.insert(key, obj.into())
    }
}

impl<K: Ord, T: Clone> Objects<K, T> {
    /// The object at `key`, to change in place: copied first when another
    /// state shares it (copy on write), so a published state never changes.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut T>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get_mut(key).map(Arc::make_mut)
    }
}

impl<K, T> Default for Objects<K, T> {
    fn default() -> Self {
        Objects(BTreeMap::new())
    }
}

// By hand: cloning shares the objects, so `T` need not be `Clone`.
impl<K: Clone, T> Clone for Objects<K, T> {
    fn clone(&self) -> Self {
        Objects(self.0.clone())
    }
}

impl<K: PartialEq, T: PartialEq> PartialEq for Objects<K, T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|((ka, a), (kb, b))| ka == kb && (Arc::ptr_eq(a, b) || a == b))
    }
}

impl<K, T> std::ops::Deref for Objects<K, T> {
    type Target = BTreeMap<K, Arc<T>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, T> std::ops::DerefMut for Objects<K, T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a, K, T> IntoIterator for &'a Objects<K, T> {
    type Item = (&'a K, &'a Arc<T>);
    type IntoIter = std::collections::btree_map::Iter<'a, K, Arc<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<K: Ord, T> FromIterator<(K, Arc<T>)> for Objects<K, T> {
    fn from_iter<I: IntoIterator<Item = (K, Arc<T>)>>(iter: I) -> Self {
        Objects(iter.into_iter().collect())
    }
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
