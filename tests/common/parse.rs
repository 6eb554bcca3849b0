//! The pipeline's output read back with etherparse: constructing a [`Seen`]
//! checks the IPv4 header checksum and, when the whole segment is there, the
//! L4 (TCP, UDP, ICMP, ICMPv6) checksum.
use std::net::IpAddr;

use etherparse::{
    Ethernet2Header, Icmpv4Header, Icmpv6Header, Icmpv6Slice, Ipv4Header, Ipv6Header, TcpHeader,
    UdpHeader,
};

use super::FragHeader6;

// ---------------------------------------------------------------------------
// Parsing the output back (etherparse) with every checksum checked
// ---------------------------------------------------------------------------

/// A frame read back with etherparse. Constructing it checks the IPv4 header
/// checksum and, when the whole L4 segment is present, the L4 checksum.
#[derive(Clone, Debug)]
pub struct Seen {
    pub eth: Ethernet2Header,
    pub ip: SeenIp,
}

#[derive(Clone, Debug)]
pub struct SeenIp {
    pub v4: Option<Ipv4Header>,
    pub v6: Option<Ipv6Header>,
    pub frag6: Option<FragHeader6>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of this fragment in bytes (0 for unfragmented packets).
    pub frag_offset: u16,
    pub more_frags: bool,
    /// The IP payload after extension headers, trimmed to the length fields.
    pub l4: Vec<u8>,
    /// Ports for TCP/UDP; ICMP echo identifier as `sport` (0 otherwise).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ICMP bytes 5..8 (echo id/seq, MTU ...).
    pub icmp_rest: [u8; 4],
    /// The L4 payload (after the TCP/UDP/ICMP header).
    pub payload: Vec<u8>,
    pub l4_checksum: u16,
}

#[track_caller]
pub fn parse(frame: &[u8]) -> Seen {
    let (eth, rest) = Ethernet2Header::from_slice(frame).expect("ethernet header");
    let ip = match eth.ether_type.0 {
        0x0800 | 0x86dd => parse_ip(rest, true),
        other => panic!("not IP: ethertype {other:#06x}"),
    };
    Seen { eth, ip }
}

/// Parses an IP packet (no Ethernet). With `whole`, the packet must be
/// complete and its checksums are verified; without it (an ICMP quote), only
/// the IPv4 header checksum is.
#[track_caller]
pub fn parse_ip(bytes: &[u8], whole: bool) -> SeenIp {
    let version = bytes.first().expect("empty IP packet") >> 4;
    let (v4h, v6h, frag6, src, dst, ttl, proto, frag_offset, more_frags, l4) = if version == 4 {
        let (h, _) = Ipv4Header::from_slice(bytes).expect("ipv4 header");
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let end = if whole {
            assert!(bytes.len() >= h.total_len as usize, "IPv4 total length");
            h.total_len as usize
        } else {
            bytes.len().min(h.total_len as usize)
        };
        let l4 = bytes[h.header_len()..end].to_vec();
        (
            Some(h.clone()),
            None,
            None,
            IpAddr::from(h.source),
            IpAddr::from(h.destination),
            h.time_to_live,
            h.protocol.0,
            h.fragment_offset.value() * 8,
            h.more_fragments,
            l4,
        )
    } else if version == 6 {
        let (h, _) = Ipv6Header::from_slice(bytes).expect("ipv6 header");
        let end = if whole {
            assert!(
                bytes.len() >= 40 + h.payload_length as usize,
                "IPv6 payload length"
            );
            40 + h.payload_length as usize
        } else {
            bytes.len().min(40 + h.payload_length as usize)
        };
        let mut l4 = bytes[40..end].to_vec();
        let mut frag = None;
        let mut proto = h.next_header.0;
        // Hop-by-hop (0) and destination options (60): skip (RFC 8200 4.3/4.6).
        while proto == 0 || proto == 60 {
            assert!(l4.len() >= 8, "extension header");
            let len = (l4[1] as usize + 1) * 8;
            proto = l4[0];
            l4 = l4[len..].to_vec();
        }
        if proto == 44 {
            let fh = FragHeader6::parse(&l4);
            proto = fh.next_header;
            l4 = l4[8..].to_vec();
            frag = Some(fh);
        }
        let (off, more) = frag
            .as_ref()
            .map(|f| (f.offset, f.more))
            .unwrap_or((0, false));
        (
            None,
            Some(h.clone()),
            frag,
            IpAddr::from(h.source),
            IpAddr::from(h.destination),
            h.hop_limit,
            proto,
            off,
            more,
            l4,
        )
    } else {
        panic!("IP version {version}");
    };
    let mut s = SeenIp {
        v4: v4h,
        v6: v6h,
        frag6,
        src,
        dst,
        ttl,
        proto,
        frag_offset,
        more_frags,
        l4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        icmp_rest: [0; 4],
        payload: Vec::new(),
        l4_checksum: 0,
    };
    if frag_offset != 0 {
        // A non-first fragment: no L4 header here.
        s.payload = s.l4.clone();
        return s;
    }
    let fragmented = more_frags;
    let check = whole && !fragmented;
    match proto {
        17 => {
            let (u, payload) = UdpHeader::from_slice(&s.l4).expect("udp header");
            s.sport = u.source_port;
            s.dport = u.destination_port;
            s.l4_checksum = u.checksum;
            let plen = (u.length as usize).saturating_sub(8).min(payload.len());
            s.payload = payload[..if check { plen } else { payload.len() }].to_vec();
            if check {
                assert_eq!(u.length as usize, s.l4.len(), "UDP length");
                let want = match (&s.v4, &s.v6) {
                    (Some(h), _) => u.calc_checksum_ipv4(h, &s.payload),
                    (_, Some(h)) => u.calc_checksum_ipv6(h, &s.payload),
                    _ => unreachable!(),
                }
                .expect("udp checksum");
                if !(s.v4.is_some() && u.checksum == 0) {
                    assert_eq!(u.checksum, want, "UDP checksum");
                }
            }
        }
        6 => {
            let (t, payload) = TcpHeader::from_slice(&s.l4).expect("tcp header");
            s.sport = t.source_port;
            s.dport = t.destination_port;
            s.l4_checksum = t.checksum;
            s.tcp_flags = (t.fin as u8)
                | (t.syn as u8) << 1
                | (t.rst as u8) << 2
                | (t.psh as u8) << 3
                | (t.ack as u8) << 4;
            s.payload = payload.to_vec();
            if check {
                let want = match (&s.v4, &s.v6) {
                    (Some(h), _) => t.calc_checksum_ipv4(h, payload),
                    (_, Some(h)) => t.calc_checksum_ipv6(h, payload),
                    _ => unreachable!(),
                }
                .expect("tcp checksum");
                assert_eq!(t.checksum, want, "TCP checksum");
            }
        }
        1 => {
            let (h, payload) = Icmpv4Header::from_slice(&s.l4).expect("icmpv4 header");
            let b = &s.l4;
            s.icmp_type = b[0];
            s.icmp_code = b[1];
            s.icmp_rest = [b[4], b[5], b[6], b[7]];
            s.l4_checksum = h.checksum;
            s.payload = payload.to_vec();
            if s.icmp_type == 0 || s.icmp_type == 8 {
                s.sport = u16::from_be_bytes([b[4], b[5]]);
            }
            if check {
                // RFC 1071: the sum over the whole message, checksum
                // included, is all ones. (etherparse's typed re-encoding
                // drops bytes 5..8 of some types, so sum the raw bytes.)
                assert_eq!(rfc1071_sum(&s.l4), 0xffff, "ICMPv4 checksum");
            }
        }
        58 => {
            let (h, payload) = Icmpv6Header::from_slice(&s.l4).expect("icmpv6 header");
            let b = &s.l4;
            s.icmp_type = b[0];
            s.icmp_code = b[1];
            s.icmp_rest = [b[4], b[5], b[6], b[7]];
            s.l4_checksum = h.checksum;
            s.payload = payload.to_vec();
            if s.icmp_type == 128 || s.icmp_type == 129 {
                s.sport = u16::from_be_bytes([b[4], b[5]]);
            }
            if check {
                let sl = Icmpv6Slice::from_slice(&s.l4).expect("icmpv6");
                let (src, dst) = match (s.src, s.dst) {
                    (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets(), b.octets()),
                    _ => unreachable!(),
                };
                assert!(sl.is_checksum_valid(src, dst), "ICMPv6 checksum");
            }
        }
        _ => {}
    }
    s
}

/// The folded RFC 1071 one's-complement sum of `data`.
pub fn rfc1071_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

impl std::ops::Deref for Seen {
    type Target = SeenIp;
    fn deref(&self) -> &SeenIp {
        &self.ip
    }
}

impl Seen {
    /// For an encapsulated frame: the VXLAN header's flags byte, its VNI, and
    /// the inner Ethernet frame. Checks the reserved bytes are zero.
    #[track_caller]
    pub fn vxlan(&self) -> (u8, u32, Vec<u8>) {
        assert_eq!(self.proto, 17, "VXLAN rides on UDP");
        let p = &self.payload;
        assert!(p.len() >= 8, "VXLAN header");
        assert_eq!(&p[1..4], &[0, 0, 0], "VXLAN reserved bytes");
        assert_eq!(p[7], 0, "VXLAN reserved byte");
        let vni = u32::from_be_bytes([0, p[4], p[5], p[6]]);
        (p[0], vni, p[8..].to_vec())
    }

    /// The IP packet quoted by an ICMP error (parsed without L4 checks).
    #[track_caller]
    pub fn quoted(&self) -> SeenIp {
        parse_ip(&self.payload, false)
    }

    pub fn quoted_bytes(&self) -> &[u8] {
        &self.payload
    }
}

/// Reassembles parsed fragments (any order) into the upper-layer bytes.
#[track_caller]
pub fn reassemble(frags: &[SeenIp]) -> Vec<u8> {
    let mut parts: Vec<(u16, &[u8])> = frags
        .iter()
        .map(|s| (s.frag_offset, s.l4.as_slice()))
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (off, data) in parts {
        assert_eq!(off as usize, out.len(), "fragments leave no holes");
        out.extend_from_slice(data);
    }
    assert!(
        !frags
            .iter()
            .any(|f| f.frag_offset as usize + f.l4.len() == out.len() && f.more_frags),
        "the last fragment has MF clear"
    );
    out
}

/// Checks a reassembled UDP datagram (header + payload) against the given
/// addresses with etherparse and returns (sport, dport, payload).
#[track_caller]
pub fn check_udp_datagram(src: IpAddr, dst: IpAddr, dgram: &[u8]) -> (u16, u16, Vec<u8>) {
    let (u, payload) = UdpHeader::from_slice(dgram).expect("udp header");
    assert_eq!(u.length as usize, dgram.len(), "UDP length");
    let want = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => u.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => u.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload),
        _ => panic!("mixed families"),
    }
    .expect("checksum");
    assert_eq!(u.checksum, want, "reassembled UDP checksum");
    (u.source_port, u.destination_port, payload.to_vec())
}
