//! The multibit trie behind [`Lpm4`] and [`Lpm6`]: 8-bit strides, leaf pushing,
//! nodes in one `Vec` addressed by index.

use super::{Prefix, PrefixError};
use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One slot of a node: where to go next, and the answer if the walk stops here.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Index of the child node; 0 = none (the root is never anyone's child).
    child: u32,
    /// 1 + index into `values`; 0 = no prefix covers this slot.
    value: u32,
}

type Node = [Slot; 256];

/// Longest-prefix match over `N`-byte keys.
///
/// Lookup state (`nodes`, `values`) is separate from builder-only bookkeeping
/// (`plens`, `index`), which a shared-memory copy would leave behind.
#[derive(Clone)]
struct Trie<const N: usize, V> {
    nodes: Vec<Node>,
    /// Per slot, 1 + the length of the prefix whose value it holds (0 = none): the
    /// rule that lets a longer prefix win whatever the insertion order.
    plens: Vec<[u8; 256]>,
    values: Vec<V>,
    /// Each distinct prefix inserted -> its `value` (1-based).
    index: FxHashMap<([u8; N], u8), u32>,
}

impl<const N: usize, V: Copy> Trie<N, V> {
    fn new() -> Self {
        Trie {
            nodes: vec![[Slot::default(); 256]],
            plens: vec![[0; 256]],
            values: Vec::new(),
            index: FxHashMap::default(),
        }
    }

    /// `key` must have its bits past `len` cleared and `len <= 8 * N`.
    fn insert(&mut self, key: [u8; N], len: u8, v: V) {
        debug_assert!(usize::from(len) <= 8 * N);
        if let Some(&vi) = self.index.get(&(key, len)) {
            // Same prefix again: the new value replaces the old one everywhere at once.
            self.values[vi as usize - 1] = v;
            return;
        }
        self.values.push(v);
        let vi = u32::try_from(self.values.len()).expect("fewer than 2^32 prefixes");
        self.index.insert((key, len), vi);
        let plen = len + 1;

        let mut node = 0usize;
        let mut depth = 0usize;
        loop {
            let end = 8 * (depth + 1);
            if usize::from(len) <= end {
                // The prefix ends in this stride: expand it over the slots it covers.
                let bits = usize::from(len) - 8 * depth; // 0..=8
                let count = 1usize << (8 - bits);
                let base = if bits == 0 {
                    0
                } else {
                    usize::from(key[depth] & (0xffu8 << (8 - bits)))
                };
                for s in base..base + count {
                    self.assign(node, s, vi, plen);
                }
                return;
            }
            let b = usize::from(key[depth]);
            let mut child = self.nodes[node][b].child as usize;
            if child == 0 {
                // A new node starts out answering what its parent slot answered.
                child = self.nodes.len();
                let inherited = self.nodes[node][b].value;
                let inherited_len = self.plens[node][b];
                self.nodes.push(
                    [Slot {
                        child: 0,
                        value: inherited,
                    }; 256],
                );
                self.plens.push([inherited_len; 256]);
                self.nodes[node][b].child = u32::try_from(child).expect("fewer than 2^32 nodes");
            }
            node = child;
            depth += 1;
        }
    }

    /// Gives slot `s` of `node` the value `vi` unless a longer prefix already owns it,
    /// and pushes it down into the slot's subtree.
    fn assign(&mut self, node: usize, s: usize, vi: u32, plen: u8) {
        if self.plens[node][s] > plen {
            return;
        }
        self.plens[node][s] = plen;
        self.nodes[node][s].value = vi;
        let child = self.nodes[node][s].child as usize;
        if child != 0 {
            for cs in 0..256 {
                self.assign(child, cs, vi, plen);
            }
        }
    }

    #[inline]
    fn lookup(&self, key: &[u8; N]) -> Option<V> {
        let mut node = 0usize;
        for &b in key {
            let slot = self.nodes[node][usize::from(b)];
            if slot.child == 0 {
                return (slot.value as usize)
                    .checked_sub(1)
                    .and_then(|i| self.values.get(i))
                    .copied();
            }
            node = slot.child as usize;
        }
        // Unreachable by construction: the last stride never has children.
        None
    }

    fn get(&self, key: [u8; N], len: u8) -> Option<V> {
        self.index
            .get(&(key, len))
            .map(|&vi| self.values[vi as usize - 1])
    }
}

macro_rules! lpm {
    ($name:ident, $n:literal, $fam:literal, $variant:ident, $addr:ty, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Built with [`insert`](Self::insert) by one writer, then read through `&self`
        /// ([`lookup`](Self::lookup)) by any number of workers.
        #[derive(Clone)]
        pub struct $name<V: Copy> {
            trie: Trie<$n, V>,
        }

        impl<V: Copy> Default for $name<V> {
            fn default() -> Self {
                Self::new()
            }
        }

        impl<V: Copy> $name<V> {
            pub fn new() -> Self {
                $name { trie: Trie::new() }
            }

            /// Maps `prefix` to `value` (builder side). Inserting the same prefix again
            /// replaces its value. Fails only for a prefix of the other family.
            pub fn insert(&mut self, prefix: Prefix, value: V) -> Result<(), PrefixError> {
                match prefix.addr {
                    IpAddr::$variant(a) => {
                        self.trie.insert(a.octets(), prefix.len, value);
                        Ok(())
                    }
                    _ => Err(PrefixError::WrongFamily {
                        expected: $fam,
                        prefix,
                    }),
                }
            }

            /// The value of the longest inserted prefix containing `addr`.
            #[inline]
            pub fn lookup(&self, addr: &[u8; $n]) -> Option<V> {
                self.trie.lookup(addr)
            }

            /// [`lookup`](Self::lookup) with a std address.
            #[inline]
            pub fn lookup_addr(&self, addr: $addr) -> Option<V> {
                self.trie.lookup(&addr.octets())
            }

            /// The value inserted for exactly `prefix`, if any.
            pub fn get(&self, prefix: &Prefix) -> Option<V> {
                match prefix.addr {
                    IpAddr::$variant(a) => self.trie.get(a.octets(), prefix.len),
                    _ => None,
                }
            }

            /// How many distinct prefixes were inserted.
            pub fn len(&self) -> usize {
                self.trie.index.len()
            }

            pub fn is_empty(&self) -> bool {
                self.trie.index.is_empty()
            }

            /// How many 256-slot nodes the trie holds (its memory is about 2 KiB each).
            pub fn node_count(&self) -> usize {
                self.trie.nodes.len()
            }

            /// Every inserted prefix with its value, in no particular order.
            pub fn iter(&self) -> impl Iterator<Item = (Prefix, V)> + '_ {
                self.trie.index.iter().map(|(&(k, len), &vi)| {
                    (
                        Prefix {
                            addr: IpAddr::$variant(<$addr>::from(k)),
                            len,
                        },
                        self.trie.values[vi as usize - 1],
                    )
                })
            }
        }
    };
}

lpm!(
    Lpm4,
    4,
    4,
    V4,
    Ipv4Addr,
    "Longest-prefix match over IPv4 addresses (at most 4 array reads per lookup)."
);
lpm!(
    Lpm6,
    16,
    6,
    V6,
    Ipv6Addr,
    "Longest-prefix match over IPv6 addresses (at most 16 array reads per lookup)."
);
