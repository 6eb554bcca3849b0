//! Maglev lookup-table population (Eisenbud et al., NSDI '16, §3.4, "Pseudocode 1").
//!
//! Each backend has a permutation of the `M` slots given by `offset = h1(name) % M` and
//! `skip = h2(name) % (M - 1) + 1` (M prime, so every skip walks all slots). Backends
//! take turns claiming the next free slot of their own permutation until the table is
//! full; each gets `M / N` slots give or take one, and since a backend's permutation
//! depends on its name only, removing or adding one backend moves few slots of the
//! others.

/// The table sizes a service may get: primes, each about twice the one before.
pub const MAGLEV_SIZES: [u32; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// The default cap on a service's table size.
pub const DEFAULT_MAGLEV_MAX_SIZE: u32 = 65521;

/// Slots per usable backend the sizing aims for (the paper's `M >= 100 N`).
pub const SLOTS_PER_BACKEND: u64 = 100;

/// Marks a slot not yet claimed during population (never left in a built table).
const EMPTY: u16 = u16::MAX;

/// Whether `n` is prime (trial division; only used on configuration values).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The table size for `usable` backends: the smallest size in [`MAGLEV_SIZES`] of at
/// least `100 * usable`, never above `max` (itself a prime); `max` when no listed
/// size below it is big enough. 0 for no backend.
pub fn table_size(usable: usize, max: u32) -> u32 {
    if usable == 0 {
        return 0;
    }
    let want = (usable as u64).saturating_mul(SLOTS_PER_BACKEND);
    MAGLEV_SIZES
        .iter()
        .copied()
        .filter(|&s| s <= max)
        .find(|&s| u64::from(s) >= want)
        .unwrap_or(max)
}

/// One backend's permutation, reduced for a table of size `m`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Perm {
    pub offset: u32,
    pub skip: u32,
    /// What the table stores for this backend (its index in the service's list).
    pub index: u16,
}

impl Perm {
    pub(crate) fn new(h1: u64, h2: u64, m: u32, index: u16) -> Perm {
        debug_assert!(m >= 2);
        Perm {
            offset: (h1 % u64::from(m)) as u32,
            skip: (h2 % u64::from(m - 1)) as u32 + 1,
            index,
        }
    }
}

/// Fills `out` (its length is `M`) from `perms` (in a fixed order: the fill order is part
/// of the result). `next` is scratch reused across calls.
pub(crate) fn populate(perms: &[Perm], out: &mut [u16], next: &mut Vec<u32>) {
    let m = out.len() as u32;
    if perms.is_empty() || m == 0 {
        return;
    }
    out.fill(EMPTY);
    next.clear();
    next.extend(perms.iter().map(|p| p.offset));
    let mut filled = 0u32;
    loop {
        for (p, pos) in perms.iter().zip(next.iter_mut()) {
            // The permutation visits every slot, so a free one is found while any is.
            let mut c = *pos;
            while out[c as usize] != EMPTY {
                c += p.skip;
                if c >= m {
                    c -= m;
                }
            }
            out[c as usize] = p.index;
            c += p.skip;
            if c >= m {
                c -= m;
            }
            *pos = c;
            filled += 1;
            if filled == m {
                return;
            }
        }
    }
}
