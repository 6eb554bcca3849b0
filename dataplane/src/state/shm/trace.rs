//! `twillctl trace`: the verdicts of the next N frames matching a filter.
//!
//! Control words (16 × u64 at `trace_off`): `0 remaining`, `1 head` (the
//! next record number), `2 armed_ns`, `3 filter flags` (bit 0 proto, 1
//! address, 2 port, 3 input port), `4 proto`, `5 port`, `6 input port`,
//! `7 address family` (4/6), `8..10 address` (16 bytes, IPv4 in the first
//! four). Then a ring of `trace_records` records of 8 words:
//!
//! ```text
//! 0  seq: 2n+1 while record n is written, 2n+2 once written
//! 1  time_ns (CLOCK_MONOTONIC)
//! 2  worker:16 | in_port:16 << 16 | verdict:8 << 32 | family:8 << 40 | proto:8 << 48
//! 3  detail:16 (tx port or drop reason index) | sport:16 << 16 | dport:16 << 32
//! 4,5 source address, 6,7 destination address (16 bytes each, IPv4 first 4)
//! ```
//!
//! Writers: twillctl arms (filter words `Relaxed`, then `remaining` with
//! `Release`); workers read `remaining` once per batch (`Relaxed`: zero is
//! the common case and costs one load), and only when it is non-zero load
//! it with `Acquire` and read the filter. A worker claims a record by a CAS
//! decrement of `remaining` and a `fetch_add` of `head`, then writes it
//! under its sequence word. Readers (twillctl) read records whose sequence
//! is even and unchanged across the read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use super::layout::TRACE_CTL_BYTES;
use super::region::Slab;
use super::Shm;
use crate::pipeline::{DropReason, Verdict};
use crate::PortId;

const REMAINING: usize = 0;
const HEAD: usize = 1;
const ARMED_NS: usize = 2;
const FLAGS: usize = 3;
const PROTO: usize = 4;
const PORT: usize = 5;
const IN_PORT: usize = 6;
const FAMILY: usize = 7;
const ADDR: usize = 8;
const REC_WORDS: usize = 8;

/// Which frames to trace; `None` matches anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    pub proto: Option<u8>,
    /// Source or destination address.
    pub addr: Option<IpAddr>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// The port the frame came in on.
    pub in_port: Option<PortId>,
}

impl TraceFilter {
    /// Whether a frame with these fields matches.
    #[inline]
    pub fn matches(
        &self,
        in_port: PortId,
        proto: u8,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> bool {
        self.in_port.is_none_or(|p| p == in_port)
            && self.proto.is_none_or(|p| p == proto)
            && self.addr.is_none_or(|a| a == src || a == dst)
            && self.port.is_none_or(|p| p == sport || p == dport)
    }
}

/// A traced frame's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceVerdict {
    Tx(PortId),
    Reply,
    Pass,
    /// A [`DropReason::index`].
    Drop(u16),
    /// A code this build does not know.
    Unknown(u8),
}

impl From<Verdict> for TraceVerdict {
    fn from(v: Verdict) -> TraceVerdict {
        match v {
            Verdict::Tx(p) => TraceVerdict::Tx(p),
            Verdict::Reply => TraceVerdict::Reply,
            Verdict::Pass => TraceVerdict::Pass,
            Verdict::Drop(r) => TraceVerdict::Drop(r.index() as u16),
        }
    }
}

impl TraceVerdict {
    fn code(self) -> (u8, u16) {
        match self {
            TraceVerdict::Tx(p) => (0, p),
            TraceVerdict::Reply => (1, 0),
            TraceVerdict::Pass => (2, 0),
            TraceVerdict::Drop(r) => (3, r),
            TraceVerdict::Unknown(c) => (c, 0),
        }
    }

    fn from_code(code: u8, detail: u16) -> TraceVerdict {
        match code {
            0 => TraceVerdict::Tx(detail),
            1 => TraceVerdict::Reply,
            2 => TraceVerdict::Pass,
            3 => TraceVerdict::Drop(detail),
            c => TraceVerdict::Unknown(c),
        }
    }

    /// The drop reason, for a drop this build knows.
    pub fn drop_reason(self) -> Option<DropReason> {
        match self {
            TraceVerdict::Drop(i) => DropReason::ALL.get(usize::from(i)).copied(),
            _ => None,
        }
    }
}

/// One traced frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// Its number (set when read; ignored when written).
    pub seq: u64,
    pub time_ns: u64,
    pub worker: u16,
    pub in_port: PortId,
    pub verdict: TraceVerdict,
    /// IP protocol (0 for a non-IP frame).
    pub proto: u8,
    /// 4 or 6; 0 for a non-IP frame (addresses unspecified).
    pub family: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

fn ip_words(ip: IpAddr) -> (u8, [u64; 2]) {
    let (fam, b) = match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        IpAddr::V6(a) => (6, a.octets()),
    };
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&b[..8]);
    lo.copy_from_slice(&b[8..]);
    (fam, [u64::from_le_bytes(hi), u64::from_le_bytes(lo)])
}

fn ip_from_words(family: u8, w: [u64; 2]) -> IpAddr {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&w[0].to_le_bytes());
    b[8..].copy_from_slice(&w[1].to_le_bytes());
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// The trace region.
pub struct Trace {
    ctl: Slab<AtomicU64>,
    ring: Slab<AtomicU64>,
}

impl Shm {
    /// The trace region (twillctl arms and reads it; workers record).
    pub fn trace(&self) -> Trace {
        let g = &self.inner.geo;
        let n = g.layout.trace_records as usize;
        Trace {
            ctl: self.words(g.trace_off, TRACE_CTL_BYTES / 8),
            ring: self.words(g.trace_off + TRACE_CTL_BYTES as u64, n * REC_WORDS),
        }
    }
}

impl Trace {
    /// Traces the next `count` frames matching `filter` (twillctl).
    pub fn arm(&self, filter: &TraceFilter, count: u64, now_ns: u64) {
        let c = &self.ctl;
        c[REMAINING].store(0, SeqCst);
        let mut flags = 0;
        if let Some(p) = filter.proto {
            flags |= 1;
            c[PROTO].store(u64::from(p), Relaxed);
        }
        if let Some(a) = filter.addr {
            flags |= 2;
            let (fam, w) = ip_words(a);
            c[FAMILY].store(u64::from(fam), Relaxed);
            c[ADDR].store(w[0], Relaxed);
            c[ADDR + 1].store(w[1], Relaxed);
        }
        if let Some(p) = filter.port {
            flags |= 4;
            c[PORT].store(u64::from(p), Relaxed);
        }
        if let Some(p) = filter.in_port {
            flags |= 8;
            c[IN_PORT].store(u64::from(p), Relaxed);
        }
        c[FLAGS].store(flags, Relaxed);
        c[ARMED_NS].store(now_ns, Relaxed);
        c[REMAINING].store(count, Release);
    }

    /// Stops tracing.
    pub fn disarm(&self) {
        self.ctl[REMAINING].store(0, Release);
    }

    /// Frames still to trace: the workers' per-batch check (zero: off).
    #[inline]
    pub fn remaining(&self) -> u64 {
        self.ctl[REMAINING].load(Relaxed)
    }

    /// The armed filter (read after `remaining` was seen non-zero).
    pub fn filter(&self) -> TraceFilter {
        let c = &self.ctl;
        let _ = c[REMAINING].load(Acquire);
        let flags = c[FLAGS].load(Relaxed);
        let fam = c[FAMILY].load(Relaxed) as u8;
        TraceFilter {
            proto: (flags & 1 != 0).then(|| c[PROTO].load(Relaxed) as u8),
            addr: (flags & 2 != 0)
                .then(|| ip_from_words(fam, [c[ADDR].load(Relaxed), c[ADDR + 1].load(Relaxed)])),
            port: (flags & 4 != 0).then(|| c[PORT].load(Relaxed) as u16),
            in_port: (flags & 8 != 0).then(|| c[IN_PORT].load(Relaxed) as PortId),
        }
    }

    /// Records one frame if any of `remaining` is left; false when not.
    pub fn record(&self, r: &TraceRecord) -> bool {
        let rem = &self.ctl[REMAINING];
        let mut cur = rem.load(Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            match rem.compare_exchange_weak(cur, cur - 1, AcqRel, Relaxed) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        let n = self.ctl[HEAD].fetch_add(1, Relaxed);
        let slots = self.ring.len() / REC_WORDS;
        let at = (n % slots as u64) as usize * REC_WORDS;
        let w = &self.ring[at..at + REC_WORDS];
        w[0].store(2 * n + 1, Relaxed);
        fence(Release);
        let (code, detail) = r.verdict.code();
        let (_, s) = ip_words(r.src);
        let (_, d) = ip_words(r.dst);
        w[1].store(r.time_ns, Relaxed);
        w[2].store(
            u64::from(r.worker)
                | u64::from(r.in_port) << 16
                | u64::from(code) << 32
                | u64::from(r.family) << 40
                | u64::from(r.proto) << 48,
            Relaxed,
        );
        w[3].store(
            u64::from(detail) | u64::from(r.sport) << 16 | u64::from(r.dport) << 32,
            Relaxed,
        );
        w[4].store(s[0], Relaxed);
        w[5].store(s[1], Relaxed);
        w[6].store(d[0], Relaxed);
        w[7].store(d[1], Relaxed);
        w[0].store(2 * n + 2, Release);
        true
    }

    /// The number the next record will get.
    pub fn head(&self) -> u64 {
        self.ctl[HEAD].load(Acquire)
    }

    /// Records numbered `from` onwards that are complete and still in the
    /// ring, oldest first; and the number to continue from.
    pub fn read_since(&self, from: u64) -> (Vec<TraceRecord>, u64) {
        let head = self.head();
        let slots = (self.ring.len() / REC_WORDS) as u64;
        let start = from.max(head.saturating_sub(slots));
        let mut out = Vec::new();
        let mut next = start;
        for n in start..head {
            let at = (n % slots) as usize * REC_WORDS;
            let w = &self.ring[at..at + REC_WORDS];
            let s1 = w[0].load(Acquire);
            if s1 != 2 * n + 2 {
                break; // still being written (or overwritten): stop here
            }
            let v: [u64; 7] = std::array::from_fn(|i| w[i + 1].load(Relaxed));
            fence(Acquire);
            if w[0].load(Relaxed) != s1 {
                break;
            }
            let fam = (v[1] >> 40) as u8;
            out.push(TraceRecord {
                seq: n,
                time_ns: v[0],
                worker: v[1] as u16,
                in_port: (v[1] >> 16) as u16,
                verdict: TraceVerdict::from_code((v[1] >> 32) as u8, v[2] as u16),
                family: fam,
                proto: (v[1] >> 48) as u8,
                src: ip_from_words(fam, [v[3], v[4]]),
                dst: ip_from_words(fam, [v[5], v[6]]),
                sport: (v[2] >> 16) as u16,
                dport: (v[2] >> 32) as u16,
            });
            next = n + 1;
        }
        (out, next)
    }
}
