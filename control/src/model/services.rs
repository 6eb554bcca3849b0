//! A Service → one [`ServiceSpec`] per port, as kube-proxy's `serviceport.go`
//! and `pkg/api/v1/service` read a Service.
//!
//! - Skipped without a word: ExternalName Services, headless ones (clusterIP
//!   `None`), and those labelled `service.kubernetes.io/service-proxy-name`
//!   (another proxy's, filtered out by kube-proxy's informers).
//! - VIPs: the `clusterIPs` (else `clusterIP`) of the families the node carries;
//!   a Service with none left is skipped (reported). externalIPs and
//!   LoadBalancer ingress `ip`s (not hostnames, not `ipMode: Proxy`) of the
//!   Service's remaining families.
//! - Ports: TCP and UDP; SCTP and anything else reported and skipped (the
//!   dataplane does not match SCTP). NodePort when allocated (so
//!   `allocateLoadBalancerNodePorts: false` gives none).
//! - externalTrafficPolicy Local applies to externally reachable types
//!   (NodePort, LoadBalancer, ClusterIP with externalIPs); its
//!   healthCheckNodePort is served for type LoadBalancer only, counting the
//!   distinct ready endpoint addresses on this node (per family, as each of
//!   kube-proxy's per-family proxiers counts; the larger count).
//! - sessionAffinity ClientIP with `timeoutSeconds` (default 10800).

use std::collections::BTreeSet;
use std::net::IpAddr;

use dataplane::lb::{BackendSpec, ServiceSpec, VipKind};
use dataplane::proto;
use k8s_openapi::api::core::v1::Service;

use super::endpoints::{self, Ep, SliceRef, SERVICE_PROXY_NAME_LABEL};
use super::topology::{self, Place};
use super::{
    meta_map, HealthCheck, NodeIdentity, DEFAULT_AFFINITY_TIMEOUT_S, MAX_ENDPOINTS_PER_SERVICE,
};
use crate::source::{ObjKey, Report};

/// The longest sessionAffinity timeout the API accepts (one day).
const MAX_AFFINITY_TIMEOUT_S: u32 = 86_400;

/// What the whole build needs to know about this node.
pub(crate) struct Ctx<'a> {
    pub node: &'a NodeIdentity,
    pub zone: Option<&'a str>,
}

/// What the Services produce.
#[derive(Default)]
pub(crate) struct Out {
    pub specs: Vec<ServiceSpec>,
    pub health: Vec<HealthCheck>,
    pub reports: Vec<Report>,
}

/// Parses the addresses in `list`, keeping those `keep` accepts; reports the
/// unparsable ones.
fn ips<'s>(
    list: impl IntoIterator<Item = &'s String>,
    what: &str,
    keep: impl Fn(IpAddr) -> bool,
    note: &dyn Fn(String) -> Report,
    reports: &mut Vec<Report>,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for s in list {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) if keep(ip) => {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
            Ok(_) => {}
            Err(_) => reports.push(note(format!("{what} {s:?} is not an IP address: ignored"))),
        }
    }
    out
}

/// Adds the specs (and health check) of one Service.
pub(crate) fn service<'a>(
    key: &ObjKey,
    svc: &Service,
    slices: &[SliceRef<'a>],
    ctx: &Ctx<'_>,
    out: &mut Out,
    eps: &mut Vec<Ep<'a>>,
) {
    let note = |reason: String| Report {
        origin: format!("Service {key}"),
        reason,
    };
    let reports = &mut out.reports;
    if meta_map(&svc.metadata.labels).contains_key(SERVICE_PROXY_NAME_LABEL) {
        return;
    }
    let Some(spec) = svc.spec.as_ref() else {
        reports.push(note("no spec: ignored".into()));
        return;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    match type_ {
        "ExternalName" => return,
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        other => {
            reports.push(note(format!("unknown type {other:?}: ignored")));
            return;
        }
    }

    // VIPs.
    let cluster_ips: &[String] = match spec.cluster_ips.as_deref() {
        Some(list) if !list.is_empty() => list,
        _ => spec.cluster_ip.as_slice(),
    };
    if cluster_ips.first().is_some_and(|ip| ip.as_str() == "None") {
        return; // headless: DNS only
    }
    if cluster_ips.iter().all(|ip| ip.is_empty()) {
        reports.push(note("no clusterIP (not allocated yet?): ignored".into()));
        return;
    }
    let all_cluster = ips(cluster_ips, "clusterIP", |_| true, &note, reports);
    let cluster: Vec<IpAddr> = all_cluster
        .iter()
        .copied()
        .filter(|ip| ctx.node.carries(*ip))
        .collect();
    if cluster.is_empty() {
        if !all_cluster.is_empty() {
            reports.push(note(format!(
                "clusterIPs {all_cluster:?}: no family this node carries (IPv4 {}, IPv6 {}): \
                 ignored",
                ctx.node.ipv4, ctx.node.ipv6
            )));
        }
        return;
    }
    let families = [
        cluster.iter().any(IpAddr::is_ipv4),
        cluster.iter().any(IpAddr::is_ipv6),
    ];
    let of_family = |ip: IpAddr| families[usize::from(ip.is_ipv6())];
    let external = ips(
        spec.external_ips.iter().flatten(),
        "externalIP",
        of_family,
        &note,
        reports,
    );
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[]);
    let lb = ips(
        ingress
            .iter()
            .filter(|i| matches!(i.ip_mode.as_deref(), None | Some("VIP")))
            .filter_map(|i| i.ip.as_ref()),
        "loadBalancer ingress ip",
        of_family,
        &note,
        reports,
    );
    let mut vips: Vec<(IpAddr, VipKind)> = Vec::new();
    for (list, kind) in [
        (&cluster, VipKind::ClusterIp),
        (&external, VipKind::ExternalIp),
        (&lb, VipKind::LoadBalancer),
    ] {
        for &ip in list {
            if !vips.iter().any(|(v, _)| *v == ip) {
                vips.push((ip, kind));
            }
        }
    }
    if type_ == "LoadBalancer"
        && !lb.is_empty()
        && spec
            .load_balancer_source_ranges
            .as_ref()
            .is_some_and(|r| !r.is_empty())
    {
        reports.push(note("loadBalancerSourceRanges are not enforced by twill: traffic to the LoadBalancer IPs is accepted from anywhere".into()));
    }

    // Policies.
    let externally_accessible = type_ == "LoadBalancer"
        || type_ == "NodePort"
        || spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
    let ext_local =
        externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
    let int_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity = match spec.session_affinity.as_deref() {
        None | Some("None") | Some("") => None,
        Some("ClientIP") => Some(affinity_timeout(svc, &note, reports)),
        Some(other) => {
            reports.push(note(format!(
                "unknown sessionAffinity {other:?}: none used"
            )));
            None
        }
    };
    let health_port = if type_ == "LoadBalancer" && ext_local {
        match spec.health_check_node_port.map(u16::try_from) {
            Some(Ok(p)) if p != 0 => Some(p),
            _ => {
                reports.push(note(format!(
                    "externalTrafficPolicy Local without a valid healthCheckNodePort ({:?}): \
                     no health check served",
                    spec.health_check_node_port
                )));
                None
            }
        }
    } else {
        None
    };

    // Ports.
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ports.is_empty() {
        reports.push(note("no ports: ignored".into()));
        return;
    }
    let place = Place {
        node: &ctx.node.name,
        zone: ctx.zone,
    };
    let mut local_ready: [BTreeSet<IpAddr>; 2] = Default::default();
    let mut seen: Vec<(u8, u16, &str)> = Vec::with_capacity(ports.len());
    for p in ports {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        let proto = match protocol {
            "TCP" => proto::TCP,
            "UDP" => proto::UDP,
            "SCTP" => {
                reports.push(note(format!(
                    "port {}: SCTP is not supported by the dataplane: skipped",
                    p.port
                )));
                continue;
            }
            other => {
                reports.push(note(format!(
                    "port {}: unknown protocol {other:?}: skipped",
                    p.port
                )));
                continue;
            }
        };
        let Some(port) = u16::try_from(p.port).ok().filter(|&n| n != 0) else {
            reports.push(note(format!(
                "port {} is not a valid port: skipped",
                p.port
            )));
            continue;
        };
        let port_name = p.name.as_deref().unwrap_or("");
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(pr, po, n)| (*pr == proto && *po == port) || (!n.is_empty() && *n == port_name))
        {
            reports.push(note(format!(
                "port {port}/{protocol} (name {port_name:?}) repeats port {first:?}'s \
                 number or name: skipped"
            )));
            continue;
        }
        seen.push((proto, port, port_name));
        let name = if port_name.is_empty() {
            format!("{key}:{port}/{protocol}")
        } else {
            format!("{key}:{port_name}")
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => match u16::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    reports.push(note(format!(
                        "port {name}: nodePort {n} is not a valid port: none used"
                    )));
                    None
                }
            },
        };
        endpoints::collect(
            slices, port_name, protocol, families, ctx.node, reports, eps,
        );
        for e in eps.iter().filter(|e| e.local && e.ready) {
            local_ready[usize::from(e.ip.is_ipv6())].insert(e.ip);
        }
        let port_external = node_port.is_some() || !external.is_empty() || !lb.is_empty();
        let uses_local = int_local || (ext_local && port_external);
        topology::apply(eps, place, uses_local);
        if eps.len() > MAX_ENDPOINTS_PER_SERVICE {
            let had = eps.len();
            cap(eps);
            reports.push(note(format!(
                "port {name}: {had} endpoints; kept {MAX_ENDPOINTS_PER_SERVICE} \
                 (ready first, then serving-terminating, local first)"
            )));
        }
        out.specs.push(ServiceSpec {
            name,
            proto,
            port,
            vips: vips.clone(),
            node_port,
            ext_local,
            int_local,
            affinity_timeout_s: affinity,
            backends: eps.iter().map(backend).collect(),
        });
    }
    if let Some(port) = health_port {
        out.health.push(HealthCheck {
            port,
            service: key.to_string(),
            local_endpoints: local_ready[0].len().max(local_ready[1].len()) as u32,
        });
    }
}

fn backend(e: &Ep<'_>) -> BackendSpec {
    BackendSpec {
        ip: e.ip,
        port: e.port,
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        local: e.local,
    }
}

/// sessionAffinityConfig.clientIP.timeoutSeconds, defaulted and bounded as the
/// API server does.
fn affinity_timeout(
    svc: &Service,
    note: &dyn Fn(String) -> Report,
    reports: &mut Vec<Report>,
) -> u32 {
    let t = svc
        .spec
        .as_ref()
        .and_then(|s| s.session_affinity_config.as_ref())
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    match t {
        None => DEFAULT_AFFINITY_TIMEOUT_S,
        Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT_S => t as u32,
        Some(t) if t > 0 => {
            reports.push(note(format!(
                "sessionAffinity timeoutSeconds {t} is over {MAX_AFFINITY_TIMEOUT_S}: \
                 {MAX_AFFINITY_TIMEOUT_S} used"
            )));
            MAX_AFFINITY_TIMEOUT_S
        }
        Some(t) => {
            reports.push(note(format!(
                "sessionAffinity timeoutSeconds {t} is not positive: \
                 {DEFAULT_AFFINITY_TIMEOUT_S} used"
            )));
            DEFAULT_AFFINITY_TIMEOUT_S
        }
    }
}

/// Keeps [`MAX_ENDPOINTS_PER_SERVICE`] endpoints: ready first, then
/// serving-terminating, then the rest; local before remote; then by address.
/// The result is sorted by address and port again.
pub(crate) fn cap(eps: &mut Vec<Ep<'_>>) {
    if eps.len() <= MAX_ENDPOINTS_PER_SERVICE {
        return;
    }
    let key = |e: &Ep<'_>| (e.class(), !e.local);
    // Stable: the address order is kept within a class.
    eps.sort_by_key(key);
    eps.truncate(MAX_ENDPOINTS_PER_SERVICE);
    eps.sort_by_key(|e| (e.ip, e.port));
}
