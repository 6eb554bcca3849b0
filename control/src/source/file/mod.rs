//! The `file:DIR` source: a directory of Kubernetes manifests, the embedded
//! default for a laptop, the demo and the tests.
//!
//! [`load_dir`] is the whole source as a pure, synchronous function: it walks
//! the directory (`walk`: `*.yaml`, `*.yml`, `*.json` below DIR, hidden
//! files and editor leftovers skipped), parses each file (`parse`: several
//! `---` documents per file, JSON streams, `List` and typed lists such as
//! `ServiceList`) and files the kinds twill reads (Service, EndpointSlice,
//! Node, Namespace, Pod, NetworkPolicy) into a [`ClusterState`]; namespaced
//! objects without a namespace go to `default`. [`spawn`] runs it as a
//! tokio task, rescanning when inotify (the `notify` crate) reports a change
//! and the directory has been quiet for the debounce time.
//!
//! Bad input never stops the rest:
//! - an unknown kind is reported (`path#doc: kind Deployment ... skipped`)
//!   and skipped;
//! - a document that does not parse, has wrong types (`spec.ports[0].port:
//!   invalid type ...`), no kind or no name is reported with its file,
//!   document index and reason, and the file's other documents apply;
//! - but if that file parsed cleanly before (an editor caught mid-save, a
//!   half-finished edit), the file's **last good objects are kept** whole
//!   and the error is reported with a note saying so, until the file is
//!   good again or removed. A file that never parsed cleanly contributes its
//!   good documents;
//! - an object defined twice is reported, and the later definition in
//!   sorted path order (then document order) wins;
//! - a missing (or unreadable) DIR makes the source [`Health::Degraded`]
//!   with the reason, keeping the last state; it recovers when DIR appears.
//!
//! Rescans are cheap: a file whose size, mtime, ctime and inode are those of
//! the last scan is not read again, unless it was changed within
//! [`RACY_WINDOW`] of being read (a later write in the same timestamp tick
//! would otherwise go unnoticed, git's "racy clean" problem).

mod parse;
#[cfg(test)]
mod tests;
mod walk;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::source::{ClusterState, Health, Report};

pub use watch::spawn;

use parse::{Object, Parsed};
use walk::Fingerprint;

/// Files larger than this are reported and not read (about 300,000
/// endpoints of YAML).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// A file changed less than this long before it was read is read again on
/// the next scan even if its fingerprint is unchanged.
pub const RACY_WINDOW: Duration = Duration::from_secs(1);

/// The result of a scan: the state, the source's health, the problems, and
/// the per-file cache (fingerprints, last good objects) the next scan
/// starts from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub state: Arc<ClusterState>,
    pub health: Health,
    /// The complete list of problems behind `state`, in path and document
    /// order.
    pub reports: Vec<Report>,
    /// How many files this scan read and parsed (the others were unchanged).
    pub files_parsed: usize,
    /// How many manifest files the state comes from.
    pub files: usize,
    cache: BTreeMap<PathBuf, Entry>,
    /// `reports` without the directory-level problem of a degraded scan.
    file_reports: Vec<Report>,
}

impl Loaded {
    fn empty() -> Loaded {
        Loaded {
            state: Arc::new(ClusterState::default()),
            health: Health::Starting,
            reports: Vec::new(),
            files_parsed: 0,
            files: 0,
            cache: BTreeMap::new(),
            file_reports: Vec::new(),
        }
    }
}

/// What is remembered of one file.
#[derive(Clone, Debug)]
struct Entry {
    fingerprint: Option<Fingerprint>,
    read_at: SystemTime,
    /// The latest parse (or read error).
    current: Arc<Parsed>,
    /// The latest parse without errors.
    last_good: Option<Arc<Parsed>>,
}

impl Entry {
    /// Whether `fp` shows the file unchanged since this entry was read.
    fn unchanged(&self, fp: &Fingerprint) -> bool {
        self.fingerprint.as_ref() == Some(fp)
            && fp
                .changed()
                .and_then(|c| c.checked_add(RACY_WINDOW))
                .is_some_and(|c| c < self.read_at)
    }
}

/// Scans `dir` and returns the state its manifests describe. `previous` is
/// the last scan's result: unchanged files are not read again, and a file
/// that broke keeps its last good objects (see the module doc).
pub fn load_dir(dir: &Path, previous: Option<&Loaded>) -> Loaded {
    if let Some(reason) = walk::root_problem(dir) {
        let mut out = previous.cloned().unwrap_or_else(Loaded::empty);
        out.reports = std::iter::once(Report {
            origin: dir.display().to_string(),
            reason: reason.clone(),
        })
        .chain(out.file_reports.iter().cloned())
        .collect();
        out.health = Health::Degraded { reason };
        out.files_parsed = 0;
        return out;
    }

    let found = walk::walk(dir);
    let empty = BTreeMap::new();
    let old = previous.map_or(&empty, |p| &p.cache);
    let mut cache = BTreeMap::new();
    let mut parsed_now = 0;
    for f in &found.files {
        let entry = match old.get(&f.path) {
            Some(e) if e.unchanged(&f.fingerprint) => e.clone(),
            prev => {
                parsed_now += 1;
                let read_at = SystemTime::now();
                let current = Arc::new(read_and_parse(&f.path, f.format, &f.fingerprint));
                let last_good = if current.errors == 0 {
                    Some(current.clone())
                } else {
                    prev.and_then(|p| p.last_good.clone())
                };
                Entry {
                    fingerprint: Some(f.fingerprint),
                    read_at,
                    current,
                    last_good,
                }
            }
        };
        cache.insert(f.path.clone(), entry);
    }
    // Files under a directory that could not be listed keep their state.
    for (path, entry) in old {
        if found.unlisted.iter().any(|d| path.starts_with(d)) {
            cache.entry(path.clone()).or_insert_with(|| entry.clone());
        }
    }

    let nothing_changed = parsed_now == 0
        && previous.is_some_and(|p| {
            p.health == Health::Synced
                && p.cache.len() == cache.len()
                && p.cache.keys().eq(cache.keys())
        })
        && found.reports.is_empty()
        && found.unlisted.is_empty();
    if let (true, Some(p)) = (nothing_changed, previous) {
        let mut out = p.clone();
        out.files_parsed = 0;
        return out;
    }

    let (state, mut reports) = assemble(&cache);
    reports.extend(found.reports);
    // Keep the same Arc when nothing changed, so watchers can compare
    // cheaply.
    let state = match previous {
        Some(p) if *p.state == state => p.state.clone(),
        _ => Arc::new(state),
    };
    Loaded {
        state,
        health: Health::Synced,
        files_parsed: parsed_now,
        files: cache.len(),
        cache,
        file_reports: reports.clone(),
        reports,
    }
}

/// Reads and parses one file; an I/O problem is a parse with one error.
fn read_and_parse(path: &Path, format: parse::Format, fp: &Fingerprint) -> Parsed {
    let name = path.display().to_string();
    let failed = |reason: String| {
        let mut p = Parsed::default();
        p.error(name.clone(), reason);
        p
    };
    if fp.len > MAX_FILE_BYTES {
        return failed(format!(
            "the file is {} bytes, more than the {MAX_FILE_BYTES}-byte limit; not read",
            fp.len
        ));
    }
    let mut bytes = Vec::new();
    // take(): the file may have grown since it was measured.
    let read =
        fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        return failed(format!("cannot read: {e}"));
    }
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return failed(format!(
            "the file is more than the {MAX_FILE_BYTES}-byte limit; not read"
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => parse::parse_file(&name, &text, format),
        Err(e) => failed(format!("not UTF-8 text: {}", e.utf8_error())),
    }
}

/// Builds the state from the files in path order; later definitions win.
fn assemble(cache: &BTreeMap<PathBuf, Entry>) -> (ClusterState, Vec<Report>) {
    let mut state = ClusterState::default();
    let mut reports = Vec::new();
    let mut defined: HashMap<(&'static str, String), String> = HashMap::new();
    for (path, entry) in cache {
        let used = match (&entry.last_good, entry.current.errors) {
            (_, 0) => &entry.current,
            (Some(good), _) => {
                reports.extend(entry.current.reports.iter().cloned());
                reports.push(Report {
                    origin: path.display().to_string(),
                    reason: format!(
                        "the file has errors; keeping the {} objects of its last good version",
                        good.objects.len()
                    ),
                });
                good
            }
            (None, _) => &entry.current,
        };
        if entry.current.errors == 0 || entry.last_good.is_none() {
            reports.extend(used.reports.iter().cloned());
        }
        for placed in &used.objects {
            let object = &placed.object;
            let id = (object.kind(), object.key());
            if let Some(first) = defined.insert(id, placed.origin.clone()) {
                reports.push(Report {
                    origin: placed.origin.clone(),
                    reason: format!(
                        "{} {} is also defined at {first}; this later definition wins",
                        object.kind(),
                        object.key()
                    ),
                });
            }
            insert(&mut state, object.clone());
        }
    }
    (state, reports)
}

fn insert(state: &mut ClusterState, object: Object) {
    match object {
        Object::Service(k, o) => {
            state.services.insert(k, o);
        }
        Object::EndpointSlice(k, o) => {
            state.endpoint_slices.insert(k, o);
        }
        Object::Node(k, o) => {
            state.nodes.insert(k, o);
        }
        Object::Namespace(k, o) => {
            state.namespaces.insert(k, o);
        }
        Object::Pod(k, o) => {
            state.pods.insert(k, o);
        }
        Object::NetworkPolicy(k, o) => {
            state.network_policies.insert(k, o);
        }
    }
}
