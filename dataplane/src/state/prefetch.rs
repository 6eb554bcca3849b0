//! Software prefetch: lets a stage that works on a batch ask for the table
//! memory of all its frames first (conntrack buckets and entries, Maglev
//! slots), so the cache misses of a batch overlap instead of queueing one
//! after another. A hint only: it never faults and changes no value.
//!
//! It lives in `state/` because it is one of the two places allowed `unsafe`
//! (the intrinsic is `unsafe` only because of its `target_feature`).
#![allow(unsafe_code)]

/// Asks the CPU to bring the cache line holding `*r` into all cache levels.
#[inline(always)]
pub fn read<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` requires SSE, which every x86_64 CPU has (it is
    // in the x86_64 baseline target); it is a hint that never faults, and
    // the address comes from a live reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (r as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetching_changes_no_value() {
        let v = [7u64; 16];
        super::read(&v[3]);
        assert_eq!(v, [7u64; 16]);
    }
}
