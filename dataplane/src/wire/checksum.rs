//! The Internet checksum (RFC 1071), full and incremental (RFC 1624), in one place.
//!
//! `sum` returns a one's-complement partial sum already folded to 16 bits (but kept in
//! a `u32`), so callers can add tens of thousands of partial sums (data, pseudo-header)
//! before `fold`/`finish` without overflow. The incremental updates implement RFC 1624
//! equation 3, `HC' = ~(~HC + ~m + m')`, which equals recomputing the checksum from
//! scratch for any data that is not all zeros (RFC 1141's `HC' = HC + m - m'` can give
//! 0xffff where recomputation gives 0x0000, RFC 1624 §4). [`Delta`] gathers several
//! field changes (a NAT'd address and port) and applies them with one fold per
//! checksum.

/// One's-complement partial sum of `data` taken as big-endian 16-bit words (an odd
/// trailing byte is the high byte of a zero-padded word). The result is folded to at
/// most 0xffff, so adding up to 65 537 such sums in a `u32` cannot overflow.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 2^16 ≡ 1 (mod 0xffff), so summing 32-bit big-endian words and folding equals
    // summing the 16-bit words: we take 4 bytes per step into a 64-bit accumulator,
    // which cannot overflow for any buffer shorter than 2^32 words.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    fold64(acc)
}

#[inline(always)]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = acc as u32; // fits after two folds
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s
}

/// Folds a partial sum to 16 bits with end-around carry.
#[inline]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum field value for a partial sum: the one's complement of the folded sum.
#[inline]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Partial sum of the IPv4 pseudo-header (RFC 768/793): src, dst, zero, protocol,
/// upper-layer length.
#[inline]
pub fn pseudo_v4(src: &[u8; 4], dst: &[u8; 4], proto: u8, len: u32) -> u32 {
    let s = u64::from(u32::from_be_bytes(*src))
        + u64::from(u32::from_be_bytes(*dst))
        + u64::from(proto)
        + u64::from(len);
    fold64(s)
}

/// Partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): src, dst, 32-bit upper-layer
/// length, three zero bytes, next header.
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: u8, len: u32) -> u32 {
    let mut s = u64::from(proto) + u64::from(len);
    for i in 0..4 {
        let at = i * 4;
        s += u64::from(u32::from_be_bytes([
            src[at],
            src[at + 1],
            src[at + 2],
            src[at + 3],
        ]));
        s += u64::from(u32::from_be_bytes([
            dst[at],
            dst[at + 1],
            dst[at + 2],
            dst[at + 3],
        ]));
    }
    fold64(s)
}

/// A pending RFC 1624 adjustment: the one's-complement sum of `~m + m'` over every
/// rewritten word, applied to one or more checksums at the end.
///
/// NAT rewrites the same address in the IP header checksum and in the TCP/UDP
/// pseudo-header: build the address `Delta` once, `apply` it to the IP checksum, add
/// the port change and `apply` it to the L4 checksum. One fold per checksum, instead of
/// one per field. The 64-bit accumulator cannot overflow in practice (2^47 words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u64);

impl Delta {
    /// No change.
    #[inline]
    pub const fn new() -> Delta {
        Delta(0)
    }

    /// A 16-bit word changes from `old` to `new`: adds `~m + m'` (RFC 1624 eqn. 3).
    #[inline]
    #[must_use]
    pub const fn add16(self, old: u16, new: u16) -> Delta {
        Delta(self.0 + (!old) as u64 + new as u64)
    }

    /// A 32-bit field (an IPv4 address) changes: both of its words.
    #[inline]
    #[must_use]
    pub const fn add32(self, old: [u8; 4], new: [u8; 4]) -> Delta {
        self.add16(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        )
        .add16(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        )
    }

    /// A 128-bit field (an IPv6 address) changes: its eight words.
    #[inline]
    #[must_use]
    pub fn add128(self, old: &[u8; 16], new: &[u8; 16]) -> Delta {
        let mut d = self;
        for i in 0..8 {
            d = d.add16(
                u16::from_be_bytes([old[2 * i], old[2 * i + 1]]),
                u16::from_be_bytes([new[2 * i], new[2 * i + 1]]),
            );
        }
        d
    }

    /// The updated checksum: RFC 1624 §3 eqn. 3, "HC' = ~(~HC + ~m + m')". Working on
    /// the complemented checksum (`~HC`, the sum itself) keeps the arithmetic in one's
    /// complement, where subtracting `m` is adding `~m`; this is what avoids eqn. 2's
    /// wrong 0xffff for a checksum whose recomputation is 0x0000 (RFC 1624 §4).
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        // fold64 folds completely, so the result fits 16 bits.
        !(fold64(u64::from(!csum) + self.0) as u16)
    }
}

/// RFC 1624 incremental update of checksum `csum` when a 16-bit word changes from
/// `old` to `new` (eqn. 3, see [`Delta::apply`]).
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    // One add chain and one fold: the sum of three 16-bit values fits in a u32.
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// RFC 1624 update for a 32-bit field (an IPv4 address): eqn. 3 applied to both of
/// its 16-bit words at once; the sum of the complements is still a one's-complement sum.
#[inline]
pub fn update32(csum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let s = u32::from(!csum)
        + u32::from(!u16::from_be_bytes([old[0], old[1]]))
        + u32::from(!u16::from_be_bytes([old[2], old[3]]))
        + u32::from(u16::from_be_bytes([new[0], new[1]]))
        + u32::from(u16::from_be_bytes([new[2], new[3]]));
    !fold(s)
}

/// RFC 1624 update for a 128-bit field (an IPv6 address): eqn. 3 over its eight words.
#[inline]
pub fn update128(csum: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    Delta::new().add128(old, new).apply(csum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obvious RFC 1071 loop, one 16-bit word at a time: the oracle for `sum`.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for c in data.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            let lo = c.get(1).copied().map_or(0, u64::from);
            s += hi | lo;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn odd_length_pads_the_last_byte_as_high_byte() {
        assert_eq!(fold(sum(&[0x12])), 0x1200);
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[])), 0);
    }

    #[test]
    fn rfc1624_example_update_gives_the_recomputed_checksum() {
        // RFC 1624 §4: the other words sum to 0xcd7a, HC = 0xdd2f; m = 0x5555 becomes
        // m' = 0x3285, and recomputation gives HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(Delta::new().add16(0x5555, 0x3285).apply(0xdd2f), 0x0000);
        assert_eq!(Delta::new().apply(0x1234), 0x1234);
    }

    #[test]
    fn pseudo_headers_match_their_byte_layout() {
        let src = [192, 168, 1, 2];
        let dst = [10, 0, 0, 1];
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[0, 17, 0x12, 0x34]);
        assert_eq!(fold(pseudo_v4(&src, &dst, 17, 0x1234)), naive(&b));
        let s6 = [0xfd, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xff];
        let d6 = [0xff; 16];
        let mut b = Vec::new();
        b.extend_from_slice(&s6);
        b.extend_from_slice(&d6);
        b.extend_from_slice(&0x0001_2345u32.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(fold(pseudo_v6(&s6, &d6, 6, 0x0001_2345)), naive(&b));
    }

    /// A header whose first word is nonzero (as every IPv4/TCP/UDP header we rewrite
    /// is), so the recomputed checksum is never the all-zero-data 0xffff.
    fn header() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(any::<u8>(), 40..80), 1u8..=255).prop_map(|(mut v, first)| {
            v[0] = first;
            v
        })
    }

    fn recompute(h: &[u8], at: usize) -> u16 {
        let mut h = h.to_vec();
        h[at] = 0;
        h[at + 1] = 0;
        finish(sum(&h))
    }

    proptest! {
        #[test]
        fn sum_equals_the_word_at_a_time_loop(data in prop::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(fold(sum(&data)), naive(&data));
        }

        #[test]
        fn update16_equals_recomputation(h in header(), field in 1usize..19, new in any::<u16>()) {
            // checksum at bytes 38..40, rewritten field at 2*field..+2 (never the first word)
            let field = field * 2;
            let mut h = h;
            let c = recompute(&h, 38);
            h[38..40].copy_from_slice(&c.to_be_bytes());
            let old = u16::from_be_bytes([h[field], h[field + 1]]);
            h[field..field + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update16(c, old, new), recompute(&h, 38));
        }

        #[test]
        fn update32_equals_recomputation(h in header(), field in 2usize..30, new in any::<[u8; 4]>()) {
            let mut h = h;
            let c = recompute(&h, 0x22);
            h[0x22..0x24].copy_from_slice(&c.to_be_bytes());
            // any byte offset, even odd ones would change word alignment: keep it even
            let field = field & !1;
            prop_assume!(field + 4 <= 0x22 || field >= 0x24);
            let mut old = [0u8; 4];
            old.copy_from_slice(&h[field..field + 4]);
            h[field..field + 4].copy_from_slice(&new);
            prop_assert_eq!(update32(c, old, new), recompute(&h, 0x22));
        }

        #[test]
        fn update128_equals_recomputation(h in header(), new in any::<[u8; 16]>()) {
            let mut h = h;
            let c = recompute(&h, 2);
            h[2..4].copy_from_slice(&c.to_be_bytes());
            let mut old = [0u8; 16];
            old.copy_from_slice(&h[8..24]);
            h[8..24].copy_from_slice(&new);
            prop_assert_eq!(update128(c, &old, &new), recompute(&h, 2));
        }

        #[test]
        fn one_delta_for_several_fields_equals_recomputation(
            h in header(), a in any::<[u8; 16]>(), p in any::<u16>(), q in any::<[u8; 4]>()
        ) {
            // checksum at 2..4; 128-bit field at 8..24, 16-bit at 24..26, 32-bit at 28..32
            let mut h = h;
            let c = recompute(&h, 2);
            h[2..4].copy_from_slice(&c.to_be_bytes());
            let mut old_a = [0u8; 16];
            old_a.copy_from_slice(&h[8..24]);
            let old_p = u16::from_be_bytes([h[24], h[25]]);
            let mut old_q = [0u8; 4];
            old_q.copy_from_slice(&h[28..32]);
            h[8..24].copy_from_slice(&a);
            h[24..26].copy_from_slice(&p.to_be_bytes());
            h[28..32].copy_from_slice(&q);
            let d = Delta::new().add128(&old_a, &a).add16(old_p, p).add32(old_q, q);
            prop_assert_eq!(d.apply(c), recompute(&h, 2));
            let stepwise = update32(update16(update128(c, &old_a, &a), old_p, p), old_q, q);
            prop_assert_eq!(stepwise, recompute(&h, 2));
        }

        #[test]
        fn a_filled_checksum_verifies(h in header()) {
            let mut h = h;
            let c = recompute(&h, 10);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(finish(sum(&h)), 0);
        }
    }
}
