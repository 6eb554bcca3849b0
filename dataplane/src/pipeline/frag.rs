//! IP fragments of tracked flows (IPv4 fragment fields, the IPv6 fragment
//! header). Only a first fragment carries the ports, so its decision is recorded
//! per datagram in `conntrack::frag` (source, destination, identification,
//! protocol as received) and later fragments follow it: same translated
//! addresses, or the same pass/drop. A later fragment arriving before its first is
//! copied into a bounded stash of preallocated buffers; when the first fragment is
//! seen the stashed ones are run through the pipeline and handed out by
//! `Pipeline::take_released`; stashed fragments whose first never comes are timed
//! out and counted.

use super::drop::DropReason;
use super::frame::{Frame, FRAME_SIZE, HEADROOM};
use super::parse::{Ingress, Meta};
use super::verdict::Verdict;
use super::State;
use crate::conntrack::frag::{FragKey, FragTable};
use crate::PortId;

/// How long a datagram's fragments are followed, and stashed ones kept (Linux's
/// `ipfrag_time`).
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
/// Stashed fragments per pipeline.
pub const STASH_SLOTS: usize = 64;

/// What later fragments of a datagram do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FragAction {
    /// Translated to these addresses (unchanged when not NATed) and forwarded.
    Forward,
    Pass,
    Drop,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct FragEntry {
    pub action: FragAction,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The datagram's fragment key, from the packet as received.
#[inline]
pub(crate) fn key(m: &Meta) -> FragKey {
    FragKey {
        src: m.key.src,
        dst: m.key.dst,
        ident: m.frag_ident,
        proto: m.proto,
        family: m.family,
    }
}

/// Records a first fragment's decision, and marks stashed fragments of the
/// datagram for release at the end of the batch.
pub(crate) fn record(st: &mut State, m: &Meta, action: FragAction, now: u64) {
    let k = key(m);
    st.frags.insert(
        k,
        FragEntry {
            action,
            src: m.out().src,
            dst: m.out().dst,
        },
        now,
    );
    if st.stash.used > 0 && st.stash.has(&k) && st.release.len() < st.release.capacity() {
        st.release.push(k);
    }
}

/// Copies a later fragment into the stash.
pub(crate) fn stash(st: &mut State, frame: &Frame, m: &Meta, now: u64) -> Verdict {
    if st.stash.put(frame, m, now) {
        st.cnt.frags_stashed += 1;
        Verdict::Drop(DropReason::FragStashed)
    } else {
        Verdict::Drop(DropReason::FragStashFull)
    }
}

pub(crate) struct Slot {
    pub buf: Box<[u8]>,
    pub len: usize,
    pub port: PortId,
    pub ingress: Ingress,
    pub key: FragKey,
    pub since: u64,
    pub used: bool,
    /// Set once the slot was run through the pipeline: waits for `take_released`.
    pub released: Option<Verdict>,
    /// The frame's head in `buf` after processing.
    pub head: usize,
}

/// The bounded stash of early fragments (buffers allocated once, up front).
pub(crate) struct Stash {
    pub slots: Vec<Slot>,
    pub used: usize,
}

impl Stash {
    pub fn new(n: usize) -> Stash {
        let slots = (0..n)
            .map(|_| Slot {
                buf: vec![0u8; FRAME_SIZE].into_boxed_slice(),
                len: 0,
                port: 0,
                ingress: Ingress::Uplink,
                key: FragKey::default(),
                since: 0,
                used: false,
                released: None,
                head: HEADROOM,
            })
            .collect();
        Stash { slots, used: 0 }
    }

    fn put(&mut self, frame: &Frame, m: &Meta, now: u64) -> bool {
        let data = frame.data();
        if data.len() > FRAME_SIZE - HEADROOM {
            return false;
        }
        let Some(s) = self.slots.iter_mut().find(|s| !s.used) else {
            return false;
        };
        s.buf[HEADROOM..HEADROOM + data.len()].copy_from_slice(data);
        s.len = data.len();
        s.port = frame.port;
        s.ingress = m.ingress;
        s.key = key(m);
        s.since = now;
        s.used = true;
        s.released = None;
        s.head = HEADROOM;
        self.used += 1;
        true
    }

    fn has(&self, k: &FragKey) -> bool {
        self.slots
            .iter()
            .any(|s| s.used && s.released.is_none() && s.key == *k)
    }

    /// Frees slots older than the timeout; returns how many.
    pub fn expire(&mut self, now: u64) -> u64 {
        let mut n = 0;
        for s in self
            .slots
            .iter_mut()
            .filter(|s| s.used && s.released.is_none())
        {
            if now.saturating_sub(s.since) >= FRAG_TIMEOUT_NS {
                s.used = false;
                n += 1;
            }
        }
        self.used -= n as usize;
        n
    }
}

/// The per-pipeline fragment table type.
pub(crate) type Frags = FragTable<FragEntry>;
