//! Why frames are dropped: one enum, declared as data with a description each, the
//! single source for `twillctl stats`. Counters are arrays indexed by reason.

macro_rules! drop_reasons {
    ($($name:ident => $desc:literal,)*) => {
        /// A named reason for dropping a frame.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $desc] $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// The number of reasons (the length of a counter array).
            pub const COUNT: usize = DropReason::ALL.len();

            /// One line for humans.
            pub fn description(self) -> &'static str {
                match self {
                    $(DropReason::$name => $desc,)*
                }
            }

            /// The reason's name as written in code (for stats output).
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$name => stringify!($name),)*
                }
            }

            /// The counter index.
            #[inline]
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    UnknownPort => "frame from a port that is neither the uplink nor an attached pod",
    Truncated => "frame shorter than the headers it announces",
    VlanOnPodPort => "802.1Q-tagged frame on a pod port",
    UnknownEthertype => "pod port frame that is neither IPv4, IPv6 nor ARP",
    BadIpHeader => "IP header with a bad version, header length or total length",
    BadIpv6ExtHeader => "IPv6 extension header chain malformed or too long",
    ArpMalformed => "ARP that is not Ethernet/IPv4 or is truncated",
    ArpIgnored => "ARP that needs no answer (not a request, or for the pod's own address)",
    NdIgnored => "ICMPv6 neighbor or multicast listener discovery the dataplane does not answer",
    Spoofed => "source address is not the sending pod's",
    Multicast => "multicast or broadcast IP destination from a pod",
    TtlExceeded => "TTL or hop limit expired and no ICMP error may be sent about it",
    UnknownPod => "destination inside the cluster CIDRs but no known pod or node",
    NoService => "destination inside the Service CIDRs but no Service on that address and port",
    NoLocalEndpoint => "externalTrafficPolicy Local Service with no endpoint on this node",
    NoBackend => "Service without usable backends, and no ICMP error could be sent",
    SnatExhausted => "no free SNAT port found within the bounded number of attempts",
    ConntrackFull => "conntrack table full: new flow refused",
    ReplyTupleTaken => "a new flow's reply tuple is already another flow's",
    UnsupportedProtocol => "flow needs NAT but its protocol cannot be translated",
    NoSourceAddress => "the node has no address of the family needed (SNAT, VXLAN, ICMP)",
    VxlanMalformed => "VXLAN frame for this node that is truncated or lacks the I flag",
    BadVni => "VXLAN frame with a VNI other than the configured one",
    DecapNotLocal => "decapsulated frame not for a local pod and matching no flow",
    NoRemoteUnderlay => "remote node has no underlay address of a usable family",
    TooBig => "too big for the VXLAN path and may not be fragmented (IPv4 DF clear)",
    IcmpErrorMalformed => "ICMP error whose embedded header is truncated or malformed",
    FragStashed => "non-first fragment copied into the stash until its first fragment arrives",
    FragStashFull => "non-first fragment arriving first with the fragment stash full",
    FragTimeout => "stashed fragment whose first fragment never came",
    FragDropped => "fragment of a datagram whose first fragment was dropped",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_index_and_a_description() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.description().is_empty());
            assert!(!r.name().is_empty());
        }
        assert_eq!(DropReason::COUNT, DropReason::ALL.len());
    }
}
