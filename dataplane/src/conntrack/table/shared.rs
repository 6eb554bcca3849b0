//! The flow table laid over a region of the node's shared-memory file, so
//! established flows survive a dataplane restart.
//!
//! The region is the table's three parts back to back: the [`Header`] (the
//! stored geometry, the free-list head, counters, sweep cursors), the entries
//! and the index ([`SharedLayout`]). `state::shm` maps the file and hands the
//! parts over as [`SharedParts`]; this file decides what they hold:
//!
//! - a region whose stored magic is 0 was never used: it is initialised as
//!   [`Table::new`] would, and the magic written last (`Release`);
//! - otherwise the stored capacity and bucket count must equal this
//!   geometry's (else [`CtOpenError::Geometry`]), and the writer
//!   ([`Table::open_shared`], the restarted dataplane, before any worker
//!   runs) recovers the table: a process killed mid-operation may have left
//!   an entry half-written (odd version), `INSERTING` or `DYING`, a pending
//!   index slot, a raised overflow count or an entry popped and never used.
//!   Recovery keeps every `LIVE` entry with a settled version, frees the rest,
//!   rebuilds the index from the kept entries (the same claim protocol as an
//!   insert) and the free list from the freed ones, and recounts `live`.
//!   It needs exclusive access: no other process may write the table while
//!   it runs (the dataplane is the table's only writing process).
//! - a reader (`twillctl`) uses [`Table::view_shared`]: checks, no writes.
//!
//! Timestamps are ticks of CLOCK_MONOTONIC nanoseconds, which keep counting
//! across a process restart on the same boot, so idle times stay right. A
//! reboot clears `/dev/shm`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use super::{
    key_from_words, load5, Bucket, Claim, Dir, Entry, Geometry, Header, Table, Word, BUCKET,
    ENTRY_BYTES, MAX_CAPACITY,
};
use crate::conntrack::state::{Timeouts, FREE, LIVE};
use crate::state::shm::region::{Slab, Unit};

/// "TWILLCT1": a region holding an initialised table.
const CT_MAGIC: u64 = u64::from_le_bytes(*b"TWILLCT1");

/// The geometry as stored in the region (atomics: another process may read
/// it while this one writes it at initialisation).
#[repr(C, align(64))]
pub(super) struct Stored {
    magic: AtomicU64,
    capacity: AtomicU32,
    buckets: AtomicU32,
    probe: AtomicU32,
    timeout_ticks: [AtomicU32; 16],
}

/// Where a table's parts sit in its region, in bytes from the region start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedLayout {
    pub capacity: usize,
    pub buckets: usize,
    pub entries_off: usize,
    pub index_off: usize,
    /// Bytes of the whole region.
    pub bytes: usize,
}

/// The three parts of a table in a mapping, made by `state::shm`.
pub struct SharedParts {
    pub header: Unit<Header>,
    pub entries: Slab<Entry>,
    pub index: Slab<Bucket>,
}

/// What [`Table::open_shared`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// An unused region, initialised empty.
    Fresh,
    /// An existing table: `kept` flows recovered, `dropped` entries freed
    /// (half-written, being inserted or removed, or not re-indexable).
    Recovered { kept: usize, dropped: usize },
}

/// Why a shared region cannot be used as a table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CtOpenError {
    #[error(
        "conntrack region holds a table of {stored_capacity} flows / {stored_buckets} buckets, \
         this layout wants {capacity} / {buckets}"
    )]
    Geometry {
        stored_capacity: u64,
        stored_buckets: u64,
        capacity: usize,
        buckets: usize,
    },
    #[error("conntrack region is not initialised (no dataplane has opened it yet)")]
    Uninitialised,
    #[error("conntrack region parts do not match the layout (a bug in the caller)")]
    Parts,
}

impl Table {
    /// Where the parts of a `capacity`-flow table sit in a shared region:
    /// the header, then entries, then the index, each 64-byte aligned.
    pub fn shared_layout(capacity: usize) -> SharedLayout {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let geo = Geometry::new(capacity, &Timeouts::default());
        let align = |x: usize| x.div_ceil(64) * 64;
        let entries_off = align(std::mem::size_of::<Header>());
        let index_off = align(entries_off + capacity * ENTRY_BYTES);
        let bytes = index_off + geo.buckets as usize * BUCKET * 8;
        SharedLayout {
            capacity,
            buckets: geo.buckets as usize,
            entries_off,
            index_off,
            bytes,
        }
    }

    /// The table in `parts` for the dataplane (the writer): initialised if
    /// the region is unused, else checked and recovered (see the module
    /// doc; exclusive access required). `timeouts` apply from now on.
    pub fn open_shared(
        parts: SharedParts,
        timeouts: Timeouts,
    ) -> Result<(Table, Opened), CtOpenError> {
        let t = Table::from_parts(parts, &timeouts)?;
        if t.hdr.stored.magic.load(Acquire) != CT_MAGIC {
            t.init_fresh();
            t.hdr.stored.magic.store(CT_MAGIC, Release);
            return Ok((t, Opened::Fresh));
        }
        t.check_stored()?;
        t.store_geometry();
        let (kept, dropped) = t.recover();
        Ok((t, Opened::Recovered { kept, dropped }))
    }

    /// The table in `parts` for a reader that never writes it (`twillctl`):
    /// checked, not recovered; the stored timeouts apply.
    pub fn view_shared(parts: SharedParts) -> Result<Table, CtOpenError> {
        let mut t = Table::from_parts(parts, &Timeouts::default())?;
        if t.hdr.stored.magic.load(Acquire) != CT_MAGIC {
            return Err(CtOpenError::Uninitialised);
        }
        t.check_stored()?;
        for (dst, src) in t
            .geo
            .timeout_ticks
            .iter_mut()
            .zip(&t.hdr.stored.timeout_ticks)
        {
            *dst = src.load(Relaxed);
        }
        Ok(t)
    }

    /// Whether the table lives in shared memory.
    pub fn is_shared(&self) -> bool {
        self.hdr.is_shared()
    }

    fn from_parts(parts: SharedParts, timeouts: &Timeouts) -> Result<Table, CtOpenError> {
        let capacity = parts.entries.len();
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(CtOpenError::Parts);
        }
        let geo = Geometry::new(capacity, timeouts);
        if parts.index.len() != geo.buckets as usize {
            return Err(CtOpenError::Parts);
        }
        Ok(Table {
            geo,
            hdr: parts.header,
            entries: parts.entries,
            index: parts.index,
        })
    }

    fn check_stored(&self) -> Result<(), CtOpenError> {
        let s = &self.hdr.stored;
        let (cap, buckets) = (s.capacity.load(Relaxed), s.buckets.load(Relaxed));
        if cap != self.geo.capacity || buckets != self.geo.buckets {
            return Err(CtOpenError::Geometry {
                stored_capacity: u64::from(cap),
                stored_buckets: u64::from(buckets),
                capacity: self.geo.capacity as usize,
                buckets: self.geo.buckets as usize,
            });
        }
        Ok(())
    }

    /// Writes the geometry into the header (for readers and reopeners).
    pub(super) fn store_geometry(&self) {
        let s = &self.hdr.stored;
        s.capacity.store(self.geo.capacity, Relaxed);
        s.buckets.store(self.geo.buckets, Relaxed);
        s.probe.store(self.geo.probe, Relaxed);
        for (d, v) in s.timeout_ticks.iter().zip(self.geo.timeout_ticks) {
            d.store(v, Relaxed);
        }
    }

    /// Rebuilds the index, the free list and the live count from the
    /// entries (exclusive access). Returns (kept, dropped).
    fn recover(&self) -> (usize, usize) {
        for b in self.index.iter() {
            for w in &b.0 {
                w.store(0, Relaxed);
            }
        }
        let (mut kept, mut dropped) = (0usize, 0usize);
        let mut free: Vec<u32> = Vec::new();
        for (id, e) in self.entries.iter().enumerate() {
            let id = id as u32;
            let seq = e.seq.load(Relaxed);
            let word = Word(e.state.load(Relaxed));
            let keep = seq & 1 == 0 && word.life() == LIVE && self.reindex(id, e);
            if keep {
                kept += 1;
                continue;
            }
            if word.life() != FREE || seq & 1 == 1 {
                dropped += 1;
            }
            // Settle the version (even, and different from any a reader held).
            e.seq.store((seq | 1).wrapping_add(1), Relaxed);
            e.state.store(FREE, Relaxed);
            free.push(id);
        }
        // Free list in id order: 0 is the first popped.
        for w in free.windows(2) {
            self.entries[w[0] as usize].user.store(w[1] + 1, Relaxed);
        }
        if let Some(&last) = free.last() {
            self.entries[last as usize].user.store(0, Relaxed);
        }
        let tag = (self.hdr.free.0.load(Relaxed) >> 32).wrapping_add(1) << 32;
        let head = free.first().map_or(0, |&id| u64::from(id) + 1);
        self.hdr.free.0.store(tag | head, Relaxed);
        self.hdr.counters.live.store(kept as u64, Relaxed);
        std::sync::atomic::fence(SeqCst);
        (kept, dropped)
    }

    /// Puts a kept entry's one or two slots back in the index; false (and
    /// nothing left in the index) if a slot cannot be claimed (a duplicate
    /// key, or the probe range full: only in a damaged table).
    fn reindex(&self, id: u32, e: &Entry) -> bool {
        let orig = key_from_words(&load5(&e.tuple[0]));
        let reply = key_from_words(&load5(&e.tuple[1]));
        if !matches!(self.claim(&orig, id, Dir::Orig), Claim::Won) {
            return false;
        }
        if reply != orig && !matches!(self.claim(&reply, id, Dir::Reply), Claim::Won) {
            self.unlink(&orig, id, Dir::Orig);
            return false;
        }
        true
    }
}
