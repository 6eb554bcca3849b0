//! `twillctl stats`: each worker's stats block (the pipeline's counters and
//! its per-port packet and byte counts) and their sums; drops by reason
//! with each reason's description (`DropReason` is the single list).
//!
//! Port tx counts are the frames each worker's pipeline sent to that port
//! (transmitted there, or handed to the worker serving it); rx counts the
//! frames received on that port's sockets. Each port is shown with the
//! interface the dataplane named it as (and the pod, for a pod's port), and
//! with the frames received there and dropped, by reason.
//!
//! `stats --services`: the Service directory (stable id, epoch, name) with
//! each Service port's counters summed over workers (see
//! `dataplane::state::shm` `services`); read from the file alone, so it
//! works without a live snapshot.

use std::io::Write;

use dataplane::pipeline::{Counters, DropReason};
use std::collections::BTreeMap;

use dataplane::state::shm::{
    monotonic_ns, PortCounters, PortKind, PortName, ServiceCounts, Shm, WorkerStats,
};
use serde_json::{json, Value};

use super::table::Table;
use super::{age, port_name, write_json, CtlError};

/// The workers' blocks summed.
#[derive(Clone, Debug)]
pub struct Totals {
    pub counters: Counters,
    pub ports: Vec<PortCounters>,
}

/// Sums the blocks of `workers`.
pub fn totals(workers: &[WorkerStats]) -> Totals {
    let mut c = Counters::default();
    let mut ports: Vec<PortCounters> = Vec::new();
    for w in workers {
        add(&mut c, &w.counters);
        if ports.len() < w.ports.len() {
            ports.resize(w.ports.len(), PortCounters::default());
        }
        for (t, p) in ports.iter_mut().zip(&w.ports) {
            *t += *p;
        }
    }
    Totals { counters: c, ports }
}

fn add(a: &mut Counters, b: &Counters) {
    a.rx += b.rx;
    a.tx += b.tx;
    a.reply += b.reply;
    a.pass += b.pass;
    a.dropped += b.dropped;
    for (x, y) in a.drops.iter_mut().zip(b.drops.iter()) {
        *x += *y;
    }
    a.arp_replies += b.arp_replies;
    a.nd_replies += b.nd_replies;
    a.encap += b.encap;
    a.decap += b.decap;
    a.ct_hits += b.ct_hits;
    a.ct_new += b.ct_new;
    a.dnat += b.dnat;
    a.snat += b.snat;
    a.snat_port_retries += b.snat_port_retries;
    a.icmp_errors_sent += b.icmp_errors_sent;
    a.icmp_errors_translated += b.icmp_errors_translated;
    a.frags_stashed += b.frags_stashed;
    a.frags_released += b.frags_released;
}

/// The pipeline counters other than drops, by name.
pub fn events(c: &Counters) -> [(&'static str, u64); 18] {
    [
        ("rx", c.rx),
        ("tx", c.tx),
        ("reply", c.reply),
        ("pass", c.pass),
        ("dropped", c.dropped),
        ("arp_replies", c.arp_replies),
        ("nd_replies", c.nd_replies),
        ("encap", c.encap),
        ("decap", c.decap),
        ("ct_hits", c.ct_hits),
        ("ct_new", c.ct_new),
        ("dnat", c.dnat),
        ("snat", c.snat),
        ("snat_port_retries", c.snat_port_retries),
        ("icmp_errors_sent", c.icmp_errors_sent),
        ("icmp_errors_translated", c.icmp_errors_translated),
        ("frags_stashed", c.frags_stashed),
        ("frags_released", c.frags_released),
    ]
}

fn counters_json(c: &Counters) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in events(c) {
        m.insert(k.into(), v.into());
    }
    let drops: serde_json::Map<String, Value> = c
        .drops_by_reason()
        .map(|(r, n)| (r.name().to_string(), n.into()))
        .collect();
    m.insert("drops".into(), drops.into());
    m.into()
}

/// The ports the dataplane named, by port.
type Names = BTreeMap<usize, PortName>;

fn names(shm: &Shm) -> Names {
    shm.port_names()
        .into_iter()
        .map(|n| (usize::from(n.port), n))
        .collect()
}

/// A port's non-zero drops, by reason name.
fn port_drops(p: &PortCounters) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    DropReason::ALL
        .iter()
        .map(|r| (r.name(), p.drops.get(r.index()).copied().unwrap_or(0)))
        .filter(|&(_, n)| n != 0)
}

/// The interface name shown for port `i` ("-" if the dataplane has not
/// named it).
fn iface(names: &Names, i: usize) -> String {
    names
        .get(&i)
        .map_or_else(|| "-".into(), |n| n.interface.clone())
}

fn ports_json(ports: &[PortCounters], all: bool, names: &Names) -> Vec<Value> {
    ports
        .iter()
        .enumerate()
        .filter(|(i, p)| all || **p != PortCounters::default() || names.contains_key(i))
        .map(|(i, p)| {
            let (interface, kind, pod) = match names.get(&i) {
                Some(n) => match &n.kind {
                    PortKind::Uplink => (Some(n.interface.as_str()), Some("uplink"), None),
                    PortKind::Pod(pod) => {
                        (Some(n.interface.as_str()), Some("pod"), Some(pod.as_str()))
                    }
                },
                None => (None, None, None),
            };
            let drops: serde_json::Map<String, Value> = port_drops(p)
                .map(|(r, n)| (r.to_string(), n.into()))
                .collect();
            json!({"port": i, "interface": interface, "kind": kind, "pod": pod,
                   "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                   "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
                   "dropped": p.dropped(), "drops": drops})
        })
        .collect()
}

/// `twillctl stats`.
pub fn stats(shm: &Shm, all: bool, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let now = monotonic_ns();
    let workers = shm.all_stats();
    let sum = totals(&workers);
    let names = names(shm);
    if json {
        let ws: Vec<Value> = workers
            .iter()
            .map(|w| {
                json!({
                    "worker": w.worker, "pid": w.pid,
                    "updated_age_ns": (w.updated_ns != 0).then(|| now.saturating_sub(w.updated_ns)),
                    "counters": counters_json(&w.counters),
                    "ports": ports_json(&w.ports, all, &names),
                })
            })
            .collect();
        return write_json(
            out,
            &json!({
                "workers": ws,
                "total": {"counters": counters_json(&sum.counters),
                          "ports": ports_json(&sum.ports, all, &names)},
            }),
        );
    }
    let mut t = Table::new(&[
        "WORKER", "PID", "UPDATED", "RX", "TX", "REPLY", "PASS", "DROPPED", "CT_NEW", "ENCAP",
        "DECAP",
    ]);
    let row = |name: String, pid: String, upd: String, c: &Counters| {
        vec![
            name,
            pid,
            upd,
            c.rx.to_string(),
            c.tx.to_string(),
            c.reply.to_string(),
            c.pass.to_string(),
            c.dropped.to_string(),
            c.ct_new.to_string(),
            c.encap.to_string(),
            c.decap.to_string(),
        ]
    };
    for w in &workers {
        t.row(row(
            w.worker.to_string(),
            if w.pid == 0 {
                "-".into()
            } else {
                w.pid.to_string()
            },
            if w.updated_ns == 0 {
                "never".into()
            } else {
                format!("{} ago", age(now.saturating_sub(w.updated_ns)))
            },
            &w.counters,
        ));
    }
    t.row(row(
        "total".into(),
        String::new(),
        String::new(),
        &sum.counters,
    ));
    t.write(out)?;

    writeln!(out)?;
    let mut t = Table::new(&[
        "PORT",
        "INTERFACE",
        "WORKER",
        "RX_PACKETS",
        "RX_BYTES",
        "TX_PACKETS",
        "TX_BYTES",
        "DROPPED",
    ]);
    let zero = PortCounters::default();
    for (i, p) in sum.ports.iter().enumerate() {
        if !all && *p == zero {
            continue;
        }
        for w in &workers {
            let Some(wp) = w.ports.get(i).filter(|wp| all || **wp != zero) else {
                continue;
            };
            t.row(vec![
                port_name(i as u16),
                iface(&names, i),
                w.worker.to_string(),
                wp.rx_packets.to_string(),
                wp.rx_bytes.to_string(),
                wp.tx_packets.to_string(),
                wp.tx_bytes.to_string(),
                wp.dropped().to_string(),
            ]);
        }
        t.row(vec![
            port_name(i as u16),
            iface(&names, i),
            "total".into(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            p.dropped().to_string(),
        ]);
    }
    if t.is_empty() {
        writeln!(out, "no port has counted a frame yet")?;
    } else {
        t.write(out)?;
    }

    // Drops by the interface they came in on (all workers).
    let mut t = Table::new(&["INTERFACE", "POD", "DROP REASON", "COUNT"]);
    for (i, p) in sum.ports.iter().enumerate() {
        let pod = match names.get(&i).map(|n| &n.kind) {
            Some(PortKind::Pod(pod)) => pod.clone(),
            Some(PortKind::Uplink) => "(uplink)".into(),
            None => format!("(port {i})"),
        };
        for (r, n) in port_drops(p) {
            t.row(vec![
                iface(&names, i),
                pod.clone(),
                r.to_string(),
                n.to_string(),
            ]);
        }
    }
    if !t.is_empty() {
        writeln!(out)?;
        t.write(out)?;
    }

    writeln!(out)?;
    let mut t = Table::new(&["DROP REASON", "COUNT", "DESCRIPTION"]);
    for (r, n) in sum.counters.drops_by_reason() {
        if all || n > 0 {
            t.row(vec![
                r.name().to_string(),
                n.to_string(),
                r.description().to_string(),
            ]);
        }
    }
    if t.is_empty() {
        writeln!(out, "no drops")?;
    } else {
        t.write(out)?;
    }

    writeln!(out)?;
    let mut t = Table::new(&["EVENT", "COUNT"]);
    for (k, v) in events(&sum.counters).into_iter().skip(5) {
        if all || v > 0 {
            t.row(vec![k.to_string(), v.to_string()]);
        }
    }
    if !t.is_empty() {
        t.write(out)?;
    }
    Ok(())
}

/// `twillctl stats --services` (`all`: Service ports that counted nothing
/// too).
pub fn services(shm: &Shm, all: bool, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let r = shm.service_report();
    let zero = ServiceCounts::default();
    if json {
        let mut v = serde_json::to_value(&r).map_err(std::io::Error::from)?;
        if !all {
            if let Some(list) = v.get_mut("services").and_then(Value::as_array_mut) {
                list.retain(|s| {
                    ["packets_to", "packets_reply", "connections", "rejects"]
                        .iter()
                        .any(|k| s.get(*k).and_then(Value::as_u64).unwrap_or(0) != 0)
                });
            }
        }
        return write_json(out, &v);
    }
    let mut t = Table::new(&[
        "ID",
        "EPOCH",
        "SERVICE",
        "CONNS",
        "PKTS_TO",
        "BYTES_TO",
        "PKTS_REPLY",
        "BYTES_REPLY",
        "REJECTS",
    ]);
    for s in r.services.iter().filter(|s| all || s.counts != zero) {
        let c = &s.counts;
        t.row(vec![
            s.id.to_string(),
            s.epoch.to_string(),
            s.name.clone(),
            c.connections.to_string(),
            c.packets_to.to_string(),
            c.bytes_to.to_string(),
            c.packets_reply.to_string(),
            c.bytes_reply.to_string(),
            c.rejects.to_string(),
        ]);
    }
    if t.is_empty() {
        writeln!(
            out,
            "no Service has counted a packet yet ({} with an id)",
            r.services.len()
        )?;
    } else {
        t.write(out)?;
    }
    if r.unassigned > 0 || r.full_total > 0 {
        writeln!(
            out,
            "{} Service port(s) without counters now ({} ever): the file has room for {}",
            r.unassigned, r.full_total, r.capacity
        )?;
    }
    Ok(())
}
