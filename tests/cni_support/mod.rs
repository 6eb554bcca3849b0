//! Support for the CNI plugin tests: a node (a network namespace of its own,
//! where the plugin runs as the runtime would run it, so host-side veths and
//! host routes never touch the machine's own namespace), pods (namespaces),
//! twill-control serving attachments, and the real reference plugins of
//! Debian's containernetworking-plugins (/usr/lib/cni).
//!
//! Everything a test creates carries the prefix `twc<pid><tag>` and is
//! removed on drop, also when the test fails. The tests need root.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const CNI_PATH: &str = "/usr/lib/cni";

fn build(package: &str, bin: &str) -> PathBuf {
    crate::io_support::cargo_bin(package, bin)
}

pub fn twill() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| build("cni", "twill")).clone()
}

pub fn twill_control() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| build("control", "twill-control")).clone()
}

/// Fails the test clearly when it cannot do what it needs.
pub fn require_root_and_plugins() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the CNI tests create network namespaces and veths: run them as root"
    );
    assert!(
        Path::new(CNI_PATH).join("host-local").is_file(),
        "{CNI_PATH}/host-local missing: install Debian's containernetworking-plugins (scripts/install-deps.sh)"
    );
}

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a plugin printed and how it exited.
#[derive(Debug)]
pub struct Out {
    pub stdout: String,
    pub ok: bool,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    /// The CNI error code (panics when the call succeeded).
    pub fn code(&self) -> u64 {
        assert!(!self.ok, "expected an error, got success: {}", self.stdout);
        let v = self.json();
        v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code in {v}"))
    }
    pub fn expect_ok(self) -> Self {
        assert!(self.ok, "plugin failed: {}", self.stdout);
        self
    }
}

pub struct Node {
    pub prefix: String,
    pub netns: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub network: String,
    pub cidr4: String,
    pub cidr6: String,
    control: Option<Child>,
    pods: std::sync::Mutex<Vec<String>>,
}

impl Node {
    /// A node namespace; `net` (1..=250) picks its pod CIDRs 10.88.<net>.0/24
    /// and fd00:88:<net>::/64, so parallel tests never share addresses.
    pub fn new(tag: &str, net: u8) -> Node {
        require_root_and_plugins();
        let prefix = format!("twc{}{tag}", std::process::id());
        let netns = format!("{prefix}-n");
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        sh(&["ip", "netns", "add", &netns]);
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        Node {
            socket: dir.join("cni.sock"),
            state: dir.join("state/attachments.json"),
            network: format!("{prefix}-net"),
            cidr4: format!("10.88.{net}.0/24"),
            cidr6: format!("fd00:88:{net}::/64"),
            prefix,
            netns,
            dir,
            control: None,
            pods: Default::default(),
        }
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// The plugin configuration (as a runtime hands it to the plugin).
    pub fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.network,
            "type": "twill",
            "podCIDRs": [self.cidr4, self.cidr6],
            "underlayMtu": 1500,
            "gatewayMac": "02:44:00:00:00:01",
            "controlSocket": self.socket,
            "ipam": { "type": "host-local", "dataDir": self.ipam_dir() },
        })
    }

    pub fn start_control(&mut self) {
        assert!(self.control.is_none());
        let child = Command::new(twill_control())
            .args(["serve-attachments", "--socket"])
            .arg(&self.socket)
            .arg("--state")
            .arg(&self.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start twill-control");
        self.control = Some(child);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "twill-control did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_control(&mut self) {
        if let Some(mut c) = self.control.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A pod namespace; returns its path (/run/netns/...).
    pub fn pod(&self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        self.pods.lock().unwrap().push(ns.clone());
        format!("/run/netns/{ns}")
    }

    pub fn container_id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Runs `plugin` in the node namespace as a runtime does: `CNI_*` in
    /// the environment (`netns` None: CNI_NETNS unset), `conf` on stdin.
    /// One argument per CNI variable, as the spec lists them.
    #[allow(clippy::too_many_arguments)]
    pub fn exec(
        &self,
        plugin: &Path,
        verb: &str,
        container_id: &str,
        netns: Option<&str>,
        ifname: &str,
        conf: &[u8],
        extra_env: &[(&str, &str)],
    ) -> Out {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(plugin)
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", CNI_PATH)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={container_id}"),
            )
            .env_remove("CNI_NETNS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = netns {
            cmd.env("CNI_NETNS", n);
        }
        for (k, v) in extra_env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("run plugin");
        child.stdin.take().unwrap().write_all(conf).unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            // The spec: an error is JSON on stdout with a non-zero exit.
            assert!(
                !stdout.is_empty(),
                "plugin failed without an error on stdout: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Out {
            stdout,
            ok: out.status.success(),
        }
    }

    pub fn twill(&self, verb: &str, id: &str, netns: &str, conf: &Value) -> Out {
        self.exec(
            &twill(),
            verb,
            id,
            Some(netns),
            "eth0",
            conf.to_string().as_bytes(),
            &[],
        )
    }

    /// `ip -j ...` in namespace `ns` (an independent view of what exists).
    pub fn ip_json(ns: &str, args: &[&str]) -> Value {
        let ns = ns.trim_start_matches("/run/netns/");
        let mut a = vec!["ip", "-j", "-n", ns];
        a.extend_from_slice(args);
        let s = sh(&a);
        serde_json::from_str(if s.trim().is_empty() { "[]" } else { &s }).unwrap()
    }

    pub fn links(ns: &str) -> Vec<String> {
        Self::ip_json(ns, &["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// Routes of the main table, as `ip route` prints their `dst`.
    pub fn route_dsts(ns: &str, v6: bool) -> Vec<String> {
        let fam = if v6 { "-6" } else { "-4" };
        let ns = ns.trim_start_matches("/run/netns/");
        let s = sh(&["ip", "-j", fam, "-n", ns, "route", "show"]);
        let v: Value = serde_json::from_str(if s.trim().is_empty() { "[]" } else { &s }).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["dst"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// The addresses host-local holds for this node's network.
    pub fn reservations(&self) -> Vec<String> {
        let d = self.ipam_dir().join(&self.network);
        let Ok(rd) = std::fs::read_dir(d) else {
            return vec![];
        };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// The attachments in control's state file.
    pub fn registered(&self) -> Vec<String> {
        let Ok(b) = std::fs::read(&self.state) else {
            return vec![];
        };
        let v: Value = serde_json::from_slice(&b).unwrap();
        v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["containerId"].as_str().unwrap().to_string())
            .collect()
    }

    /// Host-side links this node's plugin made.
    pub fn host_veths(&self) -> Vec<String> {
        Self::links(&self.netns)
            .into_iter()
            .filter(|l| l.starts_with("tw"))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_control();
        for ns in self.pods.lock().unwrap().iter() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn twill_dataplane() -> PathBuf {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| build("dataplane", "twill-dataplane"))
        .clone()
}
