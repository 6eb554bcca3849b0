//! A fake Kubernetes API server for the `kube` source's tests: no
//! kube-apiserver can be installed here, so this stands in for it and speaks
//! its list/watch protocol as the real one does, over plain HTTP/1.1 on
//! 127.0.0.1 (keep-alive, chunked watch streams), written on tokio alone.
//!
//! - A store of JSON objects per collection path (`/api/v1/services`,
//!   `/apis/discovery.k8s.io/v1/endpointslices`, ...), one global increasing
//!   resourceVersion, and the event history since the compaction point.
//! - List: a typed List (`ServiceList`...) with `metadata.resourceVersion`;
//!   items without kind/apiVersion, as the real server sends them
//!   (kubernetes#3030); `limit`/`continue` served from a consistent snapshot
//!   at the first page's resourceVersion; `fieldSelector` on `spec.nodeName`,
//!   `metadata.name` and `metadata.namespace`.
//! - Watch (`?watch=true&resourceVersion=N&allowWatchBookmarks=true&
//!   timeoutSeconds=T`): newline-delimited WatchEvents (ADDED, MODIFIED,
//!   DELETED with kind/apiVersion filled, BOOKMARK with only
//!   `metadata.resourceVersion`) in a chunked body, the events after N first;
//!   N older than the compaction point gets `200` and one `ERROR` event whose
//!   object is a `Status` 410 `Expired` "too old resource version", then the
//!   end of the stream, as the real server's watch cache does. The stream
//!   ends cleanly after `timeoutSeconds`.
//! - GET and merge PATCH (`application/merge-patch+json`) of one object.
//! - Test controls: drop every watch connection (abruptly), answer every
//!   request with an error status, stop and restart the listener (connections
//!   refused meanwhile), compact the history, send bookmarks, and a log of
//!   the requests served.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod server;
use server::accept_loop;

/// A collection the server serves.
#[derive(Clone, Copy, Debug)]
struct Collection {
    path: &'static str,
    api_version: &'static str,
    kind: &'static str,
    namespaced: bool,
}

const COLLECTIONS: [Collection; 6] = [
    Collection {
        path: "/api/v1/services",
        api_version: "v1",
        kind: "Service",
        namespaced: true,
    },
    Collection {
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        api_version: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        namespaced: true,
    },
    Collection {
        path: "/api/v1/nodes",
        api_version: "v1",
        kind: "Node",
        namespaced: false,
    },
    Collection {
        path: "/api/v1/namespaces",
        api_version: "v1",
        kind: "Namespace",
        namespaced: false,
    },
    Collection {
        path: "/api/v1/pods",
        api_version: "v1",
        kind: "Pod",
        namespaced: true,
    },
    Collection {
        path: "/apis/networking.k8s.io/v1/networkpolicies",
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        namespaced: true,
    },
];

fn collection_of_kind(kind: &str) -> Option<Collection> {
    COLLECTIONS.iter().copied().find(|c| c.kind == kind)
}

/// (namespace or "", name)
type Key = (String, String);

#[derive(Clone, Debug)]
struct Stored {
    path: &'static str,
    rv: u64,
    event: &'static str,
    object: Value,
}

/// One request as the server saw it, for tests to assert on.
#[derive(Clone, Debug)]
pub struct Served {
    pub method: String,
    /// Path and query, decoded.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// The HTTP status, or for a watch that ended in an `ERROR` event, that
    /// event's code.
    pub status: u16,
}

impl Served {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }
    pub fn is_list(&self) -> bool {
        self.method == "GET" && !self.is_watch() && COLLECTIONS.iter().any(|c| c.path == self.path)
    }
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches starting at or after this resourceVersion can be served.
    compacted: u64,
    objects: HashMap<&'static str, BTreeMap<Key, Value>>,
    history: Vec<Stored>,
    /// Bumped to end every watch stream abruptly.
    watch_epoch: u64,
    /// Bumped to close every connection abruptly.
    conn_epoch: u64,
    /// Bumped to send a bookmark on every watch that allows them.
    bookmark_epoch: u64,
    /// Answer every request with this status.
    failing: Option<u16>,
    /// List snapshots for `continue` tokens: (resourceVersion, items left).
    continues: HashMap<String, (u64, Vec<Value>)>,
    next_token: u64,
    log: Vec<Served>,
    /// Watch streams being served now.
    open_watches: usize,
    /// BOOKMARK events written so far.
    bookmarks_sent: usize,
}

struct Shared {
    store: Mutex<Store>,
    /// Ticks on every change of the store, epochs included.
    tick: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn wake(&self) {
        self.tick.send_modify(|t| *t += 1);
    }
}

/// The fake API server. Dropping it stops it.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 on a free port.
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 100,
                compacted: 100,
                ..Store::default()
            }),
            tick: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeApi {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client configuration pointing at this server (plain HTTP).
    pub fn config(&self) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        config.connect_timeout = Some(Duration::from_secs(2));
        config
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("client")
    }

    /// Creates or replaces a typed object (as a kubectl apply would),
    /// recording ADDED or MODIFIED. Returns its new resourceVersion.
    pub fn put<K: k8s_openapi::Resource + k8s_openapi::serde::Serialize>(&self, obj: &K) -> u64 {
        let value = serde_json::to_value(obj).expect("serialize");
        self.put_value(K::KIND, value)
    }

    /// Creates or replaces an object given as JSON of `kind`.
    pub fn put_value(&self, kind: &str, mut object: Value) -> u64 {
        let coll = collection_of_kind(kind).expect("a kind the server serves");
        let mut store = self.shared.lock();
        store.rv += 1;
        let rv = store.rv;
        let key = key_of(&coll, &mut object);
        let existing = store
            .objects
            .get(coll.path)
            .and_then(|objs| objs.get(&key))
            .cloned();
        let meta = meta_mut(&mut object);
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        match &existing {
            Some(old) => {
                meta.insert("uid".into(), old["metadata"]["uid"].clone());
                meta.insert(
                    "creationTimestamp".into(),
                    old["metadata"]["creationTimestamp"].clone(),
                );
            }
            None => {
                meta.insert(
                    "uid".into(),
                    json!(format!("00000000-0000-4000-8000-{rv:012}")),
                );
                meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
            }
        }
        // The real server records who wrote what; consumers should not keep it.
        meta.insert(
            "managedFields".into(),
            json!([{
                "manager": "kubectl", "operation": "Update", "apiVersion": coll.api_version,
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}
            }]),
        );
        let event = if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store
            .objects
            .entry(coll.path)
            .or_default()
            .insert(key, object.clone());
        store.history.push(Stored {
            path: coll.path,
            rv,
            event,
            object,
        });
        drop(store);
        self.shared.wake();
        rv
    }

    /// Deletes an object, recording DELETED (with the deletion's
    /// resourceVersion). Returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.lock();
        let existed = delete_locked(&mut store, kind, namespace, name);
        drop(store);
        self.shared.wake();
        existed
    }

    /// Runs `f` on the store while holding it, after ending every watch
    /// stream: no watch sees what `f` does until it watches again.
    pub fn while_disconnected(&self, f: impl FnOnce(&mut Gap<'_>)) {
        let mut store = self.shared.lock();
        store.watch_epoch += 1;
        f(&mut Gap { store: &mut store });
        drop(store);
        self.shared.wake();
    }

    /// Ends every watch stream abruptly (the connection is closed without
    /// the chunked body's end), as a failing load balancer would.
    pub fn drop_watches(&self) {
        self.while_disconnected(|_| {});
    }

    /// Forgets the history up to now: a watch from an older resourceVersion
    /// gets 410 Expired.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        compact_locked(&mut store);
        drop(store);
        self.shared.wake();
    }

    /// Sends a BOOKMARK at the current resourceVersion on every watch that
    /// allows bookmarks.
    pub fn bookmark(&self) {
        self.shared.lock().bookmark_epoch += 1;
        self.shared.wake();
    }

    /// Answers every request with `status` (a Status body), or serves
    /// normally again with `None`. Open watches are not touched.
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared.lock().failing = status;
        self.shared.wake();
    }

    /// Stops listening and closes every connection: clients get
    /// "connection refused" until [`FakeApi::restart`].
    pub fn stop(&self) {
        if let Some(accept) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            accept.abort();
        }
        self.shared.lock().conn_epoch += 1;
        self.shared.wake();
    }

    /// Listens again on the same address.
    pub async fn restart(&self) {
        self.stop();
        // The aborted accept task drops its listener at its next poll.
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let accept = tokio::spawn(accept_loop(listener, self.shared.clone()));
        *self.accept.lock().unwrap_or_else(|e| e.into_inner()) = Some(accept);
    }

    /// The requests served so far.
    pub fn requests(&self) -> Vec<Served> {
        self.shared.lock().log.clone()
    }

    /// How many BOOKMARK events have been written to watch streams. A
    /// client reads what was written before a connection closes, so a
    /// bookmark counted here reaches the watcher even if the stream drops.
    pub fn bookmarks_sent(&self) -> usize {
        self.shared.lock().bookmarks_sent
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// The stored object, as the server has it.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let coll = collection_of_kind(kind)?;
        let ns = if coll.namespaced { namespace } else { "" };
        self.shared
            .lock()
            .objects
            .get(coll.path)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The store while every watch is away (see [`FakeApi::while_disconnected`]).
pub struct Gap<'a> {
    store: &'a mut Store,
}

impl Gap<'_> {
    pub fn delete(&mut self, kind: &str, namespace: &str, name: &str) -> bool {
        delete_locked(self.store, kind, namespace, name)
    }
    pub fn compact(&mut self) {
        compact_locked(self.store);
    }
}

fn delete_locked(store: &mut Store, kind: &str, namespace: &str, name: &str) -> bool {
    let Some(coll) = collection_of_kind(kind) else {
        return false;
    };
    let ns = if coll.namespaced { namespace } else { "" };
    let Some(mut object) = store
        .objects
        .get_mut(coll.path)
        .and_then(|objs| objs.remove(&(ns.to_string(), name.to_string())))
    else {
        return false;
    };
    store.rv += 1;
    let rv = store.rv;
    meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
    store.history.push(Stored {
        path: coll.path,
        rv,
        event: "DELETED",
        object,
    });
    true
}

/// Live watches keep receiving what they have not seen yet, as they do from
/// the real server's watch cache; only new watches and list continuations
/// from before this point are refused.
fn compact_locked(store: &mut Store) {
    store.compacted = store.rv;
    let compacted = store.compacted;
    store.continues.retain(|_, (rv, _)| *rv >= compacted);
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let obj = object.as_object_mut().expect("an object");
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("an object")
}

/// Fills kind/apiVersion and a namespace for namespaced objects, and returns
/// the object's key.
fn key_of(coll: &Collection, object: &mut Value) -> Key {
    if let Some(obj) = object.as_object_mut() {
        obj.insert("apiVersion".into(), json!(coll.api_version));
        obj.insert("kind".into(), json!(coll.kind));
    }
    let meta = meta_mut(object);
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let ns = if coll.namespaced {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        meta.insert("namespace".into(), json!(ns));
        ns
    } else {
        String::new()
    };
    (ns, name)
}
