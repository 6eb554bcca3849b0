//! The `file:DIR` source as a task: scan, publish, wait for a change, wait
//! for quiet, scan again.
//!
//! inotify (through `notify`, recursive) wakes the task; a burst of events
//! is coalesced by waiting until the directory has been quiet for the
//! debounce time (but never more than [`MAX_DELAY`] after the first event,
//! so a file rewritten continuously is still picked up). An update is
//! published only when the state, the reports or the health changed. While
//! DIR does not exist, or cannot be watched (inotify limits), the task polls
//! instead; a replaced DIR (same path, new inode) is watched anew. A full
//! rescan also runs every [`RESYNC`], should an event ever be lost. Scans run
//! on the blocking pool; the task ends when every receiver is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{watch, Notify};

use crate::source::{Health, Report, Update};

use super::{load_dir, walk, Loaded};

/// The longest a rescan waits behind a continuous stream of events.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Rescan period when DIR is missing.
pub const POLL_MISSING: Duration = Duration::from_millis(250);
/// Rescan period when DIR cannot be watched.
pub const POLL_UNWATCHED: Duration = Duration::from_secs(2);
/// Rescan period while watching (a safety net).
pub const RESYNC: Duration = Duration::from_secs(60);

/// Starts the source on the current tokio runtime (call it from within one,
/// as for `tokio::spawn`). The receiver holds
/// [`Update::starting`] until the first scan is done (a few milliseconds
/// for a small directory), then an update with [`Health::Synced`], or
/// [`Health::Degraded`] if DIR does not exist. Each published update has
/// the next revision; the task ends when every receiver is dropped.
pub fn spawn(dir: PathBuf, debounce: Duration) -> watch::Receiver<Update> {
    let (tx, rx) = watch::channel(Update::starting());
    tokio::spawn(run(dir, debounce, tx));
    rx
}

/// The watcher of the directory and what it watches.
enum Watching {
    /// DIR is missing: nothing to watch.
    Nothing,
    /// Watching DIR, identified by (device, inode).
    Dir {
        _watcher: RecommendedWatcher,
        id: (u64, u64),
    },
    /// DIR exists but could not be watched (reported).
    Failed((u64, u64), String),
}

impl Watching {
    fn id(&self) -> Option<(u64, u64)> {
        match self {
            Watching::Nothing => None,
            Watching::Dir { id, .. } | Watching::Failed(id, _) => Some(*id),
        }
    }
}

/// Watches `dir` anew if it appeared, disappeared or was replaced.
fn refresh(dir: &Path, watching: Watching, wake: &Arc<Notify>) -> Watching {
    let id = walk::dir_id(dir);
    if id == watching.id() {
        return watching;
    }
    drop(watching);
    let Some(id) = id else {
        return Watching::Nothing;
    };
    let wake = wake.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        // Our own reads open files: ignore accesses other than the close of
        // a write. Errors (a queue overflow) call for a rescan.
        let relevant = match &event {
            Ok(e) => match e.kind {
                EventKind::Access(a) => a == AccessKind::Close(AccessMode::Write),
                _ => true,
            },
            Err(_) => true,
        };
        if relevant {
            wake.notify_one();
        }
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, RecursiveMode::Recursive)?;
        Ok(w)
    });
    match watcher {
        Ok(w) => Watching::Dir { _watcher: w, id },
        Err(e) => Watching::Failed(
            id,
            format!("cannot watch for changes ({e}); polling every {POLL_UNWATCHED:?}"),
        ),
    }
}

async fn run(dir: PathBuf, debounce: Duration, tx: watch::Sender<Update>) {
    let wake = Arc::new(Notify::new());
    let mut watching = Watching::Nothing;
    let mut loaded: Option<Loaded> = None;
    let mut revision = 0u64;
    let mut published: Option<(Arc<crate::source::ClusterState>, Health, Vec<Report>)> = None;
    loop {
        // Watch first, then scan: a change during the scan wakes the next
        // round.
        let job = {
            let dir = dir.clone();
            let wake = wake.clone();
            let previous = loaded.take();
            tokio::task::spawn_blocking(move || {
                let watching = refresh(&dir, watching, &wake);
                let l = load_dir(&dir, previous.as_ref());
                (watching, l)
            })
        };
        let (w, l) = match job.await {
            Ok(r) => r,
            // Only on a panic in the scan (the release profile aborts) or a
            // runtime shutting down.
            Err(_) => return,
        };
        watching = w;
        let mut reports = l.reports.clone();
        if let Watching::Failed(_, reason) = &watching {
            reports.push(Report {
                origin: dir.display().to_string(),
                reason: reason.clone(),
            });
        }
        let changed = match &published {
            None => true,
            Some((state, health, old_reports)) => {
                !(Arc::ptr_eq(state, &l.state) || **state == *l.state)
                    || *health != l.health
                    || *old_reports != reports
            }
        };
        if changed {
            revision += 1;
            let update = Update {
                state: l.state.clone(),
                health: l.health.clone(),
                reports: reports.clone(),
                revision,
                at: SystemTime::now(),
            };
            published = Some((l.state.clone(), l.health.clone(), reports));
            if tx.send(update).is_err() {
                return; // no receiver left
            }
        }
        loaded = Some(l);

        let pause = match &watching {
            Watching::Nothing => Some(POLL_MISSING),
            Watching::Failed(..) => Some(POLL_UNWATCHED),
            Watching::Dir { .. } => None,
        };
        tokio::select! {
            _ = tx.closed() => return,
            _ = wait_for_change(&wake, pause, debounce) => {}
        }
    }
}

/// Returns when a rescan is due: after `pause` when polling; else after an
/// event and `debounce` of quiet (at most [`MAX_DELAY`] after the event),
/// or after [`RESYNC`].
async fn wait_for_change(wake: &Notify, pause: Option<Duration>, debounce: Duration) {
    if let Some(pause) = pause {
        tokio::time::sleep(pause).await;
        return;
    }
    tokio::select! {
        _ = wake.notified() => {}
        _ = tokio::time::sleep(RESYNC) => return,
    }
    let deadline = tokio::time::Instant::now() + MAX_DELAY.max(debounce);
    loop {
        let quiet = tokio::time::sleep(debounce);
        tokio::select! {
            _ = wake.notified() => {
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
            }
            _ = quiet => return,
        }
    }
}
