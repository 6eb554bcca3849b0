//! The file's layout: the header page's structs (atomics only, so two
//! processes may touch them at once) and [`Layout`] → [`Geometry`], the byte
//! offset of every region. The geometry is stored in the header as words; an
//! opener recomputes it from the stored parameters and refuses a file whose
//! stored words differ, so every offset used later is one this code computed.

use std::sync::atomic::AtomicU64;

use crate::conntrack::Table;
use crate::pipeline::{Counters, DropReason};

/// "TWILLSHM", little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TWILLSHM");
/// The layout version this code reads and writes. Bump it on any change of
/// the header, a region's format, the stats block or the conntrack entry.
pub const LAYOUT_VERSION: u64 = 3;
/// Bytes reserved for the header at the start of the file.
pub const HEADER_BYTES: usize = 16384;
/// Most table slots a file may have.
pub const MAX_SLOTS: usize = 16;
/// Most announcers: workers `0..workers`, and the [`super::Reader`] at
/// [`READER_ANNOUNCE`].
pub const MAX_ANNOUNCERS: usize = 64;
/// Most workers a file may have room for.
pub const MAX_WORKERS: u32 = MAX_ANNOUNCERS as u32 - 1;
/// The announce slot of the dataplane's snapshot reader.
pub const READER_ANNOUNCE: usize = MAX_ANNOUNCERS - 1;
/// Most ports a stats block has counters for.
pub const MAX_PORTS: u32 = 4096;
/// Most trace records.
pub const MAX_TRACE_RECORDS: u32 = 1 << 20;
/// Most Service ports with counters (see `services`).
pub const MAX_SERVICES: u32 = 1 << 20;
/// Largest slot (1 GiB): a bound on what an opener believes.
pub const MAX_SLOT_BYTES: u64 = 1 << 30;
/// Words of a stats block before the pipeline counters: `updated_ns`, `pid`.
pub const STATS_FIXED_WORDS: usize = 2;
/// Words of the pipeline's [`Counters`] block.
pub const COUNTER_WORDS: usize = std::mem::size_of::<Counters>() / 8;
/// Words per port in a stats block: rx packets, rx bytes, tx packets, tx
/// bytes, then the frames received on the port and dropped, per
/// [`DropReason`] (in `DropReason::ALL` order).
pub const PORT_WORDS: usize = 4 + DropReason::COUNT;
/// Bytes of one trace record.
pub const TRACE_RECORD_BYTES: usize = 64;
/// Bytes of the trace control block before the records.
pub const TRACE_CTL_BYTES: usize = 128;

const _: () = assert!(std::mem::size_of::<Counters>().is_multiple_of(8));
const _: () = assert!(std::mem::align_of::<Counters>() == 8);
const PAGE: u64 = 4096;

/// What a file is sized for; the parameters of [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Workers (stats blocks and announce slots), 1..=[`MAX_WORKERS`].
    pub workers: u32,
    /// Ports with per-worker packet/byte counters, 0..=[`MAX_PORTS`].
    pub ports: u32,
    /// Conntrack flows (at least 1).
    pub conntrack_capacity: u64,
    /// Bytes of one table slot (the largest encoded snapshot), rounded up
    /// to a page; the file is sparse, so unused slot bytes cost nothing on
    /// tmpfs.
    pub slot_bytes: u64,
    /// Table slots, 2..=[`MAX_SLOTS`]: the live one, one being written, and
    /// room for workers still announcing older generations.
    pub slots: u32,
    /// Trace ring records, 1..=[`MAX_TRACE_RECORDS`].
    pub trace_records: u32,
    /// Service ports with per-worker counters (stable ids), 0..=[`MAX_SERVICES`].
    pub services: u32,
}

impl Default for Layout {
    /// 8 workers, 256 ports, 65,536 flows (as [`crate::state::NodeConfig`]),
    /// 4 slots of 64 MiB, 4096 trace records, 16,384 Service counters.
    fn default() -> Layout {
        Layout {
            workers: 8,
            ports: 256,
            conntrack_capacity: 1 << 16,
            slot_bytes: 64 << 20,
            slots: 4,
            trace_records: 4096,
            services: 1 << 14,
        }
    }
}

/// Where everything is, in bytes from the start of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub layout: Layout,
    /// Words of the pipeline counter block (changes with `DropReason`).
    pub counter_words: u64,
    pub stats_off: u64,
    /// Bytes per worker stats block (a multiple of 64: no false sharing).
    pub stats_stride: u64,
    /// The port names (`ports` module): one entry per port.
    pub names_off: u64,
    pub names_bytes: u64,
    pub conntrack_off: u64,
    pub conntrack_bytes: u64,
    pub trace_off: u64,
    pub trace_bytes: u64,
    /// The Service directory (`services` module): header and one entry per id.
    pub svcdir_off: u64,
    pub svcdir_bytes: u64,
    /// Per-worker Service counters: worker `w`'s lines at
    /// `svcctr_off + w * svcctr_stride` (sparse in the file: the dataplane
    /// backs its own workers' ranges when it starts).
    pub svcctr_off: u64,
    pub svcctr_stride: u64,
    pub slots_off: u64,
    /// Bytes between slots (`slot_bytes` rounded up to a page).
    pub slot_stride: u64,
    pub total: u64,
}

/// Number of words a [`Geometry`] is stored as.
pub const GEO_WORDS: usize = 24;

/// Why a layout cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("workers {0} out of range 1..={MAX_WORKERS}")]
    Workers(u32),
    #[error("ports {0} out of range 0..={MAX_PORTS}")]
    Ports(u32),
    #[error("slots {0} out of range 2..={MAX_SLOTS}")]
    Slots(u32),
    #[error("slot_bytes {0} out of range 4096..={MAX_SLOT_BYTES}")]
    SlotBytes(u64),
    #[error("services {0} out of range 0..={MAX_SERVICES}")]
    Services(u32),
    #[error("trace_records {0} out of range 1..={MAX_TRACE_RECORDS}")]
    TraceRecords(u32),
    #[error("conntrack_capacity {0} out of range 1..={max}", max = crate::conntrack::MAX_CAPACITY)]
    ConntrackCapacity(u64),
    #[error("the layout does not fit in a 64-bit file size")]
    TooLarge,
}

fn round_up(x: u64, to: u64) -> Option<u64> {
    x.checked_add(to - 1).map(|v| v / to * to)
}

impl Layout {
    /// The geometry of this layout, or why it is out of range.
    pub fn geometry(&self) -> Result<Geometry, LayoutError> {
        let l = *self;
        if l.workers == 0 || l.workers > MAX_WORKERS {
            return Err(LayoutError::Workers(l.workers));
        }
        if l.ports > MAX_PORTS {
            return Err(LayoutError::Ports(l.ports));
        }
        if l.slots < 2 || l.slots as usize > MAX_SLOTS {
            return Err(LayoutError::Slots(l.slots));
        }
        if !(PAGE..=MAX_SLOT_BYTES).contains(&l.slot_bytes) {
            return Err(LayoutError::SlotBytes(l.slot_bytes));
        }
        if l.trace_records == 0 || l.trace_records > MAX_TRACE_RECORDS {
            return Err(LayoutError::TraceRecords(l.trace_records));
        }
        if l.services > MAX_SERVICES {
            return Err(LayoutError::Services(l.services));
        }
        if l.conntrack_capacity == 0 || l.conntrack_capacity > crate::conntrack::MAX_CAPACITY as u64
        {
            return Err(LayoutError::ConntrackCapacity(l.conntrack_capacity));
        }
        let too = || LayoutError::TooLarge;
        let words =
            (STATS_FIXED_WORDS + COUNTER_WORDS) as u64 + u64::from(l.ports) * PORT_WORDS as u64;
        let stats_stride = round_up(words * 8, 64).ok_or_else(too)?;
        let stats_off = HEADER_BYTES as u64;
        let stats_end = stats_off + stats_stride * u64::from(l.workers);
        let names_off = round_up(stats_end, 64).ok_or_else(too)?;
        let names_bytes = u64::from(l.ports) * super::ports::ENTRY_BYTES as u64;
        let conntrack_off = round_up(names_off + names_bytes, PAGE).ok_or_else(too)?;
        let ct = Table::shared_layout(l.conntrack_capacity as usize);
        let conntrack_bytes = round_up(ct.bytes as u64, PAGE).ok_or_else(too)?;
        let trace_off = conntrack_off.checked_add(conntrack_bytes).ok_or_else(too)?;
        let trace_bytes = TRACE_CTL_BYTES as u64 + u64::from(l.trace_records) * 64;
        let svcdir_off = round_up(trace_off + trace_bytes, PAGE).ok_or_else(too)?;
        let svcdir_bytes = super::services::DIR_HEADER_BYTES as u64
            + u64::from(l.services) * super::services::ENTRY_BYTES as u64;
        let svcctr_off = round_up(svcdir_off + svcdir_bytes, PAGE).ok_or_else(too)?;
        let svcctr_stride = round_up(
            u64::from(l.services) * super::services::LINE_BYTES as u64,
            PAGE,
        )
        .ok_or_else(too)?;
        let slots_off = svcctr_stride
            .checked_mul(u64::from(l.workers))
            .and_then(|b| b.checked_add(svcctr_off))
            .ok_or_else(too)?;
        let slot_stride = round_up(l.slot_bytes, PAGE).ok_or_else(too)?;
        let total = slot_stride
            .checked_mul(u64::from(l.slots))
            .and_then(|s| s.checked_add(slots_off))
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(too)?;
        Ok(Geometry {
            layout: l,
            counter_words: COUNTER_WORDS as u64,
            stats_off,
            stats_stride,
            names_off,
            names_bytes,
            conntrack_off,
            conntrack_bytes,
            trace_off,
            trace_bytes,
            svcdir_off,
            svcdir_bytes,
            svcctr_off,
            svcctr_stride,
            slots_off,
            slot_stride,
            total,
        })
    }
}

impl Geometry {
    /// The words stored in the header.
    pub(crate) fn words(&self) -> [u64; GEO_WORDS] {
        let l = &self.layout;
        [
            u64::from(l.workers),
            u64::from(l.ports),
            l.conntrack_capacity,
            l.slot_bytes,
            u64::from(l.slots),
            u64::from(l.trace_records),
            self.counter_words,
            self.stats_off,
            self.stats_stride,
            self.conntrack_off,
            self.conntrack_bytes,
            self.trace_off,
            self.trace_bytes,
            self.slots_off,
            self.slot_stride,
            self.total,
            HEADER_BYTES as u64,
            u64::from(l.services),
            self.svcdir_off,
            self.svcdir_bytes,
            self.svcctr_off,
            self.svcctr_stride,
            self.names_off,
            self.names_bytes,
        ]
    }

    /// The layout named by stored words (not yet checked: recompute its
    /// geometry and compare the words).
    pub(crate) fn layout_of(w: &[u64; GEO_WORDS]) -> Layout {
        let u32_of = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Layout {
            workers: u32_of(w[0]),
            ports: u32_of(w[1]),
            conntrack_capacity: w[2],
            slot_bytes: w[3],
            slots: u32_of(w[4]),
            trace_records: u32_of(w[5]),
            services: u32_of(w[17]),
        }
    }

    /// Byte offset of slot `i`.
    pub(crate) fn slot_off(&self, i: usize) -> u64 {
        self.slots_off + self.slot_stride * i as u64
    }
}

/// A cache line of one 64-bit word (the live generation).
#[repr(C, align(64))]
pub(crate) struct Line(pub AtomicU64);

/// A table slot's descriptor: what the publisher wrote there.
#[repr(C, align(64))]
pub(crate) struct SlotDesc {
    /// The generation held (0 while being written or never written).
    pub generation: AtomicU64,
    /// Encoded snapshot bytes.
    pub len: AtomicU64,
    /// [`super::checksum`] of those bytes.
    pub checksum: AtomicU64,
    /// CLOCK_MONOTONIC ns when it was published.
    pub published_ns: AtomicU64,
}

/// A process's registration: pid, start and last heartbeat.
#[repr(C, align(64))]
pub(crate) struct ProcSlot {
    pub pid: AtomicU64,
    pub started_ns: AtomicU64,
    pub heartbeat_ns: AtomicU64,
}

/// One announcer's line: the generation it uses and when it last said so.
#[repr(C, align(64))]
pub(crate) struct Announce {
    /// The generation in use (0: none).
    pub generation: AtomicU64,
    /// CLOCK_MONOTONIC ns of the last announce or heartbeat.
    pub heartbeat_ns: AtomicU64,
    /// When the generation changed (CLOCK_MONOTONIC ns).
    pub since_ns: AtomicU64,
}

/// The header at offset 0. Every field is atomic: written at creation by the
/// creator (under an exclusive `flock`), the magic last with `Release`.
#[repr(C)]
pub(crate) struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU64,
    pub geometry: [AtomicU64; GEO_WORDS],
    /// `generation << 8 | slot`; 0 = nothing published. The single store
    /// that publishes (see the module doc of `shm`).
    pub live: Line,
    pub slots: [SlotDesc; MAX_SLOTS],
    pub control: ProcSlot,
    pub dataplane: ProcSlot,
    pub announce: [Announce; MAX_ANNOUNCERS],
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BYTES);

/// The live word's parts.
#[inline]
pub(crate) fn live_parts(w: u64) -> (u64, usize) {
    (w >> 8, (w & 0xff) as usize)
}

#[inline]
pub(crate) fn live_word(generation: u64, slot: usize) -> u64 {
    generation << 8 | slot as u64
}
