//! Real packets: the XDP steering program, AF_XDP sockets over one shared UMEM,
//! and the forwarding loop that hands received frames to the [`Pipeline`].
//!
//! - [`xdp`]: loads `bpf/steer.c` (compiled by `build.rs`) with aya, attaches
//!   it to interfaces (native XDP, generic as a logged fallback) and keeps its
//!   maps (sockets, interfaces, node addresses, VIPs, port ranges) up to date
//!   at run time without reloading;
//! - [`xsk`]: AF_XDP sockets made with xsk-rs (libxdp's own program load
//!   inhibited; each socket's fd goes into our XSKMAP), all sharing one UMEM
//!   so forwarding between ports copies nothing; fill/completion rings,
//!   need_wakeup with batched kicks, and a frame account that shows no frame
//!   is ever leaked;
//! - [`forward`]: the minimal poll loop: receive a batch, run the pipeline,
//!   transmit / free, with idle back-off to a blocking `poll()`;
//! - [`gen`]: a transmit-only generator (UMEM frames written once, only
//!   descriptors per packet), the library side of `twill-pktgen`;
//! - [`worker`]: N pinned worker threads, each a [`Forwarder`] with its own
//!   UMEM and pipeline (uplink queue i on worker i, pods spread), attach and
//!   detach at run time, clean stop;
//! - [`hooks`]: a worker's per-batch side of the shared-memory file
//!   (generation announce, heartbeat, stats block, trace);
//! - [`handoff`]: frames for another worker's port, copied through bounded
//!   lock-free queues (why copies and not UMEM tokens: see there), with
//!   eventfd wake-ups of sleeping workers;
//! - [`neigh`]: interface MACs and queue counts, and the kernel's neighbour
//!   table (the underlay next hops' MACs), over rtnetlink;
//! - [`netns`]: runs the calling thread in another network namespace (tests,
//!   multi-node setups on one machine).
//!
//! What the node and the CNI plugin must set up around a pod's veth (the
//! integration tests do exactly this):
//! - the host-side veth's MAC is the pods' gateway MAC, so the frames the
//!   steering program passes to the kernel (pod -> node address) are accepted
//!   as addressed to it; a host route to the pod's IP via its veth lets the
//!   kernel answer (kubelet probes, host <-> pod);
//! - the pod's eth0 has tx checksum offload off: a pod's TCP/UDP otherwise
//!   leave with the checksum unfinished (CHECKSUM_PARTIAL), which XDP and
//!   AF_XDP cannot see, so the receiving pod would drop them (this also
//!   turns off TSO on that veth: see issue 3's note on bulk TCP);
//! - the SNAT port range is outside the kernel's ephemeral ports, or reserved
//!   ([`snat_overlaps_kernel_ports`] warns at load).
//!
//! This is the one module besides `state/` that uses `unsafe`: the UMEM is
//! memory shared with the kernel, and xsk-rs marks every ring operation
//! `unsafe` because frame ownership cannot be checked by the compiler. Each
//! block names the invariant that makes it sound; the central one is frame
//! ownership: a frame descriptor is in exactly one place at a time (the free
//! list, a fill ring, an rx batch being processed, a tx ring awaiting
//! completion), and only the rx-batch holder touches its bytes.
//!
//! [`Pipeline`]: crate::pipeline::Pipeline
#![allow(unsafe_code)]

pub mod forward;
pub mod gen;
pub mod handoff;
pub mod hooks;
pub mod neigh;
pub mod netns;
pub mod worker;
pub mod xdp;
pub mod xsk;

pub use forward::{
    control_channel, reply_channel, Control, ControlSender, Forwarder, IoStats, RunOptions,
};
pub use handoff::{Fabric, Handoff, HandoffStats};
pub use hooks::ShmHooks;
pub use worker::{available_cpus, WorkerReport, Workers, WorkersBuilder};
pub use xdp::{
    snat_overlaps_kernel_ports, IfaceMode, SteerConfig, SteerStats, Steering, XdpAttachMode,
};
pub use xsk::{BindMode, FrameAccount, Owned, Xsk, XskConfig, XskStats, ZeroCopy};

/// An I/O set-up error with the context an operator needs (which interface,
/// which step), as one line.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("interface {0:?} not found")]
    NoSuchInterface(String),
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

impl IoError {
    pub(crate) fn setup(msg: impl Into<String>) -> IoError {
        IoError::Setup(msg.into())
    }
}

/// The index of the interface named `name` in the calling thread's network
/// namespace.
pub fn ifindex(name: &str) -> Result<u32, IoError> {
    let c = std::ffi::CString::new(name).map_err(|_| IoError::NoSuchInterface(name.into()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(IoError::NoSuchInterface(name.into()));
    }
    Ok(idx)
}
