//! Connection tracking: one lock-free flow table shared by all workers, with
//! the NAT translation of each flow implicit in its two stored tuples, and a
//! per-worker fragment table.
//!
//! - `key`: the flow key and its hash (shared with Maglev and VXLAN).
//! - `table`: the shared [`Table`] (layout, concurrency discipline and
//!   reclamation are described in its module doc).
//! - `state`: protocol state machines and [`Timeouts`].
//! - [`frag`]: the per-worker fragment table.
pub mod frag;
mod key;
mod state;
mod table;

#[cfg(test)]
mod tests;

pub use frag::{FragKey, FragStats, FragTable};
pub use key::{ip_to_key_bytes, FlowKey};
pub use state::{CtState, Timeouts};
pub(crate) use table::{Bucket as CtBucket, Entry as CtEntry, Header as CtHeader};
pub use table::{
    CtOpenError, Dir, Expect, FlowSnapshot, Hit, InsertError, LeanHit, Opened, SharedLayout,
    SharedParts, Stats, Table, BYTES_PER_FLOW, ENTRY_BYTES, INDEX_BYTES_PER_FLOW, MAX_CAPACITY,
    SLOTS_PER_FLOW,
};
