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
//! - **Reclamation**: an entry is claimed `LIVE → DYING` by one CAS (reclaim,
//!   eviction or `remove`), its two slots are unlinked (CAS v → 0), and only
//!   then is it freed (seq bump) and pushed on the free list (a Treiber stack
//!   with an ABA tag in the head word).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

use super::key::FlowKey;
use super::state::{CtState, Timeouts, Word, DYING, FREE, INSERTING, LIVE};

/// Entries are 96 bytes: two 40-byte tuples and four 32-bit words.
#[repr(C)]
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
/// Bound on waiting for a racing inserter (each round is a spin hint).
const SPIN_LIMIT: u32 = 1 << 20;
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
    /// Inserts refused after waiting too long for a racing inserter.
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

/// The table's fixed header: geometry, timeouts (ticks), free list, cursors
/// and counters.
#[repr(C)]
struct Header {
    capacity: u32,
    buckets: u32,
    probe: u32,
    _pad: u32,
    /// Timeout per [`CtState`] discriminant, in ticks.
    timeout_ticks: [u32; 16],
    /// Free-list head: `aba_tag << 32 | (id+1)`, 0 = empty.
    free: AtomicU64,
    /// Largest bucket displacement ever published (lookups scan up to it).
    max_disp: AtomicU32,
    reclaim_cursor: AtomicU32,
    evict_cursor: AtomicU32,
    _pad2: u32,
    live: AtomicU64,
    inserted: AtomicU64,
    races: AtomicU64,
    refused_full: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_unassured: AtomicU64,
    reclaimed: AtomicU64,
    reply_taken: AtomicU64,
    contended: AtomicU64,
}

/// The lock-free flow table shared by all workers.
#[repr(C)]
pub struct Table {
    hdr: Header,
    entries: Box<[Entry]>,
    index: Box<[AtomicU64]>,
}

/// A consistent read of an entry's tuples, user word and state word.
#[derive(Clone, Copy)]
struct Snap {
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
        let mut timeout_ticks = [0u32; 16];
        for st in CtState::ALL {
            let ns = u64::from(timeouts.of(st)) * 1_000_000_000;
            timeout_ticks[st as usize] = (ns >> TICK_SHIFT).min(i32::MAX as u64) as u32;
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
        let index: Box<[AtomicU64]> = (0..buckets * BUCKET).map(|_| AtomicU64::new(0)).collect();
        Table {
            hdr: Header {
                capacity: capacity as u32,
                buckets: buckets as u32,
                probe: buckets.min(MAX_PROBE) as u32,
                _pad: 0,
                timeout_ticks,
                free: AtomicU64::new(1),
                max_disp: AtomicU32::new(0),
                reclaim_cursor: AtomicU32::new(0),
                evict_cursor: AtomicU32::new(0),
                _pad2: 0,
                live: AtomicU64::new(0),
                inserted: AtomicU64::new(0),
                races: AtomicU64::new(0),
                refused_full: AtomicU64::new(0),
                evicted_expired: AtomicU64::new(0),
                evicted_unassured: AtomicU64::new(0),
                reclaimed: AtomicU64::new(0),
                reply_taken: AtomicU64::new(0),
                contended: AtomicU64::new(0),
            },
            entries,
            index,
        }
    }

    pub fn capacity(&self) -> usize {
        self.hdr.capacity as usize
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.hdr.live.load(Relaxed) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of entries and index actually allocated.
    pub fn memory_bytes(&self) -> usize {
        self.entries.len() * ENTRY_BYTES + self.index.len() * 8
    }

    pub fn stats(&self) -> Stats {
        let h = &self.hdr;
        Stats {
            live: h.live.load(Relaxed),
            inserted: h.inserted.load(Relaxed),
            races: h.races.load(Relaxed),
            refused_full: h.refused_full.load(Relaxed),
            evicted_expired: h.evicted_expired.load(Relaxed),
            evicted_unassured: h.evicted_unassured.load(Relaxed),
            reclaimed: h.reclaimed.load(Relaxed),
            reply_taken: h.reply_taken.load(Relaxed),
            contended: h.contended.load(Relaxed),
        }
    }

    /// Looks up a packet's flow, updates its protocol state (only when it
    /// changes) and last-seen tick (only when it moves). `None` if absent,
    /// expired, or still being inserted by another worker.
    #[inline]
    pub fn track(&self, key: &FlowKey, tcp_flags: u8, now: u64) -> Option<Hit> {
        match self.look(key, now) {
            Look::Live(id, dir, snap) => Some(self.touch(key, id, dir, &snap, tcp_flags, now)),
            _ => None,
        }
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
                    self.hdr.races.fetch_add(1, Relaxed);
                    return Ok(self.touch(orig, id, dir, &snap, tcp_flags, now));
                }
                Look::Busy => {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                Look::Expired(id) => {
                    if self.kill(id, Some(now)) {
                        self.hdr.evicted_expired.fetch_add(1, Relaxed);
                    }
                    continue;
                }
                Look::Miss => {}
            }
            let id = match mine {
                Some(id) => id,
                None => {
                    let id = self.alloc(now).ok_or_else(|| {
                        self.hdr.refused_full.fetch_add(1, Relaxed);
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
                    self.hdr.refused_full.fetch_add(1, Relaxed);
                    return Err(InsertError::Full);
                }
            }
            if reply != orig {
                if let Err(e) = self.claim_reply(reply, id, now) {
                    self.unlink(orig, id, Dir::Orig);
                    self.free(id);
                    match e {
                        InsertError::Full => self.hdr.refused_full.fetch_add(1, Relaxed),
                        InsertError::ReplyTaken => self.hdr.reply_taken.fetch_add(1, Relaxed),
                    };
                    return Err(e);
                }
            }
            let e = &self.entries[id as usize];
            let w = Word(e.state.load(Relaxed)).with_life(LIVE);
            e.state.store(w.0, Release);
            self.hdr.live.fetch_add(1, Relaxed);
            self.hdr.inserted.fetch_add(1, Relaxed);
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
        self.hdr.contended.fetch_add(1, Relaxed);
        Err(InsertError::Full)
    }

    /// Frees expired flows among the next `budget` entries of the sweep
    /// cursor; returns how many it freed.
    pub fn reclaim(&self, now: u64, budget: usize) -> usize {
        let cap = self.hdr.capacity;
        let budget = budget.min(cap as usize) as u32;
        let start = self.hdr.reclaim_cursor.fetch_add(budget, Relaxed) % cap;
        let mut freed = 0;
        for i in 0..budget {
            let id = (start + i) % cap;
            if self.kill(id, Some(now)) {
                freed += 1;
            }
        }
        self.hdr.reclaimed.fetch_add(freed as u64, Relaxed);
        freed
    }

    /// Removes flow `id` if live (no-op otherwise).
    pub fn remove(&self, id: u32) {
        if id < self.hdr.capacity {
            self.kill(id, None);
        }
    }

    /// Snapshots of the live flows (allocates; for the control path only).
    pub fn iter_live(&self, now: u64) -> impl Iterator<Item = FlowSnapshot> + '_ {
        (0..self.hdr.capacity).filter_map(move |id| {
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
        let b = ((h & 0xffff_ffff) * u64::from(self.hdr.buckets)) >> 32;
        (b as usize, (h >> 1) & TAG_MASK)
    }

    /// Buckets to scan: the largest displacement published so far, plus one.
    #[inline]
    fn span(&self) -> usize {
        (self.hdr.max_disp.load(SeqCst) as usize + 1).min(self.hdr.probe as usize)
    }

    #[inline]
    fn bucket_at(&self, home: usize, d: usize) -> usize {
        let b = home + d;
        let n = self.hdr.buckets as usize;
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
            let base = self.bucket_at(home, d) * BUCKET;
            let Some(bucket) = self.index.get(base..base + BUCKET) else {
                return Look::Miss;
            };
            for slot in bucket {
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
                if *k != kw {
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
            let orig = [0, 1, 2, 3, 4].map(|i| e.orig[i].load(Relaxed));
            let reply = [0, 1, 2, 3, 4].map(|i| e.reply[i].load(Relaxed));
            let user = e.user.load(Relaxed);
            let word = Word(e.state.load(Relaxed));
            fence(Acquire);
            if e.seq.load(Relaxed) == s1 {
                return Some(Snap {
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
        age > self.hdr.timeout_ticks[w.state() as usize] as i32
    }

    /// Builds the hit and updates state and last-seen where they changed.
    #[inline]
    fn touch(&self, key: &FlowKey, id: u32, dir: Dir, snap: &Snap, flags: u8, now: u64) -> Hit {
        let e = &self.entries[id as usize];
        let reply = dir == Dir::Reply;
        let mut cur = snap.word;
        for _ in 0..4 {
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
        let last = e.last.load(Relaxed);
        if (t.wrapping_sub(last) as i32) > 0 {
            e.last.store(t, Relaxed);
        }
        let other = if reply { &snap.orig } else { &snap.reply };
        let xlate = key_from_words(other).swap();
        Hit {
            id,
            dir,
            xlate,
            nat: xlate != *key,
            user: snap.user,
        }
    }

    // ---- insert ----

    fn init(&self, id: u32, orig: &FlowKey, reply: &FlowKey, user: u32, flags: u8, now: u64) {
        let e = &self.entries[id as usize];
        let s = e.seq.load(Relaxed);
        e.seq.store(s.wrapping_add(1), Relaxed);
        fence(Release);
        for (a, w) in e.orig.iter().zip(orig.words()) {
            a.store(w, Relaxed);
        }
        for (a, w) in e.reply.iter().zip(reply.words()) {
            a.store(w, Relaxed);
        }
        e.user.store(user, Relaxed);
        let st = CtState::initial(orig.proto, flags);
        e.state.store(Word::new(INSERTING, st).0, Relaxed);
        e.last.store(tick(now), Relaxed);
        e.seq.store(s.wrapping_add(2), Release);
    }

    /// Publishes and commits the index slot for `key` -> (`id`, `dir`), or
    /// finds the committed entry that holds an equal key.
    ///
    /// Why no duplicates: say X (id x) and Y (id y > x) both commit key K.
    /// Each published pending (P) before its scan (S) and committed (C) after,
    /// all SeqCst. Y committed, so S_Y did not see X's slot pending or
    /// committed (either would make Y lose): S_Y < P_X. Hence P_Y < S_Y < P_X
    /// < S_X, so S_X saw Y's slot pending (then X's CAS removed it, and C_Y
    /// failed) or committed (then X lost). Either way one of them did not
    /// commit.
    fn claim(&self, key: &FlowKey, id: u32, dir: Dir) -> Claim {
        let kw = key.words();
        let (home, tag) = self.home(key.hash());
        let mine = slot_val(tag, id, dir);
        let probe = self.hdr.probe as usize;
        let mut spins = 0u32;
        'retry: while spins < SPIN_LIMIT {
            spins += 1;
            // 1. Publish pending in the first empty slot.
            let mut pos = None;
            'find: for d in 0..probe {
                let base = self.bucket_at(home, d) * BUCKET;
                for s in base..base + BUCKET {
                    if self.index[s].load(Relaxed) == 0 {
                        self.hdr.max_disp.fetch_max(d as u32, SeqCst);
                        if self.index[s]
                            .compare_exchange(0, mine, SeqCst, Relaxed)
                            .is_ok()
                        {
                            pos = Some(s);
                            break 'find;
                        }
                    }
                }
            }
            let Some(pos) = pos else { return Claim::Full };
            // 2. Scan for equal keys elsewhere.
            let span = self.span();
            for d in 0..span {
                let base = self.bucket_at(home, d) * BUCKET;
                for s in base..base + BUCKET {
                    if s == pos {
                        continue;
                    }
                    let mut v = self.index[s].load(SeqCst);
                    loop {
                        if v == 0 || v & TAG_MASK != tag {
                            break;
                        }
                        let other = slot_id(v);
                        let Some(snap) = self.read(other) else { break };
                        let k = if slot_dir(v) == Dir::Orig {
                            &snap.orig
                        } else {
                            &snap.reply
                        };
                        if *k != kw || snap.word.life() == FREE {
                            break;
                        }
                        if v & COMMITTED != 0 {
                            self.withdraw(pos, mine);
                            return Claim::Lost(other);
                        }
                        if other < id {
                            self.withdraw(pos, mine);
                            std::hint::spin_loop();
                            continue 'retry;
                        }
                        match self.index[s].compare_exchange(v, 0, SeqCst, SeqCst) {
                            Ok(_) => break,
                            Err(now_v) => v = now_v,
                        }
                    }
                }
            }
            // 3. Commit (fails if a lower id removed our pending slot).
            if self.index[pos]
                .compare_exchange(mine, mine | COMMITTED, SeqCst, Relaxed)
                .is_ok()
            {
                return Claim::Won;
            }
        }
        self.hdr.contended.fetch_add(1, Relaxed);
        Claim::Full
    }

    fn claim_reply(&self, reply: &FlowKey, id: u32, now: u64) -> Result<(), InsertError> {
        for _ in 0..4 {
            match self.claim(reply, id, Dir::Reply) {
                Claim::Won => return Ok(()),
                Claim::Full => return Err(InsertError::Full),
                Claim::Lost(other) => {
                    // A flow whose time is up does not hold its tuple.
                    let stale = self
                        .read(other)
                        .is_some_and(|s| s.word.life() == LIVE && self.expired(other, s.word, now));
                    if !(stale && self.kill(other, Some(now))) {
                        return Err(InsertError::ReplyTaken);
                    }
                    self.hdr.evicted_expired.fetch_add(1, Relaxed);
                }
            }
        }
        Err(InsertError::ReplyTaken)
    }

    #[inline]
    fn withdraw(&self, pos: usize, mine: u64) {
        let _ = self.index[pos].compare_exchange(mine, 0, SeqCst, Relaxed);
    }

    /// Removes the committed slot of (`id`, `dir`) for `key`.
    fn unlink(&self, key: &FlowKey, id: u32, dir: Dir) {
        let (home, tag) = self.home(key.hash());
        let v = slot_val(tag, id, dir) | COMMITTED;
        for d in 0..self.span() {
            let base = self.bucket_at(home, d) * BUCKET;
            for s in base..base + BUCKET {
                if self.index[s]
                    .compare_exchange(v, 0, SeqCst, Relaxed)
                    .is_ok()
                {
                    return;
                }
            }
        }
    }

    // ---- entries: allocation, eviction, freeing ----

    fn alloc(&self, now: u64) -> Option<u32> {
        for _ in 0..4 {
            if let Some(id) = self.pop() {
                return Some(id);
            }
            if !self.evict(now) {
                return None;
            }
        }
        self.pop()
    }

    fn pop(&self) -> Option<u32> {
        let mut head = self.hdr.free.load(Acquire);
        loop {
            let idp1 = head as u32;
            if idp1 == 0 {
                return None;
            }
            let id = idp1 - 1;
            let next = self.entries[id as usize].user.load(Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match self
                .hdr
                .free
                .compare_exchange_weak(head, new, AcqRel, Acquire)
            {
                Ok(_) => return Some(id),
                Err(h) => head = h,
            }
        }
    }

    fn push(&self, id: u32) {
        let e = &self.entries[id as usize];
        let mut head = self.hdr.free.load(Relaxed);
        loop {
            e.user.store(head as u32, Relaxed);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(id + 1);
            match self
                .hdr
                .free
                .compare_exchange_weak(head, new, Release, Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Frees an entry whose slots are unlinked (or never committed): bumps
    /// the version so readers holding the id see the change.
    fn free(&self, id: u32) {
        let e = &self.entries[id as usize];
        let s = e.seq.load(Relaxed);
        e.seq.store(s.wrapping_add(1), Relaxed);
        fence(Release);
        e.state.store(FREE, Relaxed);
        e.seq.store(s.wrapping_add(2), Release);
        self.push(id);
    }

    /// Claims a live entry (only if expired at `now`, when given), unlinks
    /// its slots and frees it. Returns whether this call freed it.
    fn kill(&self, id: u32, expired_at: Option<u64>) -> bool {
        let e = &self.entries[id as usize];
        let mut cur = Word(e.state.load(Acquire));
        loop {
            if cur.life() != LIVE {
                return false;
            }
            if let Some(now) = expired_at {
                if !self.expired(id, cur, now) {
                    return false;
                }
            }
            match e
                .state
                .compare_exchange(cur.0, cur.with_life(DYING).0, AcqRel, Acquire)
            {
                Ok(_) => break,
                Err(x) => cur = Word(x),
            }
        }
        // DYING is exclusive: nobody rewrites the tuples until we free it.
        let orig = key_from_words(&[0, 1, 2, 3, 4].map(|i| e.orig[i].load(Relaxed)));
        let reply = key_from_words(&[0, 1, 2, 3, 4].map(|i| e.reply[i].load(Relaxed)));
        self.unlink(&orig, id, Dir::Orig);
        if reply != orig {
            self.unlink(&reply, id, Dir::Reply);
        }
        self.free(id);
        self.hdr.live.fetch_sub(1, Relaxed);
        true
    }

    /// Makes room on a full table: an expired entry first, else an unassured
    /// one, among the next [`EVICT_SCAN`] entries. Returns whether it freed one.
    fn evict(&self, now: u64) -> bool {
        let cap = self.hdr.capacity;
        let n = (EVICT_SCAN as u32).min(cap);
        let start = self.hdr.evict_cursor.fetch_add(n, Relaxed) % cap;
        let mut unassured = None;
        for i in 0..n {
            let id = (start + i) % cap;
            let w = Word(self.entries[id as usize].state.load(Relaxed));
            if w.life() != LIVE {
                continue;
            }
            if self.expired(id, w, now) {
                if self.kill(id, Some(now)) {
                    self.hdr.evicted_expired.fetch_add(1, Relaxed);
                    return true;
                }
            } else if unassured.is_none() && !w.assured() {
                unassured = Some(id);
            }
        }
        if let Some(id) = unassured {
            let w = Word(self.entries[id as usize].state.load(Relaxed));
            if !w.assured() && self.kill(id, None) {
                self.hdr.evicted_unassured.fetch_add(1, Relaxed);
                return true;
            }
        }
        false
    }
}
