//! The node's shared-memory file: one file per node (default
//! `/dev/shm/twill/node.shm`, mode 0600 in a 0700 directory), mapped by
//! twill-control, twill-dataplane and twillctl. It owns the byte layout, the
//! checks an opener makes, and every `unsafe` cast over the mapping.
//!
//! ```text
//! 0        header (16 KiB): magic, layout version, geometry words, live word,
//!          slot descriptors, control and dataplane pid + heartbeat,
//!          64 announce lines (workers 0..N, the snapshot reader last)
//! stats    one block per worker: updated_ns, pid, the pipeline Counters,
//!          then per port rx/tx packets/bytes and drops by reason of the
//!          frames received there (64-byte multiple each)
//! names    per port: interface name, kind (uplink / pod) and pod name,
//!          each entry under its own sequence word (`ports`)
//! ct       the conntrack table: header, entries, index (`conntrack::Table`)
//! trace    control words (filter, remaining, head) + a ring of 64-byte records
//! svcdir   the Service directory: stable id -> Service-port name, epoch and
//!          counter baseline (`services`)
//! svcctr   per worker, one 64-byte counter line per Service id (sparse;
//!          the dataplane backs its workers' ranges)
//! slots    N >= 2 table slots, each an encoded `state::snapshot::Snapshot`
//! ```
//!
//! Writers and readers:
//! - **Header geometry/magic**: written once by the creator under an
//!   exclusive `flock`, the magic last (`Release`); openers load the magic
//!   (`Acquire`), then check version and geometry. An opener copies the
//!   geometry into its own memory and uses only that copy, so a header
//!   corrupted later cannot move an offset out of the mapping.
//! - **Slots and the live word**: one writer, control's [`Publisher`]. It
//!   picks a slot that is not live and whose generation no live announcer
//!   uses, sets the slot's descriptor generation to 0, copies the encoded
//!   snapshot in, writes length and checksum, the descriptor generation
//!   (`Release`), then the live word `generation << 8 | slot` (`SeqCst`):
//!   the single store that publishes.
//! - **Announce lines**: each has one writer. The dataplane's [`Reader`]
//!   (line [`layout::READER_ANNOUNCE`]) loads the live word (`SeqCst`),
//!   stores that generation in its line (`SeqCst`), and loads the live word
//!   again: if it moved, it starts over. The publisher stores the live word
//!   (`SeqCst`) before it loads the announce lines (`SeqCst`) to choose a
//!   slot. In the single total order of SeqCst operations either the
//!   publisher's load sees the announcement (and skips that slot), or the
//!   announcement came after it, so the reader's second load sees the newer
//!   live word and it retries: a slot is never rewritten while a reader
//!   copies it. Once the copy is done the reader clears its line
//!   (`Release`, ordering its reads before). The checksum is still verified
//!   on the copy (a damaged file, not a race).
//!   Workers ([`WorkerSlot`]) announce the generation of the tables they use
//!   with a `Release` store and a `Relaxed` heartbeat, once per batch (no
//!   RMW, their own cache line); the publisher also keeps those slots. An
//!   announcement counts while its heartbeat is fresh or the dataplane's pid
//!   is alive; a dead dataplane's lines are ignored.
//! - **Stats blocks**: one writer each (the worker), `Relaxed` stores of
//!   running totals once per batch; readers sum with `Relaxed` loads (a sum
//!   may mix two batches of one worker: counters, not a snapshot).
//! - **Trace**: twillctl arms it (filter words, then `remaining` with
//!   `Release`); workers check `remaining` once per batch (`Relaxed`, the
//!   cheap off case), claim a record by decrementing it (CAS) and taking a
//!   ring index (`fetch_add`), and write the record under a per-record
//!   sequence word (odd while written, `Release` when done).
//! - **Service directory and counters**: see `services` (the directory has
//!   one writer, the dataplane's main thread, under per-entry sequence
//!   words; counter lines one writer each, the worker).
//! - **Conntrack**: see `conntrack::Table`; its region is initialised or
//!   recovered by [`Shm::conntrack`] (the dataplane) and viewed read-only by
//!   [`Shm::conntrack_view`].
//!
//! A file that another process truncates after it was mapped faults on
//! access (SIGBUS); only root can do that to a 0600 root file, and a
//! truncated file is caught at open. Everything else read from the file is
//! checked before use.
#![allow(unsafe_code)]

pub mod layout;
mod ports;
mod publish;
pub mod region;
mod services;
mod stats;
#[cfg(test)]
mod tests;
mod trace;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

pub use layout::{
    Geometry, Layout, LayoutError, LAYOUT_VERSION, MAX_SERVICES, MAX_SLOTS, MAX_WORKERS,
    READER_ANNOUNCE,
};
pub use ports::{PortKind, PortName, PortNames, IFNAME_BYTES, POD_NAME_BYTES};
pub use publish::{
    checksum, AnnounceInfo, PublishError, Published, Publisher, ReadError, Reader, SlotInfo,
    WorkerSlot,
};
pub use services::{
    IdUpdate, ServiceCounters, ServiceCounts, ServiceDirectory, ServiceIds, ServiceReport,
    ServiceStat, NAME_BYTES as SERVICE_NAME_BYTES, NO_COUNTER,
};
pub use stats::{PortCounters, StatsWriter, WorkerStats};
pub use trace::{Trace, TraceFilter, TraceRecord, TraceVerdict};

use crate::conntrack::{CtOpenError, Opened, SharedParts, Table, Timeouts};
use layout::{Header, GEO_WORDS, HEADER_BYTES, MAGIC};
use region::{Plain, Slab, Unit};

// SAFETY: `Header` is `#[repr(C)]` of atomics and arrays/structs of atomics
// only (layout.rs), aligned to 64; no Drop, no pointer.
unsafe impl Plain for Header {}

/// The default path of the node's file.
pub const DEFAULT_PATH: &str = "/dev/shm/twill/node.shm";

/// Why the file cannot be created, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("shared memory {path}: {op} failed: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("shared memory layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("shared memory {path}: file is {len} bytes, its layout needs {need}")]
    Truncated { path: PathBuf, len: u64, need: u64 },
    #[error(
        "shared memory {path}: not initialised yet (no magic; is its creator still starting?)"
    )]
    Uninitialised { path: PathBuf },
    #[error("shared memory {path}: bad magic {found:#018x}: not a twill shared-memory file")]
    BadMagic { path: PathBuf, found: u64 },
    #[error(
        "shared memory {path}: layout version {found} is not the version this build reads \
         ({supported}); restart both processes from one release, or remove the file"
    )]
    Version {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("shared memory {path}: corrupted header: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error(
        "shared memory {path}: the file's layout {file:?} differs from the configured {wanted:?}; \
         remove the file (established flows are lost) or configure the file's layout"
    )]
    GeometryMismatch {
        path: PathBuf,
        file: Box<Layout>,
        wanted: Box<Layout>,
    },
    #[error("shared memory {path}: conntrack: {source}")]
    Conntrack { path: PathBuf, source: CtOpenError },
    #[error(
        "shared memory {path}: another dataplane (pid {pid}) is running on this file; \
         its conntrack table cannot be recovered under it"
    )]
    DataplaneRunning { path: PathBuf, pid: u32 },
    #[error("worker {index} out of range: the file has room for {workers}")]
    Worker { index: usize, workers: u32 },
}

/// Which process a [`ProcInfo`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Control,
    Dataplane,
}

/// A process's registration in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ProcInfo {
    /// 0: never registered.
    pub pid: u32,
    pub started_ns: u64,
    pub heartbeat_ns: u64,
}

impl ProcInfo {
    /// Registered, its process alive (in this pid namespace) and its
    /// heartbeat younger than `stale_ns` at `now_ns`.
    pub fn is_live(&self, now_ns: u64, stale_ns: u64) -> bool {
        self.pid != 0 && now_ns.saturating_sub(self.heartbeat_ns) < stale_ns && pid_alive(self.pid)
    }
}

/// A handle on the mapped file; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Shm {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    map: Arc<MmapRaw>,
    geo: Geometry,
    header: Unit<Header>,
    file: File,
}

impl std::fmt::Debug for Shm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shm")
            .field("path", &self.inner.path)
            .field("geometry", &self.inner.geo)
            .finish()
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of heartbeats and of conntrack
/// timestamps (the same in every process of one boot).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Whether process `pid` exists (in this pid namespace).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Backs `len` bytes at `off` of `file` with storage (`posix_fallocate`).
fn allocate(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    if l == 0 {
        return Ok(());
    }
    // SAFETY: posix_fallocate on a descriptor we own; no memory involved.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), o, l) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Holds an exclusive `flock` on a file until dropped.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<Flock<'a>, ShmError> {
        loop {
            // SAFETY: flock on an open descriptor we own; no memory involved.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Flock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err("flock", path)(e));
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot fail in a way we could act on.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Shm {
    /// A dataplane registration whose heartbeat is older than this is a
    /// dead dataplane's (see [`Shm::conntrack`]).
    pub const DATAPLANE_STALE_NS: u64 = 2_000_000_000;

    /// Creates the file for `layout` (parent directory 0700 if missing,
    /// file 0600, sparse), or opens the existing one and checks that it is
    /// a twill file of this layout version and of the same geometry. Used by
    /// control and the dataplane, whichever starts first.
    pub fn create_or_open(path: &Path, layout: &Layout) -> Result<Shm, ShmError> {
        let geo = layout.geometry()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err("create directory", dir))?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err("open", path))?;
        let lock = Flock::exclusive(&file, path)?;
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        let fresh = len == 0 || Shm::magic_is_zero(&file, path, len)?;
        if fresh {
            file.set_len(0).map_err(io_err("truncate", path))?;
            file.set_len(geo.total)
                .map_err(io_err("set length", path))?;
            // Back everything but the Service counters and the slots now: a
            // tmpfs that is too small (a container's 64 MiB /dev/shm) is an
            // error here rather than a SIGBUS when a worker first touches
            // its conntrack page. Slots stay sparse and are backed when
            // published into; the dataplane backs its own workers' Service
            // counters (`Shm::back_service_counters`), not all 63 possible.
            allocate(&file, 0, geo.svcctr_off).map_err(io_err("allocate", path))?;
            let map = Shm::map(&file, path)?;
            let header: Unit<Header> = Unit::in_map(&map, 0);
            header.version.store(LAYOUT_VERSION, Relaxed);
            for (w, v) in header.geometry.iter().zip(geo.words()) {
                w.store(v, Relaxed);
            }
            header.magic.store(MAGIC, Release);
        }
        drop(lock);
        let shm = Shm::validate(file, path)?;
        if shm.inner.geo != geo {
            return Err(ShmError::GeometryMismatch {
                path: path.to_owned(),
                file: Box::new(shm.inner.geo.layout),
                wanted: Box::new(*layout),
            });
        }
        Ok(shm)
    }

    /// Opens an existing file of any geometry (twillctl; works while control
    /// is down), checking magic, version and geometry.
    pub fn open(path: &Path) -> Result<Shm, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        Shm::validate(file, path)
    }

    /// Whether a non-empty file's first word is 0 (a creator died before
    /// writing the magic: nothing was ever published in it).
    fn magic_is_zero(file: &File, path: &Path, len: u64) -> Result<bool, ShmError> {
        if len < 8 {
            return Ok(true);
        }
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut b, 0).map_err(io_err("read", path))?;
        Ok(u64::from_le_bytes(b) == 0)
    }

    fn map(file: &File, path: &Path) -> Result<Arc<MmapRaw>, ShmError> {
        MmapOptions::new()
            .map_raw(file)
            .map(Arc::new)
            .map_err(io_err("mmap", path))
    }

    fn validate(file: File, path: &Path) -> Result<Shm, ShmError> {
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        let trunc = |need: u64| ShmError::Truncated {
            path: path.to_owned(),
            len,
            need,
        };
        if len < HEADER_BYTES as u64 {
            return Err(trunc(HEADER_BYTES as u64));
        }
        let map = Shm::map(&file, path)?;
        if (map.len() as u64) < HEADER_BYTES as u64 {
            return Err(trunc(HEADER_BYTES as u64));
        }
        let header: Unit<Header> = Unit::in_map(&map, 0);
        let magic = header.magic.load(Acquire);
        if magic == 0 {
            return Err(ShmError::Uninitialised {
                path: path.to_owned(),
            });
        }
        if magic != MAGIC {
            return Err(ShmError::BadMagic {
                path: path.to_owned(),
                found: magic,
            });
        }
        let version = header.version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(ShmError::Version {
                path: path.to_owned(),
                found: version,
                supported: LAYOUT_VERSION,
            });
        }
        let mut words = [0u64; GEO_WORDS];
        for (d, w) in words.iter_mut().zip(&header.geometry) {
            *d = w.load(Relaxed);
        }
        let corrupt = |what: String| ShmError::Corrupt {
            path: path.to_owned(),
            what,
        };
        let geo = Geometry::layout_of(&words)
            .geometry()
            .map_err(|e| corrupt(format!("stored layout: {e}")))?;
        if geo.words() != words {
            return Err(corrupt(format!(
                "stored geometry {words:?} is not the one its layout implies {:?}",
                geo.words()
            )));
        }
        if len < geo.total || (map.len() as u64) < geo.total {
            return Err(trunc(geo.total));
        }
        Ok(Shm {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                map,
                geo,
                header,
                file,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn geometry(&self) -> &Geometry {
        &self.inner.geo
    }

    pub fn layout(&self) -> &Layout {
        &self.inner.geo.layout
    }

    #[inline]
    fn header(&self) -> &Header {
        &self.inner.header
    }

    /// The live generation (0: nothing published yet).
    pub fn live_generation(&self) -> u64 {
        layout::live_parts(self.header().live.0.load(Acquire)).0
    }

    /// Records this process as `role` (pid, start time, first heartbeat).
    pub fn register(&self, role: Role, now_ns: u64) {
        let p = self.proc_slot(role);
        p.pid.store(u64::from(std::process::id()), Relaxed);
        p.started_ns.store(now_ns, Relaxed);
        p.heartbeat_ns.store(now_ns, Release);
    }

    /// Updates `role`'s heartbeat.
    pub fn heartbeat(&self, role: Role, now_ns: u64) {
        self.proc_slot(role).heartbeat_ns.store(now_ns, Release);
    }

    /// What the header says about `role`.
    pub fn process(&self, role: Role) -> ProcInfo {
        let p = self.proc_slot(role);
        ProcInfo {
            pid: u32::try_from(p.pid.load(Relaxed)).unwrap_or(0),
            started_ns: p.started_ns.load(Relaxed),
            heartbeat_ns: p.heartbeat_ns.load(Acquire),
        }
    }

    fn proc_slot(&self, role: Role) -> &layout::ProcSlot {
        match role {
            Role::Control => &self.header().control,
            Role::Dataplane => &self.header().dataplane,
        }
    }

    /// The conntrack table in the file, for the dataplane (its only writing
    /// process): initialised the first time, recovered on later opens so
    /// established flows survive a restart (see `conntrack::Table::open_shared`;
    /// no other process may write the table meanwhile).
    ///
    /// Refused while another live process registered as the dataplane with a
    /// heartbeat fresher than [`Shm::DATAPLANE_STALE_NS`] (so the dataplane
    /// registers with [`Shm::register`] and heartbeats at least that often).
    pub fn conntrack(&self, timeouts: Timeouts) -> Result<(Arc<Table>, Opened), ShmError> {
        let dp = self.process(Role::Dataplane);
        if dp.pid != std::process::id() && dp.is_live(monotonic_ns(), Shm::DATAPLANE_STALE_NS) {
            return Err(ShmError::DataplaneRunning {
                path: self.inner.path.clone(),
                pid: dp.pid,
            });
        }
        Table::open_shared(self.conntrack_parts(), timeouts)
            .map(|(t, o)| (Arc::new(t), o))
            .map_err(|source| ShmError::Conntrack {
                path: self.inner.path.clone(),
                source,
            })
    }

    /// The conntrack table for a reader (twillctl): checked, never written
    /// by this call; an error if no dataplane initialised it yet.
    pub fn conntrack_view(&self) -> Result<Table, ShmError> {
        Table::view_shared(self.conntrack_parts()).map_err(|source| ShmError::Conntrack {
            path: self.inner.path.clone(),
            source,
        })
    }

    fn conntrack_parts(&self) -> SharedParts {
        let g = &self.inner.geo;
        let ct = Table::shared_layout(g.layout.conntrack_capacity as usize);
        let base = g.conntrack_off as usize;
        let map = &self.inner.map;
        SharedParts {
            header: Unit::in_map(map, base),
            entries: Slab::in_map(map, base + ct.entries_off, ct.capacity),
            index: Slab::in_map(map, base + ct.index_off, ct.buckets),
        }
    }

    /// `len` words at byte `off` (a region the geometry placed).
    fn words(&self, off: u64, len: usize) -> Slab<std::sync::atomic::AtomicU64> {
        Slab::in_map(&self.inner.map, off as usize, len)
    }

    fn check_worker(&self, index: usize) -> Result<(), ShmError> {
        let workers = self.inner.geo.layout.workers;
        if index >= workers as usize {
            return Err(ShmError::Worker { index, workers });
        }
        Ok(())
    }
}
