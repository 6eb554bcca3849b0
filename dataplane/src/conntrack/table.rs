//! The shared flow table: header + entry array + index array, all atomics,
//! indices instead of pointers, so the same layout can later be mapped from a
//! shared-memory file.
//!
//! Writers and readers: every worker reads and writes it through `&Table`.
//! - An **entry** (96 bytes) holds both tuples, the user word, the state word
//!   and the last-seen tick. Its tuples and user word are written only while
//!   the entry is owned exclusively (popped from the free list, or claimed
//!   `DYING`), under a per-entry seqlock: `seq` is odd while they are being
//!   written. Readers load `seq` (Acquire), the words (Relaxed), fence
//!   (Acquire), `seq` again, and retry or treat the slot as a miss on a change,
//!   so a reader never uses a torn tuple. The lifecycle (`FREE` → `INSERTING`
//!   → `LIVE` → `DYING` → `FREE`) sits in the state word; `FREE` and re-use
//!   bump `seq`, so a reader that holds an id across a re-use sees a different
//!   version or a different key.
//! - The **index** is open addressing over 64-byte buckets of eight `u64`
//!   slots, 4 slots per flow (50% load at capacity), two per flow (orig key
//!   and reply key). A slot is `committed:1 | tag:31 | (id+1):31 | dir:1`,
//!   0 = empty. Lookups read slots with Acquire and never write them.
//! - **Insert race**: an inserter publishes a *pending* slot (CAS 0 → v) in the
//!   first empty slot of the key's probe range, then scans the range for other
//!   slots with an equal key: a committed one wins (withdraw, adopt it); a
//!   pending one with a lower entry id wins (withdraw, retry); a pending one
//!   with a higher id is removed (CAS v → 0). Then it commits (CAS v → v|C),
//!   which fails if a lower id removed it. With SeqCst publication and scans,
//!   of two racers at least one sees the other, so two committed slots with
//!   equal keys never exist (see `claim`). The loser returns the winner's entry.
//!   A committed slot of a `DYING` entry is waited out (it is being unlinked),
//!   not treated as an owner. An insert commits its orig slot, then claims the
//!   reply slot the same way (`ReplyTaken` if another flow holds it, after
//!   which the orig slot is unlinked); the entry stays `INSERTING` (invisible
//!   to `track`; a racing insert of the same orig waits for it) until both
//!   are committed. The only waits are on another inserter of the same tuple
//!   between two of its CAS steps, bounded (`SPIN_LIMIT`, then `Full`,
//!   counted as `contended`); lookups never wait.
//! - **Lookups span**: a slot may sit up to `MAX_PROBE` buckets from its home;
//!   the largest displacement ever published is kept in the header (raised
//!   before publishing) and lookups scan only that far, usually one bucket.
//! - **Reclamation**: an entry is claimed `LIVE → DYING` by one CAS (reclaim,
//!   eviction or `remove`), its two slots are unlinked (CAS v → 0), and only
//!   then is it freed (seq bump) and pushed on the free list (a Treiber stack
//!   with an ABA tag in the head word).
//! - **Per packet** (`track` on an established flow): one `FlowKey::hash`,
//!   one read of the scan span, usually one bucket (a cache line), the key
//!   compared in place as five words, the entry's version checked, and no
//!   write unless the state changes (one CAS) or the last-seen tick moves
//!   (one plain store, at most once per tick per flow).
//! - **Timestamps** are `u32` ticks of 2^20 ns compared with wrapping
//!   arithmetic (valid for idle times under 2^31 ticks, ~26 days, far above
//!   any timeout; timeouts are capped there).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

mod write;

use super::key::FlowKey;
use super::state::{CtState, Timeouts, Word, FREE, INSERTING, LIVE};

/// Entries are 96 bytes: two 40-byte tuples and four 32-bit words.
#[repr(C, align(32))]
pub(crate) struct Entry {
    /// Seqlock version: odd while tuples/user/lifecycle are being rewritten.
    seq: AtomicU32,
    /// [`Word`]: lifecycle, protocol state, reply seen, assured.
    state: AtomicU32,
    /// Last-seen time in ticks of 2^20 ns (~1.05 ms), wrapping.
    last: AtomicU32,
    /// Opaque user word; the next free entry (id+1) while on the free list.
    user: AtomicU32,
    orig: [AtomicU64; 5],
    reply: [AtomicU64; 5],
}

/// Bytes of one entry.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
/// Index slots per flow at capacity (two used: 50% load).
pub const SLOTS_PER_FLOW: usize = 4;
/// Index bytes per flow at capacity.
pub const INDEX_BYTES_PER_FLOW: usize = SLOTS_PER_FLOW * 8;
/// Memory per flow of capacity: entry + index.
pub const BYTES_PER_FLOW: usize = ENTRY_BYTES + INDEX_BYTES_PER_FLOW;

const _: () = assert!(ENTRY_BYTES <= 96);
const _: () = assert!(INDEX_BYTES_PER_FLOW <= 32);

const BUCKET: usize = 8;
/// Longest probe, in buckets (the insert fails as full beyond it).
const MAX_PROBE: usize = 16;
/// Largest capacity: ids are 31 bits with id+1 != 0.
pub const MAX_CAPACITY: usize = (1 << 31) - 2;
/// Entries examined by one eviction attempt on a full table.
const EVICT_SCAN: usize = 128;
/// Bound on waiting for a racing inserter of the same flow, in spin-hint
/// rounds (tens of milliseconds: only a descheduled racer takes that long).
const SPIN_LIMIT: u32 = 1 << 22;
const TICK_SHIFT: u32 = 20;

const COMMITTED: u64 = 1 << 63;
const DIR_REPLY: u64 = 1;

/// Which tuple of the flow a packet matched.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    Orig,
    Reply,
}

/// A tracked packet's flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hit {
    /// The entry's id (stable while the flow lives).
    pub id: u32,
    pub dir: Dir,
    /// What the packet's tuple must become: for `Orig`, `swap(reply)`; for
    /// `Reply`, `swap(orig)`.
    pub xlate: FlowKey,
    /// `xlate` differs from the packet's tuple.
    pub nat: bool,
    /// The opaque word stored at insert.
    pub user: u32,
}

/// Why an insert was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InsertError {
    /// No free entry and nothing evictable (or the key's probe range is full).
    Full,
    /// The reply tuple belongs to another flow: pick another SNAT port.
    ReplyTaken,
}

/// Counters, read with Relaxed loads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Stats {
    pub live: u64,
    pub inserted: u64,
    /// Inserts that found the flow already present (lost a race) and
    /// returned the existing entry.
    pub races: u64,
    pub refused_full: u64,
    pub evicted_expired: u64,
    pub evicted_unassured: u64,
    pub reclaimed: u64,
    pub reply_taken: u64,
    /// Flows removed by [`Table::remove`].
    pub removed: u64,
    /// Inserts refused after waiting too long for a racing inserter of the
    /// same tuple (also counted in `refused_full`; the caller sees `Full`).
    pub contended: u64,
}

/// A copy of one live flow, for `twillctl`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowSnapshot {
    pub id: u32,
    pub orig: FlowKey,
    pub reply: FlowKey,
    pub user: u32,
    pub state: CtState,
    pub assured: bool,
    /// Nanoseconds since last seen (tick precision).
    pub idle_ns: u64,
}

/// The table's fixed header, one cache line per access pattern so that the
/// line every lookup reads is never written by inserts.
#[repr(C)]
struct Header {
    geo: Geometry,
    free: FreeHead,
    counters: Counters,
    sweep: Sweep,
}

/// Read by every lookup; written at start-up, `max_disp` rarely after.
#[repr(C, align(64))]
struct Geometry {
    capacity: u32,
    buckets: u32,
    probe: u32,
    /// Largest bucket displacement ever published (lookups scan up to it).
    max_disp: AtomicU32,
    /// Timeout per [`CtState`] (discriminant - 1), in ticks.
    timeout_ticks: [u32; 12],
}

/// Free-list head: `aba_tag << 32 | (id+1)`, 0 = empty.
#[repr(C, align(64))]
struct FreeHead(AtomicU64);

#[repr(C, align(64))]
struct Counters {
    live: AtomicU64,
    inserted: AtomicU64,
    races: AtomicU64,
    refused_full: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_unassured: AtomicU64,
    reclaimed: AtomicU64,
    reply_taken: AtomicU64,
}

#[repr(C, align(64))]
struct Sweep {
    reclaim_cursor: AtomicU32,
    evict_cursor: AtomicU32,
    contended: AtomicU64,
    removed: AtomicU64,
}

const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Table>();
};

/// Eight index slots: one cache line, the unit of a probe.
#[repr(C, align(64))]
struct Bucket([AtomicU64; BUCKET]);

const _: () = assert!(std::mem::size_of::<Geometry>() == 64);
const _: () = assert!(std::mem::size_of::<Counters>() == 64);
const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// The lock-free flow table shared by all workers: a header, an entry array
/// and an index array, indices only (no pointers inside), so a later
/// constructor can lay the same three parts over a shared-memory mapping.
#[repr(C)]
pub struct Table {
    hdr: Header,
    entries: Box<[Entry]>,
    index: Box<[Bucket]>,
}

/// A consistent read of an entry's tuples, user word and state word.
#[derive(Clone, Copy)]
struct Snap {
    seq: u32,
    orig: [u64; 5],
    reply: [u64; 5],
    user: u32,
    word: Word,
}

enum Look {
    Live(u32, Dir, Snap),
    /// Present but still being inserted by another worker.
    Busy,
    /// Present but expired: the caller may claim and free it.
    Expired(u32),
    Miss,
}

enum Found {
    Hit(Hit),
    Expired,
    /// Not this key (or no longer): keep probing.
    Other,
}

enum Claim {
    Won,
    /// An equal key is committed by entry `id`.
    Lost(u32),
    Full,
}

#[inline]
fn tick(now: u64) -> u32 {
    (now >> TICK_SHIFT) as u32
}

#[inline]
fn load5(a: &[AtomicU64; 5]) -> [u64; 5] {
    [
        a[0].load(Relaxed),
        a[1].load(Relaxed),
        a[2].load(Relaxed),
        a[3].load(Relaxed),
        a[4].load(Relaxed),
    ]
}

/// The five-word key compare, branch-free.
#[inline]
fn same(a: &[u64; 5], b: &[u64; 5]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
}

#[inline]
fn key_from_words(w: &[u64; 5]) -> FlowKey {
    FlowKey::from_words(w)
}

#[inline]
fn slot_val(tag: u64, id: u32, dir: Dir) -> u64 {
    tag | (u64::from(id) + 1) << 1 | if dir == Dir::Reply { DIR_REPLY } else { 0 }
}

#[inline]
fn slot_id(v: u64) -> u32 {
    (((v & 0xffff_ffff) >> 1) as u32).wrapping_sub(1)
}

#[inline]
fn slot_dir(v: u64) -> Dir {
    if v & DIR_REPLY != 0 {
        Dir::Reply
    } else {
        Dir::Orig
    }
}

const TAG_MASK: u64 = 0x7fff_ffff << 32;

impl Table {
    /// A table for `capacity` flows (at least 1, at most [`MAX_CAPACITY`]).
    pub fn new(capacity: usize, timeouts: Timeouts) -> Table {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let slots = capacity * SLOTS_PER_FLOW;
        let buckets = slots.div_ceil(BUCKET);
        let mut timeout_ticks = [0u32; 12];
        for (t, st) in timeout_ticks.iter_mut().zip(CtState::ALL) {
            let ns = u64::from(timeouts.of(st)) * 1_000_000_000;
            *t = (ns >> TICK_SHIFT).min(i32::MAX as u64) as u32;
        }
        let entries: Box<[Entry]> = (0..capacity)
            .map(|i| Entry {
                seq: AtomicU32::new(0),
                state: AtomicU32::new(FREE),
                last: AtomicU32::new(0),
                // Free list 0 -> 1 -> ... -> capacity-1 (stored as id+1, 0 ends).
                user: AtomicU32::new(if i + 1 < capacity { i as u32 + 2 } else { 0 }),
                orig: Default::default(),
                reply: Default::default(),
            })
            .collect();
        let index: Box<[Bucket]> = (0..buckets).map(|_| Bucket(Default::default())).collect();
        Table {
            hdr: Header {
                geo: Geometry {
                    capacity: capacity as u32,
                    buckets: buckets as u32,
                    probe: buckets.min(MAX_PROBE) as u32,
                    max_disp: AtomicU32::new(0),
                    timeout_ticks,
                },
                free: FreeHead(AtomicU64::new(1)),
                counters: Counters {
                    live: AtomicU64::new(0),
                    inserted: AtomicU64::new(0),
                    races: AtomicU64::new(0),
                    refused_full: AtomicU64::new(0),
                    evicted_expired: AtomicU64::new(0),
                    evicted_unassured: AtomicU64::new(0),
                    reclaimed: AtomicU64::new(0),
                    reply_taken: AtomicU64::new(0),
                },
                sweep: Sweep {
                    reclaim_cursor: AtomicU32::new(0),
                    evict_cursor: AtomicU32::new(0),
                    contended: AtomicU64::new(0),
                    removed: AtomicU64::new(0),
                },
            },
            entries,
            index,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdr.geo.capacity as usize
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.hdr.counters.live.load(Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of entries and index actually allocated.
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * ENTRY_BYTES + self.index.len() * BUCKET * 8
    }

    pub fn stats(&self) -> Stats {
        let h = &self.hdr;
        Stats {
            live: h.counters.live.load(Relaxed),
            inserted: h.counters.inserted.load(Relaxed),
            races: h.counters.races.load(Relaxed),
            refused_full: h.counters.refused_full.load(Relaxed),
            evicted_expired: h.counters.evicted_expired.load(Relaxed),
            evicted_unassured: h.counters.evicted_unassured.load(Relaxed),
            reclaimed: h.counters.reclaimed.load(Relaxed),
            reply_taken: h.counters.reply_taken.load(Relaxed),
            contended: h.sweep.contended.load(Relaxed),
            removed: h.sweep.removed.load(Relaxed),
        }
    }

    /// Looks up a packet's flow, updates its protocol state (only when it
    /// changes) and last-seen tick (only when it moves). `None` if absent,
    /// expired, or still being inserted by another worker.
    #[inline]
    pub fn track(&self, key: &FlowKey, tcp_flags: u8, now: u64) -> Option<Hit> {
        // The hot path, kept apart from `look`: one hash, usually one
        // bucket, the key compared in place, nothing copied twice.
        let kw = key.words();
        let (home, tag) = self.home(key.hash());
        let want = tag | COMMITTED;
        for d in 0..self.span() {
            let bucket = self.index.get(self.bucket_at(home, d))?;
            for slot in &bucket.0 {
                let v = slot.load(Acquire);
                if v & (TAG_MASK | COMMITTED) != want {
                    continue;
                }
                match self.hit_at(v, &kw, tcp_flags, now) {
                    Found::Hit(h) => return Some(h),
                    Found::Expired => return None,
                    Found::Other => {}
                }
            }
        }
        None
    }

    /// Matches slot value `v` against key words `kw`; on a live match,
    /// updates the flow and returns its hit.
    #[inline]
    fn hit_at(&self, v: u64, kw: &[u64; 5], flags: u8, now: u64) -> Found {
        let id = slot_id(v);
        let Some(e) = self.entries.get(id as usize) else {
            return Found::Other;
        };
        let dir = slot_dir(v);
        let (mine, other) = match dir {
            Dir::Orig => (&e.orig, &e.reply),
            Dir::Reply => (&e.reply, &e.orig),
        };
        let s1 = e.seq.load(Acquire);
        if s1 & 1 == 1 || !same(&load5(mine), kw) {
            return Found::Other;
        }
        let ow = load5(other);
        let user = e.user.load(Relaxed);
        let word = Word(e.state.load(Relaxed));
        fence(Acquire);
        // A changed version means the entry was freed or reused under us:
        // the flow it held is gone.
        if e.seq.load(Relaxed) != s1 || word.life() != LIVE {
            return Found::Other;
        }
        if self.expired(id, word, now) {
            return Found::Expired;
        }
        self.update(e, s1, word, dir == Dir::Reply, flags, now);
        Found::Hit(Hit {
            id,
            dir,
            xlate: key_from_words(&FlowKey::swap_words(&ow)),
            nat: word.nat(),
            user,
        })
    }

    /// Inserts a new flow: `orig` as seen, `reply` the tuple its replies will
    /// carry (`swap` of the translated orig). If `orig` is already present
    /// (another worker won the race) returns that entry's hit, counted in
    /// `races`, so both packets go through with one entry.
    pub fn insert(
        &self,
        orig: &FlowKey,
        reply: &FlowKey,
        user: u32,
        tcp_flags: u8,
        now: u64,
    ) -> Result<Hit, InsertError> {
        let mut mine: Option<u32> = None;
        let mut spins = 0u32;
        while spins < SPIN_LIMIT {
            match self.look(orig, now) {
                Look::Live(id, dir, snap) => {
                    if let Some(m) = mine {
                        self.free(m);
                    }
                    self.hdr.counters.races.fetch_add(1, Relaxed);
                    return Ok(self.touch(id, dir, &snap, tcp_flags, now));
                }
                Look::Busy => {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                Look::Expired(id) => {
                    if self.kill(id, Some(now)) {
                        self.hdr.counters.evicted_expired.fetch_add(1, Relaxed);
                    }
                    spins += 1;
                    continue;
                }
                Look::Miss => {}
            }
            let id = match mine {
                Some(id) => id,
                None => {
                    let id = self.alloc(now).ok_or_else(|| {
                        self.hdr.counters.refused_full.fetch_add(1, Relaxed);
                        InsertError::Full
                    })?;
                    self.init(id, orig, reply, user, tcp_flags, now);
                    mine = Some(id);
                    id
                }
            };
            match self.claim(orig, id, Dir::Orig) {
                Claim::Won => {}
                Claim::Lost(_) => {
                    spins += 1;
                    continue;
                }
                Claim::Full => {
                    self.free(id);
                    self.hdr.counters.refused_full.fetch_add(1, Relaxed);
                    return Err(InsertError::Full);
                }
            }
            if reply != orig {
                if let Err(e) = self.claim_reply(reply, id, now) {
                    self.unlink(orig, id, Dir::Orig);
                    self.free(id);
                    match e {
                        InsertError::Full => self.hdr.counters.refused_full.fetch_add(1, Relaxed),
                        InsertError::ReplyTaken => {
                            self.hdr.counters.reply_taken.fetch_add(1, Relaxed)
                        }
                    };
                    return Err(e);
                }
            }
            let e = &self.entries[id as usize];
            let w = Word(e.state.load(Relaxed)).with_life(LIVE);
            e.state.store(w.0, Release);
            self.hdr.counters.live.fetch_add(1, Relaxed);
            self.hdr.counters.inserted.fetch_add(1, Relaxed);
            return Ok(Hit {
                id,
                dir: Dir::Orig,
                xlate: reply.swap(),
                nat: reply.swap() != *orig,
                user,
            });
        }
        if let Some(m) = mine {
            self.free(m);
        }
        self.hdr.sweep.contended.fetch_add(1, Relaxed);
        self.hdr.counters.refused_full.fetch_add(1, Relaxed);
        Err(InsertError::Full)
    }

    /// Frees expired flows among the next `budget` entries of the sweep
    /// cursor; returns how many it freed.
    pub fn reclaim(&self, now: u64, budget: usize) -> usize {
        let cap = self.hdr.geo.capacity;
        let budget = budget.min(cap as usize) as u32;
        let start = self.hdr.sweep.reclaim_cursor.fetch_add(budget, Relaxed) % cap;
        let mut freed = 0;
        for i in 0..budget {
            let id = (start + i) % cap;
            if self.kill(id, Some(now)) {
                freed += 1;
            }
        }
        self.hdr.counters.reclaimed.fetch_add(freed as u64, Relaxed);
        freed
    }

    /// Removes flow `id` if live (no-op otherwise).
    pub fn remove(&self, id: u32) {
        if id < self.hdr.geo.capacity && self.kill(id, None) {
            self.hdr.sweep.removed.fetch_add(1, Relaxed);
        }
    }

    /// Snapshots of the live flows (allocates; for the control path only).
    pub fn iter_live(&self, now: u64) -> impl Iterator<Item = FlowSnapshot> + '_ {
        (0..self.hdr.geo.capacity).filter_map(move |id| {
            let snap = self.read(id)?;
            if snap.word.life() != LIVE {
                return None;
            }
            let last = self.entries[id as usize].last.load(Relaxed);
            let idle = tick(now).wrapping_sub(last) as i32;
            Some(FlowSnapshot {
                id,
                orig: key_from_words(&snap.orig),
                reply: key_from_words(&snap.reply),
                user: snap.user,
                state: snap.word.state(),
                assured: snap.word.assured(),
                idle_ns: (idle.max(0) as u64) << TICK_SHIFT,
            })
        })
    }

    /// The protocol state of flow `id`, if live.
    pub fn state_of(&self, id: u32) -> Option<(CtState, bool)> {
        let snap = self.read(id)?;
        (snap.word.life() == LIVE).then(|| {
            let w = Word(self.entries[id as usize].state.load(Relaxed));
            (w.state(), w.assured())
        })
    }

    // ---- lookups ----

    #[inline]
    fn home(&self, h: u64) -> (usize, u64) {
        let b = ((h & 0xffff_ffff) * u64::from(self.hdr.geo.buckets)) >> 32;
        (b as usize, (h >> 1) & TAG_MASK)
    }

    /// Hints the CPU to fetch the home bucket of a key with hash `hash`
    /// (`FlowKey::hash`), so a batch can start all its index misses before
    /// the first [`Table::track`].
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let (home, _) = self.home(hash);
        if let Some(b) = self.index.get(home) {
            crate::state::prefetch::read(b);
        }
    }

    /// Buckets to scan: the largest displacement published so far, plus one.
    #[inline]
    fn span(&self) -> usize {
        (self.hdr.geo.max_disp.load(SeqCst) as usize + 1).min(self.hdr.geo.probe as usize)
    }

    #[inline]
    fn slot(&self, s: usize) -> &AtomicU64 {
        &self.index[s / BUCKET].0[s % BUCKET]
    }

    #[inline]
    fn bucket_at(&self, home: usize, d: usize) -> usize {
        let b = home + d;
        let n = self.hdr.geo.buckets as usize;
        if b >= n {
            b - n
        } else {
            b
        }
    }

    #[inline]
    fn look(&self, key: &FlowKey, now: u64) -> Look {
        let kw = key.words();
        let (home, tag) = self.home(key.hash());
        let span = self.span();
        let mut busy = false;
        for d in 0..span {
            let Some(bucket) = self.index.get(self.bucket_at(home, d)) else {
                return Look::Miss;
            };
            for slot in &bucket.0 {
                let v = slot.load(Acquire);
                if v & TAG_MASK != tag || v & COMMITTED == 0 {
                    continue;
                }
                let id = slot_id(v);
                let dir = slot_dir(v);
                let Some(snap) = self.read(id) else { continue };
                let k = if dir == Dir::Orig {
                    &snap.orig
                } else {
                    &snap.reply
                };
                if !same(k, &kw) {
                    continue;
                }
                match snap.word.life() {
                    LIVE => {
                        if self.expired(id, snap.word, now) {
                            return Look::Expired(id);
                        }
                        return Look::Live(id, dir, snap);
                    }
                    INSERTING => busy = true,
                    _ => {}
                }
            }
        }
        if busy {
            Look::Busy
        } else {
            Look::Miss
        }
    }

    /// Seqlock read of entry `id`; `None` while it is being rewritten.
    #[inline]
    fn read(&self, id: u32) -> Option<Snap> {
        let e = self.entries.get(id as usize)?;
        for _ in 0..4 {
            let s1 = e.seq.load(Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let orig = load5(&e.orig);
            let reply = load5(&e.reply);
            let user = e.user.load(Relaxed);
            let word = Word(e.state.load(Relaxed));
            fence(Acquire);
            if e.seq.load(Relaxed) == s1 {
                return Some(Snap {
                    seq: s1,
                    orig,
                    reply,
                    user,
                    word,
                });
            }
        }
        None
    }

    #[inline]
    fn expired(&self, id: u32, w: Word, now: u64) -> bool {
        let last = self.entries[id as usize].last.load(Relaxed);
        let age = tick(now).wrapping_sub(last) as i32;
        age > self.hdr.geo.timeout_ticks[w.state() as usize - 1] as i32
    }

    /// Builds the hit and updates state and last-seen where they changed.
    #[inline]
    fn touch(&self, id: u32, dir: Dir, snap: &Snap, flags: u8, now: u64) -> Hit {
        let e = &self.entries[id as usize];
        let reply = dir == Dir::Reply;
        self.update(e, snap.seq, snap.word, reply, flags, now);
        let other = if reply { &snap.orig } else { &snap.reply };
        Hit {
            id,
            dir,
            xlate: key_from_words(&FlowKey::swap_words(other)),
            nat: snap.word.nat(),
            user: snap.user,
        }
    }

    /// Writes the state word (CAS) only if the packet changes it and the
    /// last-seen tick (plain store) only if it moved forward.
    #[inline]
    fn update(&self, e: &Entry, seq: u32, word: Word, reply: bool, flags: u8, now: u64) {
        let mut cur = word;
        for round in 0..4 {
            // Retry a lost CAS only while the entry still holds the same flow.
            if round > 0 && e.seq.load(Acquire) != seq {
                break;
            }
            if cur.steady(reply, flags) {
                break;
            }
            let next = cur.next(reply, flags);
            if next == cur || cur.life() != LIVE {
                break;
            }
            match e
                .state
                .compare_exchange_weak(cur.0, next.0, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(x) => cur = Word(x),
            }
        }
        let t = tick(now);
        if (t.wrapping_sub(e.last.load(Relaxed)) as i32) > 0 {
            e.last.store(t, Relaxed);
        }
    }
}
