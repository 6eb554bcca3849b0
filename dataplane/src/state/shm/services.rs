//! Per-Service counters: stable Service ids, the directory that names them,
//! and the per-worker counter lines the pipeline adds to.
//!
//! A Service's index in the tables ([`crate::lb::SvcId`]) changes with every
//! generation, so counters are kept under a **stable id** instead, assigned
//! by the dataplane's main thread by Service-port name (`ns/svc:port`, the
//! `ServiceSpec` name) each time it builds tables ([`ServiceIds`]): an id
//! keeps its Service while the Service exists; a freed id is reused last
//! (never-used ids first, then the one freed longest ago), so a flow of a
//! deleted Service that is still in conntrack rarely counts toward a new one.
//! The conntrack entry's `user` word carries the id ([`NO_COUNTER`]: a
//! Service beyond the capacity; `u32::MAX`: masquerade), so an established
//! flow's packets find their counters without a table lookup.
//!
//! Regions (offsets in [`super::Geometry`]):
//! - **Directory** (`svcdir`): a 64-byte header `[capacity, handed,
//!   full_total, unassigned, workers, freed_seq, 0, 0]` (`handed`: ids ever
//!   handed out, all below it have an entry; `full_total`: Service ports
//!   that found no free id, each counted once; `unassigned`: how many have
//!   none now; `workers`: how many workers' counter lines readers sum), then
//!   one 256-byte entry per id: `[seq, epoch, state, name_len, freed_order,
//!   baseline × 6, 0, name (160 bytes)]`. One writer, the dataplane's main
//!   thread ([`ServiceDirectory`]); an entry is written under its `seq`
//!   (odd while written, `Release` when done) and readers retry a torn read.
//!   `epoch` is bumped when an id is reused, and `baseline` holds the id's
//!   counter sums at reuse: readers subtract it, so a new Service never
//!   shows an old one's packets. A restarted dataplane reads the directory
//!   back, so ids (and counters) survive a restart.
//! - **Counter lines** (`svcctr`): per worker, one 64-byte line per id:
//!   `[packets_to, bytes_to, packets_reply, bytes_reply, connections,
//!   rejects, 0, 0]`. One writer each (the worker, `Relaxed` load + store,
//!   no RMW, as the stats blocks), never zeroed (so counts survive a
//!   restart); readers sum over workers with `Relaxed` loads. The file keeps
//!   this range sparse; the dataplane backs its own workers' ranges at start
//!   ([`super::Shm::back_service_counters`]).
//!
//! Cost on the established-flow path (callgrind, `bench-pipeline --scenario
//! service-encap`, (Ir(300k) - Ir(100k)) / 200k): 495.2 -> 508.3 instructions
//! per packet. The counting itself ([`ServiceCounters::packet`]) compiles to
//! ten: the id's zero-extension, the bounds check (compare, branch), the
//! line's address (shift, add of the base), the direction's offset (zero
//! extension, shift), the packet add, the length's reload and the byte add;
//! the rest is register allocation around it. Two halves per id indexed
//! `2 * id + reply` (one shift less) measured one instruction more.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use super::region::{Plain, Slab};
use super::{Shm, ShmError};

/// Bytes of the directory header.
pub const DIR_HEADER_BYTES: usize = 64;
/// Bytes of one directory entry.
pub const ENTRY_BYTES: usize = 256;
/// Bytes of one id's counter line.
pub const LINE_BYTES: usize = 64;
/// Most bytes of a name the directory keeps (Kubernetes' own limits make
/// `ns/svc:port` at most 143).
pub const NAME_BYTES: usize = 160;
/// The `user` word of a Service flow whose Service has no counter (more
/// Service ports than the file has room for).
pub const NO_COUNTER: u32 = u32::MAX - 1;

const ENTRY_WORDS: usize = ENTRY_BYTES / 8;
const NAME_AT: usize = 12;
const BASE_AT: usize = 5;
const H_CAPACITY: usize = 0;
const H_HANDED: usize = 1;
const H_FULL: usize = 2;
const H_UNASSIGNED: usize = 3;
const H_WORKERS: usize = 4;
const H_FREED_SEQ: usize = 5;
const LIVE: u64 = 1;
const FREED: u64 = 2;
/// Torn reads retried before an entry is skipped for this read.
const READ_TRIES: usize = 64;

const _: () = assert!(NAME_AT * 8 + NAME_BYTES == ENTRY_BYTES);
const _: () = assert!(BASE_AT + 6 <= NAME_AT);

/// One id's counters in one worker: a cache line of eight words.
#[repr(C, align(64))]
pub struct Line(pub [AtomicU64; 8]);

const _: () = assert!(std::mem::size_of::<Line>() == LINE_BYTES);

// SAFETY: `Line` is `#[repr(C, align(64))]` of eight AtomicU64: every bit
// pattern is valid, no Drop, no pointer; 64 divides 4096.
unsafe impl Plain for Line {}

/// One Service's counts (one worker's, or summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceCounts {
    /// Packets and bytes toward the Service (client → backend).
    pub packets_to: u64,
    pub bytes_to: u64,
    /// Packets and bytes of replies (backend → client).
    pub packets_reply: u64,
    pub bytes_reply: u64,
    /// New connections (conntrack entries created).
    pub connections: u64,
    /// First packets refused for want of a usable endpoint (ICMP
    /// unreachable or dropped).
    pub rejects: u64,
}

impl ServiceCounts {
    fn of(w: [u64; 6]) -> ServiceCounts {
        ServiceCounts {
            packets_to: w[0],
            bytes_to: w[1],
            packets_reply: w[2],
            bytes_reply: w[3],
            connections: w[4],
            rejects: w[5],
        }
    }

    fn words(&self) -> [u64; 6] {
        [
            self.packets_to,
            self.bytes_to,
            self.packets_reply,
            self.bytes_reply,
            self.connections,
            self.rejects,
        ]
    }

    /// `self - base`, each count floored at 0.
    pub fn since(&self, base: &ServiceCounts) -> ServiceCounts {
        let (a, b) = (self.words(), base.words());
        ServiceCounts::of(std::array::from_fn(|i| a[i].saturating_sub(b[i])))
    }
}

impl std::ops::AddAssign for ServiceCounts {
    fn add_assign(&mut self, o: ServiceCounts) {
        let (a, b) = (self.words(), o.words());
        *self = ServiceCounts::of(std::array::from_fn(|i| a[i].wrapping_add(b[i])));
    }
}

/// A worker's counter lines, for its pipeline: in the file, or owned (the
/// bench), or none (an empty slice: nothing is counted).
pub struct ServiceCounters {
    lines: Slab<Line>,
}

impl Default for ServiceCounters {
    fn default() -> ServiceCounters {
        ServiceCounters::none()
    }
}

impl std::fmt::Debug for ServiceCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCounters")
            .field("ids", &self.lines.len())
            .field("shared", &self.lines.is_shared())
            .finish()
    }
}

impl ServiceCounters {
    /// No lines: every count is ignored.
    pub fn none() -> ServiceCounters {
        ServiceCounters {
            lines: Slab::zeroed(0),
        }
    }

    /// `ids` zeroed lines of this process (tests, the bench).
    pub fn owned(ids: usize) -> ServiceCounters {
        ServiceCounters {
            lines: Slab::zeroed(ids),
        }
    }

    /// Ids with a line.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// One packet of `bytes` of a flow of id `id` (the conntrack entry's
    /// `user` word): toward the Service, or a reply. Ids without a line
    /// (masquerade, [`NO_COUNTER`], no counters at all) count nothing. The
    /// established-flow path calls this per packet: one bounds check and two
    /// adds to one cache line this worker alone writes.
    #[inline(always)]
    pub fn packet(&self, id: u32, reply: bool, bytes: u64) {
        if let Some(l) = self.lines.get(id as usize) {
            let w = &l.0[(reply as usize) * 2..];
            w[0].store(w[0].load(Relaxed).wrapping_add(1), Relaxed);
            w[1].store(w[1].load(Relaxed).wrapping_add(bytes), Relaxed);
        }
    }

    /// A new connection whose first packet (toward the Service) has `bytes`.
    #[inline]
    pub fn connection(&self, id: u32, bytes: u64) {
        self.packet(id, false, bytes);
        if let Some(l) = self.lines.get(id as usize) {
            let w = &l.0[4];
            w.store(w.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }

    /// A first packet refused: no usable endpoint.
    #[inline]
    pub fn reject(&self, id: u32) {
        if let Some(l) = self.lines.get(id as usize) {
            let w = &l.0[5];
            w.store(w.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }

    /// Id `id`'s counts in these lines (zero past them).
    pub fn get(&self, id: u32) -> ServiceCounts {
        match self.lines.get(id as usize) {
            Some(l) => ServiceCounts::of(std::array::from_fn(|i| l.0[i].load(Relaxed))),
            None => ServiceCounts::default(),
        }
    }
}

/// What [`ServiceIds::update`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdUpdate {
    /// The id of each name passed, in order ([`NO_COUNTER`]: none left).
    pub ids: Vec<u32>,
    /// Ids handed to a name that had none: `(id, name, reused)`; `reused`
    /// when the id served another Service before.
    pub assigned: Vec<(u32, String, bool)>,
    /// Ids whose Service is gone.
    pub freed: Vec<u32>,
    /// Names that found no id and had none before (counted once each).
    pub newly_full: u64,
}

/// Name → stable id, in the dataplane's memory (see the module doc). Plain
/// synchronous code, tested without a file; [`ServiceDirectory`] writes its
/// changes to the file.
#[derive(Clone, Debug, Default)]
pub struct ServiceIds {
    capacity: u32,
    by_name: HashMap<String, u32>,
    /// Ids never handed out start here.
    handed: u32,
    /// Freed ids, the longest-freed first.
    free: VecDeque<u32>,
    /// Names that currently have no id (full).
    without: BTreeSet<String>,
}

impl ServiceIds {
    /// No ids handed out yet; room for `capacity`.
    pub fn new(capacity: u32) -> ServiceIds {
        ServiceIds {
            capacity,
            ..ServiceIds::default()
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Ids ever handed out (all below have an entry).
    pub fn handed(&self) -> u32 {
        self.handed
    }

    /// The id of `name`, if it has one.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Names that currently have no id.
    pub fn unassigned(&self) -> usize {
        self.without.len()
    }

    /// Makes `names` the Services that exist: ids of names gone are freed,
    /// names new get an id (a never-used one first, else the one freed
    /// longest ago), names kept keep theirs. A name passed twice gets one id.
    pub fn update<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> IdUpdate {
        let names: Vec<&str> = names.into_iter().collect();
        let want: BTreeSet<&str> = names.iter().copied().collect();
        let mut up = IdUpdate::default();
        let mut gone: Vec<(String, u32)> = self
            .by_name
            .iter()
            .filter(|(n, _)| !want.contains(n.as_str()))
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        // Freed in id order: deterministic reuse order.
        gone.sort_by_key(|g| g.1);
        for (n, id) in gone {
            self.by_name.remove(&n);
            self.free.push_back(id);
            up.freed.push(id);
        }
        self.without.retain(|n| want.contains(n.as_str()));
        for n in &names {
            let id = match self.by_name.get(*n) {
                Some(id) => *id,
                None => match self.take() {
                    Some((id, reused)) => {
                        self.by_name.insert((*n).to_string(), id);
                        if self.without.remove(*n) {
                            // Had none, has one now: no longer full.
                        }
                        up.assigned.push((id, (*n).to_string(), reused));
                        id
                    }
                    None => {
                        if self.without.insert((*n).to_string()) {
                            up.newly_full += 1;
                        }
                        NO_COUNTER
                    }
                },
            };
            up.ids.push(id);
        }
        up
    }

    fn take(&mut self) -> Option<(u32, bool)> {
        if self.handed < self.capacity {
            self.handed += 1;
            return Some((self.handed - 1, false));
        }
        self.free.pop_front().map(|id| (id, true))
    }
}

/// One Service as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ServiceStat {
    pub id: u32,
    /// Bumped each time the id was reused for another Service.
    pub epoch: u64,
    pub name: String,
    /// Summed over workers, less the baseline at the id's last reuse.
    #[serde(flatten)]
    pub counts: ServiceCounts,
}

/// The directory and counters as read (twillctl, control's metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceReport {
    /// Live Services with an id, by id.
    pub services: Vec<ServiceStat>,
    /// Service ports that found no free id, each counted once.
    pub full_total: u64,
    /// Service ports without an id now.
    pub unassigned: u64,
    /// Ids the file has room for.
    pub capacity: u32,
}

/// One entry as decoded.
struct Entry {
    epoch: u64,
    state: u64,
    name: String,
    freed_order: u64,
    base: ServiceCounts,
}

/// The directory region and the counter lines, as words.
struct Regions {
    dir: Slab<AtomicU64>,
    capacity: u32,
    /// Every worker's lines (`layout.workers` of them).
    lines: Vec<Slab<Line>>,
}

impl Regions {
    fn of(shm: &Shm) -> Regions {
        let g = shm.geometry();
        let dir = shm.words(g.svcdir_off, (g.svcdir_bytes / 8) as usize);
        let lines = (0..g.layout.workers as usize)
            .map(|w| shm.service_lines(w))
            .collect();
        Regions {
            dir,
            capacity: g.layout.services,
            lines,
        }
    }

    fn head(&self, i: usize) -> &AtomicU64 {
        &self.dir[i]
    }

    fn entry(&self, id: u32) -> Option<&[AtomicU64]> {
        if id >= self.capacity {
            return None;
        }
        let at = DIR_HEADER_BYTES / 8 + id as usize * ENTRY_WORDS;
        self.dir.get(at..at + ENTRY_WORDS)
    }

    /// How many workers' lines readers sum (bounded by the file's).
    fn workers(&self) -> usize {
        (self.head(H_WORKERS).load(Acquire) as usize).min(self.lines.len())
    }

    /// Ids handed out, bounded by the capacity.
    fn handed(&self) -> u32 {
        u32::try_from(self.head(H_HANDED).load(Acquire))
            .unwrap_or(u32::MAX)
            .min(self.capacity)
    }

    fn sum(&self, id: u32) -> ServiceCounts {
        let mut s = ServiceCounts::default();
        for l in &self.lines[..self.workers()] {
            if let Some(l) = l.get(id as usize) {
                s += ServiceCounts::of(std::array::from_fn(|i| l.0[i].load(Relaxed)));
            }
        }
        s
    }

    /// Reads entry `id` under its sequence word; `None` if it stayed torn.
    fn read(&self, id: u32) -> Option<Entry> {
        let e = self.entry(id)?;
        for _ in 0..READ_TRIES {
            let s1 = e[0].load(Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let w: [u64; ENTRY_WORDS] = std::array::from_fn(|i| e[i].load(Relaxed));
            fence(Acquire);
            if e[0].load(Relaxed) != s1 {
                continue;
            }
            let len = (w[3] as usize).min(NAME_BYTES);
            let bytes: Vec<u8> = w[NAME_AT..]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .take(len)
                .collect();
            return Some(Entry {
                epoch: w[1],
                state: w[2],
                name: String::from_utf8_lossy(&bytes).into_owned(),
                freed_order: w[4],
                base: ServiceCounts::of(std::array::from_fn(|i| w[BASE_AT + i])),
            });
        }
        None
    }

    /// Writes entry `id` (the only writer: the dataplane's main thread).
    fn write(&self, id: u32, f: impl FnOnce(&[AtomicU64])) {
        let Some(e) = self.entry(id) else { return };
        let s = e[0].load(Relaxed);
        let odd = s | 1;
        e[0].store(odd, Relaxed);
        fence(Release);
        f(e);
        e[0].store(odd.wrapping_add(1), Release);
    }
}

/// The dataplane's side: assigns ids ([`ServiceIds`]) and writes the
/// directory. Built by [`Shm::service_directory`] from what the file holds,
/// or [`ServiceDirectory::in_memory`] without a file.
pub struct ServiceDirectory {
    ids: ServiceIds,
    regions: Option<Regions>,
}

impl ServiceDirectory {
    /// Ids in this process only (no file: nothing is counted, but flows
    /// still carry stable ids).
    pub fn in_memory(capacity: u32) -> ServiceDirectory {
        ServiceDirectory {
            ids: ServiceIds::new(capacity),
            regions: None,
        }
    }

    pub fn ids(&self) -> &ServiceIds {
        &self.ids
    }

    /// Makes `names` the Services that exist (see [`ServiceIds::update`])
    /// and writes the changes to the file before returning, so a worker
    /// given tables with these ids finds them named. Returns the id of each
    /// name, in order.
    pub fn update<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        let up = self.ids.update(names);
        if up.newly_full > 0 {
            log::warn!(
                "{} Service port(s) get no counters: the shared-memory file has room for {} \
                 (raise [shm] services)",
                up.newly_full,
                self.ids.capacity()
            );
        }
        let Some(r) = &self.regions else {
            return up.ids;
        };
        for id in &up.freed {
            let order = r.head(H_FREED_SEQ).load(Relaxed) + 1;
            r.head(H_FREED_SEQ).store(order, Relaxed);
            r.write(*id, |e| {
                e[2].store(FREED, Relaxed);
                e[4].store(order, Relaxed);
            });
        }
        for (id, name, reused) in &up.assigned {
            let base = if *reused {
                r.sum(*id)
            } else {
                ServiceCounts::default()
            };
            let old_epoch = r.entry(*id).map_or(0, |e| e[1].load(Relaxed));
            let epoch = if *reused { old_epoch + 1 } else { old_epoch };
            let name = truncate(name);
            r.write(*id, |e| {
                e[1].store(epoch, Relaxed);
                e[2].store(LIVE, Relaxed);
                e[3].store(name.len() as u64, Relaxed);
                e[4].store(0, Relaxed);
                for (d, v) in e[BASE_AT..].iter().zip(base.words()) {
                    d.store(v, Relaxed);
                }
                let mut words = [0u64; NAME_BYTES / 8];
                for (i, b) in name.bytes().enumerate() {
                    words[i / 8] |= u64::from(b) << (8 * (i % 8));
                }
                for (d, v) in e[NAME_AT..].iter().zip(words) {
                    d.store(v, Relaxed);
                }
            });
        }
        let full = r.head(H_FULL).load(Relaxed);
        r.head(H_FULL).store(full + up.newly_full, Relaxed);
        r.head(H_UNASSIGNED)
            .store(self.ids.unassigned() as u64, Relaxed);
        r.head(H_HANDED)
            .store(u64::from(self.ids.handed()), Release);
        up.ids
    }
}

/// `name` cut to [`NAME_BYTES`] at a character boundary.
fn truncate(name: &str) -> &str {
    if name.len() <= NAME_BYTES {
        return name;
    }
    let mut end = NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl Shm {
    /// Worker `worker`'s counter lines in the file (all ids).
    fn service_lines(&self, worker: usize) -> Slab<Line> {
        let g = self.geometry();
        let off = g.svcctr_off + g.svcctr_stride * worker as u64;
        Slab::in_map(&self.inner.map, off as usize, g.layout.services as usize)
    }

    /// Worker `worker`'s counters, for its pipeline (the dataplane; not
    /// zeroed: counts survive a restart).
    pub fn service_counters(&self, worker: usize) -> Result<ServiceCounters, ShmError> {
        self.check_worker(worker)?;
        Ok(ServiceCounters {
            lines: self.service_lines(worker),
        })
    }

    /// Backs the counter lines of workers `0..workers` with storage (a tmpfs
    /// too small is an error now, not a SIGBUS in a worker) and tells
    /// readers to sum that many (never fewer than a previous run's: their
    /// counts stay in the file). The dataplane, at start.
    pub fn back_service_counters(&self, workers: usize) -> Result<(), ShmError> {
        if workers > 0 {
            self.check_worker(workers - 1)?;
        }
        let g = self.geometry();
        super::allocate(
            &self.inner.file,
            g.svcctr_off,
            g.svcctr_stride * workers as u64,
        )
        .map_err(|source| ShmError::Io {
            op: "allocate service counters",
            path: self.path().to_owned(),
            source,
        })?;
        let r = Regions::of(self);
        r.head(H_CAPACITY)
            .store(u64::from(g.layout.services), Relaxed);
        let had = r.head(H_WORKERS).load(Relaxed);
        r.head(H_WORKERS).store(had.max(workers as u64), Release);
        Ok(())
    }

    /// The dataplane's directory writer, with the ids the file holds (a
    /// restarted dataplane keeps them). The dataplane alone calls this.
    pub fn service_directory(&self) -> ServiceDirectory {
        let r = Regions::of(self);
        let handed = r.handed();
        let mut ids = ServiceIds::new(r.capacity);
        ids.handed = handed;
        let mut freed = Vec::new();
        for id in 0..handed {
            match r.read(id) {
                Some(e) if e.state == LIVE => {
                    ids.by_name.insert(e.name, id);
                }
                Some(e) if e.state == FREED => freed.push((e.freed_order, id)),
                // Never written (a crash between handing out and writing)
                // or unreadable: free, reused first.
                _ => freed.push((0, id)),
            }
        }
        freed.sort_unstable();
        ids.free = freed.into_iter().map(|(_, id)| id).collect();
        ServiceDirectory {
            ids,
            regions: Some(r),
        }
    }

    /// Every live Service's counters, summed over workers.
    pub fn service_report(&self) -> ServiceReport {
        let r = Regions::of(self);
        let services = (0..r.handed())
            .filter_map(|id| {
                let e = r.read(id)?;
                (e.state == LIVE).then(|| ServiceStat {
                    id,
                    epoch: e.epoch,
                    name: e.name,
                    counts: r.sum(id).since(&e.base),
                })
            })
            .collect();
        ServiceReport {
            services,
            full_total: r.head(H_FULL).load(Relaxed),
            unassigned: r.head(H_UNASSIGNED).load(Relaxed),
            capacity: r.capacity,
        }
    }
}
