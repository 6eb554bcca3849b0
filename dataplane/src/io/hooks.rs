//! A worker's side of the shared-memory file: once per batch it announces
//! the generation of the tables its pipeline uses, beats its heart, stores
//! its running counters into its stats block, and — only while `twillctl
//! trace` has armed the trace — records the verdicts of the frames matching
//! the trace filter.
//!
//! Shape and cost. Everything here runs per batch, never per packet, except
//! two plain adds into a worker-local array (the per-port rx/tx packet and
//! byte counts, whose port varies per frame) and, per dropped frame, one add
//! under its ingress port and reason. The per-batch work is plain
//! `Relaxed` stores on cache lines only this worker writes (its announce line,
//! its stats block: the pipeline's `Counters` and the ports the batch
//! touched), no syscall, no read-modify-write on a shared line. The trace
//! costs one `Relaxed` load per batch while off; while armed, each frame of
//! the batch is parsed (before the pipeline rewrites it) with the wire views
//! and matching frames are recorded after it, with their verdicts.
//!
//! Writers and readers: see `state::shm` (announce lines, stats blocks and
//! the trace ring each document their one writer and their orderings).

use std::net::{IpAddr, Ipv4Addr};

use crate::pipeline::{Counters, DropReason, Verdict, BATCH};
use crate::state::shm::{
    PortCounters, Shm, ShmError, StatsWriter, Trace, TraceFilter, TraceRecord, WorkerSlot,
};
use crate::wire::ethernet::EtherType;
use crate::wire::{ethernet, ipv4, ipv6};
use crate::{proto, PortId};

/// Ports whose counters one batch may touch before the flush stores all.
const TOUCHED: usize = 8;

/// Empty polls between two heartbeats of an idle worker.
pub const IDLE_BEAT_POLLS: u32 = 1024;

/// A frame's addresses and ports as the trace filter sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// 4 or 6; 0 for a frame that is not IP (or not parseable).
    pub family: u8,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    const NONE: Tuple = Tuple {
        family: 0,
        proto: 0,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        sport: 0,
        dport: 0,
    };

    fn matches(&self, f: &TraceFilter, in_port: PortId) -> bool {
        if self.family == 0 && (f.proto.is_some() || f.addr.is_some() || f.port.is_some()) {
            return false;
        }
        f.matches(
            in_port, self.proto, self.src, self.dst, self.sport, self.dport,
        )
    }
}

/// The IP 5-tuple of an Ethernet frame (after one 802.1Q tag), read with
/// the wire views; ports for TCP, UDP and SCTP (0 otherwise, and for
/// non-first fragments). `None` for a frame that is not IP or is malformed.
pub fn frame_tuple(frame: &[u8]) -> Option<Tuple> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let payload = frame.get(eth.header_len()..)?;
    let (family, proto, src, dst, l4) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = ipv4::Packet::new_checked(payload).ok()?;
            let l4: &[u8] = match payload.get(ip.header_len()..usize::from(ip.total_len())) {
                Some(b) if ip.frag_offset() == 0 => b,
                _ => &[],
            };
            (
                4,
                ip.protocol(),
                IpAddr::V4(ip.src_addr()),
                IpAddr::V4(ip.dst_addr()),
                l4,
            )
        }
        EtherType::Ipv6 => {
            let ip = ipv6::Packet::new_checked(payload).ok()?;
            let ul = ip.upper_layer().ok()?;
            let first = ul.frag.is_none_or(|f| f.offset == 0);
            let l4: &[u8] = match payload.get(ul.offset..) {
                Some(b) if first => b,
                _ => &[],
            };
            (
                6,
                ul.protocol,
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                l4,
            )
        }
        _ => return None,
    };
    let (sport, dport) = match proto {
        proto::TCP | proto::UDP | proto::SCTP => crate::wire::ports(l4).unwrap_or((0, 0)),
        _ => (0, 0),
    };
    Some(Tuple {
        family,
        proto,
        src,
        dst,
        sport,
        dport,
    })
}

/// The tuple to trace a frame under: for a VXLAN frame to `vxlan_port`
/// whose inner frame matches the filter, the inner tuple (pod traffic);
/// else the outer one. `None`: the frame does not match.
pub fn trace_tuple(
    frame: &[u8],
    in_port: PortId,
    vxlan_port: u16,
    filter: &TraceFilter,
) -> Option<Tuple> {
    let outer = frame_tuple(frame).unwrap_or(Tuple::NONE);
    if outer.proto == proto::UDP && outer.dport == vxlan_port {
        if let Some(inner) = inner_frame(frame).and_then(frame_tuple) {
            if inner.matches(filter, in_port) {
                return Some(inner);
            }
        }
    }
    outer.matches(filter, in_port).then_some(outer)
}

/// The inner Ethernet frame of a VXLAN-in-UDP frame (no checks beyond
/// lengths: the caller saw UDP to the VXLAN port).
fn inner_frame(frame: &[u8]) -> Option<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let payload = frame.get(eth.header_len()..)?;
    let l4 = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = ipv4::Packet::new_checked(payload).ok()?;
            payload.get(ip.header_len()..usize::from(ip.total_len()))?
        }
        EtherType::Ipv6 => {
            let ip = ipv6::Packet::new_checked(payload).ok()?;
            let ul = ip.upper_layer().ok()?;
            payload.get(ul.offset..40 + usize::from(ip.payload_len()))?
        }
        _ => return None,
    };
    // UDP header (8) + VXLAN header (8).
    l4.get(16..)
}

/// One worker's handles on the shared-memory file (see the module doc).
pub struct ShmHooks {
    slot: WorkerSlot,
    stats: StatsWriter,
    trace: Trace,
    worker: u16,
    /// The published generation of the tables the pipeline uses (0: tables
    /// not from shared memory).
    generation: u64,
    /// Running per-port totals, indexed by port (the file's port count).
    ports: Vec<PortCounters>,
    touched: [PortId; TOUCHED],
    n_touched: usize,
    /// More ports than `TOUCHED` were touched: store them all.
    touched_all: bool,
    /// The current run of tx frames to one port (frames of a batch mostly
    /// go to one port: a run costs a compare and two adds per frame).
    run_port: PortId,
    run_packets: u64,
    run_bytes: u64,
    /// Frames of the current batch to trace: (index in batch, tuple).
    pending: Vec<(u8, Tuple)>,
}

impl ShmHooks {
    /// Worker `worker`'s hooks: its announce line, its stats block (zeroed:
    /// a restarted worker counts from zero) and the trace region.
    pub fn new(shm: &Shm, worker: usize) -> Result<ShmHooks, ShmError> {
        Ok(ShmHooks {
            slot: shm.worker_slot(worker)?,
            stats: shm.stats_writer(worker)?,
            trace: shm.trace(),
            worker: worker as u16,
            generation: 0,
            ports: vec![PortCounters::default(); shm.layout().ports as usize],
            touched: [0; TOUCHED],
            n_touched: 0,
            touched_all: false,
            run_port: 0,
            run_packets: 0,
            run_bytes: 0,
            pending: Vec::with_capacity(BATCH),
        })
    }

    pub fn worker(&self) -> usize {
        usize::from(self.worker)
    }

    /// The generation announced.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The pipeline switched to tables built from published generation
    /// `generation`: announced at once (the publisher may reuse the old
    /// generation's slot sooner).
    pub fn set_generation(&mut self, generation: u64, now_ns: u64) {
        self.generation = generation;
        self.slot.announce(generation, now_ns);
    }

    /// Per-port running totals kept by this worker (indexed by port).
    pub fn port_counters(&self) -> &[PortCounters] {
        &self.ports
    }

    #[inline]
    fn touch(&mut self, port: PortId) {
        let n = self.n_touched;
        if self.touched[..n].contains(&port) {
            return;
        }
        if n < TOUCHED {
            self.touched[n] = port;
            self.n_touched = n + 1;
        } else {
            self.touched_all = true;
        }
    }

    /// A batch of `packets` frames, `bytes` in all, received on `port`.
    #[inline]
    pub fn count_rx(&mut self, port: PortId, packets: u64, bytes: u64) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            p.rx_packets += packets;
            p.rx_bytes += bytes;
            self.touch(port);
        }
    }

    /// One frame received on `port` dropped for `reason` (a plain add into
    /// the worker-local totals; stored with the port's other words at the
    /// next flush).
    #[inline]
    pub fn count_drop(&mut self, port: PortId, reason: DropReason) {
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            if let Some(d) = p.drops.get_mut(reason.index()) {
                *d += 1;
            }
            self.touch(port);
        }
    }

    /// One frame of `bytes` sent on `port` (staged there or handed to the
    /// worker serving it).
    #[inline]
    pub fn count_tx(&mut self, port: PortId, bytes: u64) {
        if port == self.run_port {
            self.run_packets += 1;
            self.run_bytes += bytes;
        } else {
            self.end_run();
            self.run_port = port;
            self.run_packets = 1;
            self.run_bytes = bytes;
        }
    }

    /// Adds the current tx run to its port's totals.
    #[inline]
    fn end_run(&mut self) {
        if self.run_packets == 0 {
            return;
        }
        let port = self.run_port;
        if let Some(p) = self.ports.get_mut(usize::from(port)) {
            p.tx_packets += self.run_packets;
            p.tx_bytes += self.run_bytes;
            self.touch(port);
        }
        self.run_packets = 0;
        self.run_bytes = 0;
    }

    /// Before the pipeline runs a batch: whether the trace is armed (one
    /// `Relaxed` load). When it is, the caller passes the batch's frames as
    /// received to [`ShmHooks::note_frames`].
    #[inline]
    pub fn trace_armed(&mut self) -> bool {
        self.pending.clear();
        self.trace.remaining() != 0
    }

    /// Notes which frames of a batch received on `in_port` match the armed
    /// trace filter (their tuples read before the pipeline rewrites them).
    #[cold]
    pub fn note_frames<'a>(
        &mut self,
        in_port: PortId,
        vxlan_port: u16,
        frames: impl Iterator<Item = &'a [u8]>,
    ) {
        let filter = self.trace.filter();
        for (i, f) in frames.take(BATCH).enumerate() {
            if let Some(t) = trace_tuple(f, in_port, vxlan_port, &filter) {
                self.pending.push((i as u8, t));
            }
        }
    }

    /// After the pipeline ran the batch: records the noted frames with their
    /// verdicts (until the armed count runs out).
    #[inline]
    pub fn after_batch(&mut self, in_port: PortId, verdicts: &[Verdict], now_ns: u64) {
        if !self.pending.is_empty() {
            self.record_pending(in_port, verdicts, now_ns);
        }
    }

    #[cold]
    fn record_pending(&mut self, in_port: PortId, verdicts: &[Verdict], now_ns: u64) {
        for &(i, t) in &self.pending {
            let Some(&v) = verdicts.get(usize::from(i)) else {
                continue;
            };
            let rec = TraceRecord {
                seq: 0,
                time_ns: now_ns,
                worker: self.worker,
                in_port,
                verdict: v.into(),
                proto: t.proto,
                family: t.family,
                src: t.src,
                dst: t.dst,
                sport: t.sport,
                dport: t.dport,
            };
            if !self.trace.record(&rec) {
                break;
            }
        }
        self.pending.clear();
    }

    /// End of a poll that did work: announce + heartbeat, the pipeline's
    /// counters and the touched ports into the stats block.
    #[inline]
    pub fn flush(&mut self, counters: &Counters, now_ns: u64) {
        self.end_run();
        self.slot.announce(self.generation, now_ns);
        self.stats.store_counters(counters, now_ns);
        if self.touched_all {
            for (port, p) in self.ports.iter().enumerate() {
                self.stats.store_port(port as PortId, p);
            }
        } else {
            for &port in &self.touched[..self.n_touched] {
                if let Some(p) = self.ports.get(usize::from(port)) {
                    self.stats.store_port(port, p);
                }
            }
        }
        self.n_touched = 0;
        self.touched_all = false;
    }

    /// An idle worker's heartbeat (and announce: tables may have changed
    /// with no traffic).
    pub fn idle_beat(&mut self, now_ns: u64) {
        self.slot.announce(self.generation, now_ns);
    }

    /// The worker stops: it uses no generation any more.
    pub fn clear(&self) {
        self.slot.clear();
    }
}

#[cfg(test)]
mod tests;
