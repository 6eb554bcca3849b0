//! The live snapshot as twillctl reads it: copied from the file with
//! `pread`, without announcing a generation.
//!
//! Why not [`dataplane::state::shm::Reader`]: its announce line belongs to
//! the dataplane's reader (one writer per line); a second process storing
//! and clearing it could let the publisher rewrite a slot the dataplane is
//! copying. Instead, like a seqlock reader: load the live slot's descriptor,
//! copy its bytes, load the descriptor again; the publisher zeroes a slot's
//! generation before rewriting it and generations never repeat, so an
//! unchanged generation means the copy is whole. The snapshot decoder checks
//! every byte besides (a torn copy is an error, never a panic), and a copy
//! that changed under us is retried a few times.

use std::os::unix::fs::FileExt;

use dataplane::state::shm::Shm;
use dataplane::state::snapshot::Snapshot;

use super::CtlError;

const ATTEMPTS: usize = 8;

/// The live (generation, snapshot); an error if nothing was published yet.
pub fn live(shm: &Shm) -> Result<(u64, Snapshot), CtlError> {
    let path = shm.path().to_owned();
    let err = |reason: String| CtlError::Snapshot {
        path: path.clone(),
        reason,
    };
    let file = std::fs::File::open(shm.path()).map_err(|e| err(format!("open: {e}")))?;
    let g = *shm.geometry();
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let generation = shm.live_generation();
        if generation == 0 {
            return Err(CtlError::NothingPublished(path.clone()));
        }
        let Some(slot) = shm.slots().into_iter().find(|s| s.live) else {
            last = format!("no slot holds live generation {generation}");
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        };
        if slot.len > g.layout.slot_bytes {
            return Err(err(format!(
                "slot {} says {} bytes, a slot holds {}",
                slot.slot, slot.len, g.layout.slot_bytes
            )));
        }
        let mut buf = vec![0u8; slot.len as usize];
        let off = g.slots_off + g.slot_stride * slot.slot as u64;
        file.read_exact_at(&mut buf, off)
            .map_err(|e| err(format!("read slot {}: {e}", slot.slot)))?;
        let after = shm.slots();
        if after.get(slot.slot).map(|s| s.generation) != Some(slot.generation) {
            last = format!("slot {} was rewritten while read", slot.slot);
            continue;
        }
        match Snapshot::decode(&buf) {
            Ok(s) => return Ok((generation, s)),
            Err(e) => last = format!("generation {generation}: {e}"),
        }
    }
    Err(err(last))
}
