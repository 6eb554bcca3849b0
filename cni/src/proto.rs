//! The pod-attachment protocol between the `twill` CNI plugin and
//! twill-control: JSON lines over a unix socket (root only, mode 0600). One
//! request per line, one response per line, any number per connection.
//!
//! ```text
//! {"op":"add","attachment":{...}}              -> {"ok":true}
//! {"op":"del","containerId":"..","ifname":".."} -> {"ok":true,"found":false}
//! {"op":"check","containerId":"..","ifname":".."} -> {"ok":true,"attachment":{..}} | {"ok":true} (unknown)
//! {"op":"list"}                                -> {"ok":true,"attachments":[..]}
//! {"op":"status"}                              -> {"ok":true,"ready":true,"detail":".."}
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One pod interface wired by the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// The CNI network name (the conflist's `name`).
    pub network: String,
    pub netns: String,
    /// The host-side veth (the interface the dataplane attaches to).
    pub host_veth: String,
    /// The pod interface's MAC.
    pub mac: String,
    pub mtu: u32,
    /// The pod's addresses, CIDR notation.
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", rename_all_fields = "camelCase")]
pub enum Request {
    Add {
        attachment: Attachment,
    },
    Del {
        container_id: String,
        ifname: String,
    },
    Check {
        container_id: String,
        ifname: String,
    },
    List,
    Status,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// `del`: whether there was something to delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    /// `status`: whether an ADD can be taken now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// Why a call to control failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing listens on the socket (control is not running).
    Unavailable(String),
    /// Control answered with an error.
    Rejected(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable(s) | ClientError::Rejected(s) => f.write_str(s),
        }
    }
}

/// A connection to twill-control.
pub struct Client {
    path: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &str) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|e| {
            ClientError::Unavailable(format!(
                "twill-control is not reachable at {path} ({e}); is it running?"
            ))
        })?;
        let t = Some(Duration::from_secs(10));
        let _ = s.set_read_timeout(t);
        let _ = s.set_write_timeout(t);
        let writer = s
            .try_clone()
            .map_err(|e| ClientError::Unavailable(format!("{path}: {e}")))?;
        Ok(Client {
            path: path.to_string(),
            reader: BufReader::new(s),
            writer,
        })
    }

    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        let gone = |e: std::io::Error| {
            ClientError::Unavailable(format!(
                "twill-control at {} stopped answering ({e})",
                self.path
            ))
        };
        let mut line = serde_json::to_string(req)
            .map_err(|e| ClientError::Rejected(format!("encoding request: {e}")))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(gone)?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(gone)?;
        if n == 0 {
            return Err(ClientError::Unavailable(format!(
                "twill-control at {} closed the connection without answering",
                self.path
            )));
        }
        let r: Response = serde_json::from_str(&answer).map_err(|e| {
            ClientError::Rejected(format!(
                "twill-control sent an answer that does not decode: {e}"
            ))
        })?;
        if !r.ok {
            return Err(ClientError::Rejected(
                r.error
                    .unwrap_or_else(|| "twill-control refused the request".into()),
            ));
        }
        Ok(r)
    }
}
