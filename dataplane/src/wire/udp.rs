//! UDP headers (RFC 768).
//!
//! `check_len` checks: 8 bytes present (`Truncated`), `8 <= length field <= buffer`
//! (`BadTotalLen`); `payload()` is trimmed to the length field. The first fragment of a
//! fragmented datagram holds less than its length field says: wrap it with
//! [`Packet::new_checked_header`], which checks only the 8 header bytes; `payload()`
//! is then clamped to the buffer, so it still cannot panic.
//!
//! Checksums: over IPv4 a zero checksum means "none" and verifies; a computed zero is
//! written as 0xffff (RFC 768). Over IPv6 the checksum is mandatory (RFC 8200 §8.1).

use super::checksum;
use super::{be16, put16, Error, Result};
use crate::proto;

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view over a UDP datagram.
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

    /// Wraps a buffer checking only that the 8 header bytes are present (for first
    /// fragments, whose length field covers data in later fragments).
    #[inline]
    pub fn new_checked_header(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Checks the header and length field (see the module doc).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::BadTotalLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length: 8.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// End of the datagram: the length field, clamped to [8, buffer length].
    #[inline]
    fn end(&self) -> usize {
        usize::from(self.len()).clamp(HEADER_LEN, self.buffer.as_ref().len())
    }

    /// The payload, trimmed to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    /// One's-complement sum of the datagram (header with its checksum field, payload).
    #[inline]
    fn data_sum(&self) -> u32 {
        checksum::sum(&self.buffer.as_ref()[..self.end()])
    }

    /// Whether the checksum verifies over IPv4 (a zero checksum means none: valid).
    #[inline]
    pub fn verify_checksum_v4(&self, src: &[u8; 4], dst: &[u8; 4]) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_v4(src, dst, proto::UDP, u32::from(self.len()));
        checksum::finish(ph + self.data_sum()) == 0
    }

    /// Whether the checksum verifies over IPv6 (zero is invalid there).
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let ph = checksum::pseudo_v6(src, dst, proto::UDP, u32::from(self.len()));
        checksum::finish(ph + self.data_sum()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// The payload, trimmed to the length field, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    #[inline]
    fn fill_with(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::finish(pseudo + self.data_sum());
        // RFC 768: a computed zero is transmitted as all ones.
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes and writes the checksum over IPv4 (length from the length field).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: &[u8; 4], dst: &[u8; 4]) {
        let ph = checksum::pseudo_v4(src, dst, proto::UDP, u32::from(self.len()));
        self.fill_with(ph);
    }

    /// Computes and writes the checksum over IPv6 (length from the length field).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let ph = checksum::pseudo_v6(src, dst, proto::UDP, u32::from(self.len()));
        self.fill_with(ph);
    }
}

/// A UDP header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Payload length; the length field is 8 + this (at most 65527).
    pub payload_len: usize,
}

impl Repr {
    /// Bytes this header and its payload take: 8 + `payload_len`.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    #[inline]
    fn write<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + self.payload_len) as u16);
    }

    /// Writes the header with checksum 0 ("none", valid over IPv4 only; VXLAN over
    /// IPv4 uses this, RFC 7348 §5).
    #[inline]
    pub fn emit_no_checksum<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        self.write(p);
        p.set_checksum(0);
    }

    /// Writes the header, then the IPv4 checksum over the payload already in `p`.
    #[inline]
    pub fn emit_v4<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: &[u8; 4],
        dst: &[u8; 4],
    ) {
        self.write(p);
        p.fill_checksum_v4(src, dst);
    }

    /// Writes the header, then the IPv6 checksum over the payload already in `p`.
    #[inline]
    pub fn emit_v6<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: &[u8; 16],
        dst: &[u8; 16],
    ) {
        self.write(p);
        p.fill_checksum_v6(src, dst);
    }
}
