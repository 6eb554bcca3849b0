//! ICMPv4 (RFC 792): echo, and the errors the dataplane reads and writes.
//!
//! `check_len` checks only that the 8-byte header is present (`Truncated`). ICMP has
//! no length field: the message is the whole buffer, so wrap exactly the IP payload;
//! checksums cover the whole buffer. For errors, [`Packet::data`] is the embedded IP
//! header and the first bytes of its payload.

use super::checksum;
use super::{be16, put16, put32, Error, Result};

/// Length of the ICMPv4 header (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// Message types.
pub const ECHO_REPLY: u8 = 0;
pub const DST_UNREACHABLE: u8 = 3;
pub const SOURCE_QUENCH: u8 = 4;
pub const REDIRECT: u8 = 5;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAM_PROBLEM: u8 = 12;

/// Destination-unreachable codes.
pub const NET_UNREACHABLE: u8 = 0;
pub const HOST_UNREACHABLE: u8 = 1;
pub const PROTO_UNREACHABLE: u8 = 2;
pub const PORT_UNREACHABLE: u8 = 3;
pub const FRAG_NEEDED: u8 = 4;
/// Time-exceeded codes.
pub const TTL_EXCEEDED: u8 = 0;
pub const REASSEMBLY_EXCEEDED: u8 = 1;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const MTU: usize = 6;
    pub const REST: usize = 4;
}

/// A view over an ICMPv4 message.
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

    /// Wraps a buffer and checks it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the 8-byte header is present.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
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

    /// Echo identifier (bytes 4..6).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Echo sequence number (bytes 6..8).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SEQ)
    }

    /// Next-hop MTU of a fragmentation-needed message (RFC 1191, bytes 6..8).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU)
    }

    /// Whether this is an error message (which embeds the offending IP header).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }

    /// Whether this is an echo request or reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(self.msg_type(), ECHO_REQUEST | ECHO_REPLY)
    }

    /// Everything after the 8-byte header (for errors: the embedded IP header).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Whether the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::finish(checksum::sum(self.buffer.as_ref())) == 0
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

    /// Sets the next-hop MTU (bytes 6..8; bytes 4..6 are left as they are).
    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::MTU, v);
    }

    /// Data after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

/// An ICMPv4 header to emit.
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
    /// Destination unreachable; `next_hop_mtu` is only meaningful with `FRAG_NEEDED`
    /// (write 0 otherwise).
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
    },
    TimeExceeded {
        code: u8,
    },
}

impl Repr {
    /// Bytes the header takes: 8 (the data follows it).
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Bytes the message takes with `data_len` bytes of data.
    #[inline]
    pub const fn buffer_len(&self, data_len: usize) -> usize {
        HEADER_LEN + data_len
    }

    /// Writes the 8-byte header, then the checksum over the whole buffer: place the
    /// data (echo payload, or the embedded IP header and 8+ bytes) in `p` first.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let (ty, code, rest) = match *self {
            Repr::EchoRequest { ident, seq } => {
                (ECHO_REQUEST, 0, (u32::from(ident) << 16) | u32::from(seq))
            }
            Repr::EchoReply { ident, seq } => {
                (ECHO_REPLY, 0, (u32::from(ident) << 16) | u32::from(seq))
            }
            Repr::DstUnreachable { code, next_hop_mtu } => {
                (DST_UNREACHABLE, code, u32::from(next_hop_mtu))
            }
            Repr::TimeExceeded { code } => (TIME_EXCEEDED, code, 0),
        };
        {
            let b = p.buffer.as_mut();
            b[field::TYPE] = ty;
            b[field::CODE] = code;
            put32(b, field::REST, rest);
        }
        p.fill_checksum();
    }
}
