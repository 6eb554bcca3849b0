//! Builds the node's snapshot (model view + pod attachments) and publishes it
//! to the dataplane through shared memory.

pub mod pods;
