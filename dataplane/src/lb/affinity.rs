//! sessionAffinity: ClientIP memory, (service, client IP) -> backend for a timeout.
//!
//! One table shared by all workers through `&self`; no locks. It is a set-associative
//! cache of one-word entries: the key hashes to a bucket of [`WAYS`] `AtomicU64`
//! slots (one cache line), and each slot packs
//! `tag (18 bits) | backend id (22 bits) | last use in seconds mod 2^24 (24 bits)`.
//! The tag is hash bits the bucket index did not use, so a lookup compares one word per
//! way; an empty slot is 0 (a tag is never 0).
//!
//! Writers: every worker, with plain `Relaxed` stores of whole words (a word is
//! self-contained, so a reader sees either the old or the new entry, never a mix).
//! Two workers recording the same client at once may leave two slots for it, or one
//! may overwrite the other: last writer wins, which is fine because the backend the
//! Maglev table picks for a client IP is deterministic. A recorded entry can be lost to
//! a racing writer or evicted by a newer one from a full bucket (the oldest goes); the
//! cost is that the next connection is placed by Maglev again (the same backend while
//! the backend set is unchanged).
//!
//! Time is coarse: seconds, from the `now` (ns) the worker passes in. Timestamps wrap
//! every 2^24 s (194 days); timeouts are clamped to 2^23 s so ages stay unambiguous
//! (Kubernetes caps `timeoutSeconds` at 86400).

use super::hash::{halves, hash3, SEED_AFFINITY};
use super::{BackendId, SvcId};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per bucket: 8 x 8 bytes = one 64-byte cache line.
pub const WAYS: usize = 8;

const TIME_BITS: u32 = 24;
const BACKEND_BITS: u32 = 22;
const TAG_BITS: u32 = 64 - TIME_BITS - BACKEND_BITS;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const BACKEND_MASK: u64 = (1 << BACKEND_BITS) - 1;
/// The longest timeout honoured; longer ones are clamped to it.
pub const MAX_TIMEOUT_S: u32 = 1 << (TIME_BITS - 1);
/// Backend ids at or above this cannot be recorded (the service table refuses to
/// build that many backends).
pub const MAX_BACKENDS: u32 = 1 << BACKEND_BITS;

/// The shared ClientIP affinity cache. `Sync`: share it with an `Arc`.
pub struct AffinityTable {
    slots: Box<[AtomicU64]>,
    /// Number of buckets - 1 (a power of two minus one).
    bucket_mask: usize,
}

impl std::fmt::Debug for AffinityTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AffinityTable")
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[inline]
fn seconds(now: u64) -> u64 {
    (now / 1_000_000_000) & TIME_MASK
}

#[inline]
fn tag_of(w: u64) -> u64 {
    w >> (TIME_BITS + BACKEND_BITS)
}

impl AffinityTable {
    /// A table of at least `capacity` entries (rounded up to whole power-of-two
    /// buckets of [`WAYS`]).
    pub fn new(capacity: usize) -> AffinityTable {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        let slots = (0..buckets * WAYS).map(|_| AtomicU64::new(0)).collect();
        AffinityTable {
            slots,
            bucket_mask: buckets - 1,
        }
    }

    /// How many entries it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// (first slot of the bucket, tag) for a key.
    #[inline]
    fn locate(&self, svc: SvcId, client: IpAddr) -> (usize, u64) {
        let (bytes, family) = super::ip_bytes(client);
        let (a, b) = halves(&bytes);
        let h = hash3(
            SEED_AFFINITY,
            a,
            b,
            u64::from(svc.0) | (u64::from(family) << 32),
        );
        let bucket = (h as usize) & self.bucket_mask;
        let tag = (h >> (64 - TAG_BITS)).max(1);
        (bucket * WAYS, tag)
    }

    #[inline]
    fn bucket(&self, first: usize) -> &[AtomicU64] {
        // `first` is `bucket * WAYS` with `bucket <= bucket_mask`, so always in range;
        // `get` keeps the packet path free of panics anyway.
        self.slots.get(first..first + WAYS).unwrap_or(&[])
    }

    /// The backend recorded for `client` on `svc`, if it was last used no more than
    /// `timeout_s` seconds before `now` (ns).
    #[inline]
    pub fn lookup(
        &self,
        svc: SvcId,
        client: IpAddr,
        now: u64,
        timeout_s: u32,
    ) -> Option<BackendId> {
        let (first, tag) = self.locate(svc, client);
        let now_s = seconds(now);
        let timeout = u64::from(timeout_s.min(MAX_TIMEOUT_S));
        for slot in self.bucket(first) {
            let w = slot.load(Ordering::Relaxed);
            if w != 0 && tag_of(w) == tag {
                let age = now_s.wrapping_sub(w & TIME_MASK) & TIME_MASK;
                if age <= timeout {
                    return Some(BackendId(((w >> TIME_BITS) & BACKEND_MASK) as u32));
                }
            }
        }
        None
    }

    /// Records (or refreshes) `client` -> `backend` on `svc` as used at `now` (ns).
    /// Returns false only for a backend id too large to record.
    #[inline]
    pub fn record(&self, svc: SvcId, client: IpAddr, backend: BackendId, now: u64) -> bool {
        if backend.0 >= MAX_BACKENDS {
            return false;
        }
        let (first, tag) = self.locate(svc, client);
        let now_s = seconds(now);
        let word =
            (tag << (TIME_BITS + BACKEND_BITS)) | (u64::from(backend.0) << TIME_BITS) | now_s;
        let bucket = self.bucket(first);
        let mut victim: Option<(&AtomicU64, u64)> = None;
        for slot in bucket {
            let w = slot.load(Ordering::Relaxed);
            if w != 0 && tag_of(w) == tag {
                // Same key: refresh in place (skip the store, and the cache-line
                // traffic, when nothing changed).
                if w != word {
                    slot.store(word, Ordering::Relaxed);
                }
                return true;
            }
            // Otherwise the first empty slot, else the least recently used one.
            let age = if w == 0 {
                u64::MAX
            } else {
                now_s.wrapping_sub(w & TIME_MASK) & TIME_MASK
            };
            let older = match victim {
                None => true,
                Some((_, a)) => age > a,
            };
            if older {
                victim = Some((slot, age));
            }
        }
        if let Some((slot, _)) = victim {
            slot.store(word, Ordering::Relaxed);
        }
        true
    }

    /// Forgets every entry (builder/control side, e.g. when all Services are replaced).
    pub fn clear(&self) {
        for s in self.slots.iter() {
            s.store(0, Ordering::Relaxed);
        }
    }
}
