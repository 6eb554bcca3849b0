//! The HTTP/1.1 side of the fake API server: connections (keep-alive,
//! closed abruptly on request), request parsing, and the list, get, patch
//! and watch handlers over the store in the parent module.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{meta_mut, Collection, Served, Shared, Stored, COLLECTIONS};

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
    struct Open<'a>(&'a Shared);
    impl Drop for Open<'_> {
        fn drop(&mut self) {
            self.0.lock().open_watches -= 1;
        }
    }
    shared.lock().open_watches += 1;
    let _open = Open(shared);
    serve_watch_counted(shared, coll, req, reader, write).await
}

async fn serve_watch_counted(
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
    let from = req
        .query
        .get("resourceVersion")
        .cloned()
        .unwrap_or_default();
    let parsed = from.parse::<u64>();
    if !(from.is_empty() || from == "0") && parsed.is_err() {
        log(shared, &req, 400);
        let message = format!("invalid resourceVersion {from:?}");
        return respond(write, 400, &status_body(400, "BadRequest", &message)).await;
    }
    let (mut cursor, initial, watch_epoch, mut bookmark_epoch, expired) = {
        let store = shared.lock();
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
            let n = parsed.unwrap_or_default();
            if n < store.compacted {
                expired = Some(format!(
                    "too old resource version: {n} ({})",
                    store.compacted
                ));
            }
            n
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
        for event in &events {
            if !write_chunk(write, event).await {
                return false;
            }
        }
        if let Some(bookmark) = &bookmark {
            if !write_chunk(write, bookmark).await {
                return false;
            }
            shared.lock().bookmarks_sent += 1;
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
