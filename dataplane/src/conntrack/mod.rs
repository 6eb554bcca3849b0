//! Connection tracking: one lock-free flow table shared by all workers.
mod key;


pub use key::{ip_to_key_bytes, FlowKey};
