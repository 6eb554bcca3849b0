//! Deterministic hashes for Maglev permutations and affinity keys.
//!
//! They must give the same answer in every process on every node (control builds the
//! tables; two nodes behind one ECMP'd LoadBalancer IP must pick the same backend for a
//! flow), so they are fixed functions with fixed seeds, never `RandomState`.

/// murmur3's 64-bit finalizer: a bijection with good avalanche.
#[inline]
pub(crate) const fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hashes three words under `seed`.
#[inline]
pub(crate) const fn hash3(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    let mut h = mix(seed ^ a);
    h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ b);
    h = mix(h.wrapping_add(0x9e37_79b9_7f4a_7c15) ^ c);
    h
}

/// The two 64-bit halves of a 16-byte address.
#[inline]
pub(crate) fn halves(ip: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&ip[..8]);
    b.copy_from_slice(&ip[8..]);
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

pub(crate) const SEED_OFFSET: u64 = 0x7477_696c_6c5f_6f66; // "twill_of"
pub(crate) const SEED_SKIP: u64 = 0x7477_696c_6c5f_736b; // "twill_sk"
pub(crate) const SEED_CLIENT: u64 = 0x7477_696c_6c5f_636c; // "twill_cl"
pub(crate) const SEED_AFFINITY: u64 = 0x7477_696c_6c5f_6166; // "twill_af"

/// A backend's identity (ip:port) hashed under `seed`: Maglev's h1/h2 of its name.
#[inline]
pub(crate) fn backend(seed: u64, ip: &[u8; 16], family: u8, port: u16) -> u64 {
    let (a, b) = halves(ip);
    hash3(seed, a, b, u64::from(port) | (u64::from(family) << 16))
}

/// A client address alone, for sessionAffinity ClientIP (all of one client's
/// connections land in the same Maglev slot).
#[inline]
pub(crate) fn client(ip: &[u8; 16], family: u8) -> u64 {
    let (a, b) = halves(ip);
    hash3(SEED_CLIENT, a, b, u64::from(family))
}
