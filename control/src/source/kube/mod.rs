//! The `kube` source: six kube-rs watchers (Services, EndpointSlices, Nodes,
//! Namespaces, this node's Pods, NetworkPolicies) feeding one
//! [`ClusterState`], published as debounced [`Update`]s on a watch channel.
//!
//! Shape: one task per kind runs a `kube::runtime::watcher` ([`watch`]) and
//! sends its events over a channel to one aggregator task, the only writer of
//! the state ([`store`], plain synchronous code). A relist replaces a kind's
//! objects at once; errors back off and mark the source `Degraded` with the
//! last good state kept, until every failed watcher has listed again. The
//! aggregator publishes at most once per [`DEBOUNCE`]: thousands of objects
//! at start or a burst of endpoint changes become a handful of updates.
//!
//! Also here: building a client from in-cluster config or a kubeconfig, and
//! writing annotations on the node's own Node object (flannel's VTEP
//! annotations).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::kube::api::{Patch, PatchParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::runtime::watcher;
use ::kube::{Api, Client, Config};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Update;

pub mod store;
mod watch;

pub use store::{Kind, Store};

/// How long the aggregator waits after a change before publishing, so that a
/// burst of events becomes one update (the first change of a burst is
/// published at most this late).
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// Errors of the `kube` source's setup and of its writes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to infer the Kubernetes client configuration (KUBECONFIG, ~/.kube/config, in-cluster): {0}")]
    Infer(#[source] ::kube::config::InferConfigError),
    #[error("failed to read kubeconfig {path}: {source}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    #[error("failed to load kubeconfig {path}: {source}")]
    LoadKubeconfig {
        path: PathBuf,
        #[source]
        source: ::kube::config::KubeconfigError,
    },
    #[error("failed to build a Kubernetes client: {0}")]
    Client(#[source] Box<::kube::Error>),
    #[error("failed to annotate node {node}: {source}")]
    Annotate {
        node: String,
        #[source]
        source: Box<::kube::Error>,
    },
}

/// A client from a kubeconfig file when one is given, else inferred as
/// `kubectl` would (`KUBECONFIG`, `~/.kube/config`, then the in-cluster
/// service account).
pub async fn client_from(kubeconfig: Option<PathBuf>) -> Result<Client, Error> {
    let config = match kubeconfig {
        None => Config::infer().await.map_err(Error::Infer)?,
        Some(path) => {
            let file = Kubeconfig::read_from(&path).map_err(|source| Error::ReadKubeconfig {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::LoadKubeconfig { path, source })?
        }
    };
    client_for(config)
}

/// A client for a given configuration (tests point one at a local server).
pub fn client_for(config: Config) -> Result<Client, Error> {
    Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))
}

/// Starts the source: watchers on the six kinds (Pods only of `node_name`)
/// and the aggregator. Returns the channel of updates; it starts with
/// [`Update::starting`] and stays `Starting` (with an empty state) until
/// every kind has been listed once. The tasks end when every receiver is
/// dropped. Must be called within a tokio runtime.
pub fn spawn(client: Client, node_name: String) -> tokio::sync::watch::Receiver<Update> {
    let (tx, rx) = tokio::sync::watch::channel(Update::starting());
    let (events_tx, events_rx) = mpsc::channel(1024);
    let mut watchers = JoinSet::new();
    let config = watcher::Config::default();
    let pods = config.clone().fields(&format!("spec.nodeName={node_name}"));
    watchers.spawn(watch::run(
        Api::<Service>::all(client.clone()),
        config.clone(),
        events_tx.clone(),
    ));
    watchers.spawn(watch::run(
        Api::<EndpointSlice>::all(client.clone()),
        config.clone(),
        events_tx.clone(),
    ));
    watchers.spawn(watch::run(
        Api::<Node>::all(client.clone()),
        config.clone(),
        events_tx.clone(),
    ));
    watchers.spawn(watch::run(
        Api::<Namespace>::all(client.clone()),
        config.clone(),
        events_tx.clone(),
    ));
    watchers.spawn(watch::run(
        Api::<Pod>::all(client.clone()),
        pods,
        events_tx.clone(),
    ));
    watchers.spawn(watch::run(
        Api::<NetworkPolicy>::all(client),
        config,
        events_tx,
    ));
    tokio::spawn(aggregate(events_rx, tx, watchers));
    rx
}

/// The single writer of the state: applies events, publishes debounced.
async fn aggregate(
    mut events: mpsc::Receiver<store::Msg>,
    tx: tokio::sync::watch::Sender<Update>,
    // Held so the watchers are aborted when this task ends.
    _watchers: JoinSet<()>,
) {
    let mut store = Store::new();
    let mut revision = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            msg = events.recv() => {
                let Some(msg) = msg else { return };
                store.handle(msg);
                if deadline.is_none() && store.take_changed() {
                    deadline = Some(tokio::time::Instant::now() + DEBOUNCE);
                }
            }
            _ = sleep_until(deadline) => {
                deadline = None;
                store.take_changed();
                revision += 1;
                let health = store.health();
                let state = if health == super::Health::Starting {
                    Arc::default()
                } else {
                    Arc::new(store.state().clone())
                };
                let update = Update {
                    state,
                    health,
                    reports: store.reports(),
                    revision,
                    at: SystemTime::now(),
                };
                if tx.send(update).is_err() {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Merges `annotations` into the metadata of Node `node_name` (a JSON merge
/// patch: other annotations are kept). Control writes flannel's VTEP
/// annotations for its own node this way.
pub async fn annotate_own_node(
    client: Client,
    node_name: &str,
    annotations: BTreeMap<String, String>,
) -> Result<Node, Error> {
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    Api::<Node>::all(client)
        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Annotate {
            node: node_name.to_string(),
            source: Box::new(source),
        })
}
