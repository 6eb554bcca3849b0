//! The `kube` source's state, without I/O: the six watchers' events are
//! applied here, by the source's single aggregator task (the only writer).
//!
//! A watcher's `Init`/`InitApply`/`InitDone` is a relist: the objects are
//! buffered and replace the kind's objects in one step at `InitDone`, so an
//! object deleted while the watch was away disappears then (the deletion
//! event itself is never seen). `Apply`/`Delete` change the state directly.
//! Each kind also carries its health: a kind that failed is healthy again
//! only after a complete list (the watcher task makes sure one follows every
//! failure), so `Synced` means that every watcher has listed since its last
//! error and is watching.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::kube::runtime::watcher::Event;
use ::kube::ResourceExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::source::{ClusterState, Health, ObjKey, Objects, Report};

/// The six kinds the source watches, in the order of [`Kind::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
    Namespace,
    Pod,
    NetworkPolicy,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A Kubernetes object type the source watches: where its objects live in a
/// [`ClusterState`] and how they are keyed there.
pub trait Watched:
    ::kube::Resource<DynamicType = ()>
    + Clone
    + PartialEq
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Key: Ord + Clone + Send;
    const WATCHED: Kind;
    /// The object's key, `None` when it has no name (a real API server never
    /// sends one).
    fn key(&self) -> Option<Self::Key>;
    fn slot(state: &mut ClusterState) -> &mut Objects<Self::Key, Self>;
    fn wrap(event: Event<Self>) -> KindEvent;
    /// Drops what no consumer reads before the object is kept: see
    /// [`strip`], and per kind more (a Node's image list).
    fn strip(&mut self);
}

fn namespaced_key<K: ::kube::Resource>(obj: &K) -> Option<ObjKey> {
    let name = obj.meta().name.clone().filter(|n| !n.is_empty())?;
    // Namespaced objects without a namespace are filed under `default`, as
    // ClusterState documents (the API server always sets one).
    let namespace = obj.namespace().unwrap_or_else(|| "default".to_string());
    Some(ObjKey::new(namespace, name))
}

fn cluster_key<K: ::kube::Resource>(obj: &K) -> Option<String> {
    obj.meta().name.clone().filter(|n| !n.is_empty())
}

macro_rules! watched {
    ($ty:ty, $kind:ident, $field:ident, $key:ty, $keyfn:ident, $trim:expr) => {
        impl Watched for $ty {
            type Key = $key;
            const WATCHED: Kind = Kind::$kind;
            fn key(&self) -> Option<$key> {
                $keyfn(self)
            }
            fn slot(state: &mut ClusterState) -> &mut Objects<$key, Self> {
                &mut state.$field
            }
            fn wrap(event: Event<Self>) -> KindEvent {
                KindEvent::$kind(Box::new(event))
            }
            fn strip(&mut self) {
                strip(self);
                let trim: fn(&mut Self) = $trim;
                trim(self);
            }
        }
    };
}

/// A Node's status lists every image on it (often hundreds of entries) and
/// the volumes in use: nothing twill reads, in every Node of the cluster.
fn trim_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

watched!(Service, Service, services, ObjKey, namespaced_key, |_| {});
watched!(
    EndpointSlice,
    EndpointSlice,
    endpoint_slices,
    ObjKey,
    namespaced_key,
    |_| {}
);
watched!(Node, Node, nodes, String, cluster_key, trim_node);
watched!(
    Namespace,
    Namespace,
    namespaces,
    String,
    cluster_key,
    |_| {}
);
watched!(Pod, Pod, pods, ObjKey, namespaced_key, |_| {});
watched!(
    NetworkPolicy,
    NetworkPolicy,
    network_policies,
    ObjKey,
    namespaced_key,
    |_| {}
);

/// One watcher event of one kind (boxed: objects are large and of very
/// different sizes).
#[derive(Debug)]
pub enum KindEvent {
    Service(Box<Event<Service>>),
    EndpointSlice(Box<Event<EndpointSlice>>),
    Node(Box<Event<Node>>),
    Namespace(Box<Event<Namespace>>),
    Pod(Box<Event<Pod>>),
    NetworkPolicy(Box<Event<NetworkPolicy>>),
}

/// What a watcher task tells the aggregator.
#[derive(Debug)]
pub enum Msg {
    Event(KindEvent),
    /// The watcher of `kind` failed; the kind is unhealthy until its next
    /// complete list.
    Failed {
        kind: Kind,
        reason: String,
    },
}

#[derive(Clone, Debug, Default)]
struct KindHealth {
    /// A complete list has been applied at least once.
    listed: bool,
    /// The last failure since the last complete list.
    error: Option<String>,
}

/// The aggregated state of the six watchers.
#[derive(Debug, Default)]
pub struct Store {
    state: ClusterState,
    /// Buffers of the kinds being relisted (between `Init` and `InitDone`).
    relist: ClusterState,
    health: [KindHealth; 6],
    /// Something visible changed since the last [`Store::take_changed`].
    changed: bool,
    /// Objects skipped since they have no name, by kind.
    nameless: BTreeMap<Kind, u64>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    pub fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Event(KindEvent::Service(e)) => self.apply(*e),
            Msg::Event(KindEvent::EndpointSlice(e)) => self.apply(*e),
            Msg::Event(KindEvent::Node(e)) => self.apply(*e),
            Msg::Event(KindEvent::Namespace(e)) => self.apply(*e),
            Msg::Event(KindEvent::Pod(e)) => self.apply(*e),
            Msg::Event(KindEvent::NetworkPolicy(e)) => self.apply(*e),
            Msg::Failed { kind, reason } => {
                let health = &mut self.health[kind.index()];
                if health.error.as_deref() != Some(reason.as_str()) {
                    health.error = Some(reason);
                    self.changed = true;
                }
            }
        }
    }

    /// Applies one watcher event of kind `K`.
    pub fn apply<K: Watched>(&mut self, event: Event<K>) {
        match event {
            Event::Init => K::slot(&mut self.relist).clear(),
            Event::InitApply(obj) => match obj.key() {
                Some(key) => {
                    K::slot(&mut self.relist).insert(key, obj);
                }
                None => self.skip_nameless(K::WATCHED),
            },
            Event::InitDone => {
                let mut listed = std::mem::take(K::slot(&mut self.relist));
                let current = K::slot(&mut self.state);
                // A relist that returns what the watch already delivered
                // publishes no update; an object listed as it was keeps its
                // `Arc`, so the model sees it untouched without comparing.
                let mut same = listed.len() == current.len();
                for (key, obj) in listed.iter_mut() {
                    match current.get(key) {
                        Some(old) if **old == **obj => *obj = Arc::clone(old),
                        _ => same = false,
                    }
                }
                if !same {
                    *current = listed;
                    self.changed = true;
                }
                let health = &mut self.health[K::WATCHED.index()];
                if !health.listed || health.error.is_some() {
                    health.listed = true;
                    health.error = None;
                    self.changed = true;
                }
            }
            Event::Apply(obj) => match obj.key() {
                Some(key) => {
                    K::slot(&mut self.state).insert(key, obj);
                    self.changed = true;
                }
                None => self.skip_nameless(K::WATCHED),
            },
            Event::Delete(obj) => match obj.key() {
                Some(key) => {
                    if K::slot(&mut self.state).remove(&key).is_some() {
                        self.changed = true;
                    }
                }
                None => self.skip_nameless(K::WATCHED),
            },
        }
    }

    fn skip_nameless(&mut self, kind: Kind) {
        *self.nameless.entry(kind).or_default() += 1;
        self.changed = true;
    }

    /// Whether something visible changed since the last call; clears the flag.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// `Starting` until every kind has been listed once; then `Degraded`
    /// while any kind has failed since its last complete list; else `Synced`.
    pub fn health(&self) -> Health {
        if self.health.iter().any(|h| !h.listed) {
            return Health::Starting;
        }
        let reasons: Vec<String> = Kind::ALL
            .iter()
            .zip(&self.health)
            .filter_map(|(kind, h)| h.error.as_ref().map(|e| format!("{}: {e}", kind.name())))
            .collect();
        if reasons.is_empty() {
            Health::Synced
        } else {
            Health::Degraded {
                reason: reasons.join("; "),
            }
        }
    }

    /// The current problems: each failing watcher (also while starting, when
    /// the health has no reason to carry) and objects skipped for having no
    /// name.
    pub fn reports(&self) -> Vec<Report> {
        let mut reports = Vec::new();
        for (kind, h) in Kind::ALL.iter().zip(&self.health) {
            if let Some(error) = &h.error {
                reports.push(Report {
                    origin: format!("kube {}", kind.name()),
                    reason: error.clone(),
                });
            }
        }
        for (kind, count) in &self.nameless {
            reports.push(Report {
                origin: format!("kube {}", kind.name()),
                reason: format!("{count} object(s) without metadata.name skipped"),
            });
        }
        reports
    }
}

/// Drops what no consumer of the source reads and what makes objects big:
/// `managedFields` and kubectl's last-applied-configuration annotation.
pub fn strip<K: ::kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

#[cfg(test)]
mod tests;
