//! twill's node dataplane: the packet path as pure, batch-oriented code.
//!
//! - [`wire`]: typed zero-copy views over frame bytes and checksums;
//! - [`conntrack`]: the lock-free flow table shared by all workers, with NAT;
//! - [`lb`]: Service lookup, Maglev backend selection, session affinity;
//! - [`route`]: longest-prefix match for IPv4 and IPv6;
//! - [`state`]: the node's tables as the dataplane reads them (builder today,
//!   shared memory later);
//! - [`pipeline`]: the stages that turn a batch of frames into verdicts.
//!
//! Nothing here does I/O, reads a clock or allocates per packet: time comes in as
//! `now` (monotonic nanoseconds) so tests are deterministic.
#![deny(unsafe_code)]

pub mod config;
pub mod conntrack;
pub mod io;
pub mod lb;
pub mod pipeline;
pub mod route;
pub mod state;
pub mod wire;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

/// A dataplane port: an attached interface (the uplink or a pod's host veth).
pub type PortId = u16;

/// IP protocol numbers the dataplane looks at.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}
