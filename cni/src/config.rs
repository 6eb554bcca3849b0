//! What the runtime hands the plugin: the environment (`CNI_*`) and the
//! network configuration on stdin, checked once here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// CNI versions this plugin speaks (results are produced in each shape).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest, used when the runtime did not say.
pub const LATEST: &str = "1.1.0";
/// Where twill-control listens for pod attachments by default.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/twill/cni.sock";
/// The pod gateway MAC of the example node config (`pod_gateway_mac`).
pub const DEFAULT_GATEWAY_MAC: &str = "02:44:00:00:00:01";
/// VXLAN over IPv4: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The verbs of the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            "" => return Err(Error::env("CNI_COMMAND is not set")),
            o => return Err(Error::env(format!("CNI_COMMAND {o:?} is not a CNI verb"))),
        })
    }
}

/// The `CNI_*` environment of one call.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: BTreeMap<String, String>,
    pub path: Vec<String>,
}

impl Env {
    /// Reads the environment through `get` (a map in tests, `std::env` in the binary).
    pub fn read(get: &dyn Fn(&str) -> Option<String>) -> Env {
        let mut args = BTreeMap::new();
        for kv in get("CNI_ARGS").unwrap_or_default().split(';') {
            if let Some((k, v)) = kv.split_once('=') {
                args.insert(k.to_string(), v.to_string());
            }
        }
        Env {
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args,
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    /// The container id rule of the spec: alphanumerics, `_ . -`, non-empty.
    pub fn require_container_id(&self) -> Result<()> {
        if self.container_id.is_empty() {
            return Err(Error::env("CNI_CONTAINERID is not set"));
        }
        if !self
            .container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(Error::env(format!(
                "CNI_CONTAINERID {:?} has characters other than letters, digits, '_', '.' and '-'",
                self.container_id
            )));
        }
        Ok(())
    }

    /// The interface name rule of the spec (as a Linux name: 1..=15 bytes,
    /// not `.`/`..`, no `/`, `:` or white space).
    pub fn require_ifname(&self) -> Result<()> {
        let n = &self.ifname;
        if n.is_empty() {
            return Err(Error::env("CNI_IFNAME is not set"));
        }
        if n.len() > 15
            || n == "."
            || n == ".."
            || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(Error::env(format!(
                "CNI_IFNAME {n:?} is not a valid interface name"
            )));
        }
        Ok(())
    }

    pub fn require_netns(&self) -> Result<()> {
        if self.netns.is_empty() {
            return Err(Error::env("CNI_NETNS is not set"));
        }
        Ok(())
    }

    pub fn require_path(&self) -> Result<()> {
        if self.path.is_empty() {
            return Err(Error::env(
                "CNI_PATH is not set (the IPAM plugin is looked up there)",
            ));
        }
        Ok(())
    }

    /// K8S_POD_NAMESPACE / K8S_POD_NAME / K8S_POD_UID from CNI_ARGS.
    pub fn k8s(&self, key: &str) -> Option<String> {
        self.args.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The plugin's network configuration (one entry of a conflist's `plugins`,
/// with `name` and `cniVersion` filled in by the runtime).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub ipam: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub dns: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// The pods' MTU (default: `underlayMtu` − 50, the VXLAN overhead).
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub underlay_mtu: Option<u32>,
    /// The node's podCIDR(s): IPAM ranges when `ipam` names none, and the
    /// default gateways (first address) when none are given.
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    #[serde(default)]
    pub gateway_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    pub gateway_ipv6: Option<Ipv6Addr>,
    /// The MAC the host-side veth carries (the dataplane's pod gateway MAC).
    #[serde(default)]
    pub gateway_mac: Option<String>,
    #[serde(default)]
    pub control_socket: Option<String>,
    /// Turn tx checksum offload off on the pod's interface (default true).
    #[serde(default)]
    pub tx_checksum_off: Option<bool>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The name an earlier draft of spec 1.1.0 used; libcni sends both
    /// (containernetworking/cni#1101).
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<ValidAttachment>>,
}

/// An IP prefix (`addr/len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let len: u8 = l.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// The first address after the network address (the usual gateway).
    pub fn first_host(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from((u32::from(a) & m).wrapping_add(1)))
            }
            IpAddr::V6(a) => {
                let m = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from((u128::from(a) & m).wrapping_add(1)))
            }
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The configuration as decoded: the raw JSON (handed to the IPAM plugin)
/// and the typed view.
#[derive(Clone, Debug)]
pub struct Config {
    pub raw: serde_json::Map<String, Value>,
    pub conf: NetConf,
}

/// Decodes stdin: invalid JSON is code 6, a missing or unknown `cniVersion`
/// code 1, fields of the wrong type or missing code 7.
pub fn parse(stdin: &[u8]) -> Result<Config> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| Error::decode(format!("network configuration is not valid JSON: {e}")))?;
    let Value::Object(raw) = v else {
        return Err(Error::decode("network configuration is not a JSON object"));
    };
    let version = match raw.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(Error::config("cniVersion is not a string")),
        None => return Err(Error::version("network configuration has no cniVersion")),
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(Error::version(format!(
            "cniVersion {version:?} is not supported by twill (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        )));
    }
    let conf: NetConf = serde_json::from_value(Value::Object(raw.clone()))
        .map_err(|e| Error::config(format!("invalid network configuration: {e}")))?;
    let cfg = Config { raw, conf };
    cfg.validate()?;
    Ok(cfg)
}

impl Config {
    fn validate(&self) -> Result<()> {
        let c = &self.conf;
        if c.name.is_empty() {
            return Err(Error::config("network configuration has an empty name"));
        }
        for p in &c.pod_cidrs {
            if Cidr::parse(p).is_none() {
                return Err(Error::config(format!("podCIDRs entry {p:?} is not a CIDR")));
            }
        }
        if let Some(m) = c.mtu {
            if !(68..=65535).contains(&m) {
                return Err(Error::config(format!("mtu {m} is out of range 68..=65535")));
            }
        }
        self.gateway_mac()?;
        if let Some(ipam) = &c.ipam {
            match ipam.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => {}
                _ => return Err(Error::config("ipam has no valid \"type\"")),
            }
        } else if c.pod_cidrs.is_empty() {
            return Err(Error::config(
                "network configuration has neither \"ipam\" nor \"podCIDRs\"",
            ));
        }
        if let Some(Value::Object(rc)) = &c.runtime_config {
            if let Some(v) = rc.get("ips") {
                return Err(Error::new(
                    crate::error::code::UNSUPPORTED_FIELD,
                    format!("runtimeConfig key \"ips\" (value {v}) is not supported by twill"),
                ));
            }
        }
        Ok(())
    }

    pub fn version(&self) -> &str {
        &self.conf.cni_version
    }

    pub fn mtu(&self) -> u32 {
        self.conf.mtu.unwrap_or(
            self.conf
                .underlay_mtu
                .unwrap_or(1500)
                .saturating_sub(VXLAN_OVERHEAD),
        )
    }

    pub fn gateway_mac(&self) -> Result<[u8; 6]> {
        let s = self
            .conf
            .gateway_mac
            .as_deref()
            .unwrap_or(DEFAULT_GATEWAY_MAC);
        parse_mac(s).ok_or_else(|| Error::config(format!("gatewayMac {s:?} is not a MAC address")))
    }

    pub fn control_socket(&self) -> &str {
        self.conf
            .control_socket
            .as_deref()
            .unwrap_or(DEFAULT_CONTROL_SOCKET)
    }

    pub fn ipam_type(&self) -> String {
        match self.conf.ipam.as_ref().and_then(|i| i.get("type")) {
            Some(Value::String(t)) => t.clone(),
            _ => "host-local".to_string(),
        }
    }

    /// The gateway of `family` (v4: true): configured, else the first host
    /// of the podCIDR of that family, else the IPAM result's `fallback`.
    pub fn gateway(&self, v4: bool, fallback: Option<IpAddr>) -> Option<IpAddr> {
        let configured = if v4 {
            self.conf.gateway_ipv4.map(IpAddr::V4)
        } else {
            self.conf.gateway_ipv6.map(IpAddr::V6)
        };
        configured
            .or_else(|| {
                self.conf
                    .pod_cidrs
                    .iter()
                    .filter_map(|c| Cidr::parse(c))
                    .find(|c| c.addr.is_ipv4() == v4)
                    .map(|c| c.first_host())
            })
            .or(fallback)
    }

    /// The configuration handed to the IPAM plugin: ours, with `ipam`
    /// defaulted to host-local and its ranges taken from `podCIDRs` when it
    /// names none, and `cniVersion` set to `version`.
    pub fn ipam_conf(&self, version: &str) -> Value {
        let mut raw = self.raw.clone();
        let mut ipam = self.conf.ipam.clone().unwrap_or_default();
        ipam.entry("type")
            .or_insert_with(|| Value::String("host-local".into()));
        let has_ranges = ipam.contains_key("ranges") || ipam.contains_key("subnet");
        if !has_ranges && !self.conf.pod_cidrs.is_empty() {
            let ranges: Vec<Value> = self
                .conf
                .pod_cidrs
                .iter()
                .filter_map(|c| Cidr::parse(c))
                .map(|c| {
                    let mut r = serde_json::json!({ "subnet": c.to_string() });
                    if let Some(gw) = self.gateway(c.addr.is_ipv4(), None) {
                        r["gateway"] = Value::String(gw.to_string());
                    }
                    Value::Array(vec![r])
                })
                .collect();
            ipam.insert("ranges".into(), Value::Array(ranges));
        }
        raw.insert("ipam".into(), Value::Object(ipam));
        raw.insert("cniVersion".into(), Value::String(version.into()));
        Value::Object(raw)
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub fn format_mac(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The host-side veth name: stable from the container id and interface
/// name, at most 15 characters (`tw` + 13 hex digits of FNV-1a 64).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("tw{:013x}", h >> 12)
}

/// Whether `name` has the shape of [`host_veth_name`].
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 15
        && name.starts_with("tw")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc123", "eth0");
        assert_eq!(a, host_veth_name("abc123", "eth0"));
        assert!(a.len() <= 15, "{a}");
        assert!(is_host_veth_name(&a));
        assert!(!is_host_veth_name("eth0"));
        assert_ne!(a, host_veth_name("abc124", "eth0"));
        assert_ne!(a, host_veth_name("abc123", "eth1"));
    }

    #[test]
    fn cidrs_parse_contain_and_give_their_first_host() {
        let c = Cidr::parse("10.244.1.0/24").unwrap();
        assert!(c.contains("10.244.1.77".parse().unwrap()));
        assert!(!c.contains("10.244.2.1".parse().unwrap()));
        assert_eq!(c.first_host(), "10.244.1.1".parse::<IpAddr>().unwrap());
        let c6 = Cidr::parse("fd00:244:1::/64").unwrap();
        assert_eq!(c6.first_host(), "fd00:244:1::1".parse::<IpAddr>().unwrap());
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nonsense").is_none());
    }

    #[test]
    fn the_default_mtu_is_the_underlay_minus_vxlan() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","type":"twill","podCIDRs":["10.244.1.0/24"],"underlayMtu":9000}"#).unwrap();
        assert_eq!(c.mtu(), 8950);
    }

    #[test]
    fn ipam_ranges_come_from_the_pod_cidrs() {
        let c = parse(br#"{"cniVersion":"1.1.0","name":"n","type":"twill","podCIDRs":["10.244.1.0/24","fd00:244:1::/64"]}"#).unwrap();
        let v = c.ipam_conf("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["ipam"]["type"], "host-local");
        assert_eq!(v["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(v["ipam"]["ranges"][1][0]["gateway"], "fd00:244:1::1");
    }
}
