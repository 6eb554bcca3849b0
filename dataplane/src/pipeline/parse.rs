//! Parsing: per-frame metadata (offsets of the IP and L4 headers, family, flow
//! key, fragment state, where the ports and the L4 checksum are) kept in a
//! parallel array on the pipeline. Lengths are checked here once; later stages
//! index the frame at these offsets without re-checking (the same contract as a
//! wire view after `new_checked`). The hot path reads fixed offsets directly
//! rather than through `wire` views so one pass fills the metadata the NAT and
//! forwarding stages need (no view is rebuilt per stage); malformed input is a
//! `DropReason`, never a panic (see the fuzz test in `pipeline/tests.rs`).

use super::drop::DropReason;
use crate::conntrack::FlowKey;
use crate::proto;
use crate::state::RouteTarget;
use crate::wire::checksum;

pub(crate) const ETH_LEN: usize = 14;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
pub(crate) const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Where the frame came from, as far as the flow logic cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Ingress {
    #[default]
    Uplink,
    /// A local pod (index into `Tables::pod`).
    Pod(u32),
    /// Decapsulated from VXLAN (the frame now starts at the inner Ethernet header).
    Overlay,
}

/// How the L4 header maps to the flow key's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum L4 {
    /// TCP: ports at 0 and 2, checksum at 16.
    Tcp,
    /// UDP: ports at 0 and 2, checksum at 6.
    Udp,
    /// ICMP/ICMPv6 echo request: the identifier (at 4) is the source "port".
    EchoRequest,
    /// ICMP/ICMPv6 echo reply: the identifier is the destination "port".
    EchoReply,
    /// ICMP/ICMPv6 error: an embedded IP header follows the 8-byte header.
    IcmpError,
    /// ICMPv6 neighbor discovery (133..=137) or multicast listener discovery
    /// (130..=132, 143).
    Nd,
    /// Anything else, or a non-first fragment: no ports.
    #[default]
    Other,
}

/// Fragment state of the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Frag {
    #[default]
    None,
    /// Offset 0, more fragments follow: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

/// Per-frame metadata. Offsets are from the frame's current head.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Meta {
    pub ingress: Ingress,
    pub l3: u16,
    pub l4: u16,
    pub family: u8,
    pub proto: u8,
    pub ttl: u8,
    pub tcp_flags: u8,
    pub l4kind: L4,
    pub frag: Frag,
    pub frag_ident: u32,
    pub dont_frag: bool,
    /// The tuple as received.
    pub key: FlowKey,
    /// The tuple as sent (after NAT); meaningful only when `nat` is set (see
    /// [`Meta::out`]).
    pub xkey: FlowKey,
    /// Whether the frame was translated (so an ICMP error about it is built
    /// from the untranslated packet).
    pub nat: bool,
    /// Offsets (from the frame head) of the L4 checksum, the source and the
    /// destination port or echo identifier; 0 when absent (non-first fragment,
    /// UDP over IPv4 without checksum, no such field).
    pub csum_at: u16,
    pub sport_at: u16,
    pub dport_at: u16,
    /// Whether the L4 checksum covers the pseudo-header (TCP, UDP, ICMPv6).
    pub pseudo: bool,
    /// The route of the untranslated destination, when the flow stage already
    /// looked it up (saves forwarding a second lookup).
    pub route: Option<RouteTarget>,
}

impl Meta {
    /// The tuple the packet has now: translated or as received.
    #[inline]
    pub fn out(&self) -> &FlowKey {
        if self.nat {
            &self.xkey
        } else {
            &self.key
        }
    }
}

#[inline]
pub(crate) fn rd16(d: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([d[off], d[off + 1]])
}

#[inline]
pub(crate) fn wr16(d: &mut [u8], off: usize, v: u16) {
    d[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn rd4(d: &[u8], off: usize) -> [u8; 4] {
    [d[off], d[off + 1], d[off + 2], d[off + 3]]
}

#[inline]
pub(crate) fn rd16b(d: &[u8], off: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&d[off..off + 16]);
    a
}

/// The Ethernet type after at most one VLAN tag, and the L3 offset; `None` if
/// the frame is shorter than its Ethernet header.
#[inline]
pub(crate) fn ethertype(d: &[u8]) -> Option<(u16, usize)> {
    if d.len() < ETH_LEN {
        return None;
    }
    let t = rd16(d, 12);
    if t == ETHERTYPE_IPV4 {
        return Some((t, ETH_LEN));
    }
    if t == ETHERTYPE_VLAN || t == ETHERTYPE_QINQ {
        if d.len() < ETH_LEN + 4 {
            return None;
        }
        return Some((rd16(d, 16), ETH_LEN + 4));
    }
    Some((t, ETH_LEN))
}

/// Parses the IP packet at `l3` (IPv4 or IPv6 by `ethertype`) into `m`. Returns the
/// IP packet's end (l3 + total length) so the caller can trim Ethernet padding.
#[inline(always)]
pub(crate) fn parse_ip(
    d: &[u8],
    l3: usize,
    ethertype: u16,
    m: &mut Meta,
) -> Result<usize, DropReason> {
    m.l3 = l3 as u16;
    m.nat = false;
    m.frag = Frag::None;
    m.frag_ident = 0;
    m.dont_frag = false;
    m.route = None;
    if ethertype == ETHERTYPE_IPV4 {
        parse_v4(d, l3, m)
    } else {
        parse_v6(d, l3, m)
    }
}

#[inline(always)]
fn parse_v4(d: &[u8], l3: usize, m: &mut Meta) -> Result<usize, DropReason> {
    let ip = d.get(l3..).ok_or(DropReason::Truncated)?;
    let Some(h) = ip.first_chunk::<20>() else {
        return Err(DropReason::Truncated);
    };
    let vihl = h[0];
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if vihl == 0x45 {
        // No options (nearly every packet): the 20 bytes already in hand.
        if !header_sum_ok(h) {
            return Err(DropReason::BadIpChecksum);
        }
    } else if vihl >> 4 != 4 || ihl < 20 {
        return Err(DropReason::BadIpHeader);
    }
    if total > ip.len() {
        return Err(DropReason::Truncated);
    }
    if total < ihl {
        return Err(DropReason::BadIpHeader);
    }
    if vihl != 0x45 && checksum::finish(checksum::sum(&ip[..ihl])) != 0 {
        return Err(DropReason::BadIpChecksum);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    m.dont_frag = frag & 0x4000 != 0;
    m.family = 4;
    m.ttl = h[8];
    m.proto = h[9];
    m.frag = if frag & 0x3fff == 0 {
        Frag::None
    } else {
        m.frag_ident = u16::from_be_bytes([h[4], h[5]]) as u32;
        if frag & 0x1fff != 0 {
            Frag::Later
        } else {
            Frag::First
        }
    };
    m.l4 = (l3 + ihl) as u16;
    let (sport, dport) = parse_l4(&ip[ihl..total], l3 + ihl, m, proto::ICMP)?;
    m.key = FlowKey::v4(
        [h[12], h[13], h[14], h[15]],
        [h[16], h[17], h[18], h[19]],
        sport,
        dport,
        h[9],
    );
    Ok(l3 + total)
}

/// Whether a 20-byte IPv4 header's checksum verifies (RFC 1071: the header
/// sums to 0xffff). Verified as a Linux router does (`ip_rcv` drops bad
/// headers): the incremental updates of NAT and the TTL decrement would keep
/// a bad checksum bad, so the receiver would still drop the packet, but only
/// after conntrack, Maglev and routing acted on a corrupt header (a flow
/// entry for a mangled address). A deliberate cost: callgrind, about 25
/// instructions per IPv4 header (twice for VXLAN: outer and inner). Summed as
/// five native-endian 32-bit words in a 64-bit accumulator (no carries to
/// track), which folds to the byte-swapped 16-bit sum, and 0xffff is its own
/// swap: about 14 instructions (two 64-bit words with end-around carries
/// took 22).
#[inline(always)]
pub(crate) fn header_sum_ok(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold64(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// Folds a one's-complement sum to 16 bits with end-around carries: adding a
/// word to itself rotated by half its width leaves the carried sum of both
/// halves in the upper half (3 instructions per halving).
#[inline(always)]
pub(crate) fn fold64(s: u64) -> u16 {
    let s = (s.wrapping_add(s.rotate_right(32)) >> 32) as u32;
    (s.wrapping_add(s.rotate_right(16)) >> 16) as u16
}

#[inline]
fn parse_v6(d: &[u8], l3: usize, m: &mut Meta) -> Result<usize, DropReason> {
    let ip = d.get(l3..).ok_or(DropReason::Truncated)?;
    if ip.len() < 40 {
        return Err(DropReason::Truncated);
    }
    if ip[0] >> 4 != 6 {
        return Err(DropReason::BadIpHeader);
    }
    let total = 40 + rd16(ip, 4) as usize;
    if total > ip.len() {
        return Err(DropReason::Truncated);
    }
    let ip = &ip[..total];
    m.family = 6;
    m.ttl = ip[7];
    // Walk the extension headers (bounded) to the upper layer.
    let mut nh = ip[6];
    let mut off = 40usize;
    for _ in 0..8 {
        match nh {
            0 | 43 | 60 | 51 => {
                if off + 8 > total {
                    return Err(DropReason::BadIpv6ExtHeader);
                }
                let len = if nh == 51 {
                    (ip[off + 1] as usize + 2) * 4
                } else {
                    (ip[off + 1] as usize + 1) * 8
                };
                nh = ip[off];
                off += len;
            }
            44 => {
                if off + 8 > total {
                    return Err(DropReason::BadIpv6ExtHeader);
                }
                let fo = rd16(ip, off + 2);
                m.frag_ident = u32::from_be_bytes(rd4(ip, off + 4));
                m.frag = if fo & 0xfff8 != 0 {
                    Frag::Later
                } else if fo & 1 != 0 {
                    Frag::First
                } else {
                    Frag::None
                };
                nh = ip[off];
                off += 8;
            }
            _ => break,
        }
    }
    if matches!(nh, 0 | 43 | 60 | 51 | 44) || off > total {
        return Err(DropReason::BadIpv6ExtHeader);
    }
    m.proto = nh;
    let l4 = l3 + off;
    m.l4 = l4 as u16;
    let src = rd16b(ip, 8);
    let dst = rd16b(ip, 24);
    let (sport, dport) = parse_l4(&ip[off..total], l4, m, proto::ICMPV6)?;
    m.key = FlowKey::v6(src, dst, sport, dport, m.proto);
    Ok(l3 + total)
}

/// Reads ports (or the echo identifier) and the L4 kind from `l`, the bytes
/// from the L4 header (at frame offset `l4`) to the IP packet's end; checks
/// the L4 header fits (for non-first fragments there is none). Each kind takes
/// its header as one fixed-size chunk, so the reads below are unchecked.
#[inline(always)]
fn parse_l4(l: &[u8], l4: usize, m: &mut Meta, icmp: u8) -> Result<(u16, u16), DropReason> {
    m.tcp_flags = 0;
    m.csum_at = 0;
    m.sport_at = 0;
    m.dport_at = 0;
    m.pseudo = false;
    if m.frag == Frag::Later {
        m.l4kind = L4::Other;
        return Ok((0, 0));
    }
    let at = |off: usize| (l4 + off) as u16;
    match m.proto {
        proto::UDP => {
            let Some(u) = l.first_chunk::<8>() else {
                return Err(DropReason::Truncated);
            };
            m.l4kind = L4::Udp;
            // UDP over IPv4 with checksum 0 carries none: it stays 0.
            if icmp == proto::ICMPV6 || u[6] | u[7] != 0 {
                m.csum_at = at(6);
            }
            m.sport_at = at(0);
            m.dport_at = at(2);
            m.pseudo = true;
            Ok((
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
            ))
        }
        proto::TCP => {
            let Some(t) = l.first_chunk::<20>() else {
                return Err(DropReason::Truncated);
            };
            m.l4kind = L4::Tcp;
            m.tcp_flags = t[13];
            m.csum_at = at(16);
            m.sport_at = at(0);
            m.dport_at = at(2);
            m.pseudo = true;
            Ok((
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            ))
        }
        p if p == icmp => {
            let Some(h) = l.first_chunk::<8>() else {
                return Err(DropReason::Truncated);
            };
            let t = h[0];
            let id = u16::from_be_bytes([h[4], h[5]]);
            let (kind, ports) = if icmp == proto::ICMP {
                match t {
                    8 => (L4::EchoRequest, (id, 0)),
                    0 => (L4::EchoReply, (0, id)),
                    3 | 4 | 5 | 11 | 12 => (L4::IcmpError, (0, 0)),
                    _ => (L4::Other, (0, 0)),
                }
            } else {
                match t {
                    128 => (L4::EchoRequest, (id, 0)),
                    129 => (L4::EchoReply, (0, id)),
                    1..=4 => (L4::IcmpError, (0, 0)),
                    130..=137 | 143 => (L4::Nd, (0, 0)),
                    _ => (L4::Other, (0, 0)),
                }
            };
            m.l4kind = kind;
            m.csum_at = at(2);
            m.pseudo = icmp == proto::ICMPV6;
            match kind {
                L4::EchoRequest => m.sport_at = at(4),
                L4::EchoReply => m.dport_at = at(4),
                _ => {}
            }
            Ok(ports)
        }
        _ => {
            m.l4kind = L4::Other;
            Ok((0, 0))
        }
    }
}

/// Whether a destination is multicast or broadcast.
#[inline]
pub(crate) fn is_multicast(k: &FlowKey) -> bool {
    // IPv4 224.0.0.0/4 and up (broadcast included), IPv6 ff00::/8: one
    // compare against a per-family threshold (0xff is the largest first byte).
    k.dst[0] >= if k.family == 4 { 224 } else { 0xff }
}
