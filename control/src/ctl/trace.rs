//! `twillctl trace --count N [filter]`: arms the file's trace region for
//! the next N frames matching the filter, prints the records as the workers
//! write them (polling the ring every few milliseconds), and disarms when N
//! arrived or the timeout passed. The workers check the trace once per
//! batch, so arming costs the packet path nothing until a frame matches.
//!
//! One trace at a time: arming replaces whatever another twillctl armed.

use std::io::Write;
use std::time::{Duration, Instant};

use dataplane::pipeline::DropReason;
use dataplane::state::shm::{monotonic_ns, Shm, TraceRecord, TraceVerdict};
use serde_json::{json, Value};

use super::filter::Filter;
use super::{port_name, proto_name, write_json, CtlError};

/// A verdict for people.
pub fn verdict(v: TraceVerdict) -> String {
    match v {
        TraceVerdict::Tx(p) => format!("tx port {}", port_name(p)),
        TraceVerdict::Reply => "reply (sent back on its port)".into(),
        TraceVerdict::Pass => "pass (to the kernel)".into(),
        TraceVerdict::Drop(i) => match v.drop_reason() {
            Some(r) => format!("drop {}: {}", r.name(), r.description()),
            None => format!("drop (reason {i}, unknown to this build)"),
        },
        TraceVerdict::Unknown(c) => format!("unknown verdict code {c}"),
    }
}

fn verdict_json(v: TraceVerdict) -> Value {
    match v {
        TraceVerdict::Tx(p) => json!({"verdict": "tx", "port": p}),
        TraceVerdict::Reply => json!({"verdict": "reply"}),
        TraceVerdict::Pass => json!({"verdict": "pass"}),
        TraceVerdict::Drop(i) => json!({"verdict": "drop", "reason_index": i,
            "reason": v.drop_reason().map(DropReason::name)}),
        TraceVerdict::Unknown(c) => json!({"verdict": "unknown", "code": c}),
    }
}

/// One record as a line.
pub fn line(r: &TraceRecord) -> String {
    let what = if r.family == 0 {
        "non-IP frame".to_string()
    } else if r.sport != 0 || r.dport != 0 {
        format!(
            "{} {}:{} -> {}:{}",
            proto_name(r.proto),
            r.src,
            r.sport,
            r.dst,
            r.dport
        )
    } else {
        format!("{} {} -> {}", proto_name(r.proto), r.src, r.dst)
    };
    format!(
        "#{} worker {} in port {}: {what}: {}",
        r.seq,
        r.worker,
        port_name(r.in_port),
        verdict(r.verdict)
    )
}

fn record_json(r: &TraceRecord) -> Value {
    json!({"seq": r.seq, "time_ns": r.time_ns, "worker": r.worker, "in_port": r.in_port,
           "family": r.family, "proto": proto_name(r.proto), "src": r.src, "dst": r.dst,
           "sport": r.sport, "dport": r.dport, "verdict": verdict_json(r.verdict)})
}

/// Disarms the trace when dropped (an early return or an output error
/// must not leave it armed).
struct Armed<'a>(&'a dataplane::state::shm::Trace);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

/// `twillctl trace`.
pub fn trace(
    shm: &Shm,
    filter: &Filter,
    count: u64,
    timeout: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let tr = shm.trace();
    let mut from = tr.head();
    tr.arm(&filter.to_trace(), count, monotonic_ns());
    let armed = Armed(&tr);
    let t0 = Instant::now();
    let mut got: Vec<TraceRecord> = Vec::new();
    if !json {
        writeln!(
            out,
            "tracing {count} frames matching {} for at most {:.1}s",
            describe(filter),
            timeout.as_secs_f64()
        )?;
        out.flush()?;
    }
    while (got.len() as u64) < count {
        let (recs, next) = tr.read_since(from);
        from = next;
        for r in recs {
            if !json {
                writeln!(out, "{}", line(&r))?;
                out.flush()?;
            }
            got.push(r);
        }
        if (got.len() as u64) >= count || t0.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(armed);
    if json {
        let v: Vec<Value> = got.iter().map(record_json).collect();
        return write_json(
            out,
            &json!({"requested": count, "traced": got.len(), "records": v}),
        );
    }
    if (got.len() as u64) < count {
        writeln!(
            out,
            "{} of {count} frames traced before the timeout",
            got.len()
        )?;
    }
    Ok(())
}

fn describe(f: &Filter) -> String {
    let mut v = Vec::new();
    if let Some(ip) = f.ip {
        v.push(format!("ip={ip}"));
    }
    if let Some(p) = f.port {
        v.push(format!("port={p}"));
    }
    if let Some(p) = f.proto {
        v.push(format!("proto={}", proto_name(p)));
    }
    if let Some(p) = f.in_port {
        v.push(format!("in_port={p}"));
    }
    if v.is_empty() {
        "anything".into()
    } else {
        v.join(" ")
    }
}
