//! A frame in a caller-owned buffer, with headroom in front so headers can be
//! pushed (VXLAN encap, ICMP errors) without copying the payload.

use crate::PortId;

/// Bytes kept free in front of a received frame: enough for an IPv6 VXLAN
/// encapsulation (70 bytes) or an ICMPv6 error header (48), with margin.
pub const HEADROOM: usize = 256;
/// The size of one frame buffer (headroom included).
pub const FRAME_SIZE: usize = 2048;

/// A frame: `buf[head..head + len]` are the frame's bytes; `buf[..head]` is headroom.
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
    /// The port the frame came in on.
    pub port: PortId,
}

impl<'a> Frame<'a> {
    /// A frame of `len` bytes at `head` in `buf`; out-of-range values are clamped
    /// to the buffer.
    #[inline]
    pub fn new(buf: &'a mut [u8], head: usize, len: usize, port: PortId) -> Frame<'a> {
        let head = head.min(buf.len());
        let len = len.min(buf.len() - head);
        Frame {
            buf,
            head,
            len,
            port,
        }
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the frame starts in the buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Free bytes in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Free bytes after the frame.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grows the frame by `n` bytes at the front; false (unchanged) without room.
    #[inline]
    pub fn push_head(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    /// Removes `n` bytes from the front; false (unchanged) if shorter.
    #[inline]
    pub fn pull_head(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Shortens the frame to `len` bytes (no-op when already shorter).
    #[inline]
    pub fn trim(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Sets the frame's length (growing into the tailroom); false (unchanged)
    /// if the buffer is too short.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        if self.head + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }

    /// `N` bytes of the buffer starting `front` bytes before the head: that
    /// much headroom, then the frame, then (if the frame is shorter) tailroom.
    /// `None` if the buffer does not have them. One bounds check for a fixed
    /// run of header writes; writing within the frame (and the headroom to be
    /// pushed) is the caller's business.
    #[inline(always)]
    pub(crate) fn span_mut<const N: usize>(&mut self, front: usize) -> Option<&mut [u8; N]> {
        let start = self.head.checked_sub(front)?;
        self.buf.get_mut(start..)?.first_chunk_mut::<N>()
    }

    /// [`Frame::push_head`] of `n` bytes and [`Frame::span_mut`] of `N`
    /// bytes from the new head, with one check; `None` (unchanged) without
    /// them.
    #[inline(always)]
    pub(crate) fn push_head_span<const N: usize>(&mut self, n: usize) -> Option<&mut [u8; N]> {
        let start = self.head.checked_sub(n)?;
        let s = self.buf.get_mut(start..)?.first_chunk_mut::<N>()?;
        self.head = start;
        self.len += n;
        Some(s)
    }

    /// The whole buffer, headroom included.
    #[inline]
    pub fn buffer(&self) -> &[u8] {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_head_within_the_buffer() {
        let mut buf = [0u8; 64];
        let mut f = Frame::new(&mut buf, 16, 20, 3);
        assert_eq!((f.headroom(), f.len(), f.tailroom()), (16, 20, 28));
        assert!(f.push_head(16));
        assert!(!f.push_head(1));
        assert_eq!((f.headroom(), f.len()), (0, 36));
        assert!(f.pull_head(30));
        assert!(!f.pull_head(7));
        assert_eq!((f.headroom(), f.len()), (30, 6));
        f.trim(4);
        assert_eq!(f.data().len(), 4);
    }

    #[test]
    fn out_of_range_head_and_len_are_clamped() {
        let mut buf = [0u8; 10];
        let f = Frame::new(&mut buf, 8, 100, 0);
        assert_eq!((f.head(), f.len()), (8, 2));
        let mut buf = [0u8; 10];
        let f = Frame::new(&mut buf, 50, 1, 0);
        assert_eq!((f.head(), f.len()), (10, 0));
    }
}
