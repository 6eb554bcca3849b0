//! Hand-off of frames between workers: a frame whose `Tx` port is served by
//! another worker's socket is copied into a slot and queued to that worker.
//!
//! Why copies and not UMEM tokens: each worker owns its own UMEM ([`Xsk`]),
//! with a free list and rings only that thread touches (no atomics, no locks
//! on its fast path). A token moved to another worker would have to be
//! transmitted from a socket bound to a *different* UMEM, which AF_XDP does
//! not allow, and freed back into its owner's free list from a foreign thread.
//! One copy of the frame's bytes (at most [`FRAME_SIZE`]) is the price, paid
//! only by cross-worker traffic; traffic between ports of one worker, and
//! every uplink queue's own traffic, still copies nothing.
//!
//! Memory: `slots` boxes of [`FRAME_SIZE`] bytes are made once at start and
//! circulate between a shared free pool and the per-worker inboxes, all
//! bounded lock-free `crossbeam::queue::ArrayQueue`s: a full inbox or an
//! empty pool is a counted drop, never an allocation or a wait.
//!
//! Wake-ups: a worker blocked in `poll()` (idle back-off) must see frames
//! handed to it. Each worker has an eventfd in its poll set and an `asleep`
//! flag. The sleeper sets `asleep`, then re-checks its inbox before blocking;
//! a sender pushes, then reads `asleep` (both sides with a SeqCst fence, so
//! one of them sees the other) and writes the eventfd once per poll and per
//! sleeping peer: a syscall only when the peer actually sleeps.
//!
//! Port ownership is a table of atomics indexed by port id, written by
//! whoever attaches or detaches a port (control path) and read per handed-off
//! frame; a frame raced by a detach is counted at the receiver and freed.
//!
//! [`Xsk`]: super::xsk::Xsk

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::xsk::Xsk;
use super::IoError;
use crate::pipeline::{FRAME_SIZE, HEADROOM};
use crate::PortId;

/// `owner` of a port no worker serves.
pub const NO_WORKER: u16 = u16::MAX;

/// Most workers a hand-off fabric connects (wake-ups are a 64-bit mask).
pub const MAX_WORKERS: usize = 64;

/// One handed-off frame.
pub struct Slot {
    port: PortId,
    len: u16,
    data: [u8; FRAME_SIZE],
}

struct Waker {
    fd: OwnedFd,
    asleep: AtomicBool,
}

/// What all workers share: port owners, inboxes, the free slot pool and
/// each worker's waker.
pub struct Fabric {
    owners: Box<[AtomicU16]>,
    inboxes: Box<[ArrayQueue<Box<Slot>>]>,
    pool: ArrayQueue<Box<Slot>>,
    wakers: Box<[Waker]>,
}

impl Fabric {
    /// A fabric for `workers` workers, each inbox holding `inbox` frames
    /// (the pool holds `workers * inbox` slots, allocated here).
    pub fn new(workers: usize, inbox: usize) -> Result<Arc<Fabric>, IoError> {
        if workers == 0 || workers > MAX_WORKERS || inbox == 0 {
            return Err(IoError::setup(format!(
                "hand-off: 1..={MAX_WORKERS} workers and a non-empty inbox needed \
                 ({workers} workers, inbox {inbox})"
            )));
        }
        let slots = workers * inbox;
        let pool = ArrayQueue::new(slots);
        for _ in 0..slots {
            let s = Box::new(Slot {
                port: 0,
                len: 0,
                data: [0; FRAME_SIZE],
            });
            let _ = pool.push(s);
        }
        let mut wakers = Vec::with_capacity(workers);
        for _ in 0..workers {
            // SAFETY: eventfd takes no pointers; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(IoError::Os {
                    what: "eventfd for a worker's wake-ups".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            wakers.push(Waker {
                // SAFETY: `fd` is a new descriptor owned by nothing else.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                asleep: AtomicBool::new(false),
            });
        }
        Ok(Arc::new(Fabric {
            owners: (0..=u16::MAX as usize)
                .map(|_| AtomicU16::new(NO_WORKER))
                .collect(),
            inboxes: (0..workers).map(|_| ArrayQueue::new(inbox)).collect(),
            pool,
            wakers: wakers.into_boxed_slice(),
        }))
    }

    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Records that worker `w` serves `port` (or nobody: [`NO_WORKER`]).
    pub fn set_owner(&self, port: PortId, w: u16) {
        self.owners[port as usize].store(w, Ordering::Release);
    }

    /// The worker serving `port`, if any.
    pub fn owner(&self, port: PortId) -> Option<u16> {
        match self.owners[port as usize].load(Ordering::Acquire) {
            NO_WORKER => None,
            w => Some(w),
        }
    }

    /// Slots on the free pool (all of them when nothing is in flight).
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    pub fn pool_capacity(&self) -> usize {
        self.pool.capacity()
    }

    /// Wakes worker `w` if it sleeps in poll() (rare: control path, stop).
    pub fn wake(&self, w: usize) {
        if let Some(k) = self.wakers.get(w) {
            kick(k.fd.as_raw_fd());
        }
    }

    /// Wakes every worker (stop).
    pub fn wake_all(&self) {
        for w in 0..self.wakers.len() {
            self.wake(w);
        }
    }
}

fn kick(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our own eventfd; a full
    // counter (EAGAIN) means a wake-up is pending anyway.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Hand-off counters of one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Frames queued to another worker.
    pub sent: u64,
    /// Frames taken from this worker's inbox and staged for transmission.
    pub received: u64,
    /// Frames dropped: the destination port has no worker.
    pub no_owner: u64,
    /// Frames dropped: the free pool was empty.
    pub no_slot: u64,
    /// Frames dropped: the destination's inbox was full.
    pub inbox_full: u64,
    /// Received frames dropped: the port is no longer served here.
    pub unknown_port: u64,
    /// Received frames dropped: no free UMEM frame to copy into.
    pub no_frame: u64,
    /// eventfd writes to wake a sleeping peer.
    pub wakeups: u64,
}

/// One worker's end of the fabric.
pub struct Handoff {
    me: u16,
    fabric: Arc<Fabric>,
    /// Peers handed frames since the last [`Handoff::wake_peers`].
    pending: u64,
    stats: HandoffStats,
}

impl Handoff {
    pub fn new(fabric: Arc<Fabric>, me: usize) -> Handoff {
        Handoff {
            me: me as u16,
            fabric,
            pending: 0,
            stats: HandoffStats::default(),
        }
    }

    pub fn worker(&self) -> usize {
        self.me as usize
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// Copies `bytes`, to be sent on `port`, to the worker serving it.
    /// Returns whether it was queued (otherwise the reason is counted).
    #[inline]
    pub fn send(&mut self, port: PortId, bytes: &[u8]) -> bool {
        let w = match self.fabric.owner(port) {
            Some(w) if w != self.me && (w as usize) < self.fabric.inboxes.len() => w,
            _ => {
                self.stats.no_owner += 1;
                return false;
            }
        };
        let Some(mut slot) = self.fabric.pool.pop() else {
            self.stats.no_slot += 1;
            return false;
        };
        let n = bytes.len().min(FRAME_SIZE);
        slot.data[..n].copy_from_slice(&bytes[..n]);
        slot.len = n as u16;
        slot.port = port;
        match self.fabric.inboxes[w as usize].push(slot) {
            Ok(()) => {
                self.stats.sent += 1;
                self.pending |= 1 << w;
                true
            }
            Err(slot) => {
                let _ = self.fabric.pool.push(slot);
                self.stats.inbox_full += 1;
                false
            }
        }
    }

    /// Takes up to `max` frames from this worker's inbox and stages them on
    /// the sockets of `xsk` (copied into free UMEM frames). Returns the
    /// number taken.
    pub fn receive(&mut self, xsk: &mut Xsk, max: usize) -> u32 {
        // A lone worker has no peer to hand it anything: skip the queue
        // (polling an empty ArrayQueue cost 6-8 % of a busy-polling worker).
        if self.fabric.inboxes.len() < 2 {
            return 0;
        }
        let inbox = &self.fabric.inboxes[self.me as usize];
        let mut n = 0;
        while n < max {
            let Some(slot) = inbox.pop() else { break };
            n += 1;
            let len = slot.len as usize;
            match (xsk.index_of(slot.port), xsk.alloc()) {
                (Some(j), Some(mut t)) => {
                    // Keep the usual headroom when it fits (later stages may
                    // push headers), else right-align in the chunk.
                    let head = if HEADROOM + len <= FRAME_SIZE {
                        HEADROOM
                    } else {
                        FRAME_SIZE - len
                    };
                    let chunk = xsk.chunk(&mut t);
                    match chunk.get_mut(head..head + len) {
                        Some(dst) => {
                            dst.copy_from_slice(&slot.data[..len]);
                            xsk.stage_tx(j, t, head as u32, len as u32);
                            self.stats.received += 1;
                        }
                        None => {
                            xsk.free(t);
                            self.stats.no_frame += 1;
                        }
                    }
                }
                (None, t) => {
                    if let Some(t) = t {
                        xsk.free(t);
                    }
                    self.stats.unknown_port += 1;
                }
                (Some(_), None) => self.stats.no_frame += 1,
            }
            let _ = self.fabric.pool.push(slot);
        }
        n as u32
    }

    /// Wakes the peers handed frames since the last call that are asleep
    /// (one eventfd write each). Called once per poll, after the flush.
    #[inline]
    pub fn wake_peers(&mut self) {
        if self.pending == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        let mut p = self.pending;
        self.pending = 0;
        while p != 0 {
            let w = p.trailing_zeros() as usize;
            p &= p - 1;
            let k = &self.fabric.wakers[w];
            if k.asleep.load(Ordering::SeqCst) {
                kick(k.fd.as_raw_fd());
                self.stats.wakeups += 1;
            }
        }
    }

    /// This worker's eventfd (part of its poll set when it blocks).
    pub fn event_fd(&self) -> RawFd {
        self.fabric.wakers[self.me as usize].fd.as_raw_fd()
    }

    /// Announces that this worker is about to block; false if frames arrived
    /// meanwhile (then it must not block). Pair with [`Handoff::woke`].
    pub fn prepare_sleep(&self) -> bool {
        let k = &self.fabric.wakers[self.me as usize];
        k.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.fabric.inboxes[self.me as usize].is_empty() {
            k.asleep.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// After blocking: clears the flag and drains the eventfd.
    pub fn woke(&self) {
        let k = &self.fabric.wakers[self.me as usize];
        k.asleep.store(false, Ordering::SeqCst);
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our own
        // non-blocking eventfd (EAGAIN when nothing is pending).
        unsafe { libc::read(k.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_goes_to_the_inbox_of_the_worker_owning_its_port() {
        let f = Fabric::new(2, 4).unwrap();
        let mut h0 = Handoff::new(f.clone(), 0);
        f.set_owner(7, 1);
        assert!(h0.send(7, &[1, 2, 3]));
        assert_eq!(f.inboxes[1].len(), 1);
        assert_eq!(f.pool_len(), f.pool_capacity() - 1);
        let s = f.inboxes[1].pop().unwrap();
        assert_eq!((s.port, &s.data[..s.len as usize]), (7, &[1u8, 2, 3][..]));
        assert_eq!(h0.stats().sent, 1);
    }

    #[test]
    fn a_port_without_a_worker_or_of_the_sender_itself_is_a_counted_drop() {
        let f = Fabric::new(2, 4).unwrap();
        let mut h0 = Handoff::new(f.clone(), 0);
        assert!(!h0.send(9, &[0; 60]));
        f.set_owner(9, 0);
        assert!(!h0.send(9, &[0; 60]));
        assert_eq!(h0.stats().no_owner, 2);
        assert_eq!(f.pool_len(), f.pool_capacity(), "no slot taken");
    }

    #[test]
    fn a_full_inbox_drops_and_returns_the_slot_to_the_pool() {
        let f = Fabric::new(2, 2).unwrap();
        let mut h0 = Handoff::new(f.clone(), 0);
        f.set_owner(1, 1);
        assert!(h0.send(1, &[0; 64]) && h0.send(1, &[0; 64]));
        assert!(!h0.send(1, &[0; 64]));
        assert_eq!(h0.stats().inbox_full, 1);
        assert_eq!(
            f.pool_len(),
            2,
            "4 slots, 2 in the inbox, the refused one back"
        );
    }

    #[test]
    fn an_empty_pool_is_a_counted_drop() {
        let f = Fabric::new(3, 1).unwrap();
        let mut h0 = Handoff::new(f.clone(), 0);
        let mut h2 = Handoff::new(f.clone(), 2);
        f.set_owner(1, 1);
        assert!(h0.send(1, &[0; 64]));
        // Drain the pool by hand: nothing left for the next sender.
        while f.pool.pop().is_some() {}
        f.set_owner(3, 0);
        assert!(!h2.send(3, &[0; 64]));
        assert_eq!(h2.stats().no_slot, 1);
    }

    #[test]
    fn a_worker_does_not_block_while_frames_wait_in_its_inbox_and_a_sleeper_is_woken() {
        let f = Fabric::new(2, 4).unwrap();
        let mut h0 = Handoff::new(f.clone(), 0);
        let h1 = Handoff::new(f.clone(), 1);
        assert!(h1.prepare_sleep(), "empty inbox: may block");
        f.set_owner(5, 1);
        assert!(h0.send(5, &[0; 64]));
        h0.wake_peers();
        assert_eq!(h0.stats().wakeups, 1, "the sleeper was kicked");
        let mut pfd = libc::pollfd {
            fd: h1.event_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        assert_eq!(r, 1, "its eventfd is readable");
        h1.woke();
        assert!(!h1.prepare_sleep(), "a frame waits: must not block");
        // A peer that is awake is not kicked.
        assert!(h0.send(5, &[0; 64]));
        h0.wake_peers();
        assert_eq!(h0.stats().wakeups, 1);
    }

    #[test]
    fn more_workers_than_the_wake_mask_holds_are_refused() {
        assert!(Fabric::new(MAX_WORKERS + 1, 4).is_err());
        assert!(Fabric::new(0, 4).is_err());
    }
}
