//! Longest-prefix match for IPv4 and IPv6: which pod CIDR (and so which node) an
//! address belongs to.
//!
//! [`Prefix`] is an address plus a length, parsed from and shown as `10.244.1.0/24` or
//! `fd00::/64`. [`Lpm4`] and [`Lpm6`] map prefixes to a small `Copy` value (a node
//! index, a port). They are built once by the single writer (control, or the tables
//! builder) with [`Lpm4::insert`]; after that they are only read, by every worker at
//! once through `&self`.
//!
//! The shape is a multibit trie with 8-bit strides and controlled prefix expansion
//! (leaf pushing, Srinivasan & Varghese): a prefix whose length is not a multiple of
//! 8 is expanded into all the slots of its last stride it covers, and the value of a
//! slot that has a child is copied into every slot of that child that no longer prefix
//! covers. So the answer is always in the last slot a lookup reaches: a lookup is at
//! most 4 (IPv4) or 16 (IPv6) array reads, with no comparisons of lengths, no hashing
//! and no backtracking. Nodes live in one `Vec` and point at each other by index, so
//! the whole trie can later be copied into shared memory as it is.

mod lpm;
#[cfg(test)]
mod tests;

pub use lpm::{Lpm4, Lpm6};

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix: an address and how many of its leading bits are significant.
///
/// The bits past `len` are always zero (constructors and the parser clear them), so two
/// prefixes covering the same addresses compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why a prefix could not be made or parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix {0:?} has no '/<length>'")]
    MissingLength(String),
    #[error("prefix {0:?}: bad address")]
    BadAddress(String),
    #[error("prefix {0:?}: bad length")]
    BadLength(String),
    #[error("prefix length {len} is longer than the address ({max} bits)")]
    TooLong { len: u8, max: u8 },
    #[error("prefix {prefix} is not IPv{expected}")]
    WrongFamily { expected: u8, prefix: Prefix },
}

impl Prefix {
    /// A prefix of `len` bits of `addr`; the bits past `len` are cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, PrefixError> {
        let max = max_len(&addr);
        if len > max {
            return Err(PrefixError::TooLong { len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(mask4(u32::from(a), len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask6(u128::from(a), len))),
        };
        Ok(Prefix { addr, len })
    }

    /// 4 or 6.
    pub fn family(&self) -> u8 {
        match self.addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 6,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` is inside this prefix (always false across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => mask4(u32::from(a), self.len) == u32::from(p),
            (IpAddr::V6(p), IpAddr::V6(a)) => mask6(u128::from(a), self.len) == u128::from(p),
            _ => false,
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len.min(32))))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len.min(128))))
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `"10.244.1.0/24"` or `"fd00::/64"`; host bits are cleared.
    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::MissingLength(s.to_string()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::BadAddress(s.to_string()))?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PrefixError::BadLength(s.to_string()));
        }
        let len: u8 = len
            .parse()
            .map_err(|_| PrefixError::BadLength(s.to_string()))?;
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
