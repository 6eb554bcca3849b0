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
//! - The **index** is open addressing over 64-byte buckets: seven `u64`
//!   slots and one control word. Four words per flow at capacity (half a
//!   bucket), two slots used per flow (orig key and reply key): 57% load. A
//!   slot is `committed:1 | tag:31 | (id+1):31 | dir:1`, 0 = empty. Lookups
//!   read slots with Acquire and never write them.
//! - The **control word** of a bucket (F14-style) holds one tag byte per slot
//!   (bytes 0-6: `0x80 | 7 hash bits` while the slot holds a committed key, 0
//!   otherwise) and an overflow count (byte 7): how many slots of keys homed
//!   at or before this bucket sit past it. `track` compares the seven tag
//!   bytes at once (SWAR) and reads only the slots whose byte matches, and a
//!   probe stops at the first bucket whose overflow count is 0: a miss usually
//!   reads one control word. The count is raised (SeqCst RMW) on every bucket
//!   between a key's home and its slot *before* the slot is published, and
//!   lowered only *after* the slot is cleared, so it never under-counts. A tag
//!   byte is written only by the slot's owner: set after the commit CAS (by
//!   the inserter, before the entry goes `LIVE`) and cleared before the
//!   unlinking CAS, so a set byte never outlives its slot's key. A stale or
//!   missing byte can only make `track` miss a flow that is being inserted or
//!   removed, as a stale slot read could; a byte match is always confirmed
//!   on the slot and the entry.
//! - **Insert race**: an inserter publishes a *pending* slot (CAS 0 → v) in the
//!   first empty slot of the key's probe range, then scans the range for other
//!   slots with an equal key: a committed one wins (withdraw, adopt it); a
//!   pending one with a lower entry id wins (withdraw, retry); a pending one
//!   with a higher id is removed (CAS v → 0). Then it commits (CAS v → v|C),
//!   which fails if a lower id removed it. With SeqCst publication and scans,
//!   of two racers at least one sees the other, so two committed slots with
//!   equal keys never exist (see `claim`; the scan's stop at a zero overflow
//!   count keeps this, since the count of every bucket before a published
//!   slot was raised before it). The loser returns the winner's entry.
//!   A committed slot of a `DYING` entry is waited out (it is being unlinked),
//!   not treated as an owner. An insert commits its orig slot, then claims the
//!   reply slot the same way (`ReplyTaken` if another flow holds it, after
//!   which the orig slot is unlinked); the entry stays `INSERTING` (invisible
//!   to `track`; a racing insert of the same orig waits for it) until both
//!   are committed. The only waits are on another inserter of the same tuple
//!   between two of its CAS steps, bounded (`SPIN_LIMIT`, then `Full`,
//!   counted as `contended`); lookups never wait.
//! - **Probe length**: a slot may sit up to `MAX_PROBE` buckets from its home
//!   (the insert fails as full beyond it); overflow counts are at most
//!   `(MAX_PROBE - 1) * 7` plus one in-flight reservation per concurrent
//!   inserter (workers: a handful), far below the byte's 255.
//! - **Reclamation**: an entry is claimed `LIVE → DYING` by one CAS (reclaim,
//!   eviction or `remove`), its two slots are unlinked (CAS v → 0), and only
//!   then is it freed (seq bump) and pushed on the free list (a Treiber stack
//!   with an ABA tag in the head word).
//! - **Per packet** (`track`): one index hash (`index_hash`, a folded
//!   multiply; not `FlowKey::hash`), usually one bucket (a cache line) whose
//!   control word decides a miss by itself or names the one slot to read; on
//!   a hit the key compared in place as five words, the entry's version
//!   checked, the state word's change bits answer "does this packet change
//!   the state" with one AND, and no write unless the state changes (one
//!   CAS) or the last-seen tick moves (one plain store, at most once per
//!   tick per flow). The miss and first-slot tests are inlined into the
//!   caller.
//! - **Timestamps** are `u32` ticks of 2^20 ns compared with wrapping
//!   arithmetic (valid for idle times under 2^31 ticks, ~26 days, far above
//!   any timeout; timeouts are capped there).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

#[cfg(test)]
mod check;
mod shared;
mod write;

pub use shared::{CtOpenError, Opened, SharedLayout, SharedParts};

use super::key::FlowKey;
use super::state::{CtState, Timeouts, Word, FREE, INSERTING, LIVE};
use crate::state::shm::region::{Slab, Unit};

/// Entries are 96 bytes: two 40-byte tuples and four 32-bit words.
#[repr(C, align(32))]
pub struct Entry {
    /// Seqlock version: odd while tuples/user/lifecycle are being rewritten.
    seq: AtomicU32,
    /// [`Word`]: lifecycle, protocol state, reply seen, assured.
    state: AtomicU32,
    /// Last-seen time in ticks of 2^20 ns (~1.05 ms), wrapping.
    last: AtomicU32,
    /// Opaque user word; the next free entry (id+1) while on the free list.
    user: AtomicU32,
    /// The tuples, indexed by direction: `[orig, reply]`.
    tuple: [[AtomicU64; 5]; 2],
}

/// Bytes of one entry.
pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
/// Index words per flow at capacity: half a bucket of seven slots and a
/// control word (two slots used per flow: 57% load).
pub const SLOTS_PER_FLOW: usize = 4;
/// Index bytes per flow at capacity.
pub const INDEX_BYTES_PER_FLOW: usize = SLOTS_PER_FLOW * 8;
/// Memory per flow of capacity: entry + index.
pub const BYTES_PER_FLOW: usize = ENTRY_BYTES + INDEX_BYTES_PER_FLOW;

const _: () = assert!(ENTRY_BYTES <= 96);
const _: () = assert!(INDEX_BYTES_PER_FLOW <= 32);

/// Words per bucket: slots 0-6 and the control word.
const BUCKET: usize = 8;
/// Slots per bucket.
const SLOTS: usize = 7;
/// Index of the control word in a bucket.
const CTRL: usize = 7;
/// One in the control word's overflow count (its top byte).
const OVF_ONE: u64 = 1 << 56;
const BYTE_LO: u64 = 0x0101_0101_0101_0101;
/// The top bit of each slot's tag byte in the control word (bytes 0-6).
const TAG_HI: u64 = 0x0080_8080_8080_8080;
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

/// A tracked packet's flow as [`Table::track_lean`] returns it: the
/// translated tuple stays in word form ([`FlowKey::words`]), so a caller
/// that rewrites fixed header offsets never builds a [`FlowKey`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LeanHit {
    pub id: u32,
    pub dir: Dir,
    /// [`Hit::xlate`] as words: what the packet's tuple must become.
    pub xlate: [u64; 5],
    /// `xlate` differs from the packet's tuple.
    pub nat: bool,
    pub user: u32,
    /// The entry's version when it was read: with `id` and `dir`, what
    /// [`Table::revisit`] takes to find the flow again without the index.
    pub seq: u32,
    /// The entry's state word as read, when this packet left it unchanged
    /// (else 0, which no live entry has): see [`Table::expect`].
    pub word: u32,
}

/// What [`Table::revisit`] checks a cached flow's entry against (from
/// [`Table::expect`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expect {
    /// The entry's whole state word.
    pub word: u32,
    /// Its timeout, in ticks.
    pub timeout: i32,
    /// The TCP flags that would change it in the flow's direction.
    pub chg: u8,
}

/// What [`Table::first_slot`] found.
enum First {
    Slot(u64),
    Absent,
    Probe,
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

/// The table's shared header (the first part of its region), one cache line
/// per access pattern. The geometry every lookup reads is not here but
/// copied into [`Table`] itself ([`Geometry`]): it never changes after
/// construction, and a copy keeps the packet path's loads where they were.
#[repr(C)]
pub struct Header {
    stored: shared::Stored,
    free: FreeHead,
    counters: Counters,
    sweep: Sweep,
}

/// Read by every lookup; set at construction, never written after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    capacity: u32,
    buckets: u32,
    /// Longest probe, in buckets.
    probe: u32,
    /// Timeout per [`CtState`] discriminant (the state word's bits 4-7), in
    /// ticks; the unused values 0 and 13-15 time out at once.
    timeout_ticks: [u32; 16],
}

impl Geometry {
    fn new(capacity: usize, timeouts: &Timeouts) -> Geometry {
        let slots = capacity * SLOTS_PER_FLOW;
        let buckets = slots.div_ceil(BUCKET);
        let mut timeout_ticks = [0u32; 16];
        for st in CtState::ALL {
            let ns = u64::from(timeouts.of(st)) * 1_000_000_000;
            timeout_ticks[st as usize] = (ns >> TICK_SHIFT).min(i32::MAX as u64) as u32;
        }
        Geometry {
            capacity: capacity as u32,
            buckets: buckets as u32,
            probe: buckets.min(MAX_PROBE) as u32,
            timeout_ticks,
        }
    }
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

/// Seven index slots and the control word: one cache line, the unit of a
/// probe.
#[repr(C, align(64))]
pub struct Bucket([AtomicU64; BUCKET]);

const _: () = assert!(std::mem::size_of::<Counters>() == 64);
const _: () = assert!(std::mem::size_of::<Bucket>() == 64);

/// The lock-free flow table shared by all workers: a header, an entry array
/// and an index array, indices only (no pointers inside), either on the heap
/// ([`Table::new`]) or laid over a region of the node's shared-memory file
/// ([`Table::open_shared`], see `shared`), through the same [`Slab`] views:
/// a lookup does not know which.
pub struct Table {
    geo: Geometry,
    hdr: Unit<Header>,
    entries: Slab<Entry>,
    index: Slab<Bucket>,
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

enum Found<H = Hit> {
    Hit(H),
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
fn hit_of(h: LeanHit) -> Hit {
    Hit {
        id: h.id,
        dir: h.dir,
        xlate: key_from_words(&h.xlate),
        nat: h.nat,
        user: h.user,
    }
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

/// The index's hash of a key's words: cheaper than [`FlowKey::hash`] (which
/// Maglev and VXLAN use), since every packet pays it. The words are folded
/// into two (the IPv6 upper halves rotated in, the ports turned to the top),
/// and their full 128-bit product is folded back to 64 bits (the "folded
/// multiply" of wyhash/foldhash), so every output bit depends on every input
/// bit; the sum added at the end keeps keys apart should one factor be zero.
/// Unseeded and stable: the index may outlive the process.
#[inline(always)]
pub(crate) fn index_hash(w: &[u64; 5]) -> u64 {
    let a = w[0] ^ w[4].rotate_left(32) ^ w[1].rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    let b = w[2] ^ w[3].rotate_left(17) ^ 0x2545_f491_4f6c_dd1d;
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ (p >> 64) as u64 ^ a.wrapping_add(b)
}

/// A key's tag byte in its bucket's control word: the top seven hash bits
/// (also the top of the slot tag) under the top bit, so a set byte is never
/// 0, the empty byte.
#[inline]
fn tag8(h: u64) -> u64 {
    h >> 57 | 0x80
}

/// Bit 7 of byte `i` (0-6) is set in the result if byte `i` of `x` is zero,
/// and possibly for a byte above a zero byte (a borrow): a superset of the
/// slots whose tag byte equals the broadcast one, when `x` = control ^
/// broadcast. Every candidate is checked against the slot itself.
#[inline]
fn matches(x: u64) -> u64 {
    x.wrapping_sub(BYTE_LO) & !x & TAG_HI
}

impl Table {
    /// A table for `capacity` flows (at least 1, at most [`MAX_CAPACITY`]),
    /// on the heap.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Table {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let geo = Geometry::new(capacity, &timeouts);
        let t = Table {
            geo,
            hdr: Unit::zeroed(),
            entries: Slab::zeroed(capacity),
            index: Slab::zeroed(geo.buckets as usize),
        };
        t.init_fresh();
        t
    }

    /// Writes a fresh table over zeroed memory: every entry free and
    /// chained on the free list (0 -> 1 -> ... -> capacity-1), the stored
    /// geometry, counters zero.
    fn init_fresh(&self) {
        let capacity = self.entries.len();
        for (i, e) in self.entries.iter().enumerate() {
            e.state.store(FREE, Relaxed);
            // Stored as id+1, 0 ends the list.
            let next = if i + 1 < capacity { i as u32 + 2 } else { 0 };
            e.user.store(next, Relaxed);
        }
        self.hdr.free.0.store(1, Relaxed);
        self.store_geometry();
    }

    pub fn capacity(&self) -> usize {
        self.geo.capacity as usize
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
    ///
    /// The common cases are inlined into the caller's packet loop: a miss
    /// whose home bucket has no matching tag byte and no overflow (one hash,
    /// one control word), and a hit in the first slot whose tag byte
    /// matches. Anything else takes the full probe (one call).
    #[inline(always)]
    pub fn track(&self, key: &FlowKey, tcp_flags: u8, now: u64) -> Option<Hit> {
        match self.first_slot(index_hash(&key.words())) {
            First::Slot(v) => self.track_slot(v, key, tcp_flags, now),
            First::Absent => None,
            First::Probe => self.track_probe(key, tcp_flags, now),
        }
    }

    /// [`Table::track`] for a key given as its five [`FlowKey::words`],
    /// returning the translated tuple as words too (same lookup, same state
    /// and last-seen updates). For a packet path that builds the key words
    /// straight from header bytes and rewrites fixed offsets.
    #[inline(always)]
    pub fn track_lean(&self, kw: &[u64; 5], tcp_flags: u8, now: u64) -> Option<LeanHit> {
        self.track_hashed(kw, Table::key_hash(kw), tcp_flags, now)
    }

    /// The index's hash of a key's words, for [`Table::prefetch_hashed`] and
    /// [`Table::track_hashed`] (a batch hashes each key once for both).
    #[inline(always)]
    pub fn key_hash(kw: &[u64; 5]) -> u64 {
        index_hash(kw)
    }

    /// [`Table::prefetch`] by [`Table::key_hash`].
    #[inline(always)]
    pub fn prefetch_hashed(&self, h: u64) {
        let (home, _) = self.home(h);
        if let Some(b) = self.index.get(home) {
            crate::state::prefetch::read(b);
        }
    }

    /// [`Table::track_lean`] with the key's [`Table::key_hash`] `h` given.
    #[inline(always)]
    pub fn track_hashed(&self, kw: &[u64; 5], h: u64, tcp_flags: u8, now: u64) -> Option<LeanHit> {
        let v = match self.first_slot(h) {
            First::Slot(v) => v,
            First::Absent => return None,
            First::Probe => return self.probe_lean(kw, tcp_flags, now),
        };
        match self.hit_lean(v, kw, tcp_flags, now) {
            Found::Hit(h) => Some(h),
            Found::Expired => None,
            Found::Other => self.probe_lean(kw, tcp_flags, now),
        }
    }

    /// What [`Table::revisit`] expects of the entry of a [`LeanHit`] (its
    /// `word` and `dir`; `None` when the hit's packet changed the entry's
    /// state, so that
    /// nothing is known to expect yet): its state word unchanged, the
    /// word's timeout, and which TCP flags would change it in the hit's
    /// direction.
    pub fn expect(&self, word: u32, dir: Dir) -> Option<Expect> {
        let w = Word(word);
        let chg = w.change_flags(dir == Dir::Reply)?;
        (w.life() == LIVE).then(|| Expect {
            word,
            timeout: self.timeout(w),
            chg,
        })
    }

    /// A flow found before (a [`LeanHit`]'s `id` and `seq`, and what
    /// [`Table::expect`] made of it, kept by the caller) looked at again
    /// without the index: true when entry `id` still holds that flow (same
    /// version) in the same state word (so `LIVE`, with the same timeout),
    /// it has not expired and this packet's flags do not change its state;
    /// its last-seen tick is then updated as [`Table::track`] would. False
    /// in every other case, with nothing written: the caller then takes
    /// [`Table::track_hashed`], which handles expiry and state changes.
    ///
    /// The same seqlock read as a lookup's, its first version load being
    /// the one that produced `seq`: the entry's tuples, user word and NAT
    /// flag are only rewritten after a version change, so a caller may
    /// keep what it derived from them. Comparing the whole state word
    /// rather than deriving its life, timeout and change bits again keeps
    /// this to a few compares (the flow cache's per-packet check).
    #[inline(always)]
    pub fn revisit(&self, id: u32, seq: u32, x: &Expect, tcp_flags: u8, now: u64) -> bool {
        let Some(e) = self.entries.get(id as usize) else {
            return false;
        };
        let word = e.state.load(Relaxed);
        let last = e.last.load(Relaxed);
        fence(Acquire);
        if e.seq.load(Relaxed) != seq || word != x.word || tcp_flags & x.chg != 0 {
            return false;
        }
        let t = tick(now);
        let age = t.wrapping_sub(last) as i32;
        if age > x.timeout {
            return false;
        }
        if age > 0 {
            e.last.store(t, Relaxed);
        }
        true
    }

    /// Hints the CPU to fetch entry `id` (the one cache line
    /// [`Table::revisit`] reads).
    #[inline(always)]
    pub fn prefetch_entry(&self, id: u32) {
        if let Some(e) = self.entries.get(id as usize) {
            crate::state::prefetch::read(e);
        }
    }

    /// [`Table::track_hashed`] for an IPv4 key given as its varying words
    /// (`FlowKey` words 0, 2 and 4; 1 and 3 are zero): the key stays in
    /// registers (only the cold full probe builds it in memory), and of the
    /// other tuple only the words an IPv4 translation has are read (the
    /// returned `xlate`'s words 1 and 3 are 0: both tuples of an entry have
    /// one family).
    #[inline(always)]
    pub fn track_v4(
        &self,
        s: u64,
        d: u64,
        p: u64,
        h: u64,
        tcp_flags: u8,
        now: u64,
    ) -> Option<LeanHit> {
        let kw = [s, 0, d, 0, p];
        let v = match self.first_slot(h) {
            First::Slot(v) => v,
            First::Absent => return None,
            First::Probe => return self.probe_v4(s, d, p, tcp_flags, now),
        };
        match self.hit_words::<true>(v, &kw, tcp_flags, now) {
            Found::Hit(h) => Some(h),
            Found::Expired => None,
            Found::Other => self.probe_v4(s, d, p, tcp_flags, now),
        }
    }

    /// [`Table::track_v4`]'s full probe.
    #[cold]
    #[inline(never)]
    fn probe_v4(&self, s: u64, d: u64, p: u64, tcp_flags: u8, now: u64) -> Option<LeanHit> {
        self.probe_lean(&[s, 0, d, 0, p], tcp_flags, now)
    }

    /// `track` once a committed slot with the key's tag is found (inlined
    /// too: in the pipeline's loop this costs misses nothing and saves hits
    /// a call, 20 instructions).
    #[inline(always)]
    fn track_slot(&self, v: u64, key: &FlowKey, tcp_flags: u8, now: u64) -> Option<Hit> {
        match self.hit_at(v, &key.words(), tcp_flags, now) {
            Found::Hit(h) => Some(h),
            Found::Expired => None,
            Found::Other => self.track_probe(key, tcp_flags, now),
        }
    }

    /// `track`'s full probe: every slot whose tag byte matches, bucket
    /// after bucket until one without overflow.
    #[cold]
    #[inline(never)]
    fn track_probe(&self, key: &FlowKey, tcp_flags: u8, now: u64) -> Option<Hit> {
        self.probe_lean(&key.words(), tcp_flags, now).map(hit_of)
    }

    /// [`Table::track_probe`] with the key and the hit in word form.
    #[cold]
    #[inline(never)]
    fn probe_lean(&self, kw: &[u64; 5], tcp_flags: u8, now: u64) -> Option<LeanHit> {
        let h = index_hash(kw);
        let (mut b, tag) = self.home(h);
        let want = (tag | COMMITTED) >> 32;
        let bcast = tag8(h) * BYTE_LO;
        let mut left = self.geo.probe;
        loop {
            let bucket = self.index.get(b)?;
            let ctrl = bucket.0[CTRL].load(Acquire);
            let mut m = matches(ctrl ^ bcast);
            while m != 0 {
                let v = bucket.0[(m.trailing_zeros() / 8) as usize & 7].load(Acquire);
                m &= m - 1;
                if v >> 32 == want {
                    match self.hit_lean(v, kw, tcp_flags, now) {
                        Found::Hit(h) => return Some(h),
                        Found::Expired => return None,
                        Found::Other => {}
                    }
                }
            }
            left -= 1;
            if ctrl < OVF_ONE || left == 0 {
                return None;
            }
            b = self.next_bucket(b);
        }
    }

    /// Matches slot value `v` against key words `kw`; on a live match,
    /// updates the flow and returns its hit.
    #[inline(always)]
    fn hit_at(&self, v: u64, kw: &[u64; 5], flags: u8, now: u64) -> Found {
        match self.hit_lean(v, kw, flags, now) {
            Found::Hit(h) => Found::Hit(hit_of(h)),
            Found::Expired => Found::Expired,
            Found::Other => Found::Other,
        }
    }

    /// [`Table::hit_at`] with the translated tuple left as words.
    #[inline(always)]
    fn hit_lean(&self, v: u64, kw: &[u64; 5], flags: u8, now: u64) -> Found<LeanHit> {
        self.hit_words::<false>(v, kw, flags, now)
    }

    /// [`Table::hit_lean`]; `V4`: the key is IPv4, and of the other tuple
    /// only words 0, 2 and 4 are read (the translation's 1 and 3 are 0).
    #[inline(always)]
    fn hit_words<const V4: bool>(
        &self,
        v: u64,
        kw: &[u64; 5],
        flags: u8,
        now: u64,
    ) -> Found<LeanHit> {
        let id = slot_id(v);
        let Some(e) = self.entries.get(id as usize) else {
            return Found::Other;
        };
        let d = (v & DIR_REPLY) as usize;
        let reply = d != 0;
        let s1 = e.seq.load(Acquire);
        if s1 & 1 == 1 || !same(&load5(&e.tuple[d]), kw) {
            return Found::Other;
        }
        let o = &e.tuple[d ^ 1];
        let ow = if V4 {
            [
                o[0].load(Relaxed),
                0,
                o[2].load(Relaxed),
                0,
                o[4].load(Relaxed),
            ]
        } else {
            load5(o)
        };
        let user = e.user.load(Relaxed);
        let word = Word(e.state.load(Relaxed));
        let last = e.last.load(Relaxed);
        fence(Acquire);
        // A changed version means the entry was freed or reused under us:
        // the flow it held is gone.
        if e.seq.load(Relaxed) != s1 || word.life() != LIVE {
            return Found::Other;
        }
        let t = tick(now);
        let age = t.wrapping_sub(last) as i32;
        if age > self.timeout(word) {
            return Found::Expired;
        }
        let steady = word.steady(reply, flags);
        if !steady {
            self.change(e, s1, word, reply, flags);
        }
        if age > 0 {
            e.last.store(t, Relaxed);
        }
        Found::Hit(LeanHit {
            id,
            dir: if reply { Dir::Reply } else { Dir::Orig },
            xlate: FlowKey::swap_words(&ow),
            nat: word.nat(),
            user,
            seq: s1,
            word: if steady { word.0 } else { 0 },
        })
    }

    /// Snapshots of the live flows (allocates; for the control path only).
    pub fn iter_live(&self, now: u64) -> impl Iterator<Item = FlowSnapshot> + '_ {
        (0..self.geo.capacity).filter_map(move |id| {
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
        let b = ((h & 0xffff_ffff) * u64::from(self.geo.buckets)) >> 32;
        (b as usize, (h >> 1) & TAG_MASK)
    }

    /// A lookup's inlined first step for index hash `h` (see
    /// [`Table::track`]): the home bucket's committed slot word whose tag
    /// byte matches the key's, or the key surely absent (no matching tag
    /// byte, no overflow), or the full probe needed.
    #[inline(always)]
    fn first_slot(&self, h: u64) -> First {
        let (b, tag) = self.home(h);
        let Some(bucket) = self.index.get(b) else {
            return First::Absent;
        };
        let ctrl = bucket.0[CTRL].load(Acquire);
        let m = matches(ctrl ^ (tag8(h) * BYTE_LO));
        if m != 0 {
            let v = bucket.0[(m.trailing_zeros() / 8) as usize & 7].load(Acquire);
            // Committed with the key's tag: the slot's high half (compared
            // shifted down, which spares two 64-bit mask constants).
            if v >> 32 == (tag | COMMITTED) >> 32 {
                return First::Slot(v);
            }
        } else if ctrl < OVF_ONE {
            return First::Absent;
        }
        First::Probe
    }

    /// Hints the CPU to fetch the home bucket of `key` (the one cache line
    /// a miss reads), so a batch can start all its index misses before the
    /// first [`Table::track`]. Takes the key, not a hash: the index has its
    /// own hash (cheaper than [`FlowKey::hash`]).
    #[inline]
    pub fn prefetch(&self, key: &FlowKey) {
        let (home, _) = self.home(index_hash(&key.words()));
        if let Some(b) = self.index.get(home) {
            crate::state::prefetch::read(b);
        }
    }

    /// Word `s` of the index: bucket `s / 8`, slot `s % 8` (7 = control).
    #[inline]
    fn slot(&self, s: usize) -> &AtomicU64 {
        &self.index[s / BUCKET].0[s % BUCKET]
    }

    /// The bucket after `b`, wrapping.
    #[inline]
    fn next_bucket(&self, b: usize) -> usize {
        let b = b + 1;
        if b == self.index.len() {
            0
        } else {
            b
        }
    }

    /// The bucket `d` after `home`, wrapping (`d` < buckets).
    #[inline]
    fn bucket_at(&self, home: usize, d: usize) -> usize {
        let b = home + d;
        let n = self.index.len();
        if b >= n {
            b - n
        } else {
            b
        }
    }

    /// The insert path's lookup: every committed slot with `key`'s tag,
    /// read in full (a flow still `INSERTING` is reported `Busy`).
    #[inline]
    fn look(&self, key: &FlowKey, now: u64) -> Look {
        let kw = key.words();
        let (mut b, tag) = self.home(index_hash(&kw));
        let mut busy = false;
        for _ in 0..self.geo.probe {
            let Some(bucket) = self.index.get(b) else {
                return Look::Miss;
            };
            let want = tag | COMMITTED;
            let mut m = 0u32;
            for (i, slot) in bucket.0[..SLOTS].iter().enumerate() {
                m |= u32::from(slot.load(Acquire) & (TAG_MASK | COMMITTED) == want) << i;
            }
            while m != 0 {
                let v = bucket.0[m.trailing_zeros() as usize & 7].load(Acquire);
                m &= m - 1;
                if v & (TAG_MASK | COMMITTED) != want {
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
            if bucket.0[CTRL].load(Acquire) < OVF_ONE {
                break;
            }
            b = self.next_bucket(b);
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
            let orig = load5(&e.tuple[0]);
            let reply = load5(&e.tuple[1]);
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

    /// The timeout of word `w`'s state, in ticks.
    #[inline]
    fn timeout(&self, w: Word) -> i32 {
        self.geo.timeout_ticks[(w.0 >> 4) as usize & 15] as i32
    }

    #[inline]
    fn expired(&self, id: u32, w: Word, now: u64) -> bool {
        let last = self.entries[id as usize].last.load(Relaxed);
        let age = tick(now).wrapping_sub(last) as i32;
        age > self.timeout(w)
    }

    /// Builds the hit and updates state and last-seen where they changed.
    #[inline]
    fn touch(&self, id: u32, dir: Dir, snap: &Snap, flags: u8, now: u64) -> Hit {
        let e = &self.entries[id as usize];
        let reply = dir == Dir::Reply;
        if !snap.word.steady(reply, flags) {
            self.change(e, snap.seq, snap.word, reply, flags);
        }
        let t = tick(now);
        if (t.wrapping_sub(e.last.load(Relaxed)) as i32) > 0 {
            e.last.store(t, Relaxed);
        }
        let other = if reply { &snap.orig } else { &snap.reply };
        Hit {
            id,
            dir,
            xlate: key_from_words(&FlowKey::swap_words(other)),
            nat: snap.word.nat(),
            user: snap.user,
        }
    }

    /// Writes the state word (CAS) if the packet changes it. Off the common
    /// path: an established flow's packets are `steady`.
    #[cold]
    #[inline(never)]
    fn change(&self, e: &Entry, seq: u32, word: Word, reply: bool, flags: u8) {
        let mut cur = word;
        for round in 0..4 {
            // Retry a lost CAS only while the entry still holds the same flow.
            if round > 0 && e.seq.load(Acquire) != seq {
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
    }
}
