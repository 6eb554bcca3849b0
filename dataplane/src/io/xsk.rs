//! AF_XDP sockets over one shared UMEM, with frame ownership made explicit.
//!
//! Built on libxdp's socket API (`xsk_umem__create`, `xsk_socket__create_shared`
//! and its ring helpers) through `libxdp-sys`, the bindings xsk-rs itself wraps.
//! xsk-rs's own types are not used because its frame descriptor's address is
//! fixed at the received position (no way to transmit from a moved head, so a
//! VXLAN encap or decap would need a copy of the whole frame) and it gives no
//! access to the XDP headroom in front of the received data, where the
//! pipeline pushes headers (see the report of this module's first commit).
//!
//! Layout: the UMEM is `frames` chunks of [`FRAME_SIZE`] bytes (aligned mode,
//! no extra headroom), so a received frame lands at `chunk + 256`
//! (`XDP_PACKET_HEADROOM` = [`HEADROOM`]): exactly the pipeline's [`Frame`]
//! shape, headroom included. A transmit descriptor points at wherever the
//! pipeline left the frame's head inside its chunk, so forwarding, encap and
//! decap copy nothing.
//!
//! Ownership: every chunk is in exactly one place: the free list, one
//! socket's fill ring, one socket's tx ring (until its completion), or an
//! [`Owned`] token held by the caller (a received frame). `owner[chunk]`
//! records which socket's ring holds it, so a received descriptor is accepted
//! only if it names a chunk that socket was given (a duplicate or foreign
//! address is counted and ignored, never aliased), and removing a socket
//! returns its frames to the free list (the UMEM's own socket is retired
//! instead: see [`Xsk::remove_socket`]). [`FrameAccount`] shows the totals.
//!
//! [`Frame`]: crate::pipeline::Frame

use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use libxdp_sys as sys;

use super::{ifindex, IoError};
use crate::pipeline::{FRAME_SIZE, HEADROOM};
use crate::PortId;

/// `XDP_PACKET_HEADROOM`: where the kernel puts received data in a chunk.
const XDP_PACKET_HEADROOM: usize = 256;
const _: () = assert!(HEADROOM == XDP_PACKET_HEADROOM);
const _: () = assert!(FRAME_SIZE.is_power_of_two());

pub(super) const XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD: u32 = 1;
pub(super) const XDP_COPY: u16 = 1 << 1;
pub(super) const XDP_ZEROCOPY: u16 = 1 << 2;
pub(super) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
pub(super) const SOL_XDP: libc::c_int = 283;
/// Linux 6.17+: frames one copy-mode `sendto` kick may transmit (default 32).
pub(super) const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// `owner` value of a chunk held by no ring.
const NO_OWNER: u16 = 0;
/// `owner` value of a chunk left in a retired socket's rings (see
/// [`Xsk::remove_socket`]).
const RETIRED: u16 = u16::MAX;
/// `by_port` value of a port without a socket.
const NO_SOCKET: u16 = u16::MAX;

/// Whether to ask for zero-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Copy mode (what veth supports).
    Off,
    /// Zero-copy where the driver offers it, copy mode otherwise (logged).
    Auto,
    /// Zero-copy or fail.
    Force,
}

/// The mode a socket was bound in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    Copy,
    ZeroCopy,
}

/// Sizes and modes of one UMEM and its sockets.
#[derive(Clone, Copy, Debug)]
pub struct XskConfig {
    /// Chunks in the UMEM (shared by all sockets).
    pub frames: u32,
    /// Size of each socket's rx, tx, fill and completion rings (a power of two).
    pub ring_size: u32,
    /// Frames each socket's fill ring is kept stocked with.
    pub fill_per_socket: u32,
    pub zero_copy: ZeroCopy,
    /// Bind with `XDP_USE_NEED_WAKEUP` (kick the kernel only when it asks).
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frames: 4096,
            ring_size: 1024,
            fill_per_socket: 512,
            zero_copy: ZeroCopy::Off,
            need_wakeup: true,
        }
    }
}

/// Where the UMEM's chunks are (between polls, `held` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameAccount {
    pub total: u32,
    /// On the free list.
    pub free: u32,
    /// In fill rings (the kernel's, waiting for a packet).
    pub fill: u32,
    /// In tx rings or being sent (until the completion ring returns them).
    pub tx: u32,
    /// Held by the caller as [`Owned`] tokens.
    pub held: u32,
    /// Left in the rings of the UMEM's own socket after its port was removed
    /// (out of use until the UMEM goes; see [`Xsk::remove_socket`]).
    pub retired: u32,
}

impl FrameAccount {
    /// Frames in none of the places above (0 unless frames leaked).
    pub fn missing(&self) -> i64 {
        self.total as i64 - (self.free + self.fill + self.tx + self.held + self.retired) as i64
    }
}

/// A received (or allocated) chunk, owned by whoever holds this token: its
/// bytes are reachable only through `&mut` to it, and it goes back to the
/// [`Xsk`] by [`Xsk::free`] or [`Xsk::stage_tx`]. Not `Clone`.
#[derive(Debug)]
pub struct Owned {
    /// The [`Xsk`] it belongs to (a token is honoured by its own only).
    xsk: u32,
    chunk: u64,
    /// Data offset in the chunk and length as received.
    pub head: u32,
    pub len: u32,
}

/// The mmap'd UMEM area (also used by [`super::gen`]).
pub(super) struct Area {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

impl Area {
    pub(super) fn new(len: usize) -> Result<Area, IoError> {
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing aliases nothing; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(IoError::Os {
                what: format!("mmap of a {len}-byte UMEM"),
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| IoError::setup("mmap gave NULL"))?;
        Ok(Area { ptr, len })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`; every
        // socket and the UMEM registration using it are gone (`Xsk` drops its
        // sockets, then the UMEM, then the area), and no `Owned` borrow can
        // outlive the `Xsk` that lends it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A ring structure libxdp keeps a pointer to: boxed so it never moves.
pub(super) type ProdRing = Box<sys::xsk_ring_prod>;
pub(super) type ConsRing = Box<sys::xsk_ring_cons>;

pub(super) fn prod_ring() -> ProdRing {
    // SAFETY: xsk_ring_prod is a C struct of integers and raw pointers, for
    // which all-zero is a valid (empty, unmapped) value; libxdp fills it in.
    Box::new(unsafe { std::mem::zeroed() })
}

pub(super) fn cons_ring() -> ConsRing {
    // SAFETY: as for `prod_ring`.
    Box::new(unsafe { std::mem::zeroed() })
}

/// The UMEM registration. Field order is drop order: the registration is
/// deleted before its rings are freed.
struct Umem {
    raw: NonNull<sys::xsk_umem>,
    /// The fill and completion rings given to `xsk_umem__create`, until the
    /// first socket takes them. libxdp keeps pointers to them (`fill_save`)
    /// and reads them at deletion if no socket took them. They are lent to
    /// the first socket's create call as its own fill/comp rings, so that a
    /// failed attempt (a refused zero-copy bind) leaves them mapped: passing
    /// other ring structs would make libxdp copy them and unmap the originals
    /// on failure, breaking the UMEM.
    rings: Option<(ProdRing, ConsRing)>,
    /// The bind mode of the first socket, which every later socket sharing
    /// this UMEM inherits (the kernel ignores their own flags).
    mode: Option<BindMode>,
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `raw` came from xsk_umem__create and every socket made on it
        // was deleted before (`Xsk` drops its sockets first).
        let r = unsafe { sys::xsk_umem__delete(self.raw.as_ptr()) };
        if r != 0 {
            log::error!(
                "xsk_umem__delete: {}",
                std::io::Error::from_raw_os_error(-r)
            );
        }
    }
}

/// One AF_XDP socket and its four rings.
struct Socket {
    raw: NonNull<sys::xsk_socket>,
    rx: ConsRing,
    tx: ProdRing,
    fill: ProdRing,
    comp: ConsRing,
    fd: RawFd,
    mode: BindMode,
    port: PortId,
    ifindex: u32,
    queue: u32,
    name: String,
    /// Frames in this socket's fill ring.
    fill_out: u32,
    /// Frames in its tx ring or in flight.
    tx_out: u32,
    /// Frames to transmit at the next flush: (address, length).
    staged: Vec<(u64, u32)>,
    /// Made with the UMEM's own fd and rings (the first socket).
    umem_own: bool,
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: `raw` came from xsk_socket__create_shared and is deleted
        // once; its rings (boxed fields) are still alive here and freed only
        // after this returns.
        unsafe { sys::xsk_socket__delete(self.raw.as_ptr()) };
    }
}

/// Per-socket and UMEM-wide I/O counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    pub rx: u64,
    pub tx: u64,
    /// Frames to send that found the tx ring full (freed).
    pub tx_ring_full: u64,
    /// Fill refills that found the free list empty.
    pub fill_starved: u64,
    /// Received descriptors naming a chunk the socket was not given (ignored).
    pub bad_desc: u64,
    /// sendto/recvfrom kicks.
    pub kicks: u64,
}

/// One worker's AF_XDP I/O: a UMEM and the sockets sharing it.
pub struct Xsk {
    // Field order is drop order: sockets, the retired UMEM socket, then the
    // UMEM, then its memory.
    sockets: Vec<Socket>,
    /// The UMEM's own socket once its port was removed: kept open (its fd is
    /// the UMEM's) but out of the poll set.
    retired: Option<Socket>,
    /// Chunks left in its rings.
    retired_frames: u32,
    /// Unique per `Xsk` in the process: stamps its tokens.
    id: u32,
    umem: Umem,
    area: Area,
    cfg: XskConfig,
    free: Vec<u64>,
    /// Per chunk: 1 + index of the socket whose fill or tx ring holds it.
    owner: Vec<u16>,
    /// Per port id: its socket index, or `NO_SOCKET`.
    by_port: Vec<u16>,
    held: u32,
    stats: XskStats,
}

impl Drop for Xsk {
    fn drop(&mut self) {
        // Later sockets first: the first one's fd is the UMEM's (it may be
        // in `retired`, dropped after the loop, before the UMEM).
        while let Some(s) = self.sockets.pop() {
            drop(s);
        }
        drop(self.retired.take());
    }
}

// SAFETY: the raw libxdp pointers and the mapping are owned exclusively by
// this value (no other handle to them exists), so moving it to another thread
// moves sole ownership; libxdp keeps no thread-local state about them.
unsafe impl Send for Xsk {}

impl Xsk {
    /// Maps and registers a UMEM of `cfg.frames` chunks.
    pub fn new(cfg: XskConfig) -> Result<Xsk, IoError> {
        if !cfg.ring_size.is_power_of_two() || cfg.frames == 0 {
            return Err(IoError::setup(
                "AF_XDP: ring size must be a power of two and frames non-zero",
            ));
        }
        let len = cfg.frames as usize * FRAME_SIZE;
        let area = Area::new(len)?;
        let mut fill0 = prod_ring();
        let mut comp0 = cons_ring();
        let ucfg = sys::xsk_umem_config {
            fill_size: cfg.ring_size,
            comp_size: cfg.ring_size,
            frame_size: FRAME_SIZE as u32,
            frame_headroom: 0,
            flags: 0,
        };
        let mut raw = std::ptr::null_mut();
        // SAFETY: `area` is a live mapping of `len` bytes that outlives the
        // registration (dropped after `umem`); the ring boxes never move and
        // live in `Umem` as long as libxdp may read them; `ucfg` is read only.
        let r = unsafe {
            sys::xsk_umem__create(
                &mut raw,
                area.ptr.as_ptr().cast(),
                len as u64,
                &mut *fill0,
                &mut *comp0,
                &ucfg,
            )
        };
        if r != 0 {
            return Err(IoError::Os {
                what: "registering the AF_XDP UMEM (needs root and a kernel with AF_XDP)".into(),
                source: std::io::Error::from_raw_os_error(-r),
            });
        }
        let raw = NonNull::new(raw).ok_or_else(|| IoError::setup("xsk_umem__create gave NULL"))?;
        let free = (0..cfg.frames as u64)
            .rev()
            .map(|i| i * FRAME_SIZE as u64)
            .collect();
        static NEXT_ID: AtomicU32 = AtomicU32::new(1);
        Ok(Xsk {
            sockets: Vec::new(),
            retired: None,
            retired_frames: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            umem: Umem {
                raw,
                rings: Some((fill0, comp0)),
                mode: None,
            },
            area,
            cfg,
            free,
            owner: vec![NO_OWNER; cfg.frames as usize],
            by_port: Vec::new(),
            held: 0,
            stats: XskStats::default(),
        })
    }

    /// Opens a socket on `ifname` queue `queue` (in the calling thread's
    /// network namespace) for dataplane port `port`, stocks its fill ring and
    /// returns the mode it got (logged). libxdp's own XDP program is not
    /// loaded: the caller inserts [`Xsk::fd`] into the steering XSKMAP.
    pub fn add_socket(
        &mut self,
        ifname: &str,
        queue: u32,
        port: PortId,
    ) -> Result<BindMode, IoError> {
        if self.sockets.iter().any(|s| s.port == port) {
            return Err(IoError::setup(format!("port {port}: already has a socket")));
        }
        let idx = ifindex(ifname)?;
        if let Some(r) = self.retired.as_ref() {
            if r.ifindex == idx && r.queue == queue {
                return Err(IoError::setup(format!(
                    "{ifname} queue {queue}: still bound by this UMEM's retired socket; \
                     attach it on another worker"
                )));
            }
        }
        let attempts: &[BindMode] = match (self.umem.mode, self.cfg.zero_copy) {
            // A later socket on a shared UMEM gets the first socket's mode.
            (Some(BindMode::Copy), _) => &[BindMode::Copy],
            (Some(BindMode::ZeroCopy), _) => &[BindMode::ZeroCopy],
            (None, ZeroCopy::Off) => &[BindMode::Copy],
            (None, ZeroCopy::Auto) => &[BindMode::ZeroCopy, BindMode::Copy],
            (None, ZeroCopy::Force) => &[BindMode::ZeroCopy],
        };
        let mut last = None;
        for &mode in attempts {
            match self.open(ifname, queue, mode) {
                Ok(mut s) => {
                    if let Some(e) = last.as_ref().filter(|_| mode == BindMode::Copy) {
                        log::info!(
                            "{ifname} queue {queue}: zero-copy refused ({e}), using copy mode"
                        );
                    }
                    log::info!("{ifname} queue {queue}: AF_XDP socket bound in {mode:?} mode");
                    if mode == BindMode::Copy {
                        let v = self.cfg.ring_size;
                        if set_tx_budget(s.fd, v) {
                            log::info!(
                                "{ifname} queue {queue}: copy-mode tx budget {v} frames per kick"
                            );
                        } else {
                            log::debug!(
                                "{ifname} queue {queue}: kernel keeps its default tx budget"
                            );
                        }
                    }
                    self.umem.mode = Some(mode);
                    s.port = port;
                    s.ifindex = idx;
                    self.sockets.push(s);
                    self.reindex();
                    let i = self.sockets.len() - 1;
                    self.refill(i);
                    return Ok(mode);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| IoError::setup("no bind mode to try")))
    }

    fn open(&mut self, ifname: &str, queue: u32, mode: BindMode) -> Result<Socket, IoError> {
        let cname = CString::new(ifname).map_err(|_| IoError::NoSuchInterface(ifname.into()))?;
        let mut bind_flags = match mode {
            BindMode::Copy => XDP_COPY,
            BindMode::ZeroCopy => XDP_ZEROCOPY,
        };
        if self.cfg.need_wakeup {
            bind_flags |= XDP_USE_NEED_WAKEUP;
        }
        let scfg = sys::xsk_socket_config {
            rx_size: self.cfg.ring_size,
            tx_size: self.cfg.ring_size,
            __bindgen_anon_1: sys::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags,
        };
        let mut rx = cons_ring();
        let mut tx = prod_ring();
        // The first socket uses the UMEM's own rings (see `Umem::rings`).
        let first = self.umem.rings.is_some();
        let (mut fill, mut comp) = self
            .umem
            .rings
            .take()
            .unwrap_or_else(|| (prod_ring(), cons_ring()));
        let mut raw = std::ptr::null_mut();
        // A socket of a process just killed on this queue (a dataplane
        // restarted at once) is released by the kernel a moment later:
        // EBUSY until then, so wait for it (bounded: 3 s).
        let mut r = -libc::EBUSY;
        for attempt in 0..30 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            // SAFETY: the UMEM is registered and outlives every socket (drop
            // order in `Xsk`); the four ring boxes never move and are kept in
            // the returned `Socket` until after xsk_socket__delete; `cname`
            // and `scfg` are only read during the call.
            r = unsafe {
                sys::xsk_socket__create_shared(
                    &mut raw,
                    cname.as_ptr(),
                    queue,
                    self.umem.raw.as_ptr(),
                    &mut *rx,
                    &mut *tx,
                    &mut *fill,
                    &mut *comp,
                    &scfg,
                )
            };
            if r != -libc::EBUSY {
                break;
            }
        }
        if r != 0 {
            if first {
                // Still the UMEM's (libxdp's `fill_save` points at them).
                self.umem.rings = Some((fill, comp));
            }
            return Err(IoError::Os {
                what: format!("{ifname} queue {queue}: AF_XDP socket ({mode:?} mode)"),
                source: std::io::Error::from_raw_os_error(-r),
            });
        }
        let raw =
            NonNull::new(raw).ok_or_else(|| IoError::setup("xsk_socket__create gave NULL"))?;
        // SAFETY: `raw` is a live socket just created.
        let fd = unsafe { sys::xsk_socket__fd(raw.as_ptr()) };
        Ok(Socket {
            raw,
            rx,
            tx,
            fill,
            comp,
            fd,
            mode,
            port: 0,
            ifindex: 0,
            queue,
            name: ifname.to_string(),
            fill_out: 0,
            tx_out: 0,
            // At most a ring's worth per flush (`stage_tx`): never grows.
            staged: Vec::with_capacity(self.cfg.ring_size as usize),
            umem_own: first,
        })
    }

    /// Closes port `port`'s socket and returns its frames to the free list.
    /// The caller clears its XSKMAP entry (and detaches XDP) first.
    ///
    /// The UMEM's own socket (the first one made) cannot be closed while the
    /// UMEM lives: its fd is the UMEM's registration and its fill and
    /// completion rings are the UMEM's. It is retired instead: out of the
    /// poll set and the port table, kept open until the `Xsk` drops; the
    /// frames in its rings stay there (counted as
    /// [`FrameAccount::retired`]) since the kernel owns them; its staged
    /// frames return to the free list. Its interface and queue cannot be
    /// bound again by this UMEM (another worker's can).
    pub fn remove_socket(&mut self, port: PortId) -> Result<(), IoError> {
        let i = self
            .index_of(port)
            .ok_or_else(|| IoError::setup(format!("port {port}: no socket")))?;
        if self.sockets[i].umem_own {
            if self.retired.is_some() {
                return Err(IoError::setup("a UMEM has one socket of its own"));
            }
            let mut s = self.sockets.remove(i);
            self.reindex();
            for (addr, _) in std::mem::take(&mut s.staged) {
                self.held -= 1;
                self.free.push(addr);
            }
            let me = i as u16 + 1;
            let mut kept = 0;
            for o in self.owner.iter_mut() {
                if *o == me {
                    *o = RETIRED;
                    kept += 1;
                } else if *o > me && *o != RETIRED {
                    *o -= 1;
                }
            }
            log::info!(
                "{} queue {}: port {port} removed; the UMEM's own socket stays open, \
                 unused, with {kept} frames",
                s.name,
                s.queue
            );
            self.retired_frames += kept;
            self.retired = Some(s);
            return Ok(());
        }
        let mut s = self.sockets.remove(i);
        self.reindex();
        let staged = std::mem::take(&mut s.staged);
        drop(s); // the kernel lets go of its rings' frames
        for (addr, _) in staged {
            self.held -= 1;
            self.free.push(addr);
        }
        let me = i as u16 + 1;
        for (c, o) in self.owner.iter_mut().enumerate() {
            if *o == me {
                *o = NO_OWNER;
                self.free.push(c as u64 * FRAME_SIZE as u64);
            } else if *o > me && *o != RETIRED {
                *o -= 1; // later sockets moved down one index
            }
        }
        Ok(())
    }

    fn reindex(&mut self) {
        self.by_port.clear();
        for (i, s) in self.sockets.iter().enumerate() {
            let p = s.port as usize;
            if self.by_port.len() <= p {
                self.by_port.resize(p + 1, NO_SOCKET);
            }
            self.by_port[p] = i as u16;
        }
    }

    /// The socket index of port `port`.
    #[inline]
    pub fn index_of(&self, port: PortId) -> Option<usize> {
        match self.by_port.get(port as usize) {
            Some(&i) if i != NO_SOCKET => Some(i as usize),
            _ => None,
        }
    }

    /// Port `port`'s socket fd (for the XSKMAP) with its interface index and queue.
    pub fn fd(&self, port: PortId) -> Option<(RawFd, u32, u32)> {
        self.index_of(port).map(|i| {
            let s = &self.sockets[i];
            (s.fd, s.ifindex, s.queue)
        })
    }

    /// The bind mode of port `port`'s socket.
    pub fn mode(&self, port: PortId) -> Option<BindMode> {
        self.index_of(port).map(|i| self.sockets[i].mode)
    }

    /// Number of sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The port served by socket index `i`.
    pub fn port_of(&self, i: usize) -> PortId {
        self.sockets[i].port
    }

    /// All sockets' fds (for a blocking poll).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.sockets.iter().map(|s| s.fd)
    }

    pub fn stats(&self) -> XskStats {
        self.stats
    }

    pub fn account(&self) -> FrameAccount {
        FrameAccount {
            total: self.cfg.frames,
            free: self.free.len() as u32,
            fill: self.sockets.iter().map(|s| s.fill_out).sum(),
            tx: self.sockets.iter().map(|s| s.tx_out).sum(),
            held: self.held,
            retired: self.retired_frames,
        }
    }

    /// Takes back every completed transmit, on all sockets.
    pub fn reclaim(&mut self) {
        for i in 0..self.sockets.len() {
            let s = &mut self.sockets[i];
            if s.tx_out == 0 {
                continue;
            }
            let mut idx = 0;
            // SAFETY: `comp` is this socket's live completion ring, consumed
            // only here (one thread owns the `Xsk`).
            let n = unsafe { sys::xsk_ring_cons__peek(&mut *s.comp, s.tx_out, &mut idx) };
            for k in 0..n {
                // SAFETY: entries idx..idx+n were just peeked and not released.
                let addr = unsafe { *sys::xsk_ring_cons__comp_addr(&*s.comp, idx + k) };
                let chunk = addr & !(FRAME_SIZE as u64 - 1);
                let c = (chunk / FRAME_SIZE as u64) as usize;
                if self.owner.get(c) == Some(&(i as u16 + 1)) {
                    self.owner[c] = NO_OWNER;
                    self.free.push(chunk);
                    s.tx_out -= 1;
                } else {
                    self.stats.bad_desc += 1;
                }
            }
            // SAFETY: releases exactly the n entries peeked above.
            unsafe { sys::xsk_ring_cons__release(&mut *s.comp, n) };
        }
    }

    /// Tops socket `i`'s fill ring up to `fill_per_socket` frames, and kicks
    /// the kernel if it asked.
    pub fn refill(&mut self, i: usize) {
        let s = &mut self.sockets[i];
        let want = self.cfg.fill_per_socket.saturating_sub(s.fill_out);
        let n = want.min(self.free.len() as u32);
        if want > 0 && n == 0 {
            self.stats.fill_starved += 1;
        }
        if n > 0 {
            let mut idx = 0;
            // SAFETY: `fill` is this socket's live fill ring, produced only
            // here by the one thread owning the `Xsk`.
            let got = unsafe { sys::xsk_ring_prod__reserve(&mut *s.fill, n, &mut idx) };
            for k in 0..got {
                let chunk = self.free.pop().unwrap_or(0);
                self.owner[(chunk / FRAME_SIZE as u64) as usize] = i as u16 + 1;
                // SAFETY: slot idx+k was reserved above and is written once
                // before submit.
                unsafe { *sys::xsk_ring_prod__fill_addr(&mut *s.fill, idx + k) = chunk };
            }
            // SAFETY: submits exactly the `got` slots reserved and written.
            unsafe { sys::xsk_ring_prod__submit(&mut *s.fill, got) };
            s.fill_out += got;
        }
        // SAFETY: reads the flags word of a live ring.
        if unsafe { sys::xsk_ring_prod__needs_wakeup(&*s.fill) } != 0 {
            // SAFETY: a zero-length recvfrom on our own socket fd with null
            // buffers, the documented AF_XDP rx kick.
            unsafe {
                libc::recvfrom(
                    s.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            self.stats.kicks += 1;
        }
    }

    /// Receives up to `max` frames from socket `i`, appending tokens to `out`.
    pub fn rx(&mut self, i: usize, out: &mut Vec<Owned>, max: u32) -> u32 {
        let s = &mut self.sockets[i];
        let mut idx = 0;
        // SAFETY: `rx` is this socket's live rx ring, consumed only here.
        let n = unsafe { sys::xsk_ring_cons__peek(&mut *s.rx, max, &mut idx) };
        let me = i as u16 + 1;
        let mut taken = 0;
        for k in 0..n {
            // SAFETY: entries idx..idx+n were just peeked and not released.
            let d = unsafe { *sys::xsk_ring_cons__rx_desc(&*s.rx, idx + k) };
            let chunk = d.addr & !(FRAME_SIZE as u64 - 1);
            let head = (d.addr - chunk) as u32;
            let c = (chunk / FRAME_SIZE as u64) as usize;
            // Accept only a chunk this socket was given, with the data inside it.
            if self.owner.get(c) == Some(&me) && head as usize + d.len as usize <= FRAME_SIZE {
                self.owner[c] = NO_OWNER;
                s.fill_out -= 1;
                out.push(Owned {
                    xsk: self.id,
                    chunk,
                    head,
                    len: d.len,
                });
                taken += 1;
            } else {
                self.stats.bad_desc += 1;
            }
        }
        // SAFETY: releases exactly the n entries peeked above.
        unsafe { sys::xsk_ring_cons__release(&mut *s.rx, n) };
        self.held += taken;
        self.stats.rx += taken as u64;
        taken
    }

    /// The whole chunk of a held frame (headroom, data and tailroom); empty
    /// for a token of another `Xsk`.
    #[inline]
    pub fn chunk<'a>(&'a self, o: &'a mut Owned) -> &'a mut [u8] {
        if o.xsk != self.id {
            return &mut [];
        }
        // SAFETY: the token is this `Xsk`'s, so `o.chunk` is a chunk-aligned
        // offset inside this area (tokens are made only by `rx`, which
        // checked the owner table, sized to the area, and by `alloc`, from
        // the free list); the token is unique (not Clone, fields private,
        // made once per ownership transfer from a ring or the free list, and
        // the chunk is in no ring and on no list while the token exists), and
        // this borrow holds it exclusively, so no other reference to these
        // bytes exists in userspace and the kernel does not touch chunks it
        // does not own.
        unsafe {
            std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(o.chunk as usize), FRAME_SIZE)
        }
    }

    /// Takes a free chunk as a token (for frames built in userspace), with
    /// its head at [`HEADROOM`] and length 0.
    pub fn alloc(&mut self) -> Option<Owned> {
        let chunk = self.free.pop()?;
        self.held += 1;
        Some(Owned {
            xsk: self.id,
            chunk,
            head: HEADROOM as u32,
            len: 0,
        })
    }

    /// Gives a held frame back to the free list (a token of another `Xsk`
    /// is counted as `bad_desc` and dropped).
    #[inline]
    pub fn free(&mut self, o: Owned) {
        if o.xsk != self.id {
            self.stats.bad_desc += 1;
            return;
        }
        self.held -= 1;
        self.free.push(o.chunk);
    }

    /// Queues a held frame for transmission on socket `i`: `head` and `len`
    /// are its data's offset in the chunk and length (where the pipeline
    /// left them). Sent at the next [`Xsk::flush`].
    #[inline]
    pub fn stage_tx(&mut self, i: usize, o: Owned, head: u32, len: u32) {
        if head as usize + len as usize > FRAME_SIZE || len == 0 || o.xsk != self.id {
            self.free(o);
            return;
        }
        let s = &mut self.sockets[i];
        if s.staged.len() == s.staged.capacity() {
            // More than the tx ring holds: it would not fit at the flush.
            self.stats.tx_ring_full += 1;
            self.free(o);
            return;
        }
        s.staged.push((o.chunk + head as u64, len));
    }

    /// Puts every socket's staged frames on its tx ring (frames that do not
    /// fit are freed and counted) and kicks the kernel once per socket.
    pub fn flush(&mut self) {
        for i in 0..self.sockets.len() {
            let s = &mut self.sockets[i];
            if s.staged.is_empty() {
                continue;
            }
            let want = s.staged.len() as u32;
            let mut idx = 0;
            // SAFETY: `tx` is this socket's live tx ring, produced only here.
            let got = unsafe { sys::xsk_ring_prod__reserve(&mut *s.tx, want, &mut idx) };
            // Reserve is all-or-nothing: on a full ring, try what fits.
            let got = if got == 0 {
                // SAFETY: as above.
                let room = unsafe { sys::xsk_prod_nb_free(&mut *s.tx, want) }.min(want);
                // SAFETY: as above.
                unsafe { sys::xsk_ring_prod__reserve(&mut *s.tx, room, &mut idx) }
            } else {
                got
            };
            let me = i as u16 + 1;
            for (k, &(addr, len)) in s.staged.iter().enumerate() {
                let chunk = addr & !(FRAME_SIZE as u64 - 1);
                if (k as u32) < got {
                    // SAFETY: slot idx+k was reserved above, written once
                    // before submit.
                    let d =
                        unsafe { &mut *sys::xsk_ring_prod__tx_desc(&mut *s.tx, idx + k as u32) };
                    d.addr = addr;
                    d.len = len;
                    d.options = 0;
                    self.owner[(chunk / FRAME_SIZE as u64) as usize] = me;
                } else {
                    self.free.push(chunk);
                    self.stats.tx_ring_full += 1;
                }
            }
            // SAFETY: submits exactly the `got` slots reserved and written.
            unsafe { sys::xsk_ring_prod__submit(&mut *s.tx, got) };
            self.held -= want;
            s.tx_out += got;
            self.stats.tx += got as u64;
            s.staged.clear();
            // Copy mode always needs the kick to transmit; zero-copy only when
            // the driver sleeps (need_wakeup).
            // SAFETY: reads the flags word of a live ring.
            let kick = s.mode == BindMode::Copy
                || !self.cfg.need_wakeup
                || unsafe { sys::xsk_ring_prod__needs_wakeup(&*s.tx) } != 0;
            if got > 0 && kick {
                // SAFETY: a zero-length sendto on our own socket fd with null
                // buffers, the documented AF_XDP tx kick; errors (EAGAIN,
                // EBUSY, ENOBUFS) only mean "try again at the next flush".
                unsafe {
                    libc::sendto(
                        s.fd,
                        std::ptr::null(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null(),
                        0,
                    )
                };
                self.stats.kicks += 1;
            }
        }
    }

    /// The name of socket `i`'s interface.
    pub fn name(&self, i: usize) -> &str {
        &self.sockets[i].name
    }
}

/// Lets one copy-mode kick on socket `fd` transmit up to `frames` frames
/// instead of the kernel's default 32, so a flushed batch leaves with one
/// `sendto`. Best effort: kernels before 6.17 refuse it (returns false).
pub(super) fn set_tx_budget(fd: RawFd, frames: u32) -> bool {
    // SAFETY: setsockopt only reads `size_of::<u32>()` bytes from `&frames`,
    // a live local; `fd` is an AF_XDP socket the caller owns.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&frames as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    r == 0
}
