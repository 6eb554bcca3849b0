//! Pod attachments (from the CNI plugin) → the dataplane's pod entries.

use std::net::IpAddr;

use cni::proto::Attachment;
use dataplane::config::{parse_mac, PodSection};

use crate::source::Report;

/// The pods to publish: one per attachment that names a host veth, a MAC and
/// at least one address; the others are reported (a plugin bug, or a state
/// file edited by hand) and left out.
pub fn pods(attachments: &[Attachment]) -> (Vec<PodSection>, Vec<Report>) {
    let mut out = Vec::with_capacity(attachments.len());
    let mut reports = Vec::new();
    for a in attachments {
        let origin = format!("attachment {}/{}", a.container_id, a.ifname);
        let report = |reason: String| Report {
            origin: origin.clone(),
            reason,
        };
        let Some(mac) = parse_mac(&a.mac) else {
            reports.push(report(format!("MAC {:?} does not parse", a.mac)));
            continue;
        };
        if a.host_veth.is_empty() {
            reports.push(report("no host veth".into()));
            continue;
        }
        let (mut ipv4, mut ipv6) = (None, None);
        for cidr in &a.ips {
            let ip = cidr.split('/').next().unwrap_or(cidr);
            match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => ipv4 = ipv4.or(Some(v4)),
                Ok(IpAddr::V6(v6)) => ipv6 = ipv6.or(Some(v6)),
                Err(_) => reports.push(report(format!("address {cidr:?} does not parse"))),
            }
        }
        if ipv4.is_none() && ipv6.is_none() {
            reports.push(report("no address".into()));
            continue;
        }
        let name = match (&a.pod_namespace, &a.pod_name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            _ => a.container_id.chars().take(12).collect(),
        };
        out.push(PodSection {
            name,
            interface: a.host_veth.clone(),
            mac,
            ipv4,
            ipv6,
            worker: None,
        });
    }
    out.sort_by(|a, b| a.interface.cmp(&b.interface));
    (out, reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str, veth: &str, mac: &str, ips: &[&str]) -> Attachment {
        Attachment {
            container_id: id.into(),
            ifname: "eth0".into(),
            network: "twill".into(),
            netns: format!("/var/run/netns/{id}"),
            host_veth: veth.into(),
            mac: mac.into(),
            mtu: 1450,
            ips: ips.iter().map(|s| s.to_string()).collect(),
            pod_namespace: Some("default".into()),
            pod_name: Some(id.into()),
            pod_uid: None,
        }
    }

    #[test]
    fn attachments_become_pods_and_bad_ones_are_reported() {
        let (pods, reports) = pods(&[
            att(
                "b",
                "veth-b",
                "02:00:00:00:00:0b",
                &["10.244.0.5/24", "fd00:244::5/64"],
            ),
            att("a", "veth-a", "02:00:00:00:00:0a", &["10.244.0.4/24"]),
            att("bad-mac", "veth-c", "zz", &["10.244.0.6/24"]),
            att("no-ip", "veth-d", "02:00:00:00:00:0d", &[]),
        ]);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].interface, "veth-a");
        assert_eq!(pods[0].name, "default/a");
        assert_eq!(pods[1].ipv4, Some("10.244.0.5".parse().unwrap()));
        assert_eq!(pods[1].ipv6, Some("fd00:244::5".parse().unwrap()));
        assert_eq!(pods[1].mac, [2, 0, 0, 0, 0, 0xb]);
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports[0].origin.contains("bad-mac"));
        assert!(reports[1].reason.contains("no address"));
    }
}
