//! One task per watched kind: a kube-rs `watcher` (list, then watch from
//! the list's resourceVersion, with bookmarks), its events forwarded to the
//! aggregator, its errors turned into health and back-off.
//!
//! kube-rs's watcher recovers by itself in two ways: when a watch ends (the
//! server's `timeoutSeconds`, a dropped connection) it watches again from the
//! last resourceVersion it saw, silently; after a `410 Gone` ERROR event
//! ("too old resource version") it relists (`Init`, `InitApply`..,
//! `InitDone`). Neither is a failure here. After a failed list it lists
//! again by itself; that `InitDone` marks the kind healthy again. Its other
//! recoveries are silent (a watch that failed to start is retried from the
//! same resourceVersion), which would leave no signal that the kind is
//! healthy again, and one never ends: an HTTP error status on the watch
//! request (even 410) comes back as `WatchFailed` and is retried from the
//! same resourceVersion forever. So after those the task drops the watcher
//! and starts a new one after the back-off: the new watcher lists, and its
//! `InitDone` both replaces the kind's objects (dropping what was deleted
//! meanwhile) and marks the kind healthy. client-go's reflector also relists
//! after a failed watch. The back-off is kube-rs's default (client-go's:
//! 0.8 s doubling to 30 s; kube-rs 2.0.1 means to add jitter but its builder
//! drops it), reset by a watch event or 120 s after its last use.
//!
//! Seen against the fake API server: a connection closed in the middle of a
//! watch surfaces as `WatchFailed(ReadEvents(.. UnexpectedEof ..))` (kube's
//! check meant to silence it does not match the wrapped hyper error), so it
//! is classified here, not left to kube.

use std::time::Duration;

use ::kube::runtime::utils::Backoff;
use ::kube::runtime::watcher::{self, DefaultBackoff, Event};
use ::kube::Api;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::store::{Msg, Watched};

/// What to do after a watcher error.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// The connection of a running watch broke: the watcher watches again
    /// from its resourceVersion on the next poll. Not a failure (a load
    /// balancer closing an idle connection looks the same); if the server is
    /// really away, the next watch fails to start.
    Rewatch,
    /// 410 Gone: the watcher relists on the next poll (immediately, as
    /// client-go does).
    Relist,
    /// A failure after which the watcher lists again by itself.
    FailedThenList,
    /// A failure the watcher would recover from silently: start a new
    /// watcher (it lists) after the back-off.
    FailedRestart,
}

fn after(err: &watcher::Error) -> After {
    use ::kube::Error as E;
    match err {
        watcher::Error::WatchError(status) if status.code == 410 => After::Relist,
        watcher::Error::WatchFailed(E::ReadEvents(_) | E::HyperError(_) | E::Service(_)) => {
            After::Rewatch
        }
        watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => {
            After::FailedThenList
        }
        // A watch that could not start, an ERROR event other than 410, or a
        // watch line that did not parse (the object in it is lost: only a
        // relist recovers it).
        watcher::Error::WatchStartFailed(_)
        | watcher::Error::WatchError(_)
        | watcher::Error::WatchFailed(_) => After::FailedRestart,
    }
}

/// Watches `api` until `tx` closes.
pub async fn run<K: Watched>(api: Api<K>, config: watcher::Config, tx: mpsc::Sender<Msg>) {
    let mut backoff = DefaultBackoff::default();
    loop {
        let stream = watcher::watcher(api.clone(), config.clone());
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let msg = match item {
                Ok(event) => {
                    // Only a running watch resets the back-off. Not `Init`:
                    // the watcher emits it before every list attempt, so a
                    // list failing again and again would retry every 0.8 s
                    // (kube-rs's own `StreamBackoff` resets on any `Ok`).
                    // A quiet watch delivers nothing: then the back-off
                    // resets itself 120 s after its last use.
                    if matches!(event, Event::Apply(_) | Event::Delete(_)) {
                        backoff.reset();
                    }
                    Msg::Event(K::wrap(stripped(event)))
                }
                Err(err) => match after(&err) {
                    After::Rewatch | After::Relist => continue,
                    how => {
                        let msg = Msg::Failed {
                            kind: K::WATCHED,
                            reason: err.to_string(),
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = tx.closed() => return,
                        }
                        if how == After::FailedRestart {
                            break;
                        }
                        continue;
                    }
                },
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

fn stripped<K: Watched>(event: Event<K>) -> Event<K> {
    match event {
        Event::Apply(mut obj) => {
            obj.strip();
            Event::Apply(obj)
        }
        Event::InitApply(mut obj) => {
            obj.strip();
            Event::InitApply(obj)
        }
        Event::Delete(mut obj) => {
            obj.strip();
            Event::Delete(obj)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::kube::core::ErrorResponse;

    fn status(code: u16) -> ErrorResponse {
        ErrorResponse {
            status: "Failure".into(),
            message: "m".into(),
            reason: "r".into(),
            code,
        }
    }

    #[test]
    fn a_410_relists_without_a_failure_and_other_errors_restart_or_relist() {
        assert_eq!(
            after(&watcher::Error::WatchError(status(410))),
            After::Relist
        );
        assert_eq!(
            after(&watcher::Error::WatchError(status(500))),
            After::FailedRestart
        );
        assert_eq!(
            after(&watcher::Error::WatchStartFailed(::kube::Error::Api(
                status(503)
            ))),
            After::FailedRestart
        );
        assert_eq!(
            after(&watcher::Error::InitialListFailed(::kube::Error::Api(
                status(500)
            ))),
            After::FailedThenList
        );
        assert_eq!(
            after(&watcher::Error::WatchFailed(::kube::Error::ReadEvents(
                std::io::Error::other("reset")
            ))),
            After::Rewatch
        );
        let bad = serde_json::from_str::<u8>("x").unwrap_err();
        assert_eq!(
            after(&watcher::Error::WatchFailed(::kube::Error::SerdeError(bad))),
            After::FailedRestart
        );
    }
}
