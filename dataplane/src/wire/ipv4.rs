//! IPv4 headers (RFC 791), options allowed, fragments recognised.
//!
//! `check_len` checks, in order: 20 bytes present (`Truncated`), version 4
//! (`BadVersion`), IHL >= 5 (`BadHeaderLen`), IHL within the buffer (`Truncated`),
//! `header_len <= total_len <= buffer` (`BadTotalLen`). Trailing bytes (Ethernet
//! padding) are accepted and `payload()` is trimmed to `total_len`.
//! [`Packet::new_checked_header`] skips the `total_len` checks, for headers quoted in
//! ICMP errors. The header checksum
//! is not part of `check_len`: call [`Packet::verify_checksum`].

use std::net::Ipv4Addr;

use super::checksum;
use super::{arr, be16, put16, Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks it (see the module doc).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Wraps a buffer checking the header only, not `total_len` (for the IP header
    /// quoted in an ICMP error, which is followed by only part of its payload).
    /// `payload()` is then clamped to the buffer, so it still cannot panic.
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_header()?;
        Ok(p)
    }

    #[inline]
    fn check_header(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Checks version and lengths (see the module doc for the order).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        let tl = usize::from(self.total_len());
        if tl < hl || tl > b.len() {
            return Err(Error::BadTotalLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version nibble (4 once checked).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP/ECN byte (formerly TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// The more-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment (MF set or nonzero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number (see [`crate::proto`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }

    /// Source address bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        arr(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address bytes.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        arr(self.buffer.as_ref(), field::DST)
    }

    /// Options (bytes 20..header_len).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The whole header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::finish(checksum::sum(self.header())) == 0
    }

    /// End of the packet: `total_len`, clamped to [header_len, buffer length] (a no-op
    /// after `new_checked`; it keeps `new_checked_header` views panic-free).
    #[inline]
    fn end(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(self.total_len()).clamp(self.header_len(), b.len())
    }

    /// The payload, trimmed to `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.end()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[field::VER_IHL] = (b[field::VER_IHL] & 0x0f) | (v << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, 20..=60).
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[field::VER_IHL] = (b[field::VER_IHL] & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP/ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let b = self.buffer.as_mut();
        let v = be16(b, field::FLG_OFF);
        put16(b, field::FLG_OFF, if on { v | flag } else { v & !flag });
    }

    /// Sets or clears don't-fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        self.set_flag(FLAG_DF, on);
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        self.set_flag(FLAG_MF, on);
    }

    /// Sets the fragment offset in bytes (a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let b = self.buffer.as_mut();
        let v = be16(b, field::FLG_OFF) & !OFFSET_MASK;
        put16(b, field::FLG_OFF, v | ((bytes >> 3) & OFFSET_MASK));
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol number.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.set_src_bytes(a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.set_dst_bytes(a.octets());
    }

    /// Sets the source address bytes.
    #[inline]
    pub fn set_src_bytes(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a);
    }

    /// Sets the destination address bytes.
    #[inline]
    pub fn set_dst_bytes(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a);
    }

    /// Decrements the TTL and updates the checksum incrementally (RFC 1624); returns
    /// the new TTL. A TTL of 0 stays 0 (the caller should have checked it).
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buffer.as_mut();
        let old = be16(b, field::TTL);
        let ttl = b[field::TTL].saturating_sub(1);
        b[field::TTL] = ttl;
        let new = be16(b, field::TTL);
        let c = checksum::update16(be16(b, field::CHECKSUM), old, new);
        put16(b, field::CHECKSUM, c);
        ttl
    }

    /// Recomputes the header checksum over the header (options included).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.header()));
        self.set_checksum(c);
    }

    /// Options, mutably.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    /// The payload, trimmed to `total_len`, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, end) = (self.header_len(), self.end());
        &mut self.buffer.as_mut()[hl..end]
    }
}

/// A 20-byte IPv4 header (no options, not a fragment) to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub dscp_ecn: u8,
}

impl Repr {
    /// Bytes this header and its payload take: 20 + `payload_len`.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes a 20-byte header at the start of `p`: fields, then total length, then
    /// the checksum last. `payload_len` must be at most 65515.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let flg = if self.dont_frag { FLAG_DF } else { 0 };
        {
            let b = p.buffer.as_mut();
            b[field::VER_IHL] = 0x45;
            b[field::DSCP_ECN] = self.dscp_ecn;
            put16(b, field::IDENT, self.ident);
            put16(b, field::FLG_OFF, flg);
            b[field::TTL] = self.ttl;
            b[field::PROTOCOL] = self.protocol;
            b[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
            b[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
            put16(b, field::LENGTH, (HEADER_LEN + self.payload_len) as u16);
        }
        p.fill_checksum();
    }
}
