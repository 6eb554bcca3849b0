//! What happens to a frame after the pipeline: the caller acts on it.

use super::drop::DropReason;
use crate::PortId;

/// The pipeline's decision for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on this port.
    Tx(PortId),
    /// Transmit back out of the port it came in on (ARP/ND answers, ICMP errors).
    Reply,
    /// Hand to the kernel (traffic that is not the dataplane's).
    Pass,
    /// Free the buffer; counted under the reason. (A fragment held in the
    /// fragment stash is `Drop(FragStashed)`: its bytes were copied.)
    Drop(DropReason),
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::Drop(DropReason::Truncated)
    }
}
