//! The minimal forwarding loop: one thread, one [`Xsk`] (a UMEM and its
//! sockets), one [`Pipeline`]. Per poll: take back completed transmits, and
//! for each socket top up its fill ring, receive a batch, run it through the
//! pipeline in place (frames are the UMEM chunks themselves), and stage each
//! frame by verdict; then one flush puts the staged frames on the tx rings
//! with one kick per socket.
//!
//! Verdicts: `Tx(port)` and `Reply` are transmitted from wherever the
//! pipeline left the frame's head (no copy); `Drop` frees the frame (the
//! pipeline counted the reason). `Pass` cannot be honoured here: a frame the
//! XDP program redirected to AF_XDP cannot be handed back to the kernel's
//! receive path. The steering program is written so that what the pipeline
//! would pass (traffic to the node's own addresses, ARP/ND not for the
//! gateway, everything else on the uplink that is not ours) is passed in XDP
//! and never reaches here; what still arrives with a `Pass` verdict (a
//! decapsulated overlay frame addressed to the node, a mismatch between the
//! program's maps and the pipeline's tables) is freed and counted as
//! [`IoStats::pass_unhandled`]. The planned fix is a TAP "kernel port" the
//! loop writes such frames to.
//!
//! Idle back-off: after `idle_polls` empty polls in a row the loop blocks in
//! `poll()` on all sockets (up to `sleep_ms`), unless `busy_poll` is set. No
//! `SO_PREFER_BUSY_POLL` (on veth it stops reception).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::channel::{Receiver, Sender};

use super::handoff::Handoff;
use super::hooks::{ShmHooks, IDLE_BEAT_POLLS};
use super::xdp::{IfaceMode, Steering};
use super::xsk::{BindMode, Owned, Xsk};
use super::IoError;
use crate::pipeline::{Frame, Pipeline, Verdict, BATCH, HEADROOM};
use crate::state::shm::monotonic_ns;
use crate::state::Tables;
use crate::PortId;

/// Loop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub polls: u64,
    pub empty_polls: u64,
    /// Times the loop blocked in poll().
    pub sleeps: u64,
    pub rx: u64,
    /// Frames staged for transmission (Tx and Reply).
    pub staged_tx: u64,
    /// `Pass` verdicts on frames already taken from the kernel (freed).
    pub pass_unhandled: u64,
    /// `Tx` to a port with no socket here (freed), and none elsewhere.
    pub tx_unknown_port: u64,
    /// `Tx` to a port of another worker: copied to its inbox (see [`Handoff`]).
    pub handed_off: u64,
    /// `Drop` verdicts (freed; reasons in the pipeline's counters).
    pub dropped: u64,
    /// Released fragments that found no free frame.
    pub released_lost: u64,
}

/// How the loop waits when there is nothing to do.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// Never block (benchmarks).
    pub busy_poll: bool,
    /// Empty polls in a row before blocking.
    pub idle_polls: u32,
    /// Longest block in poll(), in milliseconds (bounds how late a stop is seen).
    pub sleep_ms: i32,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            busy_poll: false,
            idle_polls: 64,
            sleep_ms: 10,
        }
    }
}

/// A change to make between polls, sent to a running loop
/// ([`Forwarder::run_controlled`]); the other ports keep being served.
pub enum Control {
    /// Serve `ifname` as `port` ([`Forwarder::attach`]); the result is sent back.
    Attach {
        ifname: String,
        port: PortId,
        mode: IfaceMode,
        done: Sender<Result<BindMode, IoError>>,
    },
    /// Stop serving `port` ([`Forwarder::detach`]).
    Detach {
        port: PortId,
        done: Sender<Result<(), IoError>>,
    },
    /// Switch the pipeline to new tables (a new pod, new Services;
    /// [`Forwarder::set_tables`]).
    Tables(Arc<Tables>),
}

/// The sending side of a loop's control channel.
pub type ControlSender = Sender<Control>;

/// A control channel for [`Forwarder::run_controlled`] (unbounded: control
/// messages are rare and never on the packet path).
pub fn control_channel() -> (ControlSender, Receiver<Control>) {
    crossbeam::channel::unbounded()
}

/// A channel for one reply to a [`Control`] message.
pub fn reply_channel<T>() -> (Sender<T>, Receiver<T>) {
    crossbeam::channel::bounded(1)
}

/// One worker's loop state.
pub struct Forwarder {
    xsk: Xsk,
    pipeline: Pipeline,
    tokens: Vec<Owned>,
    verdicts: Vec<Verdict>,
    /// (head, len) of each frame after the pipeline.
    out: Vec<(u32, u32)>,
    released: Vec<(Vec<u8>, Verdict)>,
    pollfds: Vec<libc::pollfd>,
    stats: IoStats,
    /// Other workers' ports (none for a single worker).
    handoff: Option<Handoff>,
    /// This worker's announce line, stats block and trace (none: no
    /// shared-memory file).
    hooks: Option<Box<ShmHooks>>,
    /// Empty polls since the last idle heartbeat.
    idle_polls: u32,
}

impl Forwarder {
    pub fn new(xsk: Xsk, pipeline: Pipeline) -> Forwarder {
        Forwarder {
            xsk,
            pipeline,
            tokens: Vec::with_capacity(BATCH),
            verdicts: vec![Verdict::default(); BATCH],
            out: vec![(0, 0); BATCH],
            released: Vec::new(),
            pollfds: Vec::new(),
            stats: IoStats::default(),
            handoff: None,
            hooks: None,
            idle_polls: 0,
        }
    }

    /// Connects this loop to the shared-memory file: per batch it announces
    /// the generation of its tables, beats, stores its counters and records
    /// traced frames (see [`super::hooks`]).
    pub fn set_shm_hooks(&mut self, mut hooks: ShmHooks) {
        hooks.set_generation(
            self.pipeline.tables().published_generation(),
            monotonic_ns(),
        );
        self.hooks = Some(Box::new(hooks));
    }

    pub fn shm_hooks(&self) -> Option<&ShmHooks> {
        self.hooks.as_deref()
    }

    /// Switches the pipeline to `tables` and announces at once the
    /// shared-memory generation they were built from
    /// ([`Tables::published_generation`]), so the publisher may reuse the
    /// old generation's slot sooner.
    pub fn set_tables(&mut self, tables: Arc<Tables>) {
        let generation = tables.published_generation();
        self.pipeline.set_tables(tables);
        if let Some(h) = self.hooks.as_deref_mut() {
            h.set_generation(generation, monotonic_ns());
        }
    }

    /// Connects this loop to other workers: frames for ports it has no
    /// socket for go to the worker serving them, and frames handed to it are
    /// transmitted at each poll.
    pub fn set_handoff(&mut self, h: Handoff) {
        self.handoff = Some(h);
    }

    pub fn handoff(&self) -> Option<&Handoff> {
        self.handoff.as_ref()
    }

    pub fn xsk(&self) -> &Xsk {
        &self.xsk
    }

    pub fn xsk_mut(&mut self) -> &mut Xsk {
        &mut self.xsk
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    pub fn stats(&self) -> IoStats {
        self.stats
    }

    /// Serves `ifname` (queue 0) as dataplane port `port`: opens its AF_XDP
    /// socket on this loop's UMEM, then attaches the steering program with
    /// the socket already in its map. Returns the socket's bind mode.
    pub fn attach(
        &mut self,
        st: &mut Steering,
        ifname: &str,
        port: PortId,
        mode: IfaceMode,
    ) -> Result<BindMode, IoError> {
        let bind = self.xsk.add_socket(ifname, 0, port)?;
        let (fd, _, _) = self
            .xsk
            .fd(port)
            .ok_or_else(|| IoError::setup("socket vanished"))?;
        if let Err(e) = st.attach(ifname, mode, 1, &[fd]) {
            let _ = self.xsk.remove_socket(port);
            return Err(e);
        }
        Ok(bind)
    }

    /// Stops serving port `port`: its steering entry and program go first (its
    /// traffic returns to the kernel), then its socket, whose frames return to
    /// the free list. Other ports are untouched.
    pub fn detach(&mut self, st: &mut Steering, port: PortId) -> Result<(), IoError> {
        let (_, ifindex, _) = self
            .xsk
            .fd(port)
            .ok_or_else(|| IoError::setup(format!("port {port}: not attached")))?;
        st.detach(ifindex)?;
        self.xsk.remove_socket(port)
    }

    /// One pass over all sockets (and the hand-off inbox); returns the
    /// frames received and taken over.
    pub fn poll_once(&mut self, now: u64) -> u64 {
        self.poll_with(|| now)
    }

    /// As [`Forwarder::poll_once`], reading the monotonic clock only when a
    /// batch arrived: an empty poll needs no time, and clock reads are slow
    /// under virtualisation (17 % of a busy-polling worker when read per poll).
    pub fn poll_now(&mut self) -> u64 {
        self.poll_with(monotonic_ns)
    }

    fn poll_with(&mut self, mut clock: impl FnMut() -> u64) -> u64 {
        self.stats.polls += 1;
        self.xsk.reclaim();
        let mut total = 0;
        let mut now = None;
        for i in 0..self.xsk.len() {
            self.xsk.refill(i);
            let n = self.xsk.rx(i, &mut self.tokens, BATCH as u32);
            if n > 0 {
                let t = *now.get_or_insert_with(&mut clock);
                self.process(i, t);
                total += n as u64;
            }
        }
        // Frames other workers handed over (counted in their HandoffStats,
        // not in `rx`) are work too: not an empty poll.
        let handed = match self.handoff.as_mut() {
            Some(h) => h.receive(&mut self.xsk, BATCH) as u64,
            None => 0,
        };
        self.xsk.flush();
        if let Some(h) = self.handoff.as_mut() {
            h.wake_peers();
        }
        if let Some(h) = self.hooks.as_deref_mut() {
            if let Some(t) = now {
                h.flush(self.pipeline.counters(), t);
                self.idle_polls = 0;
            } else {
                self.idle_polls += 1;
                if self.idle_polls >= IDLE_BEAT_POLLS {
                    self.idle_polls = 0;
                    h.idle_beat(clock());
                }
            }
        }
        if total + handed == 0 {
            self.stats.empty_polls += 1;
        }
        self.stats.rx += total;
        total + handed
    }

    /// Runs the held batch (received on socket `i`) through the pipeline and
    /// stages or frees every frame.
    fn process(&mut self, i: usize, now: u64) {
        let port = self.xsk.port_of(i);
        let n = self.tokens.len().min(BATCH);
        if let Some(h) = self.hooks.as_deref_mut() {
            let bytes: u64 = self.tokens.iter().map(|t| u64::from(t.len)).sum();
            h.count_rx(port, n as u64, bytes);
            if h.trace_armed() {
                let xsk = &self.xsk;
                let vxlan_port = self.pipeline.tables().config().vxlan_port;
                let frames = self.tokens.iter_mut().map(|t| {
                    let (head, len) = (t.head as usize, t.len as usize);
                    let c: &[u8] = xsk.chunk(t);
                    c.get(head..head + len).unwrap_or(&[])
                });
                h.note_frames(port, vxlan_port, frames);
            }
        }
        {
            let xsk = &self.xsk;
            let mut frames: [Frame; BATCH] = std::array::from_fn(|_| Frame::new(&mut [], 0, 0, 0));
            for (f, t) in frames.iter_mut().zip(self.tokens.iter_mut()) {
                let (head, len) = (t.head as usize, t.len as usize);
                *f = Frame::new(xsk.chunk(t), head, len, port);
            }
            self.pipeline
                .process(&mut frames[..n], &mut self.verdicts[..n], now);
            for (o, f) in self.out.iter_mut().zip(frames[..n].iter()) {
                *o = (f.head() as u32, f.len() as u32);
            }
        }
        let mut hooks = self.hooks.as_deref_mut();
        if let Some(h) = hooks.as_deref_mut() {
            h.after_batch(port, &self.verdicts[..n], now);
        }
        for (k, t) in self.tokens.drain(..).enumerate() {
            let (head, len) = self.out[k];
            match self.verdicts[k] {
                Verdict::Tx(p) => match self.xsk.index_of(p) {
                    Some(j) => {
                        self.xsk.stage_tx(j, t, head, len);
                        self.stats.staged_tx += 1;
                        if let Some(h) = hooks.as_deref_mut() {
                            h.count_tx(p, u64::from(len));
                        }
                    }
                    None => {
                        let sent = hand_off(
                            &mut self.xsk,
                            self.handoff.as_mut(),
                            &mut self.stats,
                            (p, t, head, len),
                        );
                        if let (true, Some(h)) = (sent, hooks.as_deref_mut()) {
                            h.count_tx(p, u64::from(len));
                        }
                    }
                },
                Verdict::Reply => {
                    self.xsk.stage_tx(i, t, head, len);
                    self.stats.staged_tx += 1;
                    if let Some(h) = hooks.as_deref_mut() {
                        h.count_tx(port, u64::from(len));
                    }
                }
                Verdict::Pass => {
                    self.xsk.free(t);
                    self.stats.pass_unhandled += 1;
                }
                Verdict::Drop(reason) => {
                    self.xsk.free(t);
                    self.stats.dropped += 1;
                    if let Some(h) = hooks.as_deref_mut() {
                        h.count_drop(port, reason);
                    }
                }
            }
        }
        if self.pipeline.stashed() > 0 {
            self.send_released(i);
        }
    }

    /// Fragments the pipeline released from its stash: copied into free
    /// frames and staged (rare: a later fragment that arrived first).
    fn send_released(&mut self, i: usize) {
        self.pipeline.take_released(&mut self.released);
        for (bytes, v) in self.released.drain(..) {
            let j = match v {
                Verdict::Tx(p) => match self.xsk.index_of(p) {
                    Some(j) => Some(j),
                    None => {
                        let sent = match self.handoff.as_mut() {
                            Some(h) => h.send(p, &bytes),
                            None => false,
                        };
                        if sent {
                            self.stats.handed_off += 1;
                        } else {
                            self.stats.released_lost += 1;
                        }
                        continue;
                    }
                },
                Verdict::Reply => Some(i),
                _ => None,
            };
            let port = self.xsk.port_of(j.unwrap_or(i));
            let (Some(j), Some(mut t)) = (j, self.xsk.alloc()) else {
                self.stats.released_lost += 1;
                continue;
            };
            let chunk = self.xsk.chunk(&mut t);
            let Some(dst) = chunk.get_mut(HEADROOM..HEADROOM + bytes.len()) else {
                self.xsk.free(t);
                self.stats.released_lost += 1;
                continue;
            };
            dst.copy_from_slice(&bytes);
            self.xsk.stage_tx(j, t, HEADROOM as u32, bytes.len() as u32);
            self.stats.staged_tx += 1;
            if let Some(h) = self.hooks.as_deref_mut() {
                h.count_tx(port, bytes.len() as u64);
            }
        }
    }

    /// Polls until `stop` is set, with idle back-off per `opts`.
    pub fn run(&mut self, stop: &AtomicBool, opts: RunOptions) {
        self.run_inner(stop, opts, None);
    }

    /// As [`Forwarder::run`], also applying [`Control`] messages between polls
    /// (at most `sleep_ms` late when idle), with `st` the steering program the
    /// ports are attached to.
    pub fn run_controlled(
        &mut self,
        stop: &AtomicBool,
        opts: RunOptions,
        st: &mut Steering,
        ctl: &Receiver<Control>,
    ) {
        self.run_inner(stop, opts, Some((st, ctl)));
    }

    fn apply(&mut self, st: &mut Steering, c: Control) {
        match c {
            Control::Attach {
                ifname,
                port,
                mode,
                done,
            } => {
                let r = self.attach(st, &ifname, port, mode);
                let _ = done.send(r);
            }
            Control::Detach { port, done } => {
                let r = self.detach(st, port);
                let _ = done.send(r);
            }
            Control::Tables(t) => self.set_tables(t),
        }
    }

    fn run_inner(
        &mut self,
        stop: &AtomicBool,
        opts: RunOptions,
        mut ctl: Option<(&mut Steering, &Receiver<Control>)>,
    ) {
        let mut empty = 0u32;
        while !stop.load(Ordering::Relaxed) {
            if let Some((st, rx)) = ctl.as_mut() {
                while let Ok(c) = rx.try_recv() {
                    self.apply(st, c);
                }
            }
            let n = self.poll_now();
            if n > 0 {
                empty = 0;
                continue;
            }
            empty += 1;
            if !opts.busy_poll && empty >= opts.idle_polls {
                self.sleep(opts.sleep_ms);
                empty = 0;
            }
        }
        if let Some(h) = self.shm_hooks() {
            h.clear();
        }
    }

    /// Blocks until a socket has frames to receive, another worker handed
    /// frames over or sent a control message (its eventfd), or `ms` pass.
    pub fn sleep(&mut self, ms: i32) {
        if let Some(h) = &self.handoff {
            if !h.prepare_sleep() {
                return; // frames were handed over meanwhile
            }
        }
        self.stats.sleeps += 1;
        self.pollfds.clear();
        self.pollfds.extend(self.xsk.fds().map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        if let Some(h) = &self.handoff {
            self.pollfds.push(libc::pollfd {
                fd: h.event_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if self.pollfds.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(ms.max(0) as u64));
            return;
        }
        // SAFETY: `pollfds` is a live, initialised array of `len` pollfd
        // structs that poll() only reads and writes within; the fds are our
        // sockets' (an fd closed meanwhile only yields POLLNVAL).
        unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if let Some(h) = &self.handoff {
            h.woke();
        }
    }
}

/// A frame (`t`, data at `head`, `len` bytes) for port `p`, which has no
/// socket in `xsk`: copied to the worker serving it, if any; freed either way.
/// Whether it was handed over.
#[inline]
fn hand_off(
    xsk: &mut Xsk,
    handoff: Option<&mut Handoff>,
    stats: &mut IoStats,
    (p, mut t, head, len): (PortId, Owned, u32, u32),
) -> bool {
    let sent = match handoff {
        Some(h) => {
            let chunk = xsk.chunk(&mut t);
            match chunk.get(head as usize..head as usize + len as usize) {
                Some(bytes) => h.send(p, bytes),
                None => false,
            }
        }
        None => false,
    };
    if sent {
        stats.handed_off += 1;
    } else {
        stats.tx_unknown_port += 1;
    }
    xsk.free(t);
    sent
}
