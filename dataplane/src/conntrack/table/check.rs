//! Test-only: an independent recount of the index of a quiescent table.

use std::sync::atomic::Ordering::SeqCst;

use super::{
    index_hash, slot_dir, slot_id, tag8, Dir, Table, COMMITTED, CTRL, LIVE, SLOTS, TAG_MASK,
};

/// What a recount of the index found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexCensus {
    /// Committed slots.
    pub slots: usize,
    /// Slots sitting past their home bucket.
    pub displaced: usize,
    /// The largest overflow count.
    pub max_overflow: u64,
    /// The farthest a slot sits from its home bucket, in buckets.
    pub max_displacement: usize,
}

impl Table {
    /// Recounts the index of a table no thread is writing and checks it
    /// against the stored control words and entries: every slot committed
    /// and leading to a live entry whose tuple in that direction hashes to
    /// the slot's tag, within the probe range of its home; every tag byte
    /// equal to its slot's (0 for an empty slot); every overflow count equal
    /// to the number of slots homed at or before its bucket sitting past it;
    /// every live entry reachable by exactly its one or two slots.
    pub(crate) fn check_index(&self) -> Result<IndexCensus, String> {
        let n = self.index.len();
        let probe = self.geo.probe as usize;
        let mut counts = vec![0u64; n];
        let mut per_entry = vec![0u8; self.entries.len()];
        let mut census = IndexCensus::default();
        for (b, bucket) in self.index.iter().enumerate() {
            let ctrl = bucket.0[CTRL].load(SeqCst);
            for i in 0..SLOTS {
                let v = bucket.0[i].load(SeqCst);
                let byte = (ctrl >> (8 * i)) & 0xff;
                if v == 0 {
                    if byte != 0 {
                        return Err(format!("bucket {b} slot {i}: empty, tag byte {byte:#x}"));
                    }
                    continue;
                }
                if v & COMMITTED == 0 {
                    return Err(format!("bucket {b} slot {i}: pending slot left behind"));
                }
                let id = slot_id(v);
                let snap = self
                    .read(id)
                    .ok_or_else(|| format!("bucket {b} slot {i}: entry {id} unreadable"))?;
                if snap.word.life() != LIVE {
                    return Err(format!("bucket {b} slot {i}: entry {id} not live"));
                }
                let k = if slot_dir(v) == Dir::Orig {
                    snap.orig
                } else {
                    snap.reply
                };
                let h = index_hash(&k);
                let (home, tag) = self.home(h);
                if v & TAG_MASK != tag {
                    return Err(format!("bucket {b} slot {i}: tag is not its key's"));
                }
                if byte != tag8(h) {
                    return Err(format!("bucket {b} slot {i}: tag byte {byte:#x}"));
                }
                let d = (b + n - home) % n;
                if d >= probe {
                    return Err(format!("bucket {b} slot {i}: {d} buckets from home"));
                }
                for j in 0..d {
                    counts[(home + j) % n] += 1;
                }
                census.slots += 1;
                census.displaced += usize::from(d > 0);
                census.max_displacement = census.max_displacement.max(d);
                per_entry[id as usize] += 1;
            }
        }
        for (b, (bucket, want)) in self.index.iter().zip(&counts).enumerate() {
            let got = bucket.0[CTRL].load(SeqCst) >> 56;
            if got != *want {
                return Err(format!("bucket {b}: overflow count {got}, recount {want}"));
            }
            census.max_overflow = census.max_overflow.max(got);
        }
        for (id, &slots) in per_entry.iter().enumerate() {
            let want = match self.read(id as u32) {
                Some(s) if s.word.life() == LIVE => 1 + u8::from(s.orig != s.reply),
                _ => 0,
            };
            if slots != want {
                return Err(format!("entry {id}: {slots} slots, want {want}"));
            }
        }
        Ok(census)
    }
}
