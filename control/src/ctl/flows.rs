//! `twillctl conntrack [filter]`: the live flows of the conntrack table in
//! the file, read through `Shm::conntrack_view` (a read-only view: this
//! process never writes the table) and `Table::iter_live`, which copies each
//! entry under its sequence check, so a flow being inserted or removed
//! meanwhile is skipped rather than shown torn.

use std::io::Write;
use std::net::IpAddr;

use dataplane::conntrack::{FlowKey, FlowSnapshot};
use dataplane::state::shm::{monotonic_ns, Shm};
use serde_json::{json, Value};

use super::filter::Filter;
use super::table::Table;
use super::{age, proto_name, write_json, CtlError};

fn ep(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn tuple(k: &FlowKey) -> String {
    format!("{} -> {}", ep(k.src_ip(), k.sport), ep(k.dst_ip(), k.dport))
}

fn key_json(k: &FlowKey) -> Value {
    json!({"src": k.src_ip(), "dst": k.dst_ip(), "sport": k.sport, "dport": k.dport,
           "proto": proto_name(k.proto)})
}

/// What the flow's NAT does, for people: the translated destination
/// (DNAT) and source (SNAT), read from the reply tuple.
fn nat(f: &FlowSnapshot) -> String {
    let x = f.reply.swap();
    let mut v = Vec::new();
    if x.dst != f.orig.dst || x.dport != f.orig.dport {
        v.push(format!("dnat {}", ep(x.dst_ip(), x.dport)));
    }
    if x.src != f.orig.src || x.sport != f.orig.sport {
        v.push(format!("snat {}", ep(x.src_ip(), x.sport)));
    }
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// `twillctl conntrack`.
pub fn conntrack(
    shm: &Shm,
    filter: &Filter,
    limit: usize,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let table = shm.conntrack_view()?;
    let now = monotonic_ns();
    let mut flows: Vec<FlowSnapshot> = Vec::new();
    let mut matched = 0usize;
    for f in table.iter_live(now).filter(|f| filter.matches_flow(f)) {
        matched += 1;
        if flows.len() < limit {
            flows.push(f);
        }
    }
    let stats = table.stats();
    if json {
        let v: Vec<Value> = flows
            .iter()
            .map(|f| {
                json!({"id": f.id, "proto": proto_name(f.orig.proto),
                       "state": format!("{:?}", f.state), "assured": f.assured,
                       "idle_ns": f.idle_ns, "orig": key_json(&f.orig), "reply": key_json(&f.reply)})
            })
            .collect();
        return write_json(
            out,
            &json!({"live": stats.live, "capacity": table.capacity(), "matched": matched,
                    "shown": flows.len(), "flows": v}),
        );
    }
    let mut t = Table::new(&["ID", "PROTO", "STATE", "ORIGINAL", "NAT", "IDLE"]);
    for f in &flows {
        let state = if f.assured {
            format!("{:?} (assured)", f.state)
        } else {
            format!("{:?}", f.state)
        };
        t.row(vec![
            f.id.to_string(),
            proto_name(f.orig.proto),
            state,
            tuple(&f.orig),
            nat(f),
            age(f.idle_ns),
        ]);
    }
    t.write(out)?;
    writeln!(
        out,
        "{} shown, {matched} matching, {} live of {} capacity",
        flows.len(),
        stats.live,
        table.capacity()
    )?;
    Ok(())
}
