//! The flow key: the tuple conntrack, Maglev and the VXLAN source port hash.
//!
//! One layout for IPv4 and IPv6 so that one table serves both families: IPv4
//! addresses sit in the first 4 bytes of the 16-byte fields, the rest zero.
//! Ports are in host order. ICMP echo uses the identifier as a port: a request
//! has `sport = ident, dport = 0`, a reply `sport = 0, dport = ident`, so a
//! reply's key is the [`FlowKey::swap`] of its request's, as for TCP and UDP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A flow's 5-tuple plus family, `#[repr(C)]` so it can live in shared memory.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    #[inline]
    pub fn v4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, proto: u8) -> FlowKey {
        let mut k = FlowKey {
            sport,
            dport,
            proto,
            family: 4,
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&src);
        k.dst[..4].copy_from_slice(&dst);
        k
    }

    #[inline]
    pub fn v6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> FlowKey {
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto,
            family: 6,
            _pad: [0; 2],
        }
    }

    /// The key of the other direction of the same flow.
    #[inline]
    pub fn swap(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    #[inline]
    pub fn is_v4(&self) -> bool {
        self.family == 4
    }

    #[inline]
    pub fn src_v4(&self) -> [u8; 4] {
        [self.src[0], self.src[1], self.src[2], self.src[3]]
    }

    #[inline]
    pub fn dst_v4(&self) -> [u8; 4] {
        [self.dst[0], self.dst[1], self.dst[2], self.dst[3]]
    }

    pub fn src_ip(&self) -> IpAddr {
        ip_of(self.family, &self.src)
    }

    pub fn dst_ip(&self) -> IpAddr {
        ip_of(self.family, &self.dst)
    }

    /// A fast, well-mixed 64-bit hash of the whole key (five 8-byte words
    /// folded with multiply-xorshift rounds). Hand-written because it runs for
    /// every packet: a general-purpose hasher costs several times more here.
    #[inline]
    pub fn hash(&self) -> u64 {
        #[inline(always)]
        fn round(h: u64, x: u64) -> u64 {
            let h = (h ^ x).wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^ (h >> 32)
        }
        // Unrolled by hand: an array iterator here costs more than the rounds.
        let w = self.words();
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        h = round(h, w[0]);
        h = round(h, w[1]);
        h = round(h, w[2]);
        h = round(h, w[3]);
        h = round(h, w[4]);
        h ^ (h >> 29)
    }

    /// The key as five little-endian words (for hashing and fast compares).
    #[inline]
    pub fn words(&self) -> [u64; 5] {
        let half = |b: &[u8; 16], i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        [
            half(&self.src, 0),
            half(&self.src, 8),
            half(&self.dst, 0),
            half(&self.dst, 8),
            u64::from(self.sport)
                | u64::from(self.dport) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.family) << 40
                | u64::from(u16::from_le_bytes(self._pad)) << 48,
        ]
    }

    /// The key back from its [`FlowKey::words`].
    #[inline]
    pub fn from_words(w: &[u64; 5]) -> FlowKey {
        let addr = |a: u64, b: u64| {
            let mut x = [0u8; 16];
            x[..8].copy_from_slice(&a.to_le_bytes());
            x[8..].copy_from_slice(&b.to_le_bytes());
            x
        };
        FlowKey {
            src: addr(w[0], w[1]),
            dst: addr(w[2], w[3]),
            sport: w[4] as u16,
            dport: (w[4] >> 16) as u16,
            proto: (w[4] >> 32) as u8,
            family: (w[4] >> 40) as u8,
            _pad: ((w[4] >> 48) as u16).to_le_bytes(),
        }
    }

    /// [`FlowKey::words`] of the [`FlowKey::swap`] of the key these words
    /// encode, without leaving the word form.
    #[inline]
    pub fn swap_words(w: &[u64; 5]) -> [u64; 5] {
        let ports = (w[4] & 0xffff) << 16 | (w[4] >> 16) & 0xffff;
        [w[2], w[3], w[0], w[1], w[4] & !0xffff_ffff | ports]
    }

    /// The key's 40 bytes, in field order.
    #[inline]
    pub fn as_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..16].copy_from_slice(&self.src);
        b[16..32].copy_from_slice(&self.dst);
        b[32..34].copy_from_slice(&self.sport.to_le_bytes());
        b[34..36].copy_from_slice(&self.dport.to_le_bytes());
        b[36] = self.proto;
        b[37] = self.family;
        b[38..40].copy_from_slice(&self._pad);
        b
    }
}

fn ip_of(family: u8, b: &[u8; 16]) -> IpAddr {
    if family == 4 {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*b))
    }
}

/// Converts an [`IpAddr`] to the key's 16-byte form and family.
pub fn ip_to_key_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swapping_twice_gives_the_same_key() {
        let k = FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 1], 1234, 80, 6);
        assert_eq!(k.swap().swap(), k);
        assert_ne!(k.swap(), k);
        assert_eq!(k.swap().src_v4(), [10, 96, 0, 1]);
    }

    #[test]
    fn keys_differing_in_one_field_hash_differently() {
        let k = FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 1], 1234, 80, 17);
        let mut k2 = k;
        k2.sport = 1235;
        assert_ne!(k.hash(), k2.hash());
        let mut k3 = k;
        k3.proto = 6;
        assert_ne!(k.hash(), k3.hash());
    }

    #[test]
    fn a_key_survives_the_round_trip_through_words() {
        let mut k = FlowKey::v6([1; 16], [2; 16], 0x1234, 0xfedc, 17);
        k.src[15] = 9;
        k.dst[0] = 3;
        k._pad = [5, 6];
        assert_eq!(FlowKey::from_words(&k.words()), k);
        assert_eq!(FlowKey::swap_words(&k.words()), k.swap().words());
        // The hash is pinned: other modules and tests may rely on its values.
        assert_eq!(
            FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 1], 1234, 80, 6).hash(),
            0x56edd02499a8bc11
        );
        let b = k.as_bytes();
        let w = k.words();
        for (i, word) in w.iter().enumerate() {
            assert_eq!(word.to_le_bytes(), b[i * 8..i * 8 + 8], "word {i}");
        }
    }
}
