//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages the dataplane answers
//! (RFC 4861): echo, errors, neighbor solicitation/advertisement with link-layer
//! address options.
//!
//! `check_len` checks the 8-byte header (`Truncated`) and, for NS/NA, the 24 bytes up
//! to the target address (`Truncated`). There is no length field: wrap exactly the
//! upper-layer data. Checksums cover the IPv6 pseudo-header and the whole buffer.

use std::net::Ipv6Addr;

use super::checksum;
use super::{arr, be16, be32, put16, put32, Error, Result};
use crate::{proto, Mac};

/// Length of the ICMPv6 header (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;
/// Length of an NS/NA message without options (header + target address).
pub const ND_LEN: usize = 24;
/// Length of a link-layer address option for Ethernet.
pub const LLADDR_OPT_LEN: usize = 8;

/// Message types.
pub const DST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAM_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Destination-unreachable codes.
pub const NO_ROUTE: u8 = 0;
pub const ADMIN_PROHIBITED: u8 = 1;
pub const ADDR_UNREACHABLE: u8 = 3;
pub const PORT_UNREACHABLE: u8 = 4;
/// Time-exceeded codes.
pub const HOP_LIMIT_EXCEEDED: u8 = 0;
pub const REASSEMBLY_EXCEEDED: u8 = 1;

/// Neighbor-advertisement flags (the high bits of byte 4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// NDP option kinds.
pub const OPT_SOURCE_LLADDR: u8 = 1;
pub const OPT_TARGET_LLADDR: u8 = 2;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const MTU: usize = 4;
    pub const NA_FLAGS: usize = 4;
    pub const REST: usize = 4;
    pub const TARGET: usize = 8;
    pub const OPTIONS: usize = 24;
}

/// A view over an ICMPv6 message.
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

    /// Checks the header, and for NS/NA the target address, are present.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.is_nd() && b.len() < ND_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length: 8 (24 for NS/NA, up to the options).
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_nd() {
            ND_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// MTU of a packet-too-big message (bytes 4..8).
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MTU)
    }

    /// Whether this is an error message (types below 128, RFC 4443 §2.1).
    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type() < 128
    }

    /// Whether this is an echo request or reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | ECHO_REPLY)
    }

    /// Whether this is a neighbor solicitation or advertisement.
    #[inline]
    pub fn is_nd(&self) -> bool {
        matches!(self.msg_type(), NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT)
    }

    /// Everything after the 8-byte header (for errors: the embedded IPv6 header).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The NS/NA target address (checked present for NS/NA). For other types these
    /// are data bytes 8..24, or `::` if the message is shorter.
    #[inline]
    pub fn nd_target(&self) -> Ipv6Addr {
        match self.buffer.as_ref().get(field::TARGET..field::OPTIONS) {
            Some(t) => Ipv6Addr::from(arr::<16>(t, 0)),
            None => Ipv6Addr::UNSPECIFIED,
        }
    }

    /// The NA flag bits (R/S/O; see `NA_*`).
    #[inline]
    pub fn na_flags(&self) -> u8 {
        self.buffer.as_ref()[field::NA_FLAGS] & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)
    }

    /// The NS/NA options (after the target; empty for other types).
    #[inline]
    pub fn nd_options(&self) -> &[u8] {
        self.buffer.as_ref().get(field::OPTIONS..).unwrap_or(&[])
    }

    /// The Ethernet address in the first link-layer address option of `kind`
    /// ([`OPT_SOURCE_LLADDR`] or [`OPT_TARGET_LLADDR`]); `None` if absent, not 6
    /// bytes, or if an option before it is malformed (length 0 or past the end).
    #[inline]
    pub fn nd_option_lladdr(&self, kind: u8) -> Option<Mac> {
        if !self.is_nd() {
            return None;
        }
        let mut opts = self.nd_options();
        while opts.len() >= 2 {
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                return None;
            }
            if opts[0] == kind && len == LLADDR_OPT_LEN {
                return Some(arr(opts, 2));
            }
            opts = &opts[len..];
        }
        None
    }

    #[inline]
    fn sum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> u32 {
        let b = self.buffer.as_ref();
        checksum::pseudo_v6(src, dst, proto::ICMPV6, b.len() as u32) + checksum::sum(b)
    }

    /// Whether the checksum verifies for these IPv6 addresses.
    #[inline]
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        checksum::finish(self.sum_v6(src, dst)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the packet-too-big MTU.
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::MTU, v);
    }

    /// Sets the NA flags (R/S/O), zeroing the reserved bits after them.
    #[inline]
    pub fn set_na_flags(&mut self, flags: u8) {
        let v = u32::from(flags & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)) << 24;
        put32(self.buffer.as_mut(), field::NA_FLAGS, v);
    }

    /// Sets the NS/NA target address.
    #[inline]
    pub fn set_nd_target(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET..field::TARGET + 16].copy_from_slice(&a.octets());
    }

    /// Data after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Recomputes the checksum for these IPv6 addresses over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let c = checksum::finish(self.sum_v6(src, dst));
        self.set_checksum(c);
    }
}

/// An ICMPv6 message header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    EchoRequest {
        ident: u16,
        seq: u16,
    },
    EchoReply {
        ident: u16,
        seq: u16,
    },
    DstUnreachable {
        code: u8,
    },
    PacketTooBig {
        mtu: u32,
    },
    TimeExceeded {
        code: u8,
    },
    /// Neighbor solicitation, with a source link-layer address option if `lladdr`.
    NeighborSolicit {
        target: Ipv6Addr,
        lladdr: Option<Mac>,
    },
    /// Neighbor advertisement (`flags`: `NA_*`), with a target link-layer address
    /// option if `lladdr`.
    NeighborAdvert {
        flags: u8,
        target: Ipv6Addr,
        lladdr: Option<Mac>,
    },
}

impl Repr {
    /// Bytes the message header takes: 8, or 24 (+8 with an option) for NS/NA.
    #[inline]
    pub const fn header_len(&self) -> usize {
        match self {
            Repr::NeighborSolicit { lladdr, .. } | Repr::NeighborAdvert { lladdr, .. } => {
                if lladdr.is_some() {
                    ND_LEN + LLADDR_OPT_LEN
                } else {
                    ND_LEN
                }
            }
            _ => HEADER_LEN,
        }
    }

    /// Bytes the message takes with `data_len` bytes of data after the header.
    #[inline]
    pub const fn buffer_len(&self, data_len: usize) -> usize {
        self.header_len() + data_len
    }

    /// Writes the header (for NS/NA: target and option), then the checksum over the
    /// whole buffer: place any data after [`Repr::header_len`] in `p` first.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut Packet<T>,
        src: &[u8; 16],
        dst: &[u8; 16],
    ) {
        let echo = |ident: u16, seq: u16| (u32::from(ident) << 16) | u32::from(seq);
        let (ty, code, rest) = match *self {
            Repr::EchoRequest { ident, seq } => (ECHO_REQUEST, 0, echo(ident, seq)),
            Repr::EchoReply { ident, seq } => (ECHO_REPLY, 0, echo(ident, seq)),
            Repr::DstUnreachable { code } => (DST_UNREACHABLE, code, 0),
            Repr::PacketTooBig { mtu } => (PACKET_TOO_BIG, 0, mtu),
            Repr::TimeExceeded { code } => (TIME_EXCEEDED, code, 0),
            Repr::NeighborSolicit { .. } => (NEIGHBOR_SOLICIT, 0, 0),
            Repr::NeighborAdvert { flags, .. } => (
                NEIGHBOR_ADVERT,
                0,
                u32::from(flags & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE)) << 24,
            ),
        };
        {
            let b = p.buffer.as_mut();
            b[field::TYPE] = ty;
            b[field::CODE] = code;
            put32(b, field::REST, rest);
            let nd = match *self {
                Repr::NeighborSolicit { target, lladdr } => {
                    Some((target, lladdr, OPT_SOURCE_LLADDR))
                }
                Repr::NeighborAdvert { target, lladdr, .. } => {
                    Some((target, lladdr, OPT_TARGET_LLADDR))
                }
                _ => None,
            };
            if let Some((target, lladdr, kind)) = nd {
                b[field::TARGET..field::TARGET + 16].copy_from_slice(&target.octets());
                if let Some(mac) = lladdr {
                    let o = field::OPTIONS;
                    b[o] = kind;
                    b[o + 1] = 1;
                    b[o + 2..o + 8].copy_from_slice(&mac);
                }
            }
        }
        p.fill_checksum(src, dst);
    }
}
