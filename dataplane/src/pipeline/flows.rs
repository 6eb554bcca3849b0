//! The fast path's flow cache: one worker's exact-match cache (OVS's EMC,
//! direct-mapped) of the established IPv4 flows with NAT it has forwarded,
//! each slot holding what a conntrack hit and the route lookup gave for the
//! flow and what the rewrite derives from them (the translated addresses and
//! ports, both checksum deltas, the route, the outer UDP source port).
//!
//! Why: for such a packet the conntrack index (hash to bucket, control word,
//! slot, the key compared against the entry, the other tuple read and
//! swapped), the route cache and the checksum arithmetic are the same every
//! time; what may change is the conntrack entry itself. So a slot also keeps
//! the entry's id, direction and version, and a cached packet is checked
//! against the entry alone (`conntrack::Table::revisit`: same version, live,
//! not expired, the packet does not change its state), which updates its
//! last-seen tick as a lookup would. Anything else (a version change, a
//! state change, expiry) takes the full lookup, so conntrack sees exactly
//! what it would without the cache.
//!
//! What a slot derives from the conntrack entry is fixed while the entry's
//! version is (tuples, user word and NAT flag are rewritten only after a
//! version change). The route depends on the tables: the cache is emptied
//! with the route cache when their generation changes. Only the worker
//! reads and writes its cache (no sharing, no atomics).
//!
//! The key is looked up in the first pass (which then prefetches the entry
//! instead of the index bucket; the conntrack index hash is only computed
//! for a key not found) by a multiplicative hash of its two words; a
//! cached slot is read again in the second pass. The cache is
//! filled by the second pass's full lookups. Two ways per set (the key
//! hash picks the set): a new flow takes the first way and the first way's
//! flow moves to the second, so two flows that share a set both stay (one
//! way alone lost a fifth of the bench's 1024 flows to collisions).
//!
//! The cache switches itself off where it does not pay: with more flows
//! than slots, every packet would pay the probe, a miss on the slot's line
//! and a fill evicting another flow (10,000 flows ran 35% slower than
//! without the cache); with untracked flows only (pod to pod), the probe.
//! Per window of [`WINDOW`] probes it counts the hits and the fills into a
//! free way (a cold cache filling up); when those are fewer than half the
//! probes it stops probing and filling for [`PAUSE`] batches, then tries
//! again with what it still holds.

use crate::state::RouteTarget;

/// Sets of two slots (a power of two): 512 KiB.
const SETS: usize = 4096;
const SLOTS: usize = 2 * SETS;
const _: () = assert!(SETS.is_power_of_two());
const _: () = assert!(std::mem::size_of::<Slot>() == 64);

/// One flow: a cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// The packet's IPv4 key: the source and destination addresses (the
    /// source in the low half, little-endian images: the `FlowKey` words 0
    /// and 2) and `FlowKey` word 4. An empty slot has `k1` 0, which no key
    /// has (word 4 carries the family).
    pub k0: u64,
    pub k1: u64,
    /// [`Edit`]'s fields (`nat` set).
    pub xa: u64,
    pub xp: u64,
    pub route: RouteTarget,
    /// The conntrack entry, its version and the packet's direction.
    pub id: u32,
    pub seq: u32,
    /// The entry's user word: the flow's stable Service id (its counters).
    pub user: u32,
    pub ip: u16,
    pub l4: u16,
    pub sport: u16,
    pub reply: bool,
}

impl Slot {
    /// The flow's [`Edit`].
    #[inline(always)]
    pub fn edit(&self) -> Edit {
        Edit {
            xa: self.xa,
            xp: self.xp,
            ip: self.ip,
            l4: self.l4,
            sport: self.sport,
            nat: true,
        }
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
    /// The outer UDP source port of an encapsulated packet; 0: not known.
    pub sport: u16,
    /// The packet is translated (if not, `ip`, `l4`, `xa` and `xp` are
    /// unused: the TTL decrement alone).
    pub nat: bool,
}

const EMPTY: Slot = Slot {
    k0: 0,
    k1: 0,
    xa: 0,
    xp: 0,
    route: RouteTarget::Outside,
    id: 0,
    seq: 0,
    user: 0,
    ip: 0,
    l4: 0,
    sport: 0,
    reply: false,
};

/// Probes per window of the on/off decision.
const WINDOW: u32 = 1024;
/// Batches the cache stays off after a window that did not pay.
const PAUSE: u32 = 256;

pub(crate) struct FlowCache {
    slots: Box<[Slot; SLOTS]>,
    /// Probing and filling (see the module doc).
    pub on: bool,
    /// This window's probes, hits, and fills into a free way.
    probes: u32,
    hits: u32,
    cold: u32,
    /// Batches left before a paused cache is tried again.
    pause: u32,
}

impl Default for FlowCache {
    fn default() -> Self {
        let slots: Box<[Slot]> = vec![EMPTY; SLOTS].into_boxed_slice();
        FlowCache {
            // The length is SLOTS by construction.
            slots: slots
                .try_into()
                .unwrap_or_else(|_| Box::new([EMPTY; SLOTS])),
            on: true,
            probes: 0,
            hits: 0,
            cold: 0,
            pause: 0,
        }
    }
}

/// The first slot of a key's set: the top bits of a multiplicative hash of
/// the words' XOR (the top bits of a product depend on every bit of the
/// factor; the ports meet the source address, which one client's flows
/// share).
#[inline(always)]
fn set(k0: u64, k1: u64) -> usize {
    let x = (k0 ^ k1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> (64 - SETS.trailing_zeros())) as usize * 2) & (SLOTS - 1)
}

impl FlowCache {
    /// The slot holding key `k0`, `k1`, as a handle for
    /// [`FlowCache::get`]: its index + 1; 0 if none.
    #[inline(always)]
    pub fn find(&mut self, k0: u64, k1: u64) -> u32 {
        self.probes += 1;
        let i = set(k0, k1);
        let s = &self.slots[i];
        if (s.k0 ^ k0) | (s.k1 ^ k1) == 0 {
            self.hits += 1;
            return i as u32 + 1;
        }
        // An empty first way: the second is empty too (`put` fills the
        // first way first, `reset` empties both).
        if s.k1 == 0 {
            return 0;
        }
        let s = &self.slots[i | 1];
        if (s.k0 ^ k0) | (s.k1 ^ k1) == 0 {
            self.hits += 1;
            return i as u32 + 2;
        }
        0
    }

    /// The slot of a nonzero handle from [`FlowCache::find`].
    #[inline(always)]
    pub fn get(&self, handle: u32) -> &Slot {
        &self.slots[(handle as usize).wrapping_sub(1) & (SLOTS - 1)]
    }

    /// Caches a flow in its set's first way, the first way's flow moving
    /// to the second (unless it is this one).
    #[inline(always)]
    pub fn put(&mut self, slot: Slot) {
        let i = set(slot.k0, slot.k1);
        let first = self.slots[i];
        if (first.k0 ^ slot.k0) | (first.k1 ^ slot.k1) != 0 {
            self.cold += u32::from(self.slots[i | 1].k1 == 0);
            self.slots[i | 1] = first;
        }
        self.slots[i] = slot;
    }

    /// The on/off decision, once per batch (see the module doc).
    #[inline]
    pub fn end_batch(&mut self) {
        if !self.on {
            self.pause = self.pause.saturating_sub(1);
            if self.pause == 0 {
                self.on = true;
            }
        } else if self.probes >= WINDOW {
            if self.hits + self.cold < self.probes / 2 {
                self.on = false;
                self.pause = PAUSE;
            }
            self.probes = 0;
            self.hits = 0;
            self.cold = 0;
        }
    }

    /// Empties every slot (the tables changed).
    pub fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.k1 = 0;
        }
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
    fn a_cached_key_is_found_in_either_way_and_a_third_key_of_its_set_evicts_the_oldest() {
        let mut c = FlowCache::default();
        // Three keys of one set.
        let set_of = |k0: u64| set(k0, 4 << 40);
        let a = 1;
        let b = (2..).find(|&k| set_of(k) == set_of(a)).unwrap_or(0);
        let d = (b + 1..).find(|&k| set_of(k) == set_of(a)).unwrap_or(0);
        assert_eq!(c.find(a, 4 << 40), 0);
        c.put(slot(a));
        c.put(slot(b));
        assert_ne!(c.find(a, 4 << 40), 0);
        assert_ne!(c.find(b, 4 << 40), 0);
        let hb = c.find(b, 4 << 40);
        assert_eq!(c.get(hb).k0, b);
        c.put(slot(d));
        assert_eq!(c.find(a, 4 << 40), 0);
        assert_ne!(c.find(b, 4 << 40), 0);
        assert_ne!(c.find(d, 4 << 40), 0);
        c.reset();
        assert_eq!(c.find(b, 4 << 40), 0);
    }

    #[test]
    fn a_cache_that_misses_switches_off_for_a_pause_then_tries_again() {
        let mut c = FlowCache::default();
        for k in 0..u64::from(WINDOW) {
            assert_eq!(c.find(k, 4 << 40), 0);
        }
        c.end_batch();
        assert!(!c.on);
        for _ in 1..PAUSE {
            c.end_batch();
            assert!(!c.on);
        }
        c.end_batch();
        assert!(c.on);
    }

    #[test]
    fn a_cold_cache_filling_up_stays_on() {
        let mut c = FlowCache::default();
        for k in 0..u64::from(WINDOW) {
            if c.find(k, 4 << 40) == 0 {
                c.put(slot(k));
            }
        }
        c.end_batch();
        assert!(c.on);
    }
}
