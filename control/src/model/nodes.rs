//! The other nodes: their pod CIDRs and how to reach them over VXLAN, read from
//! the annotations flannel writes (so flannel nodes and twill nodes reach each
//! other) or twill's own; and the annotations twill writes for its own node.
//!
//! flannel's VXLAN backend writes, on its Node (`pkg/subnet/kube/kube.go`):
//! `flannel.alpha.coreos.com/backend-type: vxlan`,
//! `.../backend-data: {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}` and
//! `.../public-ip` for IPv4, `.../backend-v6-data` and `.../public-ipv6` for
//! IPv6, and `.../kube-subnet-manager: "true"`. A remote node's VTEP MAC is
//! flannel's IPv4 `VtepMAC`, else its IPv6 one, else `twill.io/vtep-mac`; its
//! underlay addresses are flannel's public IPs, else twill's, else the Node's
//! `InternalIP` addresses. A node without a usable VTEP MAC, pod CIDR or
//! underlay address is left out, reported.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::config::{fmt_mac, parse_mac, MacSpec, RemoteSection};
use dataplane::route::Prefix;
use dataplane::Mac;
use k8s_openapi::api::core::v1::Node;

use super::{meta_map, NodeIdentity, ZONE_LABEL};
use crate::source::{ClusterState, Report};

pub const FLANNEL_BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const FLANNEL_BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const FLANNEL_BACKEND_V6_DATA: &str = "flannel.alpha.coreos.com/backend-v6-data";
pub const FLANNEL_PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
pub const FLANNEL_PUBLIC_IPV6: &str = "flannel.alpha.coreos.com/public-ipv6";
pub const FLANNEL_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";
pub const TWILL_VTEP_MAC: &str = "twill.io/vtep-mac";
pub const TWILL_PUBLIC_IP: &str = "twill.io/public-ip";
pub const TWILL_PUBLIC_IPV6: &str = "twill.io/public-ipv6";

/// This node's zone label, if this node's Node object is known and has one.
pub(crate) fn zone_of<'a>(state: &'a ClusterState, node: &str) -> Option<&'a str> {
    state
        .nodes
        .get(node)
        .and_then(|n| meta_map(&n.metadata.labels).get(ZONE_LABEL))
        .map(String::as_str)
        .filter(|z| !z.is_empty())
}

/// The annotations twill writes on its own Node: exactly flannel's VXLAN
/// backend's (so flannel nodes route to this one), plus twill's own keys.
/// `ipv4`/`ipv6` are the node's underlay addresses; a family without one gets
/// no flannel keys (as flannel writes none for a family it does not run).
pub fn own_node_annotations(
    vtep_mac: Mac,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    vni: u32,
) -> BTreeMap<String, String> {
    let mac = fmt_mac(&vtep_mac);
    // Go's encoding/json of flannel's vxlanLeaseAttrs{VNI, VtepMAC}.
    let data = format!("{{\"VNI\":{vni},\"VtepMAC\":\"{mac}\"}}");
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        a.insert(k.to_string(), v);
    };
    put(FLANNEL_BACKEND_TYPE, "vxlan".into());
    put(FLANNEL_SUBNET_MANAGER, "true".into());
    if let Some(ip) = ipv4 {
        put(FLANNEL_BACKEND_DATA, data.clone());
        put(FLANNEL_PUBLIC_IP, ip.to_string());
        put(TWILL_PUBLIC_IP, ip.to_string());
    }
    if let Some(ip) = ipv6 {
        put(FLANNEL_BACKEND_V6_DATA, data);
        put(FLANNEL_PUBLIC_IPV6, ip.to_string());
        put(TWILL_PUBLIC_IPV6, ip.to_string());
    }
    put(TWILL_VTEP_MAC, mac);
    a
}

/// flannel's backend data: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`.
#[derive(serde::Deserialize)]
struct BackendData {
    #[serde(rename = "VtepMAC")]
    vtep_mac: Option<String>,
}

/// The VTEP MAC in a backend-data annotation: `Ok(None)` when absent or
/// `null` (a non-VXLAN flannel backend), `Err` when present but unusable.
pub(super) fn vtep_from(data: Option<&String>) -> Result<Option<Mac>, String> {
    let Some(data) = data
        .map(|d| d.trim())
        .filter(|d| !d.is_empty() && *d != "null")
    else {
        return Ok(None);
    };
    let parsed: BackendData = serde_json::from_str(data)
        .map_err(|e| format!("{data:?} is not flannel backend data: {e}"))?;
    match parsed.vtep_mac {
        None => Ok(None),
        Some(m) => parse_mac(&m)
            .map(Some)
            .ok_or_else(|| format!("VtepMAC {m:?} is not a MAC address")),
    }
}

fn internal_ip(node: &Node, v6: bool) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == v6)
}

/// The first of the annotations `keys` that parses as an address of the
/// family, else the Node's InternalIP of that family.
fn underlay(node: &Node, keys: [&str; 2], v6: bool, notes: &mut Vec<String>) -> Option<IpAddr> {
    let ann = meta_map(&node.metadata.annotations);
    for k in keys {
        if let Some(v) = ann.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            match v.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == v6 => return Some(ip),
                _ => notes.push(format!(
                    "annotation {k} {v:?} is not an IPv{} address: ignored",
                    if v6 { 6 } else { 4 }
                )),
            }
        }
    }
    internal_ip(node, v6)
}

/// Every other node with a pod CIDR, a VTEP and an underlay address.
pub(crate) fn remotes(
    state: &ClusterState,
    me: &NodeIdentity,
    reports: &mut Vec<Report>,
) -> Vec<RemoteSection> {
    let mut out = Vec::new();
    for (name, node) in &state.nodes {
        if *name == me.name {
            continue;
        }
        let mut notes = Vec::new();
        let r = remote(name, node, me, &mut notes);
        reports.extend(notes.into_iter().map(|reason| Report {
            origin: format!("Node {name}"),
            reason,
        }));
        out.extend(r);
    }
    // `state.nodes` is a BTreeMap: already sorted by name.
    out
}

fn remote(
    name: &str,
    node: &Node,
    me: &NodeIdentity,
    notes: &mut Vec<String>,
) -> Option<RemoteSection> {
    let spec = node.spec.as_ref();
    let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_deref()) {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
    };
    let mut pod_cidrs = Vec::new();
    for c in cidrs {
        match c.trim().parse::<Prefix>() {
            Ok(p) if me.carries(p.addr) => pod_cidrs.push(p),
            Ok(_) => {}
            Err(e) => notes.push(format!("podCIDR {c:?}: {e}: ignored")),
        }
    }
    if pod_cidrs.is_empty() {
        notes.push(format!(
            "no podCIDR of a family this node carries (IPv4 {}, IPv6 {}): not reachable",
            me.ipv4, me.ipv6
        ));
        return None;
    }

    let ann = meta_map(&node.metadata.annotations);
    let mut vtep = None;
    for key in [FLANNEL_BACKEND_DATA, FLANNEL_BACKEND_V6_DATA] {
        match vtep_from(ann.get(key)) {
            Ok(Some(m)) => {
                vtep = Some(m);
                break;
            }
            Ok(None) => {}
            Err(e) => notes.push(format!("annotation {key}: {e}: ignored")),
        }
    }
    if vtep.is_none() {
        if let Some(m) = ann.get(TWILL_VTEP_MAC) {
            match parse_mac(m.trim()) {
                Some(m) => vtep = Some(m),
                None => notes.push(format!(
                    "annotation {TWILL_VTEP_MAC} {m:?} is not a MAC address: ignored"
                )),
            }
        }
    }
    let Some(vtep_mac) = vtep else {
        let backend = ann
            .get(FLANNEL_BACKEND_TYPE)
            .map(|t| format!(" (flannel backend-type {t:?}; twill speaks VXLAN)"))
            .unwrap_or_default();
        notes.push(format!(
            "no VTEP MAC ({FLANNEL_BACKEND_DATA} or {TWILL_VTEP_MAC}){backend}: \
             its pods are not reachable"
        ));
        return None;
    };

    let ipv4 = match underlay(node, [FLANNEL_PUBLIC_IP, TWILL_PUBLIC_IP], false, notes) {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    };
    let ipv6 = match underlay(node, [FLANNEL_PUBLIC_IPV6, TWILL_PUBLIC_IPV6], true, notes) {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    if ipv4.is_none() && ipv6.is_none() {
        notes.push(
            "no underlay address (flannel public-ip, twill.io/public-ip or an InternalIP): \
             its pods are not reachable"
                .into(),
        );
        return None;
    }
    Some(RemoteSection {
        name: name.to_string(),
        ipv4,
        ipv6,
        pod_cidrs,
        vtep_mac,
        underlay_mac: MacSpec::Auto,
    })
}
