//! EndpointSlices → the endpoints of one Service port, as kube-proxy's
//! `EndpointSliceCache` reads them.
//!
//! - A slice belongs to the Service named by its `kubernetes.io/service-name`
//!   label, in its own namespace. Slices labelled `service.kubernetes.io/headless`
//!   or `service.kubernetes.io/service-proxy-name` are not kube-proxy's (its
//!   informers filter them out), nor ours. Only `IPv4` and `IPv6` slices count;
//!   `FQDN` slices have no semantics for a proxy and are ignored.
//! - A Service port takes the slice port of the same name and protocol; its
//!   number is the endpoint port (so a named targetPort resolves per slice, and
//!   the Service's `targetPort` itself is never read, as in kube-proxy).
//! - An endpoint is its first address. Conditions as the API defines them: a
//!   missing `ready` is true, a missing `serving` is true, a missing
//!   `terminating` is false.
//! - The same address and port in several slices (an endpoint moving between
//!   slices) is one endpoint: the first seen, unless a later copy is local.

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice};

use super::{meta_map, NodeIdentity, SERVICE_NAME_LABEL};
use crate::source::{ClusterState, ObjKey, Report};

/// Slices with this label belong to headless Services (kube-proxy ignores them).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Objects with this label are served by another proxy (kube-proxy ignores them).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// One endpoint of one Service port.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ep<'a> {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (`nodeName` is this node's name).
    pub local: bool,
    pub hints: Option<&'a EndpointHints>,
}

impl Ep<'_> {
    /// 0 ready, 1 serving and terminating, 2 neither (never used).
    pub fn class(&self) -> u8 {
        if self.ready {
            0
        } else if self.serving && self.terminating {
            1
        } else {
            2
        }
    }
}

/// One EndpointSlice with its key in the cluster state.
#[derive(Clone, Copy)]
pub(crate) struct SliceRef<'a> {
    /// The Service it names: `(namespace, kubernetes.io/service-name)`.
    pub svc: (&'a str, &'a str),
    pub key: &'a ObjKey,
    pub slice: &'a EndpointSlice,
}

/// The usable slices sorted by the Service they name, `(namespace, service)`:
/// the Services (a `BTreeMap` in the same order) take theirs by walking it
/// once, with no lookups; what no Service takes is reported.
pub(crate) struct SliceIndex<'a> {
    entries: Vec<SliceRef<'a>>,
    next: usize,
}

impl<'a> SliceIndex<'a> {
    /// Sorts the slices by Service, reporting those that can belong to none.
    pub fn new(state: &'a ClusterState, reports: &mut Vec<Report>) -> SliceIndex<'a> {
        let mut entries = Vec::with_capacity(state.endpoint_slices.len());
        for (key, slice) in &state.endpoint_slices {
            match classify(key, slice) {
                Ok(Some(svc)) => entries.push(SliceRef {
                    svc: (key.namespace.as_str(), svc),
                    key,
                    slice,
                }),
                Ok(None) => {}
                Err(r) => reports.push(r),
            }
        }
        // Stable, and nearly sorted already when slices are named after their
        // Service (the controller's `<service>-<random>`).
        entries.sort_by(|a, b| a.svc.cmp(&b.svc));
        SliceIndex { entries, next: 0 }
    }

    /// The slices of the Service `(namespace, name)`; the Services must be
    /// asked in `(namespace, name)` order. Slices skipped on the way name a
    /// Service that does not exist: reported.
    pub fn take(
        &mut self,
        namespace: &str,
        name: &str,
        reports: &mut Vec<Report>,
    ) -> &[SliceRef<'a>] {
        let want = (namespace, name);
        while self.next < self.entries.len() && self.entries[self.next].svc < want {
            orphan(&self.entries[self.next], reports);
            self.next += 1;
        }
        let start = self.next;
        while self.next < self.entries.len() && self.entries[self.next].svc == want {
            self.next += 1;
        }
        &self.entries[start..self.next]
    }

    /// Reports the slices no Service took.
    pub fn finish(self, reports: &mut Vec<Report>) {
        for e in &self.entries[self.next..] {
            orphan(e, reports);
        }
    }
}

/// Whose slice `slice` is: `Ok(Some(service name))` when it is a usable
/// slice of a Service in its namespace, `Ok(None)` when it is not
/// kube-proxy's to read (another proxy's, a headless Service's, FQDN),
/// `Err` with the report when it can belong to no Service.
pub(crate) fn classify<'a>(
    key: &ObjKey,
    slice: &'a EndpointSlice,
) -> Result<Option<&'a str>, Report> {
    let labels = meta_map(&slice.metadata.labels);
    if labels.contains_key(HEADLESS_LABEL) || labels.contains_key(SERVICE_PROXY_NAME_LABEL) {
        return Ok(None);
    }
    let Some(svc) = labels.get(SERVICE_NAME_LABEL).filter(|s| !s.is_empty()) else {
        return Err(Report {
            origin: format!("EndpointSlice {key}"),
            reason: format!("no {SERVICE_NAME_LABEL} label: ignored"),
        });
    };
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => Ok(Some(svc.as_str())),
        "FQDN" => Ok(None),
        other => Err(Report {
            origin: format!("EndpointSlice {key}"),
            reason: format!("addressType {other:?} is not IPv4 or IPv6: ignored"),
        }),
    }
}

fn orphan(r: &SliceRef<'_>, reports: &mut Vec<Report>) {
    let (ns, svc) = r.svc;
    reports.push(orphan_report(r.key, ns, svc));
}

/// The report of a slice naming Service `ns/svc`, which does not exist.
pub(crate) fn orphan_report(slice: &ObjKey, ns: &str, svc: &str) -> Report {
    Report {
        origin: format!("EndpointSlice {slice}"),
        reason: format!("its Service {ns}/{svc} does not exist: ignored"),
    }
}

/// Bad endpoints of one slice, counted so 100,000 of them make one report.
#[derive(Default)]
struct Bad {
    count: usize,
    first: Option<String>,
}

impl Bad {
    fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// The endpoints of the Service port `(port_name, protocol)` from its slices,
/// deduplicated and sorted by address and port, of the families in `families`
/// (`[ipv4, ipv6]`) only, into `out` (cleared first; reused across ports).
pub(crate) fn collect<'a>(
    slices: &[SliceRef<'a>],
    port_name: &str,
    protocol: &str,
    families: [bool; 2],
    node: &NodeIdentity,
    reports: &mut Vec<Report>,
    out: &mut Vec<Ep<'a>>,
) {
    out.clear();
    for &SliceRef { key, slice, .. } in slices {
        let v6 = slice.address_type == "IPv6";
        if !families[usize::from(v6)] {
            continue;
        }
        let origin = || format!("EndpointSlice {key}");
        let Some(sp) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(port) = sp
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0)
        else {
            reports.push(Report {
                origin: origin(),
                reason: format!(
                    "port {port_name:?}/{protocol}: no valid port number ({:?}): ignored",
                    sp.port
                ),
            });
            continue;
        };
        let mut bad = Bad::default();
        out.reserve(slice.endpoints.len());
        for e in &slice.endpoints {
            let Some(addr) = e.addresses.first() else {
                bad.add(|| "an endpoint without addresses".into());
                continue;
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                bad.add(|| format!("{addr:?} is not an IP address"));
                continue;
            };
            if ip.is_ipv6() != v6 {
                bad.add(|| format!("{ip} is not of addressType {}", slice.address_type));
                continue;
            }
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            out.push(Ep {
                ip,
                port,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                local: e.node_name.as_deref() == Some(node.name.as_str()),
                hints: e.hints.as_ref(),
            });
        }
        if let Some(first) = bad.first {
            reports.push(Report {
                origin: origin(),
                reason: format!("{} endpoint(s) ignored (first: {first})", bad.count),
            });
        }
    }
    dedup(out);
}

/// Sorts by address and port and keeps one of each: the first listed, or the
/// first local one when there is one (as kube-proxy favours a local copy).
pub(crate) fn dedup(eps: &mut Vec<Ep<'_>>) {
    // Stable: among equal keys the slice order is kept.
    eps.sort_by_key(|e| (e.ip, e.port, !e.local));
    eps.dedup_by(|later, first| later.ip == first.ip && later.port == first.port);
}
