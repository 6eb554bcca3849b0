//! IPv6 headers (RFC 8200) and the extension-header walk.
//!
//! `check_len` checks: 40 bytes present (`Truncated`), version 6 (`BadVersion`),
//! `40 + payload_len <= buffer` (`BadTotalLen`); `payload()` is trimmed to
//! `payload_len`. [`Packet::upper_layer`] walks hop-by-hop (0), routing (43), fragment
//! (44), destination options (60) and AH (51) headers, at most [`MAX_EXT_HEADERS`] of
//! them, inside the payload: a header running past the payload is `Truncated`, a
//! hop-by-hop header anywhere but first or a chain that is too long is `BadExtHeader`.
//! [`Packet::new_checked_header`] skips the `payload_len` check, for headers quoted in
//! ICMPv6 errors. Jumbograms (payload length 0 with a jumbo option) are not supported: a zero payload
//! length means an empty payload.

use std::net::Ipv6Addr;

use super::{arr, be16, be32, put16, put32, Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The most extension headers [`Packet::upper_layer`] walks before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// Extension-header next-header values.
pub mod ext {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const AUTH: u8 = 51;
    pub const DEST_OPTS: u8 = 60;
    /// "No next header".
    pub const NONE: u8 = 59;
}

/// Length of an IPv6 fragment header.
pub const FRAG_HEADER_LEN: usize = 8;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// A fragment header found by [`Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
    /// Where the fragment header starts, from the start of the IPv6 header.
    pub header_offset: usize,
}

/// Where the upper-layer data starts, after the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// The last next-header value (the upper-layer protocol, or [`ext::NONE`]).
    pub protocol: u8,
    /// Offset of the upper-layer data from the start of the IPv6 header. For a
    /// fragment with a nonzero offset these are fragment data, not a header.
    pub offset: usize,
    /// The fragment header, if the chain had one.
    pub frag: Option<Fragment>,
}

impl UpperLayer {
    /// Whether this packet is a fragment (has a fragment header with M set or a
    /// nonzero offset; an atomic fragment is not one).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.more || f.offset != 0)
    }
}

/// A view over an IPv6 packet.
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

    /// Wraps a buffer checking the fixed header only, not `payload_len` (for the IPv6
    /// header quoted in an ICMPv6 error). `payload()` and `upper_layer()` are then
    /// bounded by the buffer, so they still cannot panic.
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
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(Error::BadVersion);
        }
        Ok(())
    }

    /// Checks version and lengths (see the module doc).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        let b = self.buffer.as_ref();
        if HEADER_LEN + usize::from(self.payload_len()) > b.len() {
            return Err(Error::BadTotalLen);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Fixed header length: 40.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The version nibble (6 once checked).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }

    /// Source address bytes.
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        arr(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address bytes.
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        arr(self.buffer.as_ref(), field::DST)
    }

    /// End of the packet: 40 + `payload_len`, clamped to the buffer (a no-op after
    /// `new_checked`; it keeps `new_checked_header` views panic-free).
    #[inline]
    fn end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// The payload (extension headers included), trimmed to `payload_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.end()]
    }

    /// Walks the extension headers to the upper layer (see the module doc).
    #[inline]
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let b = self.buffer.as_ref();
        // Bounded by the payload length, never the trailing bytes (padding).
        let end = self.end();
        let mut nh = self.next_header();
        let mut off = HEADER_LEN;
        let mut frag = None;
        for _ in 0..MAX_EXT_HEADERS {
            let len = match nh {
                ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTS | ext::AUTH => {
                    if nh == ext::HOP_BY_HOP && off != HEADER_LEN {
                        // RFC 8200 §4.3: only immediately after the IPv6 header.
                        return Err(Error::BadExtHeader);
                    }
                    if off + 2 > end {
                        return Err(Error::Truncated);
                    }
                    let units = usize::from(b[off + 1]);
                    if nh == ext::AUTH {
                        // RFC 4302 §2.2: length in 4-octet units, minus 2.
                        (units + 2) * 4
                    } else {
                        // RFC 8200 §4.3: length in 8-octet units, not counting the first.
                        (units + 1) * 8
                    }
                }
                ext::FRAGMENT => {
                    if off + FRAG_HEADER_LEN > end {
                        return Err(Error::Truncated);
                    }
                    let fo = be16(b, off + 2);
                    frag = Some(Fragment {
                        offset: fo & 0xfff8,
                        more: fo & 1 != 0,
                        ident: be32(b, off + 4),
                        header_offset: off,
                    });
                    FRAG_HEADER_LEN
                }
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: off,
                        frag,
                    })
                }
            };
            if off + len > end {
                return Err(Error::Truncated);
            }
            nh = b[off];
            off += len;
        }
        Err(Error::BadExtHeader)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = self.buffer.as_mut();
        b[0] = (b[0] & 0x0f) | (v << 4);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let v = be16(b, 0) & 0xf00f;
        put16(b, 0, v | (u16::from(tc) << 4));
    }

    /// Sets the 20-bit flow label.
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let v = be32(b, 0) & 0xfff0_0000;
        put32(b, 0, v | (label & 0x000f_ffff));
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the next header of the fixed header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = nh;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.set_src_bytes(a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.set_dst_bytes(a.octets());
    }

    /// Sets the source address bytes.
    #[inline]
    pub fn set_src_bytes(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&a);
    }

    /// Sets the destination address bytes.
    #[inline]
    pub fn set_dst_bytes(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&a);
    }

    /// The payload, trimmed to `payload_len`, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.end();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A 40-byte IPv6 header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub payload_len: usize,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Repr {
    /// Bytes this header and its payload take: 40 + `payload_len`.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 40-byte header at the start of `p` (IPv6 has no header checksum).
    /// `payload_len` must be at most 65535.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let b = p.buffer.as_mut();
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        put32(b, field::VER_TC_FLOW, first);
        b[field::NXT_HDR] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC..field::SRC + 16].copy_from_slice(&self.src.octets());
        b[field::DST..field::DST + 16].copy_from_slice(&self.dst.octets());
        put16(b, field::LENGTH, self.payload_len as u16);
    }
}
