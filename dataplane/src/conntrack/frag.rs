//! The per-worker fragment table: remembers, per (src, dst, ident, proto),
//! what the first fragment of a datagram decided (typically its flow's
//! translation), so later fragments, which carry no ports, follow it.
//!
//! One writer: the worker that owns it (`&mut self`, not shared). Bounded:
//! sized at `new`, it never allocates afterwards; a full table evicts an
//! expired entry, else the oldest one, and counts it.

use hashbrown::HashMap;
use rustc_hash::FxBuildHasher;

/// A datagram's fragment identity. IPv4 addresses in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ident: u32,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
}

/// Fragment table counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct FragStats {
    pub inserted: u64,
    /// Entries dropped because they timed out (found expired or evicted so).
    pub expired: u64,
    /// Live entries evicted (oldest first) to make room.
    pub evicted: u64,
}

#[derive(Clone, Copy)]
struct Slot<V> {
    value: V,
    born: u64,
}

/// A bounded map from [`FragKey`] to `V`, entries living `timeout_ns`.
pub struct FragTable<V: Copy> {
    map: HashMap<FragKey, Slot<V>, FxBuildHasher>,
    capacity: usize,
    timeout_ns: u64,
    stats: FragStats,
}

impl<V: Copy> FragTable<V> {
    /// A table of at most `capacity` (at least 1) entries.
    pub fn new(capacity: usize, timeout_ns: u64) -> FragTable<V> {
        let capacity = capacity.max(1);
        FragTable {
            // Twice the bound: with at most half its buckets full, hashbrown
            // clears tombstones by rehashing in place instead of growing.
            map: HashMap::with_capacity_and_hasher(2 * capacity, FxBuildHasher),
            capacity,
            timeout_ns,
            stats: FragStats::default(),
        }
    }

    fn is_expired(&self, born: u64, now: u64) -> bool {
        now.saturating_sub(born) > self.timeout_ns
    }

    /// Records `value` for `key` (replacing an older one). On a full table
    /// an expired entry is dropped, else the oldest.
    pub fn insert(&mut self, key: FragKey, value: V, now: u64) {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            let timeout = self.timeout_ns;
            let before = self.map.len();
            self.map
                .retain(|_, s| now.saturating_sub(s.born) <= timeout);
            let gone = (before - self.map.len()) as u64;
            self.stats.expired += gone;
            if gone == 0 {
                let oldest = self.map.iter().min_by_key(|(_, s)| s.born).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.map.remove(&k);
                    self.stats.evicted += 1;
                }
            }
        }
        self.map.insert(key, Slot { value, born: now });
        self.stats.inserted += 1;
    }

    /// The value recorded for `key`, unless it timed out (then dropped).
    pub fn get(&mut self, key: &FragKey, now: u64) -> Option<V> {
        let slot = *self.map.get(key)?;
        if self.is_expired(slot.born, now) {
            self.map.remove(key);
            self.stats.expired += 1;
            return None;
        }
        Some(slot.value)
    }

    pub fn remove(&mut self, key: &FragKey) -> Option<V> {
        self.map.remove(key).map(|s| s.value)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> FragStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn key(ident: u32) -> FragKey {
        let mut k = FragKey {
            ident,
            proto: 17,
            family: 4,
            ..FragKey::default()
        };
        k.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        k
    }

    #[test]
    fn a_recorded_fragment_is_found_until_it_times_out() {
        let mut t = FragTable::new(4, 30 * SEC);
        t.insert(key(1), 7u32, 0);
        assert_eq!(t.get(&key(1), 30 * SEC), Some(7));
        assert_eq!(t.get(&key(2), 30 * SEC), None);
        assert_eq!(t.get(&key(1), 30 * SEC + 1), None);
        assert_eq!(t.stats().expired, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_drops_expired_entries_before_live_ones() {
        let mut t = FragTable::new(2, 10 * SEC);
        t.insert(key(1), 1u8, 0);
        t.insert(key(2), 2u8, 5 * SEC);
        t.insert(key(3), 3u8, 12 * SEC);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&key(1), 12 * SEC), None);
        assert_eq!(t.get(&key(2), 12 * SEC), Some(2));
        assert_eq!(t.get(&key(3), 12 * SEC), Some(3));
        assert_eq!(t.stats().expired, 1);
        assert_eq!(t.stats().evicted, 0);
    }

    #[test]
    fn a_full_table_of_live_entries_evicts_the_oldest_and_counts_it() {
        let mut t = FragTable::new(2, 10 * SEC);
        t.insert(key(1), 1u8, 2);
        t.insert(key(2), 2u8, 1);
        t.insert(key(3), 3u8, 3);
        assert_eq!(t.get(&key(2), 4), None);
        assert_eq!(t.get(&key(1), 4), Some(1));
        assert_eq!(t.get(&key(3), 4), Some(3));
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.stats().inserted, 3);
    }

    #[test]
    fn replacing_a_key_does_not_evict_and_removing_returns_the_value() {
        let mut t = FragTable::new(1, 10 * SEC);
        t.insert(key(1), 1u8, 0);
        t.insert(key(1), 9u8, 1);
        assert_eq!(t.stats().evicted, 0);
        assert_eq!(t.remove(&key(1)), Some(9));
        assert_eq!(t.get(&key(1), 2), None);
    }
}
