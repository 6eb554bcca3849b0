//! The packet pipeline: turns a batch of frames into verdicts, with no I/O.
//!
//! Shape (VPP-style): `process` runs three stages over the batch in two
//! passes (ingress over the whole batch, then flow and forward per frame),
//! writing per-frame metadata (offsets, family, flow key, translation) into a
//! parallel array on the [`Pipeline`] and deciding some frames:
//! 1. `ingress`: port kind, Ethernet/IP parsing, ARP/ND answers,
//!    anti-spoofing, VXLAN decapsulation;
//! 2. `flow`: fragments, ICMP errors about NATed flows, conntrack
//!    hits with their NAT, first packets (Services, masquerade, pass, drop);
//! 3. `forward`: route, TTL, MTU, local delivery, VXLAN encap, uplink.
//!
//! Released fragments (a later fragment stashed until its first one came) are
//! handed out by [`Pipeline::take_released`]; a stashed frame's own verdict is
//! `Drop(FragStashed)` (its bytes were copied, the caller frees the buffer).
//!
//! **The established-flow fast path** (pod -> ClusterIP -> remote pod, the
//! `bench-pipeline` scenario `service-encap`): ingress reads the Ethernet,
//! IPv4 and L4 headers as fixed-size chunks (one length check per header, the
//! IPv4 header checksum verified in five 32-bit word adds, as a Linux router
//! does) and fills a `Meta` with offsets and the flow key built straight
//! from the bytes. The flow stage's conntrack hit rewrites IPv4 TCP/UDP with
//! one 32-bit-word checksum delta per header (`nat::rewrite`). Forwarding
//! finds the translated destination in a 4096-slot direct-mapped route cache,
//! decrements the TTL with a constant checksum delta, and pushes the remote
//! node's precomputed outer headers, deriving the outer IPv4 checksum from the
//! template's partial sum. VXLAN for this node is decapsulated before the
//! outer packet is parsed into metadata (`vxlan::fast_decap_v4`). In front
//! of these stages, `fast` takes the common IPv4 TCP/UDP shape of these frames
//! without a `Meta` and finishes established flows itself (same results; see
//! its module doc for the shape and the callgrind figures), those with NAT
//! from a per-worker flow cache checked against their conntrack entry
//! (`flows`); while few flows are cached, a cached flow's frame is finished
//! in the first pass as soon as it is parsed, as long as every earlier
//! frame of the batch is (order kept), and only the frames from the first
//! one left over take the second pass.
//!
//! **Prefetch scheme**: at 1M flows the conntrack index and entries no longer
//! fit in cache, and a lookup is two dependent misses. So the batch is
//! processed in two passes: the ingress loop ends each frame with
//! `ct.prefetch(&m.key)` (the key's home index bucket), and the flow loop
//! runs only after every frame of the batch was parsed, by which time up to
//! 64 bucket misses have overlapped instead of queueing (service-encap at 1M
//! flows went from ~0.2 to ~0.7 of the 10k-flow packet rate). An entry-level
//! prefetch (probing the fetched bucket's tags a few frames ahead and
//! prefetching the entry) was tried and lost ~15% in the benchmark, whose
//! entries are touched in allocation order and so already streamed by the
//! hardware prefetcher. A frame of a flow in the fast path's flow cache has
//! its conntrack entry prefetched instead (the cache names it: no dependent
//! bucket read).
//!
//! Every frame ends with a [`Verdict`]; every drop names a [`DropReason`].
//! Counters are summed per batch and added to [`Pipeline::counters`] once. No
//! allocation, clock read or lock on the packet path (`now` comes in); the only
//! per-packet hash is `FlowKey::hash` where a flow hash is needed (new flows,
//! VXLAN source port), besides conntrack's own lookup.

mod arp_nd;
mod counters;
mod drop;
mod fast;
mod flow;
mod flows;
mod forward;
mod frag;
mod frame;
mod icmp_gen;
mod icmp_xlate;
mod ingress;
mod nat;
mod parse;
mod service;
mod verdict;
mod vxlan;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use counters::Counters;
pub use drop::DropReason;
pub use frag::{FRAG_TIMEOUT_NS, STASH_SLOTS};
pub use frame::{Frame, FRAME_SIZE, HEADROOM};
pub use verdict::Verdict;

use crate::conntrack;
use crate::lb;
use crate::state::shm::ServiceCounters;
use crate::state::Tables;
use parse::{ethertype, parse_ip, Meta};

/// The most frames `process` handles at once (larger slices are cut into batches).
pub const BATCH: usize = 64;

/// Conntrack entries swept for expiry per `process` call (incremental reclaim,
/// so expired flows free their entries without a separate thread).
pub const RECLAIM_PER_CALL: usize = 16;

/// Shared, read-only inputs of one batch.
pub(crate) struct Env<'a> {
    pub t: &'a Tables,
    pub ct: &'a conntrack::Table,
    pub aff: &'a lb::AffinityTable,
    /// This worker's per-Service counter lines (empty: none counted).
    pub svc: &'a ServiceCounters,
    pub now: u64,
}

/// The pipeline's own mutable state (one writer: the worker).
pub(crate) struct State {
    pub cnt: Counters,
    pub route: forward::RouteCache,
    pub frags: frag::Frags,
    pub stash: frag::Stash,
    /// First fragments seen this batch whose stashed fragments are to be released.
    pub release: Vec<conntrack::frag::FragKey>,
    /// IPv4 identification for emitted outer headers.
    pub ident: u16,
}

/// One worker's pipeline.
pub struct Pipeline {
    tables: Arc<Tables>,
    ct: Arc<conntrack::Table>,
    affinity: Arc<lb::AffinityTable>,
    meta: Vec<Meta>,
    /// The fast path's per-frame findings (see `fast`).
    lean: Vec<fast::Lean>,
    /// Whether the fast path runs (off: the general stages alone, for tests).
    fast: bool,
    /// The fast path's established flows (see `flows`; apart from `State`
    /// so that a cached flow's slot is read in place while `State` changes).
    flows: flows::FlowCache,
    st: State,
    counters: Counters,
    /// Per-Service counters (see `state::shm::ServiceCounters`).
    svc: ServiceCounters,
}

impl Pipeline {
    pub fn new(
        tables: Arc<Tables>,
        ct: Arc<conntrack::Table>,
        affinity: Arc<lb::AffinityTable>,
    ) -> Pipeline {
        let frag_capacity = tables.config().frag_capacity.max(1);
        Pipeline {
            tables,
            ct,
            affinity,
            meta: vec![Meta::default(); BATCH],
            lean: vec![fast::Lean::default(); BATCH],
            fast: true,
            flows: flows::FlowCache::default(),
            st: State {
                cnt: Counters::default(),
                route: forward::RouteCache::default(),
                frags: frag::Frags::new(frag_capacity, FRAG_TIMEOUT_NS),
                stash: frag::Stash::new(STASH_SLOTS),
                release: Vec::with_capacity(BATCH),
                ident: 0,
            },
            counters: Counters::default(),
            svc: ServiceCounters::none(),
        }
    }

    /// A pipeline with its own conntrack and affinity tables sized from the
    /// tables' configuration (tests, benches, a single worker).
    pub fn standalone(tables: Arc<Tables>) -> Pipeline {
        let c = tables.config();
        let ct = Arc::new(conntrack::Table::new(c.conntrack_capacity, c.timeouts));
        let aff = Arc::new(lb::AffinityTable::new(c.affinity_capacity));
        Pipeline::new(tables, ct, aff)
    }

    /// Switches to new tables (between batches); resets the last-hit caches.
    pub fn set_tables(&mut self, tables: Arc<Tables>) {
        if tables.generation() != self.tables.generation() {
            self.st.route.reset();
            self.flows.reset();
        }
        self.tables = tables;
    }

    /// Turns the established-flow fast path on (the default) or off; off,
    /// every frame takes the general stages (same results, for comparison).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    /// Counts Service flows' packets, bytes, connections and rejects into
    /// `c` from now on (by the stable id their conntrack entry carries).
    pub fn set_service_counters(&mut self, c: ServiceCounters) {
        self.svc = c;
    }

    pub fn service_counters(&self) -> &ServiceCounters {
        &self.svc
    }

    pub fn tables(&self) -> &Arc<Tables> {
        &self.tables
    }

    pub fn conntrack(&self) -> &Arc<conntrack::Table> {
        &self.ct
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Fragments currently held in the stash (released ones not yet taken included).
    pub fn stashed(&self) -> usize {
        self.st.stash.used
    }

    /// Runs the frames through the pipeline, writing one verdict per frame
    /// (`verdicts` must be at least as long as `frames`; extra frames are left
    /// untouched, with no verdict).
    pub fn process(&mut self, frames: &mut [Frame], verdicts: &mut [Verdict], now: u64) {
        let n = frames.len().min(verdicts.len());
        if self.st.stash.used > 0 {
            let expired = self.st.stash.expire(now);
            self.st.cnt.dropped += expired;
            self.st.cnt.drops[DropReason::FragTimeout.index()] += expired;
        }
        let mut start = 0;
        while start < n {
            let end = (start + BATCH).min(n);
            self.batch(&mut frames[start..end], &mut verdicts[start..end], now);
            start = end;
        }
        if !self.st.release.is_empty() {
            self.release(now);
        }
        self.ct.reclaim(now, RECLAIM_PER_CALL);
        self.counters.drain_from(&mut self.st.cnt);
    }

    fn batch(&mut self, frames: &mut [Frame], verdicts: &mut [Verdict], now: u64) {
        let env = Env {
            t: &self.tables,
            ct: &self.ct,
            aff: &self.affinity,
            svc: &self.svc,
            now,
        };
        let st = &mut self.st;
        let flows = &mut self.flows;
        let n = frames.len();
        let meta = &mut self.meta[..n];
        let lean = &mut self.lean[..n];
        let verdicts = &mut verdicts[..n];
        let mut ports = fast::Ports::new(env.t, self.fast);
        // Frames sent by the fast path.
        let mut sent = 0;
        // The first pass, in two loops. With few flows cached (`hot`), the
        // first finishes a cached flow's frame at once while every earlier
        // frame is decided (so conntrack still sees the batch's packets in
        // order), and stops at the first frame left to the second pass; the
        // second parses the rest as before (a loop of its own keeps its
        // registers: a cached flow's steps inlined there cost every
        // deferred frame spills).
        let hot = flows.hot();
        let mut first = 0;
        while hot && first < n {
            let (f, m, v) = (&mut frames[first], &mut meta[first], &mut verdicts[first]);
            // In a local, stored only when the frame is left to the second
            // pass.
            let mut l = fast::Lean::default();
            if fast::parse(env.t, &mut ports, f, &mut l) {
                if let Some(c) = fast::look(env.ct, flows, &mut l) {
                    if let Some(x) = fast::finish_cached(&env, st, c, f, m, &l, v) {
                        sent += u64::from(x);
                        first += 1;
                        continue;
                    }
                    fast::prefetch_cached(env.ct, c);
                    l.cached = flows.handle(c);
                }
                l.step = fast::Step::Fast;
                lean[first] = l;
                break;
            }
            if let Some(x) = ingress::run(&env, st, f, m) {
                *v = x;
                first += 1;
                continue;
            }
            lean[first].step = fast::Step::General;
            env.ct.prefetch(&m.key);
            break;
        }
        let rest = if hot { (first + 1).min(n) } else { 0 };
        for (((f, m), v), l) in frames[rest..]
            .iter_mut()
            .zip(meta[rest..].iter_mut())
            .zip(verdicts[rest..].iter_mut())
            .zip(lean[rest..].iter_mut())
        {
            if fast::parse(env.t, &mut ports, f, l) {
                l.step = fast::Step::Fast;
                l.cached = 0;
                if let Some(c) = fast::look(env.ct, flows, l) {
                    fast::prefetch_cached(env.ct, c);
                    l.cached = flows.handle(c);
                }
                continue;
            }
            if let Some(x) = ingress::run(&env, st, f, m) {
                *v = x;
                l.step = fast::Step::Done;
                continue;
            }
            l.step = fast::Step::General;
            // Start the conntrack index miss now; the flow stage reads the
            // bucket after the rest of the batch has been parsed.
            env.ct.prefetch(&m.key);
        }
        // Flow and forwarding in one pass (the stages stay separate
        // functions; one loop saves the second walk over the batch and its
        // meta reloads). By now the batch's bucket prefetches have landed.
        for (((f, m), v), l) in frames[first..]
            .iter_mut()
            .zip(meta[first..].iter_mut())
            .zip(verdicts[first..].iter_mut())
            .zip(lean[first..].iter())
        {
            match l.step {
                fast::Step::Fast => sent += u64::from(fast::finish(&env, st, flows, f, m, l, v)),
                fast::Step::General => {
                    *v = match flow::run(&env, st, f, m) {
                        Some(x) => x,
                        None => forward::run(&env, st, f, m),
                    }
                }
                fast::Step::Done => {}
            }
        }
        flows.end_batch();
        // Every frame sent by the fast path: nothing else to count.
        if sent == verdicts.len() as u64 {
            st.cnt.rx += sent;
            st.cnt.tx += sent;
            return;
        }
        let mut tx = 0;
        for v in verdicts.iter() {
            // The common verdict without the general match (jump table).
            if let Verdict::Tx(_) = v {
                tx += 1;
            } else {
                st.cnt.count_verdict(*v);
            }
        }
        st.cnt.rx += tx;
        st.cnt.tx += tx;
    }

    /// Runs stashed fragments whose first fragment has now been seen.
    fn release(&mut self, now: u64) {
        let env = Env {
            t: &self.tables,
            ct: &self.ct,
            aff: &self.affinity,
            svc: &self.svc,
            now,
        };
        let st = &mut self.st;
        let keys = std::mem::take(&mut st.release);
        for k in &keys {
            for i in 0..st.stash.slots.len() {
                let s = &mut st.stash.slots[i];
                if !s.used || s.released.is_some() || s.key != *k {
                    continue;
                }
                let mut buf = std::mem::take(&mut s.buf);
                let (len, port, ingress) = (s.len, s.port, s.ingress);
                let mut frame = Frame::new(&mut buf, HEADROOM, len, port);
                let v = run_stashed(&env, st, &mut frame, ingress);
                let head = frame.head();
                let len = frame.len();
                let s = &mut st.stash.slots[i];
                s.buf = buf;
                s.head = head;
                s.len = len;
                s.released = Some(v);
                st.cnt.frags_released += 1;
            }
        }
        st.release = keys;
        st.release.clear();
    }

    /// Hands out fragments released from the stash since the last call, each with
    /// its verdict (as if it had just been processed), and frees their slots.
    /// Allocates: released fragments are rare and leave the fast path.
    pub fn take_released(&mut self, out: &mut Vec<(Vec<u8>, Verdict)>) {
        let stash = &mut self.st.stash;
        for s in stash.slots.iter_mut() {
            if let (true, Some(v)) = (s.used, s.released) {
                out.push((s.buf[s.head..s.head + s.len].to_vec(), v));
                s.used = false;
                s.released = None;
                stash.used -= 1;
            }
        }
    }
}

/// Runs a stashed fragment (already past ingress checks when stashed).
fn run_stashed(env: &Env, st: &mut State, frame: &mut Frame, ingress: parse::Ingress) -> Verdict {
    let mut m = Meta {
        ingress,
        ..Meta::default()
    };
    let Some((et, l3)) = ethertype(frame.data()) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    match parse_ip(frame.data(), l3, et, &mut m) {
        Ok(end) => frame.trim(end),
        Err(r) => return Verdict::Drop(r),
    }
    m.ingress = ingress;
    if let Some(v) = flow::run(env, st, frame, &mut m) {
        return v;
    }
    forward::run(env, st, frame, &mut m)
}
