//! Finding the manifest files under the source directory: `*.yaml`, `*.yml`
//! and `*.json` (any case) in the directory and its subdirectories, hidden
//! files and directories (`.name`, which also covers editor swap files such
//! as `.x.yaml.swp` and ConfigMap mounts' `..data`) and editor leftovers
//! (`x.yaml~`, `#x.yaml#`, `x.yaml.swp`: not a manifest extension) skipped.
//! Symbolic links are followed (a mounted ConfigMap is a directory of
//! links), each directory is entered once (no loops) and the walk is bounded
//! in depth and in the number of files.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::source::Report;

use super::parse::Format;

/// Subdirectory levels below the source directory that are read.
pub(crate) const MAX_DEPTH: usize = 16;
/// Manifest files read; more are reported and ignored.
pub(crate) const MAX_FILES: usize = 10_000;

/// What tells a file changed without reading it: a rewrite changes the
/// change time (ctime, which no tool can set back), a replacement the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub len: u64,
    pub mtime: Option<SystemTime>,
    pub ctime: (i64, i64),
    pub dev: u64,
    pub ino: u64,
}

impl Fingerprint {
    pub(crate) fn of(meta: &fs::Metadata) -> Fingerprint {
        Fingerprint {
            len: meta.len(),
            mtime: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The change time as a `SystemTime` (`None` before the epoch).
    pub(crate) fn changed(&self) -> Option<SystemTime> {
        let (secs, nsecs) = self.ctime;
        let secs = u64::try_from(secs).ok()?;
        let nsecs = u32::try_from(nsecs).ok()?;
        SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nsecs))
    }
}

/// A manifest file found by the walk.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub format: Format,
    pub fingerprint: Fingerprint,
}

/// The result of walking an existing directory.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Sorted by path.
    pub files: Vec<Found>,
    /// Subdirectories that could not be listed: the files known under them
    /// keep their last state.
    pub unlisted: Vec<PathBuf>,
    pub reports: Vec<Report>,
}

/// Why the source directory itself cannot be read.
pub(crate) fn root_problem(dir: &Path) -> Option<String> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => match fs::read_dir(dir) {
            Ok(_) => None,
            Err(e) => Some(format!("cannot read directory {}: {e}", dir.display())),
        },
        Ok(_) => Some(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(format!("directory {} does not exist", dir.display()))
        }
        Err(e) => Some(format!("cannot read directory {}: {e}", dir.display())),
    }
}

/// The device and inode of the directory, to notice it being replaced.
pub(crate) fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    let m = fs::metadata(dir).ok()?;
    m.is_dir().then(|| (m.dev(), m.ino()))
}

/// The manifest format of a file name, `None` if it is not one to read.
pub(crate) fn format_of(name: &str) -> Option<Format> {
    if name.starts_with('.') {
        return None;
    }
    let (_, ext) = name.rsplit_once('.')?;
    if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") {
        Some(Format::Yaml)
    } else if ext.eq_ignore_ascii_case("json") {
        Some(Format::Json)
    } else {
        None
    }
}

/// Walks `dir` (which exists: see [`root_problem`]).
pub(crate) fn walk(dir: &Path) -> Walk {
    let mut w = Walk::default();
    let mut seen = HashSet::new();
    if let Some(id) = dir_id(dir) {
        seen.insert(id);
    }
    let mut too_many = false;
    visit(dir, 0, &mut seen, &mut w, &mut too_many);
    w.files.sort_by(|a, b| a.path.cmp(&b.path));
    if too_many {
        w.reports.push(Report {
            origin: dir.display().to_string(),
            reason: format!("more than {MAX_FILES} manifest files; the rest are ignored"),
        });
    }
    w
}

fn visit(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    w: &mut Walk,
    too_many: &mut bool,
) {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // Removed while we walk: it simply has no files any more.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            w.reports.push(Report {
                origin: dir.display().to_string(),
                reason: format!("cannot list directory: {e}; its files keep their last state"),
            });
            w.unlisted.push(dir.to_path_buf());
            return;
        }
    };
    // Sorted so that the MAX_FILES cut is the same on every scan.
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name_str) = name.to_str() else {
            continue; // not UTF-8: not a name anyone wrote a manifest under
        };
        if name_str.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if format_of(name_str).is_some() && fs::symlink_metadata(&path).is_ok() {
                    w.reports.push(Report {
                        origin: path.display().to_string(),
                        reason: "dangling symbolic link; skipped".to_string(),
                    });
                }
                continue;
            }
            Err(e) => {
                w.reports.push(Report {
                    origin: path.display().to_string(),
                    reason: format!("cannot stat: {e}; skipped"),
                });
                continue;
            }
        };
        if meta.is_dir() {
            if depth + 1 > MAX_DEPTH {
                w.reports.push(Report {
                    origin: path.display().to_string(),
                    reason: format!("deeper than {MAX_DEPTH} levels; not read"),
                });
                continue;
            }
            if seen.insert((meta.dev(), meta.ino())) {
                visit(&path, depth + 1, seen, w, too_many);
            }
        } else if meta.is_file() {
            if let Some(format) = format_of(name_str) {
                if w.files.len() >= MAX_FILES {
                    *too_many = true;
                    continue;
                }
                w.files.push(Found {
                    path,
                    format,
                    fingerprint: Fingerprint::of(&meta),
                });
            }
        }
    }
}
