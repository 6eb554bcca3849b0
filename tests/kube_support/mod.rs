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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let epoch = shared.lock().conn_epoch;
            let mut tick = shared.tick.subscribe();
            let conn = serve_connection(stream, shared.clone());
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    _ = &mut conn => return,
                    changed = tick.changed() => {
                        if changed.is_err() || shared.lock().conn_epoch != epoch {
                            return; // drops the socket: an abrupt close
                        }
                    }
                }
            }
        });
    }
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Vec<u8>,
}

/// Reads one request; `None` at the end of the connection or on garbage.
async fn read_request(reader: &mut BufReader<OwnedReadHalf>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut content_length = 0usize;
    let mut content_type = String::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).await.ok()?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), parse_query(query)),
        None => (target, BTreeMap::new()),
    };
    Some(Request {
        method,
        path,
        query,
        content_type,
        body,
    })
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(req) = read_request(&mut reader).await {
        let failing = shared.lock().failing;
        let done = match failing {
            Some(code) => {
                log(&shared, &req, code);
                respond(
                    &mut write,
                    code,
                    &status_body(
                        code,
                        reason_of(code),
                        "the fake API server is failing on purpose",
                    ),
                )
                .await
            }
            None => route(&shared, req, &mut reader, &mut write).await,
        };
        if !done {
            return;
        }
    }
}

fn log(shared: &Shared, req: &Request, status: u16) {
    shared.lock().log.push(Served {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        status,
    });
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

/// Writes a complete response; false when the connection is gone.
async fn respond(write: &mut OwnedWriteHalf, code: u16, body: &Value) -> bool {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-cache, private\r\n\r\n",
        reason_of(code),
        body.len()
    );
    write.write_all(head.as_bytes()).await.is_ok() && write.write_all(body.as_bytes()).await.is_ok()
}

/// Serves one request; false when the connection must close.
async fn route(
    shared: &Arc<Shared>,
    req: Request,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> bool {
    if let Some(coll) = COLLECTIONS.iter().find(|c| c.path == req.path) {
        if req.method != "GET" {
            log(shared, &req, 405);
            return respond(
                write,
                405,
                &status_body(405, "MethodNotAllowed", "method not allowed"),
            )
            .await;
        }
        if req.query.get("watch").map(String::as_str) == Some("true") {
            return serve_watch(shared, *coll, req, reader, write).await;
        }
        let (code, body) = list(shared, coll, &req);
        log(shared, &req, code);
        return respond(write, code, &body).await;
    }
    // One cluster-scoped object: /api/v1/nodes/NAME.
    for coll in COLLECTIONS.iter().filter(|c| !c.namespaced) {
        let Some(name) = req
            .path
            .strip_prefix(coll.path)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            continue;
        };
        let (code, body) = match req.method.as_str() {
            "GET" => match shared
                .lock()
                .objects
                .get(coll.path)
                .and_then(|o| o.get(&(String::new(), name.to_string())))
            {
                Some(obj) => (200, obj.clone()),
                None => not_found(coll, name),
            },
            "PATCH" => patch(shared, coll, name, &req),
            _ => (
                405,
                status_body(405, "MethodNotAllowed", "method not allowed"),
            ),
        };
        log(shared, &req, code);
        return respond(write, code, &body).await;
    }
    log(shared, &req, 404);
    respond(
        write,
        404,
        &status_body(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
    .await
}

fn not_found(coll: &Collection, name: &str) -> (u16, Value) {
    let plural = coll.path.rsplit('/').next().unwrap_or_default();
    (
        404,
        status_body(404, "NotFound", &format!("{plural} \"{name}\" not found")),
    )
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, equal) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, true),
                None => return false,
            },
        };
        let have = match field.trim() {
            "spec.nodeName" => &object["spec"]["nodeName"],
            "metadata.name" => &object["metadata"]["name"],
            "metadata.namespace" => &object["metadata"]["namespace"],
            _ => return false,
        };
        (have.as_str().unwrap_or_default() == want.trim()) == equal
    })
}

fn list(shared: &Shared, coll: &Collection, req: &Request) -> (u16, Value) {
    let limit = req
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut store = shared.lock();
    let (rv, items) = match req.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => match store.continues.remove(token) {
            Some(snapshot) => snapshot,
            None => {
                return (
                    410,
                    status_body(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."),
                )
            }
        },
        None => {
            let items: Vec<Value> = store
                .objects
                .get(coll.path)
                .map(|objs| {
                    objs.values()
                        .filter(|o| matches_selector(o, req.query.get("fieldSelector")))
                        .map(|o| {
                            // List items carry no kind/apiVersion on the wire.
                            let mut o = o.clone();
                            if let Some(obj) = o.as_object_mut() {
                                obj.remove("kind");
                                obj.remove("apiVersion");
                            }
                            o
                        })
                        .collect()
                })
                .unwrap_or_default();
            (store.rv, items)
        }
    };
    let (page, rest) = match limit {
        Some(limit) if items.len() > limit => {
            let mut page = items;
            let rest = page.split_off(limit);
            (page, rest)
        }
        _ => (items, Vec::new()),
    };
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if !rest.is_empty() {
        store.next_token += 1;
        let token = format!("eyJ2IjoibWV0YS5rOHMuaW8vdjEi{}", store.next_token);
        store.continues.insert(token.clone(), (rv, rest.clone()));
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(rest.len());
    }
    (
        200,
        json!({
            "kind": format!("{}List", coll.kind),
            "apiVersion": coll.api_version,
            "metadata": metadata,
            "items": page,
        }),
    )
}

fn patch(shared: &Shared, coll: &Collection, name: &str, req: &Request) -> (u16, Value) {
    let media = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media != "application/merge-patch+json" {
        return (
            415,
            status_body(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got {media:?})")),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&req.body) else {
        return (400, status_body(400, "BadRequest", "the patch is not JSON"));
    };
    let mut store = shared.lock();
    let key = (String::new(), name.to_string());
    let Some(mut object) = store
        .objects
        .get(coll.path)
        .and_then(|o| o.get(&key))
        .cloned()
    else {
        return not_found(coll, name);
    };
    merge_patch(&mut object, &patch);
    store.rv += 1;
    let rv = store.rv;
    meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
    store
        .objects
        .entry(coll.path)
        .or_default()
        .insert(key, object.clone());
    store.history.push(Stored {
        path: coll.path,
        rv,
        event: "MODIFIED",
        object: object.clone(),
    });
    drop(store);
    shared.wake();
    (200, object)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let obj = target.as_object_mut().expect("an object");
    for (k, v) in fields {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge_patch(obj.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The end of a chunked body: the stream ended cleanly.
async fn end_body(write: &mut OwnedWriteHalf) -> bool {
    write.write_all(b"0\r\n\r\n").await.is_ok()
}

async fn write_chunk(write: &mut OwnedWriteHalf, event: &Value) -> bool {
    let line = format!("{event}\n");
    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
    write.write_all(chunk.as_bytes()).await.is_ok()
}

/// Serves a watch; false when the connection must close (abrupt end).
async fn serve_watch(
    shared: &Arc<Shared>,
    coll: Collection,
    req: Request,
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> bool {
    let selector = req.query.get("fieldSelector").cloned();
    let bookmarks = req.query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let mut tick = shared.tick.subscribe();
    let (mut cursor, initial, watch_epoch, mut bookmark_epoch, expired) = {
        let store = shared.lock();
        let from = req
            .query
            .get("resourceVersion")
            .cloned()
            .unwrap_or_default();
        let mut initial = Vec::new();
        let mut expired = None;
        let cursor = if from.is_empty() || from == "0" {
            // "Start at any": synthetic ADDED events for what exists now.
            for object in store
                .objects
                .get(coll.path)
                .into_iter()
                .flat_map(|o| o.values())
            {
                if matches_selector(object, selector.as_ref()) {
                    initial.push(json!({ "type": "ADDED", "object": object }));
                }
            }
            store.rv
        } else {
            match from.parse::<u64>() {
                Ok(n) if n < store.compacted => {
                    expired = Some(format!(
                        "too old resource version: {n} ({})",
                        store.compacted
                    ));
                    n
                }
                Ok(n) => n,
                Err(_) => {
                    drop(store);
                    log(shared, &req, 400);
                    return respond(
                        write,
                        400,
                        &status_body(
                            400,
                            "BadRequest",
                            &format!("invalid resourceVersion {from:?}"),
                        ),
                    )
                    .await;
                }
            }
        };
        (
            cursor,
            initial,
            store.watch_epoch,
            store.bookmark_epoch,
            expired,
        )
    };
    log(shared, &req, if expired.is_some() { 410 } else { 200 });
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache, private\r\n\r\n";
    if write.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    if let Some(message) = expired {
        let event = json!({ "type": "ERROR", "object": status_body(410, "Expired", &message) });
        return write_chunk(write, &event).await && end_body(write).await;
    }
    for event in &initial {
        if !write_chunk(write, event).await {
            return false;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        // Collect what happened since the cursor, under the lock.
        let (events, bookmark) = {
            let store = shared.lock();
            if store.watch_epoch != watch_epoch {
                return false; // dropped: close without the body's end
            }
            let events: Vec<Value> = store
                .history
                .iter()
                .filter(|e| e.rv > cursor && e.path == coll.path)
                .filter(|e| matches_selector(&e.object, selector.as_ref()))
                .map(|e| json!({ "type": e.event, "object": e.object }))
                .collect();
            cursor = cursor.max(store.rv);
            let bookmark = (bookmarks && store.bookmark_epoch != bookmark_epoch).then(|| {
                json!({
                    "type": "BOOKMARK",
                    "object": {
                        "kind": coll.kind, "apiVersion": coll.api_version,
                        "metadata": { "resourceVersion": store.rv.to_string(), "creationTimestamp": null }
                    }
                })
            });
            bookmark_epoch = store.bookmark_epoch;
            (events, bookmark)
        };
        for event in events.iter().chain(bookmark.iter()) {
            if !write_chunk(write, event).await {
                return false;
            }
        }
        tokio::select! {
            changed = tick.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return end_body(write).await;
            }
            // The client went away (it closes the connection to stop a watch).
            // (HTTP/1.1 clients send nothing else meanwhile: any read ends it.)
            _ = reader.fill_buf() => return false,
        }
    }
}
