//! Per-pipeline counters: drops by reason, verdicts and path events. One writer
//! (the worker owning the pipeline); events are summed in a batch-local block and
//! added to the published block once per batch.

use super::drop::DropReason;
use super::verdict::Verdict;

/// Counters of one pipeline. `#[repr(C)]` so the block can later live in shared
/// memory for `twillctl stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub rx: u64,
    pub tx: u64,
    pub reply: u64,
    pub pass: u64,
    pub dropped: u64,
    /// Drops by [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
    pub arp_replies: u64,
    pub nd_replies: u64,
    pub encap: u64,
    pub decap: u64,
    pub ct_hits: u64,
    pub ct_new: u64,
    pub dnat: u64,
    pub snat: u64,
    pub snat_port_retries: u64,
    pub icmp_errors_sent: u64,
    pub icmp_errors_translated: u64,
    pub frags_stashed: u64,
    pub frags_released: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx: 0,
            tx: 0,
            reply: 0,
            pass: 0,
            dropped: 0,
            drops: [0; DropReason::COUNT],
            arp_replies: 0,
            nd_replies: 0,
            encap: 0,
            decap: 0,
            ct_hits: 0,
            ct_new: 0,
            dnat: 0,
            snat: 0,
            snat_port_retries: 0,
            icmp_errors_sent: 0,
            icmp_errors_translated: 0,
            frags_stashed: 0,
            frags_released: 0,
        }
    }
}

impl Counters {
    /// The drop count of one reason.
    #[inline]
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Every drop reason with its count, in [`DropReason::ALL`] order (for
    /// `twillctl stats`: `reason.name()`, `reason.description()`, count).
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.drops[r.index()]))
    }

    /// Counts a verdict (rx and the verdict kind).
    #[inline]
    pub(crate) fn count_verdict(&mut self, v: Verdict) {
        self.rx += 1;
        match v {
            Verdict::Tx(_) => self.tx += 1,
            Verdict::Reply => self.reply += 1,
            Verdict::Pass => self.pass += 1,
            Verdict::Drop(r) => {
                self.dropped += 1;
                self.drops[r.index()] += 1;
            }
        }
    }

    /// Adds `other` into `self` and zeroes `other`.
    pub(crate) fn drain_from(&mut self, other: &mut Counters) {
        self.rx += other.rx;
        self.tx += other.tx;
        self.reply += other.reply;
        self.pass += other.pass;
        self.dropped += other.dropped;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += *b;
        }
        self.arp_replies += other.arp_replies;
        self.nd_replies += other.nd_replies;
        self.encap += other.encap;
        self.decap += other.decap;
        self.ct_hits += other.ct_hits;
        self.ct_new += other.ct_new;
        self.dnat += other.dnat;
        self.snat += other.snat;
        self.snat_port_retries += other.snat_port_retries;
        self.icmp_errors_sent += other.icmp_errors_sent;
        self.icmp_errors_translated += other.icmp_errors_translated;
        self.frags_stashed += other.frags_stashed;
        self.frags_released += other.frags_released;
        *other = Counters::default();
    }
}
