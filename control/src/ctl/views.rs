//! `twillctl status`, `services`, `endpoints`, `routes` and `pods`: the
//! file's header and the live snapshot, as tables or JSON.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;

use dataplane::config::fmt_mac;
use dataplane::lb::VipKind;
use dataplane::state::shm::{
    monotonic_ns, pid_alive, Role, ServiceCounts, Shm, LAYOUT_VERSION, READER_ANNOUNCE,
};
use serde_json::{json, Value};

use super::table::Table;
use super::{age, proto_name, snap, write_json, CtlError};

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `twillctl status`.
pub fn status(shm: &Shm, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let now = monotonic_ns();
    let l = *shm.layout();
    let live = shm.live_generation();
    let procs: Vec<(&str, Value)> = [("control", Role::Control), ("dataplane", Role::Dataplane)]
        .into_iter()
        .map(|(name, role)| {
            let p = shm.process(role);
            let alive = p.pid != 0 && pid_alive(p.pid);
            let hb = (p.heartbeat_ns != 0).then(|| now.saturating_sub(p.heartbeat_ns));
            (
                name,
                json!({"pid": p.pid, "alive": alive, "heartbeat_age_ns": hb,
                       "started_ns": p.started_ns}),
            )
        })
        .collect();
    let workers: Vec<Value> = shm
        .announcements()
        .into_iter()
        .map(|a| {
            json!({
                "announcer": if a.index == READER_ANNOUNCE { "reader".to_string() }
                             else { format!("worker {}", a.index) },
                "index": a.index,
                "generation": a.generation,
                "heartbeat_age_ns": (a.heartbeat_ns != 0).then(|| now.saturating_sub(a.heartbeat_ns)),
                "since_age_ns": (a.since_ns != 0).then(|| now.saturating_sub(a.since_ns)),
            })
        })
        .collect();
    let slots: Vec<Value> = shm
        .slots()
        .into_iter()
        .map(|s| {
            json!({"slot": s.slot, "generation": s.generation, "bytes": s.len, "live": s.live,
                   "published_age_ns": (s.published_ns != 0).then(|| now.saturating_sub(s.published_ns))})
        })
        .collect();
    let (ct, ct_err) = match shm.conntrack_view() {
        Ok(t) => {
            let s = t.stats();
            (
                Some(
                    json!({"live": s.live, "capacity": t.capacity(), "inserted": s.inserted,
                            "refused_full": s.refused_full, "evicted_expired": s.evicted_expired,
                            "evicted_unassured": s.evicted_unassured, "reclaimed": s.reclaimed}),
                ),
                None,
            )
        }
        Err(e) => (None, Some(e.to_string())),
    };
    if json {
        let mut p = serde_json::Map::new();
        for (k, v) in procs {
            p.insert(k.into(), v);
        }
        return write_json(
            out,
            &json!({
                "file": shm.path(),
                "layout_version": LAYOUT_VERSION,
                "layout": {"workers": l.workers, "ports": l.ports,
                           "conntrack_capacity": l.conntrack_capacity, "slot_bytes": l.slot_bytes,
                           "slots": l.slots, "trace_records": l.trace_records},
                "generation": live,
                "processes": p,
                "announcements": workers,
                "slots": slots,
                "conntrack": ct,
                "conntrack_error": ct_err,
            }),
        );
    }
    writeln!(out, "file:        {}", shm.path().display())?;
    writeln!(
        out,
        "layout:      version {LAYOUT_VERSION}, {} workers, {} ports, {} flows, {} slots of {} MiB, {} trace records",
        l.workers,
        l.ports,
        l.conntrack_capacity,
        l.slots,
        l.slot_bytes >> 20,
        l.trace_records
    )?;
    writeln!(
        out,
        "generation:  {}",
        if live == 0 {
            "none published".to_string()
        } else {
            live.to_string()
        }
    )?;
    for (name, v) in &procs {
        let pid = v["pid"].as_u64().unwrap_or(0);
        let line = if pid == 0 {
            "never registered".to_string()
        } else {
            format!(
                "pid {pid} ({}), heartbeat {}",
                if v["alive"].as_bool() == Some(true) {
                    "running"
                } else {
                    "not running"
                },
                v["heartbeat_age_ns"]
                    .as_u64()
                    .map_or("never".into(), |a| format!("{} ago", age(a)))
            )
        };
        writeln!(out, "{:<12} {line}", format!("{name}:"))?;
    }
    match (&ct, &ct_err) {
        (Some(c), _) => {
            let live = c["live"].as_u64().unwrap_or(0);
            let cap = c["capacity"].as_u64().unwrap_or(0).max(1);
            writeln!(
                out,
                "conntrack:   {live} / {cap} flows ({:.1} %), {} inserted, {} refused (full)",
                live as f64 * 100.0 / cap as f64,
                c["inserted"],
                c["refused_full"]
            )?;
        }
        (None, Some(e)) => writeln!(out, "conntrack:   unavailable: {e}")?,
        _ => {}
    }
    writeln!(out)?;
    let mut t = Table::new(&["ANNOUNCER", "GENERATION", "HEARTBEAT", "SINCE"]);
    for w in &workers {
        let ago = |k: &str| {
            w[k].as_u64()
                .map_or("-".into(), |a| format!("{} ago", age(a)))
        };
        t.row(vec![
            w["announcer"].as_str().unwrap_or("").to_string(),
            w["generation"].to_string(),
            ago("heartbeat_age_ns"),
            ago("since_age_ns"),
        ]);
    }
    if t.is_empty() {
        writeln!(out, "no worker has announced a generation")?;
    } else {
        t.write(out)?;
    }
    writeln!(out)?;
    let mut t = Table::new(&["SLOT", "GENERATION", "BYTES", "LIVE", "PUBLISHED"]);
    for s in &slots {
        t.row(vec![
            s["slot"].to_string(),
            s["generation"].to_string(),
            s["bytes"].to_string(),
            if s["live"].as_bool() == Some(true) {
                "*".into()
            } else {
                String::new()
            },
            s["published_age_ns"]
                .as_u64()
                .map_or("-".into(), |a| format!("{} ago", age(a))),
        ]);
    }
    t.write(out)?;
    Ok(())
}

fn vip_kind(k: VipKind) -> &'static str {
    match k {
        VipKind::ClusterIp => "cluster",
        VipKind::ExternalIp => "external",
        VipKind::LoadBalancer => "lb",
    }
}

fn addr_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// `twillctl services`: the live snapshot's Service ports, each with its
/// counters from the Service directory (joined by name; `-` for a port that
/// has no counter yet or none at all).
pub fn services(shm: &Shm, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (generation, s) = snap::live(shm)?;
    let counts: HashMap<String, ServiceCounts> = shm
        .service_report()
        .services
        .into_iter()
        .map(|s| (s.name, s.counts))
        .collect();
    if json {
        let v: Vec<Value> = s
            .services
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "protocol": proto_name(s.proto), "port": s.port,
                    "vips": s.vips.iter().map(|(ip, k)| json!({"ip": ip, "kind": vip_kind(*k)})).collect::<Vec<_>>(),
                    "node_port": s.node_port,
                    "external_traffic_local": s.ext_local,
                    "internal_traffic_local": s.int_local,
                    "affinity_timeout_s": s.affinity_timeout_s,
                    "endpoints": s.backends.len(),
                    "ready_endpoints": s.backends.iter().filter(|b| b.ready).count(),
                    "counters": counts.get(&s.name),
                })
            })
            .collect();
        return write_json(out, &json!({"generation": generation, "services": v}));
    }
    let mut t = Table::new(&[
        "SERVICE",
        "PROTO",
        "PORT",
        "VIPS",
        "NODEPORT",
        "POLICY",
        "AFFINITY",
        "READY",
        "ENDPOINTS",
        "CONNS",
        "PKTS TO/REPLY",
        "BYTES TO/REPLY",
        "REJECTS",
    ]);
    for s in &s.services {
        let vips: Vec<String> = s
            .vips
            .iter()
            .map(|(ip, k)| match k {
                VipKind::ClusterIp => ip.to_string(),
                k => format!("{ip} ({})", vip_kind(*k)),
            })
            .collect();
        let mut policy = Vec::new();
        if s.ext_local {
            policy.push("ext=Local");
        }
        if s.int_local {
            policy.push("int=Local");
        }
        let mut row = vec![
            s.name.clone(),
            proto_name(s.proto),
            s.port.to_string(),
            if vips.is_empty() {
                "-".into()
            } else {
                vips.join(",")
            },
            opt(s.node_port),
            if policy.is_empty() {
                "-".into()
            } else {
                policy.join(",")
            },
            s.affinity_timeout_s
                .map_or("-".into(), |t| format!("ClientIP {t}s")),
            s.backends.iter().filter(|b| b.ready).count().to_string(),
            s.backends.len().to_string(),
        ];
        match counts.get(&s.name) {
            Some(c) => row.extend([
                c.connections.to_string(),
                format!("{}/{}", c.packets_to, c.packets_reply),
                format!("{}/{}", c.bytes_to, c.bytes_reply),
                c.rejects.to_string(),
            ]),
            None => row.extend(["-", "-", "-", "-"].map(String::from)),
        }
        t.row(row);
    }
    t.write(out)?;
    Ok(())
}

/// `twillctl endpoints`.
pub fn endpoints(shm: &Shm, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (generation, s) = snap::live(shm)?;
    if json {
        let v: Vec<Value> = s
            .services
            .iter()
            .map(|s| {
                json!({
                    "service": s.name, "protocol": proto_name(s.proto), "port": s.port,
                    "endpoints": s.backends.iter().map(|b| json!({
                        "ip": b.ip, "port": b.port, "ready": b.ready, "serving": b.serving,
                        "terminating": b.terminating, "local": b.local,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return write_json(out, &json!({"generation": generation, "services": v}));
    }
    let mut t = Table::new(&["SERVICE", "PROTO", "ENDPOINT", "CONDITIONS", "LOCAL"]);
    for s in &s.services {
        if s.backends.is_empty() {
            t.row(vec![
                s.name.clone(),
                proto_name(s.proto),
                "<none>".into(),
                String::new(),
                String::new(),
            ]);
        }
        for b in &s.backends {
            let mut c = Vec::new();
            if b.ready {
                c.push("ready");
            }
            if b.serving {
                c.push("serving");
            }
            if b.terminating {
                c.push("terminating");
            }
            t.row(vec![
                s.name.clone(),
                proto_name(s.proto),
                addr_port(b.ip, b.port),
                if c.is_empty() {
                    "-".into()
                } else {
                    c.join(",")
                },
                if b.local { "yes".into() } else { String::new() },
            ]);
        }
    }
    t.write(out)?;
    Ok(())
}

/// One derived route.
struct Route {
    prefix: String,
    kind: &'static str,
    target: String,
    via: String,
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// `twillctl routes`: local pods' host routes, remote nodes' pod CIDRs
/// (through their VTEP) and the remote nodes' own addresses, as the
/// dataplane's tables build them from the snapshot (the node's own
/// addresses and CIDRs come from its config, not the snapshot).
pub fn routes(shm: &Shm, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (generation, s) = snap::live(shm)?;
    let mut rs = Vec::new();
    for p in &s.pods {
        for ip in [p.ipv4.map(IpAddr::V4), p.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            rs.push(Route {
                prefix: host(ip),
                kind: "local pod",
                target: p.name.clone(),
                via: p.interface.clone(),
            });
        }
    }
    for r in &s.remotes {
        let under: Vec<String> = [r.ipv4.map(IpAddr::V4), r.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .map(|ip| ip.to_string())
            .collect();
        let via = format!("vxlan {} vtep {}", under.join(","), fmt_mac(&r.vtep_mac));
        for c in &r.pod_cidrs {
            rs.push(Route {
                prefix: format!("{}/{}", c.addr, c.len),
                kind: "remote pods",
                target: r.name.clone(),
                via: via.clone(),
            });
        }
        for ip in [r.ipv4.map(IpAddr::V4), r.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
        {
            rs.push(Route {
                prefix: host(ip),
                kind: "remote node",
                target: r.name.clone(),
                via: via.clone(),
            });
        }
    }
    if json {
        let v: Vec<Value> = rs
            .iter()
            .map(|r| json!({"prefix": r.prefix, "kind": r.kind, "target": r.target, "via": r.via}))
            .collect();
        return write_json(out, &json!({"generation": generation, "routes": v}));
    }
    let mut t = Table::new(&["PREFIX", "KIND", "TARGET", "VIA"]);
    for r in rs {
        t.row(vec![r.prefix, r.kind.into(), r.target, r.via]);
    }
    t.write(out)?;
    Ok(())
}

/// `twillctl pods`.
pub fn pods(shm: &Shm, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (generation, s) = snap::live(shm)?;
    if json {
        let v: Vec<Value> = s
            .pods
            .iter()
            .map(|p| {
                json!({"name": p.name, "interface": p.interface, "mac": fmt_mac(&p.mac),
                       "ipv4": p.ipv4, "ipv6": p.ipv6, "worker": p.worker})
            })
            .collect();
        return write_json(out, &json!({"generation": generation, "pods": v}));
    }
    let mut t = Table::new(&["POD", "INTERFACE", "MAC", "IPV4", "IPV6", "WORKER"]);
    for p in &s.pods {
        t.row(vec![
            p.name.clone(),
            p.interface.clone(),
            fmt_mac(&p.mac),
            opt(p.ipv4),
            opt(p.ipv6),
            p.worker.map_or("auto".into(), |w| w.to_string()),
        ]);
    }
    t.write(out)?;
    Ok(())
}
