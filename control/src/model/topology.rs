//! Topology-aware routing, as kube-proxy's `pkg/proxy/topology.go` decides it.
//!
//! The EndpointSlice controller writes hints (`forZones`, and `forNodes` for
//! trafficDistribution PreferSameNode) when a Service asks for them
//! (trafficDistribution PreferClose / PreferSameZone / PreferSameNode, or the
//! topology-mode annotation); kube-proxy reads only the hints:
//! - same node, if every ready endpoint has node hints and one is for this node;
//! - else same zone, if every ready endpoint has zone hints and one is for this
//!   node's zone (a node without a zone label never matches);
//! - else all endpoints.
//!
//! The mode is decided per Service port and per IP family (kube-proxy runs one
//! proxier per family). Cluster-scope traffic then uses only the endpoints
//! available for the mode. A `BackendSpec` cannot say "usable for Local but not
//! for Cluster", so the model leaves the unavailable endpoints out, except the
//! local ones of a Service that uses Local endpoints (internal or external
//! traffic policy Local), which kube-proxy keeps for its Local set; Cluster
//! traffic from this node may then also reach such a local endpoint, which
//! costs nothing in latency and is the only difference from kube-proxy.

use super::endpoints::Ep;

/// Which endpoints Cluster traffic from this node may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    All,
    SameNode,
    SameZone,
}

/// This node's place: its name and its zone label.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place<'a> {
    pub node: &'a str,
    pub zone: Option<&'a str>,
}

fn node_hint(ep: &Ep<'_>, node: &str) -> (bool, bool) {
    let hints = ep.hints.and_then(|h| h.for_nodes.as_deref()).unwrap_or(&[]);
    (!hints.is_empty(), hints.iter().any(|n| n.name == node))
}

fn zone_hint(ep: &Ep<'_>, zone: Option<&str>) -> (bool, bool) {
    let hints = ep.hints.and_then(|h| h.for_zones.as_deref()).unwrap_or(&[]);
    let mine = zone.is_some_and(|z| hints.iter().any(|h| h.name == z));
    (!hints.is_empty(), mine)
}

/// kube-proxy's `topologyModeFromHints` over the endpoints of one family.
pub(crate) fn mode<'e, 'a: 'e>(eps: impl Iterator<Item = &'e Ep<'a>>, at: Place<'_>) -> Mode {
    let mut any_ready = false;
    let (mut all_node, mut for_node) = (true, false);
    let (mut all_zone, mut for_zone) = (true, false);
    for ep in eps.filter(|e| e.ready) {
        any_ready = true;
        let (has, mine) = node_hint(ep, at.node);
        all_node &= has;
        for_node |= mine;
        let (has, mine) = zone_hint(ep, at.zone);
        all_zone &= has;
        for_zone |= mine;
    }
    if !any_ready {
        Mode::All
    } else if all_node && for_node {
        Mode::SameNode
    } else if all_zone && for_zone {
        Mode::SameZone
    } else {
        Mode::All
    }
}

/// kube-proxy's `availableForTopology`.
pub(crate) fn available(ep: &Ep<'_>, mode: Mode, at: Place<'_>) -> bool {
    match mode {
        Mode::All => true,
        Mode::SameNode => node_hint(ep, at.node).1,
        Mode::SameZone => zone_hint(ep, at.zone).1,
    }
}

/// Applies the hints to the endpoints of one Service port (both families):
/// keeps those available for this node's mode, plus the local ones when the
/// Service uses Local endpoints. Returns the modes used for IPv4 and IPv6.
pub(crate) fn apply(eps: &mut Vec<Ep<'_>>, at: Place<'_>, keep_local: bool) -> [Mode; 2] {
    let modes = [
        mode(eps.iter().filter(|e| e.ip.is_ipv4()), at),
        mode(eps.iter().filter(|e| e.ip.is_ipv6()), at),
    ];
    if modes != [Mode::All, Mode::All] {
        eps.retain(|e| {
            (keep_local && e.local) || available(e, modes[usize::from(e.ip.is_ipv6())], at)
        });
    }
    modes
}
