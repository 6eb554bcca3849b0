//! One manifest file's text → the Kubernetes objects twill keeps, plus a
//! report for every document it could not use.
//!
//! YAML files are cut into documents at `---` lines before parsing, so a
//! syntax error in one document does not hide the documents after it (YAML
//! forbids a `---` at the start of a line inside a scalar, so the cut is
//! exact). JSON files are a stream of JSON values. Every document is parsed
//! into a `serde_json::Value` first, dispatched on `apiVersion`/`kind`
//! (`List` and typed lists such as `ServiceList` are opened), then
//! deserialized into its k8s-openapi type. When that fails the error names
//! the field (`spec.ports[0].port: invalid type: string "eighty", expected
//! i32`): the value is re-rendered as JSON one field per line, the failing
//! deserializer's line number is mapped back to the field path. That costs
//! nothing when the document is good.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::source::{ObjKey, Report};

/// An object twill keeps, with its key (shared: the state assembled from
/// the files takes the same `Arc`, so an unchanged file's objects are not
/// copied, and the model knows them unchanged by their pointer).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Object {
    Service(ObjKey, Arc<Service>),
    EndpointSlice(ObjKey, Arc<EndpointSlice>),
    Node(String, Arc<Node>),
    Namespace(String, Arc<Namespace>),
    Pod(ObjKey, Arc<Pod>),
    NetworkPolicy(ObjKey, Arc<NetworkPolicy>),
}

impl Object {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::Service(..) => "Service",
            Object::EndpointSlice(..) => "EndpointSlice",
            Object::Node(..) => "Node",
            Object::Namespace(..) => "Namespace",
            Object::Pod(..) => "Pod",
            Object::NetworkPolicy(..) => "NetworkPolicy",
        }
    }

    /// `ns/name` for namespaced objects, `name` for cluster-scoped ones.
    pub(crate) fn key(&self) -> String {
        match self {
            Object::Service(k, _)
            | Object::EndpointSlice(k, _)
            | Object::Pod(k, _)
            | Object::NetworkPolicy(k, _) => k.to_string(),
            Object::Node(n, _) | Object::Namespace(n, _) => n.clone(),
        }
    }
}

/// An object and where it was defined (`path#doc` or `path#doc.items[i]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Placed {
    pub origin: String,
    pub object: Object,
}

/// What one file yields.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Parsed {
    pub objects: Vec<Placed>,
    /// Unknown kinds and bad documents, in document order.
    pub reports: Vec<Report>,
    /// How many documents (or List items) were bad: did not parse, had wrong
    /// types, had no kind or no name. Unknown kinds are not errors.
    pub errors: usize,
}

impl Parsed {
    pub(crate) fn error(&mut self, origin: String, reason: String) {
        self.errors += 1;
        self.reports.push(Report { origin, reason });
    }

    fn note(&mut self, origin: String, reason: String) {
        self.reports.push(Report { origin, reason });
    }
}

/// The kinds of file twill reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Yaml,
    Json,
}

/// Parses a whole file. `name` is how reports name the file.
pub(crate) fn parse_file(name: &str, text: &str, format: Format) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Parsed::default();
    match format {
        Format::Yaml => {
            for (index, doc) in split_yaml(text).into_iter().enumerate() {
                let origin = format!("{name}#{index}");
                match yaml_value(doc.text, doc.first_line) {
                    Ok(value) => place(value, origin, None, &mut out),
                    Err(reason) => out.error(origin, reason),
                }
            }
        }
        Format::Json => {
            let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
            for (index, value) in stream.enumerate() {
                let origin = format!("{name}#{index}");
                match value {
                    Ok(value) => place(value, origin, None, &mut out),
                    Err(e) => {
                        // The stream cannot resynchronise after a syntax error.
                        out.error(origin, format!("invalid JSON: {e}"));
                        break;
                    }
                }
            }
        }
    }
    out
}

/// One YAML document of a file: its text and the file line it starts on
/// (1-based).
struct YamlDoc<'a> {
    text: &'a str,
    first_line: usize,
}

/// Cuts a YAML stream at its `---` document markers. The part before the
/// first marker is a document only if it holds more than comments and
/// directives (`%YAML`), which are kept with the document that follows.
fn split_yaml(text: &str) -> Vec<YamlDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    let mut leading = true;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let line_no = line_no + 1;
        let body = line.trim_end_matches(['\n', '\r']);
        let marker = body == "---"
            || body.starts_with("--- ")
            || body.starts_with("---\t")
            || body.starts_with("---#");
        if marker {
            let before = &text[start..offset];
            if !(leading && only_comments_or_directives(before)) {
                docs.push(YamlDoc {
                    text: before,
                    first_line,
                });
                start = offset;
                first_line = line_no;
            }
            leading = false;
        }
        offset += line.len();
    }
    let rest = &text[start..];
    if !(leading && only_comments_or_directives(rest)) || docs.is_empty() {
        docs.push(YamlDoc {
            text: rest,
            first_line,
        });
    }
    docs
}

fn only_comments_or_directives(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || l.starts_with('%')
    })
}

/// Parses one YAML document into a JSON value (`Null` for an empty one).
/// Errors carry file line numbers.
fn yaml_value(doc: &str, first_line: usize) -> Result<Value, String> {
    if doc
        .lines()
        .all(|l| l.trim().is_empty() || l.trim().starts_with('#') || l.trim() == "---")
    {
        return Ok(Value::Null);
    }
    match serde_yaml_ng::from_str::<Value>(doc) {
        Ok(v) => Ok(v),
        Err(_) => {
            // Errors are rare: parse again behind blank lines so that the
            // reported line numbers are the file's.
            let padded = format!("{}{doc}", "\n".repeat(first_line.saturating_sub(1)));
            match serde_yaml_ng::from_str::<Value>(&padded) {
                Ok(v) => Ok(v),
                Err(e) => Err(format!("invalid YAML: {e}")),
            }
        }
    }
}

/// Known (apiVersion, kind) pairs.
const KINDS: &[(&str, &str)] = &[
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("v1", "Node"),
    ("v1", "Namespace"),
    ("v1", "Pod"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
];

/// What a List item inherits: the items of a typed list (`ServiceList`, as
/// the API server returns it) may leave out their apiVersion and kind; those
/// of a `kind: List` (kubectl) carry their own.
#[derive(Clone, Copy)]
struct InList<'a> {
    api_version: Option<&'a str>,
    kind: Option<&'a str>,
}

/// Files one document, or one List item when `list` is set.
fn place(value: Value, origin: String, list: Option<InList<'_>>, out: &mut Parsed) {
    let mut map = match value {
        Value::Null => return, // an empty document
        Value::Object(map) => map,
        other => {
            let what = match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "a list",
            };
            out.error(
                origin,
                format!("expected a Kubernetes object (a mapping with apiVersion and kind), found {what}"),
            );
            return;
        }
    };
    let kind = match (map.get("kind"), list) {
        (Some(Value::String(k)), _) => k.clone(),
        (None, Some(InList { kind: Some(k), .. })) => k.to_string(),
        (Some(_), _) => {
            out.error(origin, "kind is not a string".to_string());
            return;
        }
        (None, _) => {
            out.error(origin, "the document has no kind".to_string());
            return;
        }
    };
    let api_version = match (map.get("apiVersion"), list) {
        (Some(Value::String(v)), _) => v.clone(),
        (
            None,
            Some(InList {
                api_version: Some(v),
                ..
            }),
        ) => v.to_string(),
        (Some(_), _) => {
            out.error(origin, "apiVersion is not a string".to_string());
            return;
        }
        (None, _) => {
            out.error(origin, format!("{kind} has no apiVersion"));
            return;
        }
    };

    let is_list = kind == "List" || (kind.ends_with("List") && map.contains_key("items"));
    if is_list {
        if list.is_some() {
            out.note(
                origin,
                format!("a {kind} inside a list is not read; skipped"),
            );
            return;
        }
        let items = match map.remove("items") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                out.error(origin, format!("{kind}.items is not a list"));
                return;
            }
        };
        let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
        for (i, item) in items.into_iter().enumerate() {
            place(
                item,
                format!("{origin}.items[{i}]"),
                Some(InList {
                    api_version: item_kind.map(|_| api_version.as_str()),
                    kind: item_kind,
                }),
                out,
            );
        }
        return;
    }

    // Every object has a name, whatever its kind: a document without one is
    // broken (often a file caught mid-save), not merely of another kind.
    let (namespace, name) = names(&map);
    let Some(name) = name else {
        out.error(origin, format!("{kind} has no metadata.name"));
        return;
    };

    if !KINDS.contains(&(api_version.as_str(), kind.as_str())) {
        let reason = match KINDS.iter().find(|(_, k)| *k == kind) {
            Some((want, _)) => format!(
                "{kind} of apiVersion {api_version} is not read (twill reads {want}); skipped"
            ),
            None => format!("kind {kind} ({api_version}) is not used by twill; skipped"),
        };
        out.note(origin, reason);
        return;
    }

    // Typed-list items may leave these out; the k8s-openapi types check them
    // when present.
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(kind.clone()));
    strip_bulk(&mut map);
    let value = Value::Object(map);
    let namespace = namespace.unwrap_or_else(|| "default".to_string());
    let label = match kind.as_str() {
        "Node" | "Namespace" => format!("{kind} {name}"),
        _ => format!("{kind} {namespace}/{name}"),
    };
    let key = ObjKey::new(namespace.clone(), name.clone());

    let object = match kind.as_str() {
        "Service" => typed::<Service>(&value).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Object::Service(key, Arc::new(o))
        }),
        "EndpointSlice" => typed::<EndpointSlice>(&value).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Object::EndpointSlice(key, Arc::new(o))
        }),
        "Pod" => typed::<Pod>(&value).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Object::Pod(key, Arc::new(o))
        }),
        "NetworkPolicy" => typed::<NetworkPolicy>(&value).map(|mut o| {
            o.metadata.namespace = Some(namespace);
            Object::NetworkPolicy(key, Arc::new(o))
        }),
        // Cluster-scoped: a namespace in the manifest is ignored, as the API
        // server does.
        "Node" => typed::<Node>(&value).map(|mut o| {
            o.metadata.namespace = None;
            Object::Node(name, Arc::new(o))
        }),
        "Namespace" => typed::<Namespace>(&value).map(|mut o| {
            o.metadata.namespace = None;
            Object::Namespace(name, Arc::new(o))
        }),
        _ => return, // unreachable: KINDS was checked above
    };
    match object {
        Ok(object) => out.objects.push(Placed { origin, object }),
        Err(reason) => out.error(origin, format!("{label}: {reason}")),
    }
}

/// Drops what twill never reads and can be large: `metadata.managedFields`
/// and kubectl's last-applied-configuration annotation (a full copy of the
/// object).
fn strip_bulk(map: &mut Map<String, Value>) {
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        meta.remove("managedFields");
        if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// `metadata.namespace` and `metadata.name` when they are non-empty strings.
fn names(map: &Map<String, Value>) -> (Option<String>, Option<String>) {
    let meta = map.get("metadata").and_then(Value::as_object);
    let get = |field: &str| {
        meta.and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    (get("namespace"), get("name"))
}

/// Deserializes a value into `T`, naming the failing field on error.
pub(crate) fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, String> {
    match T::deserialize(value) {
        Ok(t) => Ok(t),
        Err(e) => Err(locate::<T>(value).unwrap_or_else(|| e.to_string())),
    }
}

/// Renders `value` one field per line, deserializes `T` from that text and
/// maps the error's line back to the field path. `None` if that attempt does
/// not fail (it should, as the value did).
fn locate<T: DeserializeOwned>(value: &Value) -> Option<String> {
    let mut text = String::new();
    let mut lines = vec![String::new()];
    render(value, &mut String::new(), &mut text, &mut lines);
    let err = serde_json::from_str::<T>(&text).err()?;
    let msg = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
    let path = lines.get(err.line().checked_sub(1)?)?;
    Some(if path.is_empty() {
        msg.to_string()
    } else {
        format!("{path}: {msg}")
    })
}

/// Writes `value` as JSON with each object member and array element on its
/// own line, and pushes onto `lines` the field path of every line it starts.
/// A container's closing line carries the container's path (a missing field
/// is reported there).
fn render(value: &Value, path: &mut String, out: &mut String, lines: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                out.push('\n');
                lines.push(path.clone());
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                render(v, path, out, lines);
                path.truncate(len);
            }
            out.push('\n');
            lines.push(path.clone());
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                out.push('\n');
                lines.push(path.clone());
                render(v, path, out, lines);
                path.truncate(len);
            }
            out.push('\n');
            lines.push(path.clone());
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
