//! Building ICMP and ICMPv6 errors in place: the offending packet (untranslated)
//! stays where it is and becomes the quoted data; new Ethernet, IP and ICMP
//! headers are pushed in front of it (emitted through the `wire` reprs, each
//! ending with its checksum) and the frame is trimmed to the quote limit (576
//! bytes total for IPv4, RFC 1812 4.3.2.3; 1280 for IPv6, RFC 4443 2.4).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::parse::{is_multicast, Frag, Meta, ETH_LEN, L4};
use super::Frame;
use crate::proto;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{icmpv4, icmpv6, ipv4, ipv6};
use crate::Mac;

/// The error to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IcmpError {
    /// TTL / hop limit exceeded in transit.
    TimeExceeded,
    /// IPv4 fragmentation needed (DF set) / IPv6 packet too big, with the MTU.
    TooBig(u16),
    /// Port unreachable (a Service without endpoints).
    PortUnreachable,
}

/// Whether an error may be sent about this packet (RFC 1122 3.2.2 / RFC 4443
/// 2.4 (e)): not about an ICMP error, a non-first fragment, or a packet from an
/// unspecified or multicast source, or to a multicast destination; and the frame's IP header is where a rebuilt
/// frame expects it.
#[inline]
pub(crate) fn allowed(m: &Meta) -> bool {
    let src = &m.key.src;
    let unspecified = if m.family == 4 {
        src[..4] == [0; 4] || src[0] >= 224
    } else {
        *src == [0; 16] || src[0] == 0xff
    };
    m.l4kind != L4::IcmpError
        && !is_multicast(&m.key)
        && m.frag != Frag::Later
        && !unspecified
        && m.l3 as usize == ETH_LEN
}

/// Turns the frame into `err` about itself, sent from `src` (key form) with
/// source MAC `our_mac` back to the frame's sender. The frame must hold the
/// packet as received (untranslated). False if the frame has no room.
pub(crate) fn build(
    frame: &mut Frame,
    m: &Meta,
    err: IcmpError,
    src: &[u8; 16],
    our_mac: Mac,
) -> bool {
    let orig_len = frame.len().saturating_sub(ETH_LEN);
    let mut peer_mac = [0u8; 6];
    peer_mac.copy_from_slice(&frame.data()[6..12]);
    let dst = m.key.src;
    let (ip_len, limit, ethertype) = if m.family == 4 {
        (ipv4::HEADER_LEN, 576, EtherType::Ipv4)
    } else {
        (ipv6::HEADER_LEN, 1280, EtherType::Ipv6)
    };
    let head = ip_len + icmpv4::HEADER_LEN;
    let quote = orig_len.min(limit - head);
    frame.trim(ETH_LEN + quote);
    if !frame.push_head(head) {
        return false;
    }
    let d = frame.data_mut();
    let (eth, rest) = d.split_at_mut(ETH_LEN);
    let (ip, icmp) = rest.split_at_mut(ip_len);
    ethernet::Repr {
        src: our_mac,
        dst: peer_mac,
        ethertype,
    }
    .emit(&mut ethernet::Frame::new_unchecked(eth));
    let payload_len = icmp.len();
    if m.family == 4 {
        let ip_repr = ipv4::Repr {
            src: Ipv4Addr::new(src[0], src[1], src[2], src[3]),
            dst: Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]),
            protocol: proto::ICMP,
            payload_len,
            ttl: 64,
            ident: 0,
            dont_frag: false,
            dscp_ecn: 0,
        };
        ip_repr.emit(&mut ipv4::Packet::new_unchecked(ip));
        let repr = match err {
            IcmpError::TimeExceeded => icmpv4::Repr::TimeExceeded {
                code: icmpv4::TTL_EXCEEDED,
            },
            IcmpError::TooBig(mtu) => icmpv4::Repr::DstUnreachable {
                code: icmpv4::FRAG_NEEDED,
                next_hop_mtu: mtu,
            },
            IcmpError::PortUnreachable => icmpv4::Repr::DstUnreachable {
                code: icmpv4::PORT_UNREACHABLE,
                next_hop_mtu: 0,
            },
        };
        repr.emit(&mut icmpv4::Packet::new_unchecked(icmp));
    } else {
        let ip_repr = ipv6::Repr {
            src: Ipv6Addr::from(*src),
            dst: Ipv6Addr::from(dst),
            next_header: proto::ICMPV6,
            payload_len,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        ip_repr.emit(&mut ipv6::Packet::new_unchecked(ip));
        let repr = match err {
            IcmpError::TimeExceeded => icmpv6::Repr::TimeExceeded {
                code: icmpv6::HOP_LIMIT_EXCEEDED,
            },
            IcmpError::TooBig(mtu) => icmpv6::Repr::PacketTooBig { mtu: mtu.into() },
            IcmpError::PortUnreachable => icmpv6::Repr::DstUnreachable {
                code: icmpv6::PORT_UNREACHABLE,
            },
        };
        repr.emit(&mut icmpv6::Packet::new_unchecked(icmp), src, &dst);
    }
    true
}
