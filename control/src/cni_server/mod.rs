//! Pod attachments registered by the `twill` CNI plugin.
//!
//! The plugin talks to control over a unix socket (root only: mode 0600)
//! with the JSON-lines protocol of [`cni::proto`]. [`Store`] holds the
//! attachments keyed by (container id, interface) and persists every change
//! to a state file (written beside and renamed over, so a crash leaves the
//! old or the new file, never half of one); a restarted control loads it and
//! knows every pod again. Every change bumps [`Store::revision`] and, when
//! [`Store::notify`] was set, wakes the publisher, which reads
//! [`Store::snapshot`] into the next shared-memory snapshot.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cni::proto::{Attachment, Request, Response};
use nix::sys::stat::{umask, Mode};

/// Errors of the attachment store and server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read attachment state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("attachment state {path} does not decode: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("failed to write attachment state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Key = (String, String);

/// The attachments, persisted to `path` on every change.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    attachments: BTreeMap<Key, Attachment>,
    revision: u64,
    notify: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    version: u32,
    attachments: Vec<Attachment>,
}

const STATE_VERSION: u32 = 1;

impl Store {
    /// Loads the state file at `path` (none yet: an empty store).
    pub fn open(path: impl Into<PathBuf>) -> Result<Store, Error> {
        let path = path.into();
        let mut attachments = BTreeMap::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let f: StateFile =
                    serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
                        path: path.clone(),
                        source,
                    })?;
                for a in f.attachments {
                    attachments.insert((a.container_id.clone(), a.ifname.clone()), a);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Read { path, source }),
        }
        Ok(Store {
            path,
            attachments,
            revision: 0,
            notify: None,
        })
    }

    /// Sends the store's revision on `tx` after every change.
    pub fn notify(&mut self, tx: tokio::sync::watch::Sender<u64>) {
        tx.send_replace(self.revision);
        self.notify = Some(tx);
    }

    /// Bumped on every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    fn changed(&mut self) {
        self.revision += 1;
        if let Some(tx) = &self.notify {
            tx.send_replace(self.revision);
        }
    }

    fn save(&self) -> Result<(), Error> {
        let werr = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        let f = StateFile {
            version: STATE_VERSION,
            attachments: self.attachments.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| werr(std::io::Error::other(e)))?;
        if let Some(dir) = self.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(werr)?;
            }
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut w = std::fs::File::create(&tmp).map_err(werr)?;
            w.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(werr)?;
            w.write_all(&bytes).map_err(werr)?;
            w.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(werr)
    }

    /// Adds or replaces the attachment of (container id, interface).
    pub fn add(&mut self, a: Attachment) -> Result<(), Error> {
        let key = (a.container_id.clone(), a.ifname.clone());
        let old = self.attachments.insert(key.clone(), a);
        if let Err(e) = self.save() {
            match old {
                Some(o) => self.attachments.insert(key, o),
                None => self.attachments.remove(&key),
            };
            return Err(e);
        }
        self.changed();
        Ok(())
    }

    /// Removes an attachment; `Ok(false)` when there was none.
    pub fn del(&mut self, container_id: &str, ifname: &str) -> Result<bool, Error> {
        let key = (container_id.to_string(), ifname.to_string());
        let Some(old) = self.attachments.remove(&key) else {
            return Ok(false);
        };
        if let Err(e) = self.save() {
            self.attachments.insert(key, old);
            return Err(e);
        }
        self.changed();
        Ok(true)
    }

    pub fn get(&self, container_id: &str, ifname: &str) -> Option<&Attachment> {
        self.attachments
            .get(&(container_id.to_string(), ifname.to_string()))
    }

    pub fn snapshot(&self) -> Vec<Attachment> {
        self.attachments.values().cloned().collect()
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Add { attachment } => match self.add(attachment) {
                Ok(()) => Response::ok(),
                Err(e) => Response::err(e.to_string()),
            },
            Request::Del {
                container_id,
                ifname,
            } => match self.del(&container_id, &ifname) {
                Ok(found) => Response {
                    found: Some(found),
                    ..Response::ok()
                },
                Err(e) => Response::err(e.to_string()),
            },
            Request::Check {
                container_id,
                ifname,
            } => Response {
                attachment: self.get(&container_id, &ifname).cloned(),
                ..Response::ok()
            },
            Request::List => Response {
                attachments: self.snapshot(),
                ..Response::ok()
            },
            Request::Status => Response {
                ready: Some(true),
                detail: Some(format!(
                    "{} attachments (revision {})",
                    self.attachments.len(),
                    self.revision
                )),
                ..Response::ok()
            },
        }
    }
}

/// Binds the attachment socket at `path` (mode 0600, a stale file replaced).
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let lerr = |source| Error::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(lerr)?;
        }
    }
    if UnixStream::connect(path).is_ok() {
        return Err(lerr(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another twill-control is serving this socket",
        )));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(lerr(e)),
    }
    // Created 0600 from the start: no window in which others may connect.
    let old = umask(Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    umask(old);
    let l = l.map_err(lerr)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(lerr)?;
    Ok(l)
}

/// Serves `listener` forever, one thread per connection.
pub fn serve(listener: UnixListener, store: Arc<Mutex<Store>>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let store = Arc::clone(&store);
        std::thread::spawn(move || serve_conn(conn, &store));
    }
}

fn serve_conn(conn: UnixStream, store: &Mutex<Store>) {
    let Ok(mut w) = conn.try_clone() else { return };
    let r = BufReader::new(conn);
    for line in r.lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match store.lock() {
                Ok(mut s) => s.handle(req),
                Err(_) => Response::err("attachment store poisoned"),
            },
            Err(e) => Response::err(format!("request does not decode: {e}")),
        };
        let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
        out.push('\n');
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
            network: "twill".into(),
            netns: "/run/netns/x".into(),
            host_veth: "tw0".into(),
            mac: "0a:58:00:00:00:01".into(),
            mtu: 1450,
            ips: vec!["10.244.1.2/24".into()],
            pod_namespace: Some("default".into()),
            pod_name: Some("p".into()),
            pod_uid: None,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("twill-att-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("state.json")
    }

    #[test]
    fn attachments_survive_a_reopen_of_the_state_file() {
        let p = tmp("reopen");
        let mut s = Store::open(&p).unwrap();
        s.add(att("a")).unwrap();
        s.add(att("b")).unwrap();
        assert!(s.del("a", "eth0").unwrap());
        assert!(!s.del("a", "eth0").unwrap());
        let s2 = Store::open(&p).unwrap();
        assert_eq!(s2.snapshot(), vec![att("b")]);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let p = tmp("corrupt");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{not json").unwrap();
        let e = Store::open(&p).unwrap_err().to_string();
        assert!(e.contains("does not decode"), "{e}");
    }

    #[test]
    fn requests_are_answered_as_the_protocol_says() {
        let mut s = Store::open(tmp("proto")).unwrap();
        assert!(
            s.handle(Request::Add {
                attachment: att("c")
            })
            .ok
        );
        let r = s.handle(Request::Check {
            container_id: "c".into(),
            ifname: "eth0".into(),
        });
        assert_eq!(r.attachment, Some(att("c")));
        let r = s.handle(Request::Check {
            container_id: "nope".into(),
            ifname: "eth0".into(),
        });
        assert!(r.ok && r.attachment.is_none());
        assert_eq!(s.handle(Request::List).attachments.len(), 1);
        assert_eq!(s.handle(Request::Status).ready, Some(true));
    }

    #[test]
    fn the_socket_is_created_owner_only_and_never_taken_from_a_live_server() {
        let p = tmp("sock").with_file_name("cni.sock");
        let l = bind(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind(&p).unwrap_err().to_string();
        assert!(e.contains("another twill-control"), "{e}");
        drop(l);
        // A stale socket file (its server gone) is replaced.
        bind(&p).unwrap();
    }
}
