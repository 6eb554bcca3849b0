//! Typed zero-copy views over frame bytes, and the checksums they need.
//!
//! One file per protocol, in smoltcp's shape: a `Packet<T: AsRef<[u8]>>` (Ethernet:
//! [`ethernet::Frame`]) wraps a buffer without copying it; `new_unchecked` wraps,
//! `check_len` validates, `new_checked` does both. Getters need `AsRef<[u8]>`, setters
//! `AsMut<[u8]>`. Each field is read with `from_be_bytes` at a fixed offset.
//!
//! **The contract:** every length a view relies on is checked once, in `check_len`.
//! After `new_checked` has returned `Ok`, no accessor of that view panics, whatever the
//! bytes say (accessors that look further, such as the IPv6 extension-header walk or
//! the NDP option scan, return `Result`/`Option` and never index out of bounds). A view
//! built with `new_unchecked` over too short a buffer may panic: that is a caller bug,
//! never a packet's doing.
//!
//! Unknown protocol values are values (`EtherType::Unknown(u16)`), not parse errors, so
//! they reach a drop counter with a name. A failed check is a [`Error`]: a small `Copy`
//! enum with one variant per check, which the pipeline maps to a drop reason.
//!
//! Trailing bytes are accepted: IPv4, IPv6 and UDP check `buffer >= length field` and
//! trim `payload()` to the length field (Ethernet pads short frames to 60 bytes).
//! Headers quoted in ICMP errors (and UDP first fragments) carry length fields larger
//! than the bytes present: `new_checked_header` checks everything but that, and those
//! views clamp `payload()` to the buffer, so the no-panic contract holds for them too.
//! [`ports`] reads the port pair from as little as 4 bytes of a transport header.
//!
//! Emitters (`Repr::emit`) write headers, then lengths, then the checksum last, so a
//! forgotten checksum is hard to write. Full and incremental (RFC 1624) checksums live
//! in [`checksum`].

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vxlan;

use core::fmt;

/// Why a view refused a buffer: one variant per failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the fixed header (or the header length field).
    Truncated,
    /// The IP version nibble is not the one this view parses.
    BadVersion,
    /// A header-length field is below its minimum (IPv4 IHL < 5, TCP data offset < 5).
    BadHeaderLen,
    /// A total/payload length field is below the header or beyond the buffer.
    BadTotalLen,
    /// A checksum did not verify.
    BadChecksum,
    /// An IPv6 extension-header chain is malformed (misplaced hop-by-hop or too deep).
    BadExtHeader,
    /// A well-formed header describing something we do not handle (ARP not Ethernet/IPv4).
    Unsupported,
}

impl Error {
    /// Every variant, for counters indexed by error.
    pub const ALL: [Error; 7] = [
        Error::Truncated,
        Error::BadVersion,
        Error::BadHeaderLen,
        Error::BadTotalLen,
        Error::BadChecksum,
        Error::BadExtHeader,
        Error::Unsupported,
    ];

    /// A short human-readable description of the failed check.
    pub const fn description(self) -> &'static str {
        match self {
            Error::Truncated => "buffer shorter than the header",
            Error::BadVersion => "wrong IP version",
            Error::BadHeaderLen => "header length field below minimum",
            Error::BadTotalLen => "length field below header or beyond buffer",
            Error::BadChecksum => "checksum mismatch",
            Error::BadExtHeader => "malformed IPv6 extension header chain",
            Error::Unsupported => "unsupported header variant",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for Error {}

/// The result of a wire check.
pub type Result<T> = core::result::Result<T, Error>;

/// The source and destination ports at the start of a TCP, UDP or SCTP header, if
/// the 4 bytes are there. For what a full view cannot take: the 8 bytes of transport
/// header quoted in an ICMP error (RFC 792), or a fragment's first bytes.
#[inline]
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    match l4 {
        [a, b, c, d, ..] => Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))),
        _ => None,
    }
}

#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests;
