//! Per-worker stats blocks: the pipeline's [`Counters`] and per-port packet
//! and byte counts, one block per worker, written only by that worker with
//! `Relaxed` stores of running totals (no RMW), read by control and twillctl
//! with `Relaxed` loads.
//!
//! Block of worker `w` at `stats_off + w * stats_stride`, in 64-bit words:
//! `[updated_ns, pid, Counters words…, then per port: rx_packets, rx_bytes,
//! tx_packets, tx_bytes, drops per DropReason…]` (the drops of frames
//! received on that port: which interface bad traffic comes in on). Per-Service counters are not here but in the
//! `services` module (under stable ids: a Service's index changes with
//! every generation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::layout::{COUNTER_WORDS, PORT_WORDS, STATS_FIXED_WORDS};
use super::region::Slab;
use super::{Shm, ShmError};
use crate::pipeline::{Counters, DropReason};
use crate::PortId;

/// One port's counts as one worker saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received on the port and dropped, indexed by
    /// [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
}

impl Default for PortCounters {
    // Not derived: `Default` for arrays stops at 32 elements.
    fn default() -> PortCounters {
        PortCounters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortCounters {
    /// Frames received on the port and dropped, all reasons.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, &d| a.wrapping_add(d))
    }

    /// The block's words for this port, in layout order.
    fn to_words(self) -> [u64; PORT_WORDS] {
        let mut w = [0u64; PORT_WORDS];
        w[..4].copy_from_slice(&[
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes,
        ]);
        w[4..].copy_from_slice(&self.drops);
        w
    }

    fn from_words(w: &[AtomicU64]) -> PortCounters {
        let at = |i: usize| w.get(i).map_or(0, |v| v.load(Relaxed));
        PortCounters {
            rx_packets: at(0),
            rx_bytes: at(1),
            tx_packets: at(2),
            tx_bytes: at(3),
            drops: std::array::from_fn(|r| at(4 + r)),
        }
    }
}

impl std::ops::AddAssign for PortCounters {
    fn add_assign(&mut self, o: PortCounters) {
        self.rx_packets = self.rx_packets.wrapping_add(o.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(o.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(o.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(o.tx_bytes);
        for (d, v) in self.drops.iter_mut().zip(o.drops) {
            *d = d.wrapping_add(v);
        }
    }
}

/// A worker's block as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerStats {
    pub worker: usize,
    pub updated_ns: u64,
    pub pid: u32,
    pub counters: Counters,
    /// Indexed by port.
    pub ports: Vec<PortCounters>,
}

fn counters_to_words(c: &Counters) -> [u64; COUNTER_WORDS] {
    // SAFETY: `Counters` is `#[repr(C)]` of u64 fields and u64 arrays only
    // (pipeline/counters.rs), so it has no padding and its size is
    // COUNTER_WORDS * 8 (transmute checks the sizes at compile time).
    unsafe { std::mem::transmute::<Counters, [u64; COUNTER_WORDS]>(*c) }
}

fn counters_from_words(w: [u64; COUNTER_WORDS]) -> Counters {
    // SAFETY: as above; every bit pattern of u64 fields is a valid Counters.
    unsafe { std::mem::transmute::<[u64; COUNTER_WORDS], Counters>(w) }
}

/// A worker's handle on its own block.
pub struct StatsWriter {
    words: Slab<AtomicU64>,
    ports: usize,
}

impl StatsWriter {
    /// Stores the counters' running totals and the update time.
    #[inline]
    pub fn store_counters(&self, c: &Counters, now_ns: u64) {
        let w = &self.words[STATS_FIXED_WORDS..STATS_FIXED_WORDS + COUNTER_WORDS];
        for (d, v) in w.iter().zip(counters_to_words(c)) {
            d.store(v, Relaxed);
        }
        self.words[0].store(now_ns, Relaxed);
    }

    /// Stores port `port`'s running totals (ignored past the file's ports).
    #[inline]
    pub fn store_port(&self, port: PortId, p: &PortCounters) {
        if let Some(w) = self.port_words(port) {
            for (d, v) in w.iter().zip(p.to_words()) {
                d.store(v, Relaxed);
            }
        }
    }

    /// Adds to port `port`'s totals (load + store: the worker is the only
    /// writer, so no RMW is needed).
    #[inline]
    pub fn add_port(&self, port: PortId, p: &PortCounters) {
        if let Some(w) = self.port_words(port) {
            for (d, v) in w.iter().zip(p.to_words()) {
                d.store(d.load(Relaxed).wrapping_add(v), Relaxed);
            }
        }
    }

    #[inline]
    fn port_words(&self, port: PortId) -> Option<&[AtomicU64]> {
        let p = usize::from(port);
        if p >= self.ports {
            return None;
        }
        let at = STATS_FIXED_WORDS + COUNTER_WORDS + p * PORT_WORDS;
        self.words.get(at..at + PORT_WORDS)
    }
}

impl Shm {
    fn stats_words(&self, worker: usize) -> Slab<AtomicU64> {
        let g = &self.inner.geo;
        let off = g.stats_off + g.stats_stride * worker as u64;
        self.words(off, (g.stats_stride / 8) as usize)
    }

    /// Worker `worker`'s writer (its pid recorded, counters zeroed: a
    /// restarted dataplane starts from zero, as a fresh `Counters` does).
    pub fn stats_writer(&self, worker: usize) -> Result<StatsWriter, ShmError> {
        self.check_worker(worker)?;
        let words = self.stats_words(worker);
        for w in words.iter() {
            w.store(0, Relaxed);
        }
        words[1].store(u64::from(std::process::id()), Relaxed);
        Ok(StatsWriter {
            words,
            ports: self.inner.geo.layout.ports as usize,
        })
    }

    /// Worker `worker`'s block; `None` past the file's workers.
    pub fn worker_stats(&self, worker: usize) -> Option<WorkerStats> {
        self.check_worker(worker).ok()?;
        let words = self.stats_words(worker);
        let mut c = [0u64; COUNTER_WORDS];
        for (d, w) in c.iter_mut().zip(&words[STATS_FIXED_WORDS..]) {
            *d = w.load(Relaxed);
        }
        let ports = words[STATS_FIXED_WORDS + COUNTER_WORDS..]
            .chunks_exact(PORT_WORDS)
            .take(self.inner.geo.layout.ports as usize)
            .map(PortCounters::from_words)
            .collect();
        Some(WorkerStats {
            worker,
            updated_ns: words[0].load(Relaxed),
            pid: u32::try_from(words[1].load(Relaxed)).unwrap_or(0),
            counters: counters_from_words(c),
            ports,
        })
    }

    /// Every worker's block.
    pub fn all_stats(&self) -> Vec<WorkerStats> {
        (0..self.inner.geo.layout.workers as usize)
            .filter_map(|w| self.worker_stats(w))
            .collect()
    }
}
