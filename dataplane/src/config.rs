//! The node configuration file (TOML) read by `twill-dataplane run`: the
//! node's addresses and uplink, the workers, the local pods, the remote nodes
//! and the Services. It stands in for the control process and shared memory
//! until those land (issue 3, point 8). `configs/node.example.toml` is the
//! annotated example; every field is described there.
//!
//! Reading is in two steps: [`NodeFile::parse`] checks syntax and values
//! (unknown fields are errors) and every error names the file, where (line,
//! section or field path) and why, as one line; [`NodeFile::tables`] then
//! builds the [`Tables`] once the MACs given as `"auto"` (or omitted) are
//! known ([`Macs`], resolved from the interface and the kernel's neighbour
//! table by the caller).
//!
//! Ports: the uplink is port 0; pods get ports 1, 2, ... in file order.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde::{Deserialize, Deserializer};

use crate::lb::{BackendSpec, ServiceSpec, VipKind};
use crate::route::Prefix;
use crate::state::{BuildError, NodeConfig, PodSpec, RemoteNodeSpec, Tables, TablesBuilder};
use crate::{Mac, PortId};

/// The uplink's port id.
pub const UPLINK_PORT: PortId = 0;

/// A configuration error, displayed as one line naming the file, the place
/// and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {place}{msg}")]
pub struct ConfigError {
    pub file: String,
    /// "line N, \[section\]: " or "field: " (may be empty).
    pub place: String,
    pub msg: String,
}

/// A MAC address, or `"auto"`: resolved at start (the uplink's own MAC from
/// the interface; next hops from the kernel's neighbour table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MacSpec {
    #[default]
    Auto,
    Mac(Mac),
}

impl MacSpec {
    pub fn get(self) -> Option<Mac> {
        match self {
            MacSpec::Auto => None,
            MacSpec::Mac(m) => Some(m),
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut m = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        m[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn de_mac_spec<'de, D: Deserializer<'de>>(d: D) -> Result<MacSpec, D::Error> {
    let s = String::deserialize(d)?;
    if s == "auto" {
        return Ok(MacSpec::Auto);
    }
    parse_mac(&s).map(MacSpec::Mac).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff or \"auto\")"
        ))
    })
}

fn de_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
    let s = String::deserialize(d)?;
    parse_mac(&s).ok_or_else(|| {
        serde::de::Error::custom(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))
    })
}

fn de_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Prefix>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter()
        .map(|s| {
            s.parse::<Prefix>().map_err(|e| {
                serde::de::Error::custom(format!("{s:?} is not a CIDR prefix ({e:?})"))
            })
        })
        .collect()
}

fn de_proto<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(crate::proto::TCP),
        "udp" => Ok(crate::proto::UDP),
        "sctp" => Ok(crate::proto::SCTP),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not a protocol (tcp, udp or sctp)"
        ))),
    }
}

fn de_policy<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "Cluster" => Ok(false),
        "Local" => Ok(true),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not a traffic policy (Cluster or Local)"
        ))),
    }
}

/// How AF_XDP sockets ask for zero-copy (`workers.zero_copy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopyMode {
    Off,
    #[default]
    Auto,
    Force,
}

/// `[node]`: mirrors [`NodeConfig`], with interface names instead of ports.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    #[serde(default)]
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The uplink interface (the node's NIC).
    pub uplink: String,
    #[serde(default, deserialize_with = "de_mac_spec")]
    pub uplink_mac: MacSpec,
    /// Uplink rx queues served (queue i by worker i); default: as many as
    /// both the workers and the interface have.
    pub uplink_queues: Option<u32>,
    /// The underlay's default gateway (next hop off-cluster).
    pub underlay_gateway_ipv4: Option<Ipv4Addr>,
    pub underlay_gateway_ipv6: Option<Ipv6Addr>,
    #[serde(default, deserialize_with = "de_mac_spec")]
    pub underlay_gateway_mac: MacSpec,
    /// The pods' default gateway (answered by the dataplane's ARP/ND).
    pub pod_gateway_ipv4: Option<Ipv4Addr>,
    pub pod_gateway_ipv6: Option<Ipv6Addr>,
    #[serde(deserialize_with = "de_mac")]
    pub pod_gateway_mac: Mac,
    #[serde(deserialize_with = "de_mac")]
    pub vtep_mac: Mac,
    pub vxlan_port: Option<u16>,
    pub vni: Option<u32>,
    pub mtu: Option<u16>,
    pub snat_ports: Option<(u16, u16)>,
    pub nodeport_range: Option<(u16, u16)>,
    #[serde(default, deserialize_with = "de_prefixes")]
    pub cluster_cidrs: Vec<Prefix>,
    #[serde(default, deserialize_with = "de_prefixes")]
    pub service_cidrs: Vec<Prefix>,
    pub conntrack_capacity: Option<usize>,
    pub affinity_capacity: Option<usize>,
    pub frag_capacity: Option<usize>,
    pub maglev_max_size: Option<u32>,
    /// Seconds between neighbour-table refreshes (0: resolve once at start).
    pub neighbour_refresh_s: Option<u64>,
}

/// `[workers]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// One worker per CPU listed, pinned to it; empty: one unpinned worker.
    #[serde(default)]
    pub cpus: Vec<usize>,
    #[serde(default)]
    pub busy_poll: bool,
    #[serde(default)]
    pub zero_copy: ZeroCopyMode,
    /// UMEM frames per worker.
    pub frames: Option<u32>,
    /// Empty polls before blocking in poll().
    pub idle_polls: Option<u32>,
    /// Longest block in poll(), in milliseconds.
    pub sleep_ms: Option<i32>,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            cpus: Vec::new(),
            busy_poll: false,
            zero_copy: ZeroCopyMode::Auto,
            frames: None,
            idle_polls: None,
            sleep_ms: None,
        }
    }
}

/// `[[pods]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSection {
    pub name: String,
    /// The pod's host-side interface.
    pub interface: String,
    #[serde(deserialize_with = "de_mac")]
    pub mac: Mac,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// The worker serving it (default: spread).
    pub worker: Option<usize>,
}

/// `[[remote_nodes]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    #[serde(deserialize_with = "de_prefixes")]
    pub pod_cidrs: Vec<Prefix>,
    #[serde(deserialize_with = "de_mac")]
    pub vtep_mac: Mac,
    /// Its underlay MAC; resolved from the neighbour table if omitted.
    #[serde(default, deserialize_with = "de_mac_spec")]
    pub underlay_mac: MacSpec,
}

fn yes() -> bool {
    true
}

/// One endpoint of a `[[services]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub ip: IpAddr,
    pub port: u16,
    #[serde(default = "yes")]
    pub ready: bool,
    #[serde(default = "yes")]
    pub serving: bool,
    #[serde(default)]
    pub terminating: bool,
    #[serde(default)]
    pub local: bool,
}

/// `[[services]]`: one Service port, as [`ServiceSpec`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: String,
    #[serde(deserialize_with = "de_proto")]
    pub protocol: u8,
    pub port: u16,
    #[serde(default)]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
    pub node_port: Option<u16>,
    #[serde(default, deserialize_with = "de_policy")]
    pub external_traffic_policy: bool,
    #[serde(default, deserialize_with = "de_policy")]
    pub internal_traffic_policy: bool,
    pub session_affinity_timeout_s: Option<u32>,
    #[serde(default)]
    pub backends: Vec<BackendSection>,
}

impl ServiceSection {
    pub fn spec(&self) -> ServiceSpec {
        let vips = (self.cluster_ips.iter().map(|ip| (*ip, VipKind::ClusterIp)))
            .chain(
                self.external_ips
                    .iter()
                    .map(|ip| (*ip, VipKind::ExternalIp)),
            )
            .chain(
                self.load_balancer_ips
                    .iter()
                    .map(|ip| (*ip, VipKind::LoadBalancer)),
            )
            .collect();
        ServiceSpec {
            name: self.name.clone(),
            proto: self.protocol,
            port: self.port,
            vips,
            node_port: self.node_port,
            ext_local: self.external_traffic_policy,
            int_local: self.internal_traffic_policy,
            affinity_timeout_s: self.session_affinity_timeout_s,
            backends: self
                .backends
                .iter()
                .map(|b| BackendSpec {
                    ip: b.ip,
                    port: b.port,
                    ready: b.ready,
                    serving: b.serving,
                    terminating: b.terminating,
                    local: b.local,
                })
                .collect(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub node: NodeSection,
    #[serde(default)]
    pub workers: WorkersSection,
    #[serde(default)]
    pub pods: Vec<PodSection>,
    #[serde(default)]
    pub remote_nodes: Vec<RemoteSection>,
    #[serde(default)]
    pub services: Vec<ServiceSection>,
    /// Shared memory with twill-control (absent: the tables above are all the
    /// dataplane has, and conntrack lives in the process).
    #[serde(default)]
    pub shm: Option<ShmSection>,
    /// twill-control's part of the node config.
    #[serde(default)]
    pub control: ControlSection,
}

/// `[shm]`: the node's shared-memory file, read by both processes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShmSection {
    #[serde(default = "default_shm_path")]
    pub path: std::path::PathBuf,
    /// Table slots (at least 2: the live one and the next).
    pub slots: Option<u32>,
    /// Size of each table slot, MiB (sparse: only what is written uses memory).
    pub slot_mib: Option<u64>,
    /// Service ports with packet/byte counters (stable ids; default 16,384;
    /// 64 bytes per worker each, plus 256 bytes of directory). Service ports
    /// beyond it are served but not counted.
    pub services: Option<u32>,
}

/// The default shared-memory file.
pub const DEFAULT_SHM_PATH: &str = "/dev/shm/twill/node.shm";

fn default_shm_path() -> std::path::PathBuf {
    DEFAULT_SHM_PATH.into()
}

/// `[control]`: where twill-control gets Kubernetes objects and what it serves.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// `"kube"` (in-cluster config, or `kubeconfig`) or `"file:DIR"`.
    #[serde(default = "default_source")]
    pub source: String,
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The CNI plugin's unix socket.
    #[serde(default = "default_socket")]
    pub socket: std::path::PathBuf,
    /// Where pod attachments are persisted.
    #[serde(default = "default_attachments")]
    pub attachments: std::path::PathBuf,
    /// Prometheus metrics listen address (`""`: none).
    #[serde(default = "default_metrics")]
    pub metrics: String,
    /// Quiet time after a change before a new snapshot is published.
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
    /// Write flannel's VTEP annotations on this node's Node object (kube).
    #[serde(default)]
    pub annotate_node: bool,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            source: default_source(),
            kubeconfig: None,
            socket: default_socket(),
            attachments: default_attachments(),
            metrics: default_metrics(),
            debounce_ms: default_debounce(),
            annotate_node: false,
        }
    }
}

fn default_source() -> String {
    "kube".into()
}
fn default_socket() -> std::path::PathBuf {
    "/run/twill/cni.sock".into()
}
fn default_attachments() -> std::path::PathBuf {
    "/var/lib/twill/attachments.json".into()
}
fn default_metrics() -> String {
    "127.0.0.1:9641".into()
}
fn default_debounce() -> u64 {
    50
}

/// The MACs the file leaves to be resolved, once resolved.
#[derive(Clone, Debug)]
pub struct Macs {
    pub uplink: Mac,
    pub underlay_gateway: Mac,
    /// Per `remote_nodes` entry, in file order.
    pub remotes: Vec<Mac>,
}

impl NodeFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            place: String::new(),
            msg: format!("cannot read: {e}"),
        })?;
        NodeFile::parse(&text, &file)
    }

    /// Parses and checks `text` (read from `file`, named in errors).
    pub fn parse(text: &str, file: &str) -> Result<NodeFile, ConfigError> {
        let f: NodeFile = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_string(),
            place: where_in(text, e.span()),
            msg: e.message().trim().replace('\n', "; "),
        })?;
        f.check().map_err(|(place, msg)| ConfigError {
            file: file.to_string(),
            place: format!("{place}: "),
            msg,
        })?;
        Ok(f)
    }

    /// Checks what the types alone do not: (field path, reason).
    fn check(&self) -> Result<(), (String, String)> {
        let n = &self.node;
        let err = |p: &str, m: String| Err((p.to_string(), m));
        if n.uplink.is_empty() {
            return err("node.uplink", "an interface name is needed".into());
        }
        if n.ipv4.is_none() && n.ipv6.is_none() {
            return err("node", "ipv4 or ipv6 (the node's address) is needed".into());
        }
        if n.underlay_gateway_mac == MacSpec::Auto
            && n.underlay_gateway_ipv4.is_none()
            && n.underlay_gateway_ipv6.is_none()
        {
            return err(
                "node.underlay_gateway_mac",
                "\"auto\" needs underlay_gateway_ipv4 or underlay_gateway_ipv6 to resolve".into(),
            );
        }
        for (name, r) in [
            ("node.snat_ports", n.snat_ports),
            ("node.nodeport_range", n.nodeport_range),
        ] {
            if let Some((lo, hi)) = r {
                if lo == 0 || lo > hi {
                    return err(name, format!("[{lo}, {hi}] is not a range of ports"));
                }
            }
        }
        if n.mtu.is_some_and(|m| m < 1280) {
            return err("node.mtu", "below 1280".into());
        }
        if n.vni.is_some_and(|v| v >= 1 << 24) {
            return err("node.vni", "a VNI has 24 bits".into());
        }
        if n.conntrack_capacity == Some(0) {
            return err("node.conntrack_capacity", "must be at least 1".into());
        }
        let w = &self.workers;
        let mut cpus = HashSet::new();
        for c in &w.cpus {
            if !cpus.insert(c) {
                return err("workers.cpus", format!("CPU {c} is listed twice"));
            }
        }
        if w.cpus.len() > crate::io::handoff::MAX_WORKERS {
            return err(
                "workers.cpus",
                format!("at most {} workers", crate::io::handoff::MAX_WORKERS),
            );
        }
        if w.frames.is_some_and(|f| f < 64) {
            return err("workers.frames", "at least 64".into());
        }
        let workers = self.workers().len();
        let mut ifaces = HashSet::from([n.uplink.as_str()]);
        let mut ips = HashSet::new();
        for (i, p) in self.pods.iter().enumerate() {
            let at = format!("pods[{i}] ({})", p.name);
            if !ifaces.insert(p.interface.as_str()) {
                return err(
                    &format!("{at}.interface"),
                    format!("{} is used twice", p.interface),
                );
            }
            if p.ipv4.is_none() && p.ipv6.is_none() {
                return err(&at, "ipv4 or ipv6 is needed".into());
            }
            for ip in [p.ipv4.map(IpAddr::V4), p.ipv6.map(IpAddr::V6)]
                .into_iter()
                .flatten()
            {
                if !ips.insert(ip) {
                    return err(&at, format!("address {ip} is used twice"));
                }
            }
            if let Some(wk) = p.worker {
                if wk >= workers {
                    return err(
                        &format!("{at}.worker"),
                        format!("worker {wk} does not exist ({workers} workers)"),
                    );
                }
            }
        }
        if self.pods.len() >= PortId::MAX as usize {
            return err("pods", "too many pods".into());
        }
        for (i, r) in self.remote_nodes.iter().enumerate() {
            let at = format!("remote_nodes[{i}] ({})", r.name);
            if r.ipv4.is_none() && r.ipv6.is_none() {
                return err(&at, "ipv4 or ipv6 (its underlay address) is needed".into());
            }
        }
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}] ({})", s.name);
            if s.cluster_ips.is_empty()
                && s.external_ips.is_empty()
                && s.load_balancer_ips.is_empty()
                && s.node_port.is_none()
            {
                return err(
                    &at,
                    "no cluster_ips, external_ips, load_balancer_ips or node_port".into(),
                );
            }
        }
        Ok(())
    }

    /// The workers' CPUs (`None`: one unpinned worker).
    pub fn workers(&self) -> Vec<Option<usize>> {
        if self.workers.cpus.is_empty() {
            vec![None]
        } else {
            self.workers.cpus.iter().map(|c| Some(*c)).collect()
        }
    }

    /// The shared-memory file and its layout, when `[shm]` is configured.
    /// Both processes derive it from the same file, so they agree on it;
    /// the opener of an existing file checks it against the file's.
    pub fn shm_layout(&self) -> Option<(std::path::PathBuf, crate::state::shm::Layout)> {
        let s = self.shm.as_ref()?;
        let d = crate::state::shm::Layout::default();
        let layout = crate::state::shm::Layout {
            workers: crate::state::shm::MAX_WORKERS,
            conntrack_capacity: self
                .node
                .conntrack_capacity
                .unwrap_or(crate::state::NodeConfig::default().conntrack_capacity)
                as u64,
            slot_bytes: s.slot_mib.map_or(d.slot_bytes, |m| m << 20),
            slots: s.slots.unwrap_or(d.slots),
            services: s.services.unwrap_or(d.services),
            ..d
        };
        Some((s.path.clone(), layout))
    }

    /// Pod `i`'s port.
    pub fn pod_port(i: usize) -> PortId {
        i as PortId + 1
    }

    /// The node configuration, with the resolved MACs.
    pub fn node_config(&self, macs: &Macs) -> NodeConfig {
        let n = &self.node;
        let d = NodeConfig::default();
        NodeConfig {
            node_ipv4: n.ipv4,
            node_ipv6: n.ipv6,
            uplink: UPLINK_PORT,
            uplink_mac: macs.uplink,
            uplink_gateway_mac: macs.underlay_gateway,
            gateway_ipv4: n.pod_gateway_ipv4,
            gateway_ipv6: n.pod_gateway_ipv6,
            gateway_mac: n.pod_gateway_mac,
            vtep_mac: n.vtep_mac,
            vxlan_port: n.vxlan_port.unwrap_or(d.vxlan_port),
            vni: n.vni.unwrap_or(d.vni),
            underlay_mtu: n.mtu.unwrap_or(d.underlay_mtu),
            snat_ports: n.snat_ports.unwrap_or(d.snat_ports),
            nodeport_range: n.nodeport_range.unwrap_or(d.nodeport_range),
            cluster_cidrs: n.cluster_cidrs.clone(),
            service_cidrs: n.service_cidrs.clone(),
            maglev_max_size: n.maglev_max_size.unwrap_or(d.maglev_max_size),
            conntrack_capacity: n.conntrack_capacity.unwrap_or(d.conntrack_capacity),
            timeouts: d.timeouts,
            frag_capacity: n.frag_capacity.unwrap_or(d.frag_capacity),
            affinity_capacity: n.affinity_capacity.unwrap_or(d.affinity_capacity),
        }
    }

    /// The tables for this file with `macs` resolved; an error names the
    /// file's part that the table builder refused.
    pub fn tables(&self, file: &str, macs: &Macs) -> Result<Tables, ConfigError> {
        let pods = self
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (NodeFile::pod_port(i), p));
        let services = self.services.iter().map(ServiceSection::spec);
        self.build_tables(macs, pods, &self.remote_nodes, services, 0, None)
            .map_err(|e| ConfigError {
                file: file.to_string(),
                place: String::new(),
                msg: format!("the node's tables cannot be built: {e}"),
            })
    }

    /// The tables of this node serving `pods` (each on its port), the
    /// `remotes` (their underlay MACs are `macs.remotes`, in the same order)
    /// and `services`: from this file, or from a control snapshot of
    /// shared-memory generation `published`, reusing `old`'s Maglev tables
    /// for the Services that did not change.
    pub fn build_tables<'a>(
        &self,
        macs: &Macs,
        pods: impl IntoIterator<Item = (PortId, &'a PodSection)>,
        remotes: &[RemoteSection],
        services: impl IntoIterator<Item = ServiceSpec>,
        published: u64,
        old: Option<&Tables>,
    ) -> Result<Tables, BuildError> {
        let mut b = TablesBuilder::new(self.node_config(macs));
        b.published_generation(published);
        for (port, p) in pods {
            b.add_pod(PodSpec {
                port,
                mac: p.mac,
                ipv4: p.ipv4,
                ipv6: p.ipv6,
                name: p.name.clone(),
            });
        }
        for (i, r) in remotes.iter().enumerate() {
            b.add_remote_node(RemoteNodeSpec {
                pod_cidrs: r.pod_cidrs.clone(),
                ipv4: r.ipv4,
                ipv6: r.ipv6,
                vtep_mac: r.vtep_mac,
                underlay_mac: macs
                    .remotes
                    .get(i)
                    .copied()
                    .unwrap_or(macs.underlay_gateway),
                name: r.name.clone(),
            });
        }
        for s in services {
            b.add_service(s);
        }
        b.build_reusing(old)
    }
}

/// "line N, [section]: " for a byte span of `text`.
fn where_in(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let at = span.start.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let section = text[..at]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| format!(", {}", l.split('#').next().unwrap_or(l).trim()))
        .unwrap_or_default();
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let this = text[start..].lines().next().unwrap_or("");
    let key = this
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .map(|k| format!(", {k}"))
        .unwrap_or_default();
    format!("line {line}{section}{key}: ")
}

#[cfg(test)]
mod tests;
