//! The fast path's flow cache: one worker's exact-match cache (as OVS's
//! EMC) of the established IPv4 flows with NAT it has forwarded,
//! each slot holding what a conntrack hit and the route lookup gave for the
//! flow and what the rewrite derives from them (the translated addresses and
//! ports, both checksum deltas, where its packets go).
//!
//! Why: for such a packet the conntrack index (hash to bucket, control word,
//! slot, the key compared against the entry, the other tuple read and
//! swapped), the route cache and the checksum arithmetic are the same every
//! time; what may change is the conntrack entry itself. So a slot also keeps
//! the entry's id, direction, version and state word (with the word's
//! timeout and the TCP flags that would change it, `Table::expect`), and a
//! cached packet is checked against the entry alone
//! (`conntrack::Table::revisit`: same version, same state word, not
//! expired, the packet's flags change nothing), which updates its last-seen
//! tick as a lookup would. Anything else (a version change, a
//! state change, expiry) takes the full lookup, so conntrack sees exactly
//! what it would without the cache.
//!
//! What a slot derives from the conntrack entry is fixed while the entry's
//! version is (tuples, user word and NAT flag are rewritten only after a
//! version change). The route depends on the tables: the cache is emptied
//! with the route cache when their generation changes. Only the worker
//! reads and writes its cache (no sharing, no atomics).
//!
//! A slot also holds where a cached flow's packets go (`Out`: the pod or
//! remote node, the flow's outer UDP source port and the MTU it fits); the
//! bytes in front of the IP header toward a remote node are the node's
//! (`state::Pre4`), one line copied whole. A slot is one cache line (a
//! per-flow copy of those bytes, a second line, cost 5 to 10% from 2,000
//! to 20,000 flows in the bench: one more line per packet to bring in).
//!
//! The key is looked up in the first pass by a multiplicative hash of its
//! two words (the conntrack index hash is only computed for a key not
//! found); while the cache is [`FlowCache::hot`] (few flows: their lines
//! stay in a core's cache), a cached flow is finished there when every
//! earlier frame of the batch is; else its entry is prefetched and its slot
//! read again in the second pass. The cache is filled by full lookups.
//! Four ways per set (the key hash picks the set), free ways filled in
//! order, a full set's way taken round robin: two ways lost about 1% of the
//! bench's 1024 flows to sets of three, and each of those misses left the
//! rest of its batch to the second pass; one way lost a fifth.
//!
//! The cache switches itself off where it does not pay: with more flows
//! than slots, every packet would pay the probe, a miss on the slot's line
//! and a fill evicting another flow (10,000 flows ran 35% slower than
//! without the cache); with untracked flows only (pod to pod), the probe.
//! Per window of [`WINDOW`] probes it counts the hits and the fills into a
//! free way (a cold cache filling up); when those are fewer than three
//! quarters of the probes it stops probing and filling for [`PAUSE`]
//! batches, twice as long after each further such window (up to
//! [`PAUSE_MAX`]), then tries again with what it still holds. (Half, and
//! a fixed pause, kept it on at 10,000 flows at a 40% loss: a miss costs
//! the probe and a fill, a hit saves a lookup.)

use std::cell::Cell;

/// Sets of [`WAYS`] slots (a power of two): 512 KiB.
const SETS: usize = 2048;
const WAYS: usize = 4;
const _: () = assert!(SETS.is_power_of_two() && WAYS.is_power_of_two());
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// Where a cached flow's packets go, decided when it was cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Out {
    /// Anything the cached path does not finish: `fast::dispatch` on the
    /// translated destination's route.
    General,
    /// To the local pod `idx`.
    Pod,
    /// Off-cluster, out of the uplink.
    Outside,
    /// VXLAN over IPv4 toward the remote node `idx` (its `state::Pre4` in
    /// front, with the flow's UDP source port), for an inner IP packet of
    /// at most `limit` bytes.
    Remote,
}

/// One flow: one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// The packet's IPv4 key: the source and destination addresses (the
    /// source in the low half, little-endian images: the `FlowKey` words 0
    /// and 2) and `FlowKey` word 4. An empty slot has `k1` 0, which no key
    /// has (word 4 carries the family).
    pub k0: u64,
    pub k1: u64,
    /// [`Edit`]'s fields (`nat` set); `xp`'s top 16 bits, which a key word
    /// does not use, hold the outer UDP source port of [`Out::Remote`].
    pub xa: u64,
    pub xp: u64,
    /// The conntrack entry, its version, and what the entry is expected
    /// to hold (`conntrack::Table::revisit`).
    pub id: u32,
    pub seq: u32,
    pub word: u32,
    pub timeout: i32,
    /// The entry's user word: the flow's stable Service id (its counters).
    pub user: u32,
    pub ip: u16,
    pub l4: u16,
    /// The pod or remote node (see [`Out`]).
    pub idx: u16,
    /// [`Out::Remote`]: the largest inner frame (the remote node's inner
    /// IP packet limit and the inner Ethernet header); 0 for any other
    /// `out` (so a frame fits only toward a remote node: the send path
    /// tells Remote by it).
    pub limit: u16,
    pub out: Out,
    /// The packet's direction in its flow.
    pub reply: bool,
    /// The TCP flags that would change the entry's state.
    pub chg: u8,
}

/// Where [`Slot::xp`] keeps the outer UDP source port.
pub(crate) const SPORT_SHIFT: u32 = 48;

impl Slot {
    /// The flow's [`Edit`].
    #[inline(always)]
    pub fn edit(&self) -> Edit {
        Edit {
            xa: self.xa,
            xp: self.xp & ((1 << SPORT_SHIFT) - 1),
            ip: self.ip,
            l4: self.l4,
            nat: true,
        }
    }

    /// The [`Edit`] for `fast::rewrite` alone, which reads `xp`'s low 32
    /// bits only (the source port above left in place).
    #[inline(always)]
    pub fn rewrite_edit(&self) -> Edit {
        Edit {
            xp: self.xp,
            ..self.edit()
        }
    }

    /// [`Out::Remote`]'s outer UDP source port.
    #[inline(always)]
    pub fn sport(&self) -> u16 {
        (self.xp >> SPORT_SHIFT) as u16
    }
}

/// What the rewrite of one flow's packets needs, derived from the packet's
/// key and its translation (see `fast::rewrite`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Edit {
    /// The translated addresses, as `Slot::k0`.
    pub xa: u64,
    /// The translated `FlowKey` word 4.
    pub xp: u64,
    /// RFC 1624 sums (folded, 1..=0xffff, or 0 for a zero sum) of the IPv4
    /// header's changes (addresses, TTL) and of the L4 checksum's
    /// (addresses, ports).
    pub ip: u16,
    pub l4: u16,
    /// The packet is translated (if not, `ip`, `l4`, `xa` and `xp` are
    /// unused: the TTL decrement alone).
    pub nat: bool,
}

const EMPTY: Slot = Slot {
    k0: 0,
    k1: 0,
    xa: 0,
    xp: 0,
    id: 0,
    seq: 0,
    word: 0,
    timeout: 0,
    user: 0,
    ip: 0,
    l4: 0,
    idx: 0,
    limit: 0,
    out: Out::General,
    reply: false,
    chg: 0,
};
/// Probes per window of the on/off decision.
const WINDOW: u32 = 1024;
/// Batches the cache stays off after a window that did not pay; doubled
/// after each further such window, up to [`PAUSE_MAX`] (more flows than
/// slots for good: each window on costs its probes and misses).
const PAUSE: u32 = 256;
const PAUSE_MAX: u32 = 8192;
/// Flows cached at most for a cached flow's frame to be finished in the
/// first pass (`FlowCache::hot`): their slots and conntrack entries (about
/// 160 bytes a flow) then stay in a core's cache, so the line the second
/// pass would have had prefetched is there anyway. Above it, a cached
/// flow's frame waits for the second pass and its prefetched entry (10,000
/// flows ran 10% slower finished in the first).
const HOT: u32 = 2048;

pub(crate) struct FlowCache {
    sets: Box<[[Slot; WAYS]; SETS]>,
    /// Probing and filling (see the module doc).
    pub on: bool,
    /// This window's hits, misses, and fills into a free way (the probe's
    /// counts in cells: a probe borrows the cache shared, so that its slot
    /// and the cache's other reads can be held together).
    hits: Cell<u32>,
    misses: Cell<u32>,
    cold: u32,
    /// Batches left before a paused cache is tried again, and the next
    /// pause.
    pause: u32,
    next_pause: u32,
    /// Slots holding a flow.
    used: u32,
    /// The next full set's way to take a new flow (round robin).
    victim: usize,
}

impl Default for FlowCache {
    fn default() -> Self {
        let sets: Box<[[Slot; WAYS]]> = vec![[EMPTY; WAYS]; SETS].into_boxed_slice();
        FlowCache {
            // The length is SETS by construction.
            sets: sets
                .try_into()
                .unwrap_or_else(|_| Box::new([[EMPTY; WAYS]; SETS])),
            on: true,
            hits: Cell::new(0),
            misses: Cell::new(0),
            cold: 0,
            pause: 0,
            next_pause: PAUSE,
            used: 0,
            victim: 0,
        }
    }
}

/// A key's set: the top bits of a multiplicative hash of the words' XOR
/// (the top bits of a product depend on every bit of the factor; the ports
/// meet the source address, which one client's flows share).
#[inline(always)]
fn set(k0: u64, k1: u64) -> usize {
    let x = (k0 ^ k1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> (64 - SETS.trailing_zeros())) as usize & (SETS - 1)
}

impl FlowCache {
    /// The slot holding key `k0`, `k1`.
    #[inline(always)]
    pub fn find(&self, k0: u64, k1: u64) -> Option<&Slot> {
        let set = &self.sets[set(k0, k1)];
        for s in set {
            if (s.k0 ^ k0) | (s.k1 ^ k1) == 0 {
                self.hits.set(self.hits.get() + 1);
                return Some(s);
            }
            // An empty way: the later ones are empty too (`put` fills the
            // ways in order, `reset` empties them all).
            if s.k1 == 0 {
                break;
            }
        }
        self.misses.set(self.misses.get() + 1);
        None
    }

    /// A nonzero handle for a slot [`FlowCache::find`] gave, for
    /// [`FlowCache::get`] (its index + 1): taken only for a frame that
    /// keeps it, so the probe itself carries no index.
    #[inline]
    pub fn handle(&self, s: &Slot) -> u32 {
        let base = self.sets.as_ptr() as usize;
        ((s as *const Slot as usize).wrapping_sub(base) / std::mem::size_of::<Slot>()) as u32 + 1
    }

    /// The slot of a nonzero handle from [`FlowCache::handle`].
    #[inline(always)]
    pub fn get(&self, handle: u32) -> &Slot {
        let i = (handle as usize).wrapping_sub(1);
        &self.sets[(i / WAYS) & (SETS - 1)][i % WAYS]
    }

    /// Caches a flow: in place of the same key, else in its set's first
    /// free way (the ways fill in order), else in place of one of its
    /// flows (round robin over the ways).
    #[inline(always)]
    pub fn put(&mut self, slot: Slot) {
        let set = &mut self.sets[set(slot.k0, slot.k1)];
        let same = |s: &Slot| (s.k0 ^ slot.k0) | (s.k1 ^ slot.k1) == 0;
        let w = match set.iter().position(|s| s.k1 == 0 || same(s)) {
            Some(w) => {
                let free = u32::from(set[w].k1 == 0);
                self.cold += free;
                self.used += free;
                w
            }
            None => {
                self.victim = self.victim.wrapping_add(1);
                self.victim % WAYS
            }
        };
        set[w] = slot;
    }

    /// Few enough flows cached to finish their frames in the first pass
    /// (see [`HOT`]).
    #[inline]
    pub fn hot(&self) -> bool {
        self.on && self.used <= HOT
    }

    /// The on/off decision, once per batch (see the module doc).
    #[inline]
    pub fn end_batch(&mut self) {
        if !self.on {
            self.pause = self.pause.saturating_sub(1);
            if self.pause == 0 {
                self.on = true;
            }
        } else {
            let (hits, misses) = (self.hits.get(), self.misses.get());
            if hits + misses >= WINDOW {
                if hits + self.cold < (hits + misses) / 4 * 3 {
                    self.on = false;
                    self.pause = self.next_pause;
                    self.next_pause = (self.next_pause * 2).min(PAUSE_MAX);
                } else {
                    self.next_pause = PAUSE;
                }
                self.hits.set(0);
                self.misses.set(0);
                self.cold = 0;
            }
        }
    }

    /// Empties every slot (the tables changed).
    pub fn reset(&mut self) {
        for s in self.sets.iter_mut().flatten() {
            s.k1 = 0;
        }
        self.used = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(k0: u64) -> Slot {
        Slot {
            k0,
            k1: 4 << 40,
            ..EMPTY
        }
    }

    #[test]
    fn a_cached_key_is_found_in_any_way_and_one_key_more_than_its_set_holds_takes_one_way() {
        let mut c = FlowCache::default();
        // WAYS + 1 keys of one set.
        let set_of = |k0: u64| set(k0, 4 << 40);
        let mut keys = vec![1u64];
        while keys.len() < WAYS + 1 {
            let last = keys[keys.len() - 1];
            keys.push((last + 1..).find(|&k| set_of(k) == set_of(1)).unwrap_or(0));
        }
        assert!(c.find(keys[0], 4 << 40).is_none());
        for &k in &keys[..WAYS] {
            c.put(slot(k));
        }
        assert_eq!(c.used, WAYS as u32);
        for &k in &keys[..WAYS] {
            let s = *c.find(k, 4 << 40).expect("cached");
            assert_eq!(s.k0, k);
            let h = c.find(k, 4 << 40).map(|s| c.handle(s));
            assert_eq!(h.map(|h| c.get(h).k0), Some(k));
        }
        // Cached again in place: nothing leaves.
        c.put(slot(keys[1]));
        assert!(keys[..WAYS].iter().all(|&k| c.find(k, 4 << 40).is_some()));
        // One more: it is found, and exactly one of the others is not.
        c.put(slot(keys[WAYS]));
        assert!(c.find(keys[WAYS], 4 << 40).is_some());
        let gone = keys[..WAYS]
            .iter()
            .filter(|&&k| c.find(k, 4 << 40).is_none())
            .count();
        assert_eq!(gone, 1);
        assert_eq!(c.used, WAYS as u32);
        c.reset();
        assert!(c.find(keys[1], 4 << 40).is_none());
        assert_eq!(c.used, 0);
    }

    #[test]
    fn a_cache_that_misses_switches_off_for_a_pause_that_doubles_while_it_still_misses() {
        let mut c = FlowCache::default();
        let mut k = 0u64;
        for pause in [PAUSE, 2 * PAUSE, 4 * PAUSE] {
            for _ in 0..WINDOW {
                assert!(c.find(k, 4 << 40).is_none());
                k += 1;
            }
            c.end_batch();
            assert!(!c.on && !c.hot());
            for _ in 1..pause {
                c.end_batch();
                assert!(!c.on);
            }
            c.end_batch();
            assert!(c.on);
        }
        // A window that pays brings the pause back to its start.
        for k in 0..u64::from(WINDOW) {
            if c.find(k, 4 << 40).is_none() {
                c.put(slot(k));
            }
        }
        c.end_batch();
        assert!(c.on);
        assert_eq!(c.next_pause, PAUSE);
    }

    #[test]
    fn a_cold_cache_filling_up_stays_on() {
        let mut c = FlowCache::default();
        for k in 0..u64::from(WINDOW) {
            if c.find(k, 4 << 40).is_none() {
                c.put(slot(k));
            }
        }
        c.end_batch();
        assert!(c.on);
    }
}
