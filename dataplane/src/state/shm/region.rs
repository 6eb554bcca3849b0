//! Typed views over memory that is either owned (a zeroed heap allocation) or a
//! range of the shared-memory mapping, so the same table code (conntrack) runs
//! over either. This file holds the casts from bytes to typed slices; the
//! invariant they rely on is the [`Plain`] contract.
//!
//! A [`Slab<T>`] is a pointer, a length and a keep-alive (the heap layout to
//! free, or an `Arc` of the mapping); dereferencing it is a slice built from
//! the pointer and length, with no branch on where the memory lives.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use memmap2::MmapRaw;

/// Types that may be laid over shared memory and over zeroed memory.
///
/// # Safety
/// An implementer is `#[repr(C)]` (or transparent), made only of atomics (or
/// arrays and structs of them), so every bit pattern is a valid value, all
/// zeroes included, it has no `Drop` glue and holds no pointer; its alignment
/// divides 4096 (the page alignment of the mapping).
pub unsafe trait Plain: Sync + Send + Sized {}

// SAFETY: atomics of plain integers: any bit pattern is valid, no Drop.
unsafe impl Plain for AtomicU64 {}
// SAFETY: as above.
unsafe impl Plain for AtomicU32 {}
// SAFETY: `Entry` is `#[repr(C, align(32))]` of AtomicU32 and AtomicU64
// words only (see conntrack/table.rs); no Drop, no pointer.
unsafe impl Plain for crate::conntrack::CtEntry {}
// SAFETY: `Bucket` is `#[repr(C, align(64))]` of eight AtomicU64.
unsafe impl Plain for crate::conntrack::CtBucket {}
// SAFETY: `Header` is `#[repr(C)]` of structs of atomics, aligned to 64.
unsafe impl Plain for crate::conntrack::CtHeader {}

/// What keeps a [`Slab`]'s memory alive.
enum Keep {
    /// A heap allocation of this layout (size 0: nothing allocated).
    Heap(Layout),
    /// A range of a shared mapping.
    Map { _map: Arc<MmapRaw> },
}

/// `len` values of `T`, owned or in a mapping (see the module doc).
pub struct Slab<T: Plain> {
    ptr: NonNull<T>,
    len: usize,
    keep: Keep,
}

// SAFETY: a Slab only hands out `&[T]`; T is Sync + Send (Plain), the heap
// allocation is owned by the Slab and the mapping is kept by an `Arc` of a
// Send + Sync `MmapRaw`.
unsafe impl<T: Plain> Send for Slab<T> {}
// SAFETY: as above; shared access is only through `&T` of Sync types.
unsafe impl<T: Plain> Sync for Slab<T> {}

impl<T: Plain> Slab<T> {
    /// `len` zeroed values on the heap (lazily backed by the OS for large
    /// sizes). Aborts on allocation failure, as `Box` does.
    pub(crate) fn zeroed(len: usize) -> Slab<T> {
        let Ok(layout) = Layout::array::<T>(len) else {
            panic!("slab of {len} values overflows the address space");
        };
        if layout.size() == 0 {
            return Slab {
                ptr: NonNull::dangling(),
                len,
                keep: Keep::Heap(layout),
            };
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p.cast::<T>()) else {
            std::alloc::handle_alloc_error(layout)
        };
        Slab {
            ptr,
            len,
            keep: Keep::Heap(layout),
        }
    }

    /// `len` values at byte `offset` of `map`. The caller checked the range
    /// lies inside the mapping and `offset` is aligned for `T` (both asserted
    /// again here: a violation is a bug in the layout code, not bad input).
    pub(crate) fn in_map(map: &Arc<MmapRaw>, offset: usize, len: usize) -> Slab<T> {
        let bytes = len.checked_mul(std::mem::size_of::<T>());
        let end = bytes.and_then(|b| b.checked_add(offset));
        assert!(
            end.is_some_and(|e| e <= map.len()),
            "slab out of the mapping"
        );
        assert!(
            offset.is_multiple_of(std::mem::align_of::<T>()),
            "misaligned slab"
        );
        // SAFETY: offset + len * size_of::<T>() <= map.len() (asserted), so
        // the pointer stays inside the mapping; the mapping is page-aligned
        // and offset is a multiple of T's alignment.
        let p = unsafe { map.as_mut_ptr().add(offset) };
        let Some(ptr) = NonNull::new(p.cast::<T>()) else {
            unreachable!("a mapping is never at address 0")
        };
        Slab {
            ptr,
            len,
            keep: Keep::Map {
                _map: Arc::clone(map),
            },
        }
    }

    /// Whether this slab lives in a shared mapping.
    pub fn is_shared(&self) -> bool {
        matches!(self.keep, Keep::Map { .. })
    }
}

impl<T: Plain> std::ops::Deref for Slab<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised values of T (zeroed heap
        // memory or mapped memory, both valid for any bit pattern by the
        // Plain contract), kept alive by `keep` for as long as `self`; only
        // shared references are ever made, and T's mutation is through
        // atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Plain> Drop for Slab<T> {
    fn drop(&mut self) {
        if let Keep::Heap(layout) = self.keep {
            if layout.size() != 0 {
                // SAFETY: allocated in `zeroed` with this very layout; T has
                // no Drop glue (Plain), so freeing the bytes is enough.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) }
            }
        }
    }
}

/// One value of `T`, owned or in a mapping: a [`Slab`] of one that
/// dereferences to `&T` without a bounds check.
pub struct Unit<T: Plain>(Slab<T>);

impl<T: Plain> Unit<T> {
    pub(crate) fn zeroed() -> Unit<T> {
        Unit(Slab::zeroed(1))
    }

    pub(crate) fn in_map(map: &Arc<MmapRaw>, offset: usize) -> Unit<T> {
        Unit(Slab::in_map(map, offset, 1))
    }

    pub fn is_shared(&self) -> bool {
        self.0.is_shared()
    }
}

impl<T: Plain> std::ops::Deref for Unit<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the inner slab holds exactly one valid T (constructors
        // pass len 1) for as long as `self` lives.
        unsafe { &*self.0.ptr.as_ptr() }
    }
}
