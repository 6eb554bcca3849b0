//! The live snapshot as twillctl reads it: [`Shm::peek_live`], which
//! reads without announcing a generation (the reader's announce line belongs
//! to the dataplane).

use dataplane::state::shm::Shm;
use dataplane::state::snapshot::Snapshot;

use super::CtlError;

/// The live (generation, snapshot); an error if nothing was published yet.
pub fn live(shm: &Shm) -> Result<(u64, Snapshot), CtlError> {
    match shm.peek_live() {
        Ok(Some(live)) => Ok(live),
        Ok(None) => Err(CtlError::NothingPublished(shm.path().to_owned())),
        Err(e) => Err(CtlError::Snapshot {
            path: shm.path().to_owned(),
            reason: e.to_string(),
        }),
    }
}
