//! Publishing snapshots (control's [`Publisher`]), reading them (the
//! dataplane's [`Reader`]) and announcing generations ([`WorkerSlot`]); the
//! epoch protocol and its memory ordering are in the parent module's doc.

use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::*;

use super::layout::{live_parts, live_word, READER_ANNOUNCE};
use super::{pid_alive, Shm, ShmError};
use crate::state::snapshot::{DecodeError, Snapshot, SnapshotRef};

/// A checksum of snapshot bytes: four lanes of multiply-xorshift over
/// little-endian words, folded with the length. For detecting a damaged
/// slot, not an adversary; about 8 bytes per cycle.
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [
        0x243f_6a88_85a3_08d3u64,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    ];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&c[i * 8..i * 8 + 8]);
            let v = u64::from_le_bytes(w);
            *lane = (*lane ^ v).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut tail = [0u8; 32];
    let rest = chunks.remainder();
    tail[..rest.len()].copy_from_slice(rest);
    for (i, lane) in lanes.iter_mut().enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&tail[i * 8..i * 8 + 8]);
        *lane = (*lane ^ u64::from_le_bytes(w))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    let mut h = bytes.len() as u64;
    for lane in lanes {
        h = (h ^ lane).wrapping_mul(K);
        h ^= h >> 32;
    }
    h
}

/// What [`Publisher::publish`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub generation: u64,
    pub slot: usize,
    pub bytes: usize,
}

/// Why a snapshot was not published (the live one stays).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("snapshot is {bytes} bytes; a slot holds {slot_bytes} (raise [shm] slot_bytes)")]
    TooLarge { bytes: usize, slot_bytes: u64 },
    #[error("cannot back {bytes} bytes of slot {slot} with memory: {error} (is the tmpfs full?)")]
    NoSpace {
        slot: usize,
        bytes: usize,
        error: String,
    },
    #[error(
        "no free slot: live generation {live}, and every other slot holds a generation still \
         announced (announcer, generation): {held:?}; try again once workers move on"
    )]
    NoFreeSlot { live: u64, held: Vec<(usize, u64)> },
}

/// Why [`Reader::poll`] returned no snapshot (the caller keeps its tables).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("live word names slot {slot}, the file has {slots}")]
    BadSlot { slot: usize, slots: u32 },
    #[error("slot {slot} holds generation {found}, the live word says {live}")]
    SlotGeneration { slot: usize, found: u64, live: u64 },
    #[error("slot {slot} says {len} bytes, a slot holds {max}")]
    BadLength { slot: usize, len: u64, max: u64 },
    #[error("slot {slot} (generation {generation}) fails its checksum: damaged")]
    Checksum { slot: usize, generation: u64 },
    #[error("the live generation kept moving while reading; try again")]
    Busy,
    #[error("reading slot {slot}: {error}")]
    Io { slot: usize, error: String },
    #[error("generation {generation}: {source}")]
    Decode {
        generation: u64,
        source: DecodeError,
    },
}

/// How often [`Shm::peek_live`] retries a slot rewritten under it.
const PEEK_ATTEMPTS: usize = 8;

impl Shm {
    /// The live (generation, snapshot) read without announcing, for tools
    /// (twillctl): an announce line has one writer, and the reader's belongs
    /// to the dataplane. Read as a seqlock: the live slot's descriptor, its
    /// bytes through `pread` (the publisher may be rewriting the slot: no
    /// racing copy out of the mapping), the descriptor again. The publisher
    /// zeroes a slot's generation before rewriting it and generations never
    /// repeat, so an unchanged generation means the copy is whole; the
    /// checksum and the decoder check the bytes besides. `Ok(None)`: nothing
    /// published yet.
    pub fn peek_live(&self) -> Result<Option<(u64, Snapshot)>, ReadError> {
        let g = self.inner.geo;
        let mut last = ReadError::Busy;
        for attempt in 0..PEEK_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let (generation, slot) = live_parts(self.header().live.0.load(Acquire));
            if generation == 0 {
                return Ok(None);
            }
            if slot >= g.layout.slots as usize {
                return Err(ReadError::BadSlot {
                    slot,
                    slots: g.layout.slots,
                });
            }
            let d = &self.header().slots[slot];
            let found = d.generation.load(Acquire);
            if found != generation {
                last = ReadError::SlotGeneration {
                    slot,
                    found,
                    live: generation,
                };
                continue;
            }
            let len = d.len.load(Relaxed);
            let sum = d.checksum.load(Relaxed);
            if len > g.layout.slot_bytes {
                return Err(ReadError::BadLength {
                    slot,
                    len,
                    max: g.layout.slot_bytes,
                });
            }
            let mut buf = vec![0u8; len as usize];
            self.inner
                .file
                .read_exact_at(&mut buf, g.slot_off(slot))
                .map_err(|e| ReadError::Io {
                    slot,
                    error: e.to_string(),
                })?;
            if d.generation.load(Acquire) != generation {
                last = ReadError::Busy;
                continue;
            }
            if checksum(&buf) != sum {
                return Err(ReadError::Checksum { slot, generation });
            }
            let snap = Snapshot::decode(&buf)
                .map_err(|source| ReadError::Decode { generation, source })?;
            return Ok(Some((generation, snap)));
        }
        Err(last)
    }
}

/// One slot's descriptor, for `twillctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot: usize,
    pub generation: u64,
    pub len: u64,
    pub published_ns: u64,
    pub live: bool,
}

/// One announce line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceInfo {
    /// Worker index, or [`super::layout::READER_ANNOUNCE`] for the reader.
    pub index: usize,
    pub generation: u64,
    pub heartbeat_ns: u64,
    pub since_ns: u64,
}

impl Shm {
    /// Every slot's descriptor.
    pub fn slots(&self) -> Vec<SlotInfo> {
        let (_, live_slot) = live_parts(self.header().live.0.load(Acquire));
        let live_gen = self.live_generation();
        self.header()
            .slots
            .iter()
            .take(self.inner.geo.layout.slots as usize)
            .enumerate()
            .map(|(i, d)| {
                let generation = d.generation.load(Acquire);
                SlotInfo {
                    slot: i,
                    generation,
                    len: d.len.load(Relaxed),
                    published_ns: d.published_ns.load(Relaxed),
                    live: live_gen != 0 && i == live_slot && generation == live_gen,
                }
            })
            .collect()
    }

    /// The announce lines in use (generation or heartbeat set): workers
    /// `0..workers`, then the reader's.
    pub fn announcements(&self) -> Vec<AnnounceInfo> {
        let h = self.header();
        (0..self.inner.geo.layout.workers as usize)
            .chain(std::iter::once(READER_ANNOUNCE))
            .filter_map(|i| {
                let a = &h.announce[i];
                let info = AnnounceInfo {
                    index: i,
                    generation: a.generation.load(SeqCst),
                    heartbeat_ns: a.heartbeat_ns.load(Relaxed),
                    since_ns: a.since_ns.load(Relaxed),
                };
                (info.generation != 0 || info.heartbeat_ns != 0).then_some(info)
            })
            .collect()
    }

    /// The announce line of worker `index`, for that worker only.
    pub fn worker_slot(&self, index: usize) -> Result<WorkerSlot, ShmError> {
        self.check_worker(index)?;
        Ok(WorkerSlot {
            shm: self.clone(),
            index,
        })
    }

    /// Clears every announce line (the dataplane at start, before its
    /// workers run: the lines of a previous run are stale).
    pub fn clear_announcements(&self) {
        for a in &self.header().announce {
            a.generation.store(0, SeqCst);
            a.heartbeat_ns.store(0, Relaxed);
            a.since_ns.store(0, Relaxed);
        }
    }
}

/// A worker's announce line (one writer: that worker).
pub struct WorkerSlot {
    shm: Shm,
    index: usize,
}

impl WorkerSlot {
    /// Says "I use `generation` now" with a heartbeat: two stores on the
    /// worker's own cache line (a third when the generation changes). Cheap
    /// enough for every batch.
    #[inline]
    pub fn announce(&self, generation: u64, now_ns: u64) {
        let a = &self.shm.header().announce[self.index];
        if a.generation.load(Relaxed) != generation {
            a.since_ns.store(now_ns, Relaxed);
            a.generation.store(generation, Release);
        }
        a.heartbeat_ns.store(now_ns, Relaxed);
    }

    /// The heartbeat alone (an idle worker).
    #[inline]
    pub fn heartbeat(&self, now_ns: u64) {
        self.shm.header().announce[self.index]
            .heartbeat_ns
            .store(now_ns, Relaxed);
    }

    /// Uses no generation any more (a worker that stops).
    pub fn clear(&self) {
        let a = &self.shm.header().announce[self.index];
        a.generation.store(0, Release);
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

/// Control's side: writes snapshots into free slots and publishes them.
pub struct Publisher {
    shm: Shm,
    buf: Vec<u8>,
    stale_ns: u64,
}

impl Publisher {
    /// Announcements with a heartbeat older than this (and no live
    /// dataplane pid) are ignored.
    pub const DEFAULT_STALE_NS: u64 = 2_000_000_000;

    pub fn new(shm: &Shm) -> Publisher {
        Publisher {
            shm: shm.clone(),
            buf: Vec::new(),
            stale_ns: Publisher::DEFAULT_STALE_NS,
        }
    }

    /// Sets the heartbeat age past which an announcement stops counting.
    pub fn stale_after(mut self, ns: u64) -> Publisher {
        self.stale_ns = ns;
        self
    }

    /// Encodes `snap` and publishes it as the next generation.
    pub fn publish(&mut self, snap: &Snapshot, now_ns: u64) -> Result<Published, PublishError> {
        self.publish_parts(snap.parts(), now_ns)
    }

    /// [`publish`](Self::publish) from borrowed parts.
    pub fn publish_parts(
        &mut self,
        snap: SnapshotRef<'_>,
        now_ns: u64,
    ) -> Result<Published, PublishError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        snap.encode_into(&mut buf);
        let r = self.publish_bytes(&buf, now_ns);
        self.buf = buf;
        r
    }

    /// Publishes already encoded snapshot bytes (tests use it to publish
    /// bytes of another version).
    pub fn publish_bytes(&mut self, bytes: &[u8], now_ns: u64) -> Result<Published, PublishError> {
        let shm = &self.shm;
        let g = &shm.inner.geo;
        if bytes.len() as u64 > g.layout.slot_bytes {
            return Err(PublishError::TooLarge {
                bytes: bytes.len(),
                slot_bytes: g.layout.slot_bytes,
            });
        }
        let h = shm.header();
        let (live_gen, live_slot) = live_parts(h.live.0.load(SeqCst));
        let slots = g.layout.slots as usize;
        let mut newest = live_gen;
        for d in h.slots.iter().take(slots) {
            newest = newest.max(d.generation.load(Acquire));
        }
        // Generations in use by live announcers.
        let dp = shm.process(super::Role::Dataplane);
        let dp_alive = dp.pid != 0 && pid_alive(dp.pid);
        let mut held = Vec::new();
        for a in shm.announcements() {
            let fresh = now_ns.saturating_sub(a.heartbeat_ns) < self.stale_ns;
            if a.generation != 0 && (fresh || dp_alive) {
                held.push((a.index, a.generation));
            }
        }
        let mut best: Option<(usize, u64)> = None;
        for (i, d) in h.slots.iter().enumerate().take(slots) {
            let gen = d.generation.load(Acquire);
            if live_gen != 0 && i == live_slot {
                continue;
            }
            if gen != 0 && held.iter().any(|&(_, g)| g == gen) {
                continue;
            }
            if best.is_none_or(|(_, bg)| gen < bg) {
                best = Some((i, gen));
            }
        }
        let Some((slot, _)) = best else {
            return Err(PublishError::NoFreeSlot {
                live: live_gen,
                held,
            });
        };
        let generation = newest + 1;
        let d = &h.slots[slot];
        // Back the pages first: on a full tmpfs this is an error, where a
        // store into a sparse page would be a SIGBUS.
        super::allocate(&shm.inner.file, g.slot_off(slot), bytes.len() as u64).map_err(|e| {
            PublishError::NoSpace {
                slot,
                bytes: bytes.len(),
                error: e.to_string(),
            }
        })?;
        d.generation.store(0, SeqCst);
        shm.write_slot(slot, bytes);
        d.len.store(bytes.len() as u64, Relaxed);
        d.checksum.store(checksum(bytes), Relaxed);
        d.published_ns.store(now_ns, Relaxed);
        d.generation.store(generation, Release);
        h.live.0.store(live_word(generation, slot), SeqCst);
        Ok(Published {
            generation,
            slot,
            bytes: bytes.len(),
        })
    }
}

impl Shm {
    /// Copies `bytes` to the start of slot `slot` (the publisher's only).
    fn write_slot(&self, slot: usize, bytes: &[u8]) {
        let g = &self.inner.geo;
        assert!(slot < g.layout.slots as usize && bytes.len() as u64 <= g.layout.slot_bytes);
        let off = g.slot_off(slot) as usize;
        // SAFETY: slot < slots and len <= slot_bytes <= slot_stride (asserted;
        // the geometry was checked against the file length at open), so the
        // range lies inside the mapping. No reader copies this slot: it is not
        // live and no live announcer holds its generation (see the module doc).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.inner.map.as_mut_ptr().add(off),
                bytes.len(),
            )
        }
    }

    /// Copies `len` bytes of slot `slot` into `out`.
    fn read_slot(&self, slot: usize, len: usize, out: &mut Vec<u8>) {
        let g = &self.inner.geo;
        assert!(slot < g.layout.slots as usize && len as u64 <= g.layout.slot_bytes);
        let off = g.slot_off(slot) as usize;
        out.clear();
        out.reserve(len);
        // SAFETY: the range lies inside the mapping (as in `write_slot`);
        // `out` has room for `len` bytes (reserved) and its length is set
        // only after they are written. The publisher does not rewrite the
        // slot while our announce line holds its generation.
        unsafe {
            std::ptr::copy_nonoverlapping(self.inner.map.as_ptr().add(off), out.as_mut_ptr(), len);
            out.set_len(len);
        }
    }
}

/// The dataplane's side: notices a new live generation and decodes it.
pub struct Reader {
    shm: Shm,
    last: u64,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(shm: &Shm) -> Reader {
        Reader {
            shm: shm.clone(),
            last: 0,
            buf: Vec::new(),
        }
    }

    /// The last generation returned or refused.
    pub fn last_generation(&self) -> u64 {
        self.last
    }

    /// A new (generation, snapshot) if the live generation changed since
    /// the last call; `Ok(None)` if not. A damaged slot is an error once per
    /// generation (later polls return `Ok(None)` until a new one is
    /// published): the caller keeps its last good tables.
    pub fn poll(&mut self, now_ns: u64) -> Result<Option<(u64, Snapshot)>, ReadError> {
        let shm = self.shm.clone();
        let h = shm.header();
        let mut w = h.live.0.load(SeqCst);
        if w == 0 || live_parts(w).0 == self.last {
            return Ok(None);
        }
        let line = &h.announce[READER_ANNOUNCE];
        let mut settled = false;
        for _ in 0..16 {
            line.heartbeat_ns.store(now_ns, Relaxed);
            line.generation.store(live_parts(w).0, SeqCst);
            let again = h.live.0.load(SeqCst);
            if again == w {
                settled = true;
                break;
            }
            w = again;
        }
        let (generation, slot) = live_parts(w);
        let r = if settled {
            self.copy(generation, slot)
        } else {
            Err(ReadError::Busy)
        };
        line.generation.store(0, Release);
        if matches!(r, Err(ReadError::Busy)) {
            return r.map(|_| None);
        }
        self.last = generation;
        r?;
        let snap = Snapshot::decode(&self.buf)
            .map_err(|source| ReadError::Decode { generation, source })?;
        Ok(Some((generation, snap)))
    }

    /// Copies the live slot into `self.buf` and checks it.
    fn copy(&mut self, generation: u64, slot: usize) -> Result<(), ReadError> {
        let g = self.shm.inner.geo;
        if slot >= g.layout.slots as usize {
            return Err(ReadError::BadSlot {
                slot,
                slots: g.layout.slots,
            });
        }
        let d = &self.shm.header().slots[slot];
        let found = d.generation.load(Acquire);
        if found != generation {
            return Err(ReadError::SlotGeneration {
                slot,
                found,
                live: generation,
            });
        }
        let len = d.len.load(Relaxed);
        let sum = d.checksum.load(Relaxed);
        if len > g.layout.slot_bytes {
            return Err(ReadError::BadLength {
                slot,
                len,
                max: g.layout.slot_bytes,
            });
        }
        self.shm.read_slot(slot, len as usize, &mut self.buf);
        if checksum(&self.buf) != sum {
            return Err(ReadError::Checksum { slot, generation });
        }
        Ok(())
    }
}
