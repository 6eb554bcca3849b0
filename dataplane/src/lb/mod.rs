//! Services as the dataplane sees them: which Service a packet is for, and which of its
//! backends a new connection goes to.
//!
//! - [`ServiceTableBuilder`] takes [`ServiceSpec`]s (what control derives from Services
//!   and EndpointSlices) and builds an immutable [`ServiceTable`]: VIP and NodePort
//!   indexes in FxHash maps (a lookup costs the same with 10 or 100,000 Services),
//!   services and backends in flat `Vec`s, and every Maglev table precomputed in one
//!   flat `Vec<u16>`.
//! - [`ServiceTable::select`] picks a backend for a new flow: kube-proxy's endpoint
//!   rules decide the usable set per [`Scope`] and address family (see
//!   [`ServiceTable`]), Maglev consistent hashing (module `maglev`) picks among them,
//!   and sessionAffinity ClientIP goes through the shared [`AffinityTable`].
//!
//! One writer (control, through the tables builder) builds a table; workers only read
//! it, through `&self`. Nothing here allocates, locks or reads a clock on the lookup
//! and select paths; `now` comes in as monotonic nanoseconds.

mod affinity;
mod hash;
mod maglev;
mod table;
#[cfg(test)]
mod tests;

pub use affinity::{AffinityTable, MAX_BACKENDS, MAX_TIMEOUT_S, WAYS};
pub use maglev::{is_prime, table_size, DEFAULT_MAGLEV_MAX_SIZE, MAGLEV_SIZES};
pub use table::{Backend, BuildError, Conflict, Service, ServiceTable, ServiceTableBuilder};

use std::net::IpAddr;

/// A Service's index in its [`ServiceTable`] (stable for that table only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcId(pub u32);

/// A backend's index in its [`ServiceTable`] (stable for that table only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

/// How a VIP was declared on its Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VipKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
}

/// Which endpoints a connection may use: all of them (`Cluster`), or only those on this
/// node (`Local`: externalTrafficPolicy or internalTrafficPolicy Local).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Cluster = 0,
    Local = 1,
}

/// One endpoint of a Service, with the EndpointSlice conditions kube-proxy reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The endpoint is on this node.
    pub local: bool,
}

/// One Service port (a Service with several ports is several specs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// For humans and stats, e.g. `default/web:http`.
    pub name: String,
    /// IP protocol number ([`crate::proto`]).
    pub proto: u8,
    pub port: u16,
    pub vips: Vec<(IpAddr, VipKind)>,
    pub node_port: Option<u16>,
    /// externalTrafficPolicy: Local.
    pub ext_local: bool,
    /// internalTrafficPolicy: Local.
    pub int_local: bool,
    /// sessionAffinity ClientIP with this timeout; None = no affinity.
    pub affinity_timeout_s: Option<u32>,
    /// May mix IPv4 and IPv6 (a dual-stack Service): a connection only ever gets a
    /// backend of its own family.
    pub backends: Vec<BackendSpec>,
}

/// The FlowKey form of an address: IPv4 in the first 4 bytes, rest zero; and 4 or 6.
#[inline]
pub(crate) fn ip_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 6),
    }
}
