//! Ethernet II frames, with at most one 802.1Q tag.
//!
//! [`Frame::ethertype`] is the *inner* EtherType: after a single 802.1Q tag (TPID
//! 0x8100) it is the one following the tag, so stages never look at tags themselves;
//! [`Frame::vlan_id`] reports the tag. Short frames padded to 60 bytes are accepted:
//! the payload is everything after the header, and IP views trim to their lengths.

use super::{arr, be16, put16, Error, Result};
use crate::Mac;

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;
/// The 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// An EtherType; values we do not handle are kept as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    #[inline]
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(other) => other,
        }
    }
}

/// A view over an Ethernet frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer and checks it (see [`Frame::check_len`]).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the buffer holds the whole header, including an 802.1Q tag if present.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::ETHERTYPE) == TPID_8021Q && b.len() < VLAN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Unwraps the buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> Mac {
        arr(self.buffer.as_ref(), field::DST)
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> Mac {
        arr(self.buffer.as_ref(), field::SRC)
    }

    /// Whether the frame carries an 802.1Q tag.
    #[inline]
    pub fn is_vlan_tagged(&self) -> bool {
        be16(self.buffer.as_ref(), field::ETHERTYPE) == TPID_8021Q
    }

    /// The EtherType of the payload (after one 802.1Q tag if present).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let b = self.buffer.as_ref();
        let outer = be16(b, field::ETHERTYPE);
        if outer == TPID_8021Q {
            EtherType::from(be16(b, field::INNER_ETHERTYPE))
        } else {
            EtherType::from(outer)
        }
    }

    /// The 12-bit VLAN identifier of the 802.1Q tag, if any.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.is_vlan_tagged() {
            Some(be16(self.buffer.as_ref(), field::TCI) & 0x0fff)
        } else {
            None
        }
    }

    /// Header length: 14, or 18 with an 802.1Q tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (including any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::DST..field::DST + 6].copy_from_slice(&mac);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, mac: Mac) {
        self.buffer.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&mac);
    }

    /// Sets the payload EtherType (the inner one if the frame is tagged).
    #[inline]
    pub fn set_ethertype(&mut self, ty: EtherType) {
        let at = self.header_len() - 2;
        put16(self.buffer.as_mut(), at, ty.into());
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// An untagged Ethernet header to emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Mac,
    pub dst: Mac,
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads the addresses and (inner) EtherType of a frame.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Repr {
        Repr {
            src: frame.src_addr(),
            dst: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Bytes this header takes: [`HEADER_LEN`].
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes an untagged 14-byte header at the start of `frame`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        let b = frame.buffer.as_mut();
        b[field::DST..field::DST + 6].copy_from_slice(&self.dst);
        b[field::SRC..field::SRC + 6].copy_from_slice(&self.src);
        put16(b, field::ETHERTYPE, self.ethertype.into());
    }
}
