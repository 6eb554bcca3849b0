//! Frames to send: Ethernet/IP/L4 through etherparse's `PacketBuilder`, and
//! by hand from the RFC layouts where etherparse has no builder (ARP, NS,
//! VXLAN, the IPv6 Fragment header).
use std::net::{IpAddr, Ipv6Addr};

use super::{ip4, ip6, A_GW_MAC, POD1_MAC, POD2_MAC, ROUTER_MAC};
use super::{Fam, A_UPLINK_MAC, A_VTEP_MAC, B_UPLINK_MAC, B_VTEP_MAC, VXLAN_PORT};
use dataplane::Mac;
use etherparse::{Icmpv6Type, IpFragOffset, IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};

// ---------------------------------------------------------------------------
// Frame builders (etherparse)
// ---------------------------------------------------------------------------

pub mod tcpf {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// The transport part of a test packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp { sport: u16, dport: u16 },
    Tcp { sport: u16, dport: u16, flags: u8 },
    EchoRequest { id: u16, seq: u16 },
    EchoReply { id: u16, seq: u16 },
}

pub fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

pub fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        flags,
    }
}

/// A packet to build: Ethernet + IPv4/IPv6 + L4 + payload.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub eth_src: Mac,
    pub eth_dst: Mac,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Pkt {
    pub fn new(eth_src: Mac, eth_dst: Mac, src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        Pkt {
            eth_src,
            eth_dst,
            src,
            dst,
            ttl: 64,
            l4,
            payload: b"twill test payload".to_vec(),
        }
    }

    /// From pod1 (port 1) to `dst` via the gateway MAC.
    pub fn from_pod1(f: Fam, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(POD1_MAC, A_GW_MAC, f.pod1(), dst, l4)
    }

    pub fn from_pod2(f: Fam, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(POD2_MAC, A_GW_MAC, f.pod2(), dst, l4)
    }

    /// Arriving on node A's uplink from the router.
    pub fn from_uplink(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
        Pkt::new(ROUTER_MAC, A_UPLINK_MAC, src, dst, l4)
    }

    pub fn ttl(mut self, ttl: u8) -> Pkt {
        self.ttl = ttl;
        self
    }

    pub fn payload(mut self, p: &[u8]) -> Pkt {
        self.payload = p.to_vec();
        self
    }

    /// Pads the payload so that the IP packet is `ip_len` bytes long.
    pub fn ip_len(mut self, ip_len: usize) -> Pkt {
        let ip_hdr = if self.src.is_ipv4() { 20 } else { 40 };
        let l4_hdr = match self.l4 {
            L4::Udp { .. } | L4::EchoRequest { .. } | L4::EchoReply { .. } => 8,
            L4::Tcp { .. } => 20,
        };
        self.payload = (0..ip_len - ip_hdr - l4_hdr).map(|i| i as u8).collect();
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.eth_src, self.eth_dst);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => panic!("mixed families"),
        };
        let v6 = self.src.is_ipv6();
        let mut out = Vec::new();
        match self.l4 {
            L4::Udp { sport, dport } => ip.udp(sport, dport).write(&mut out, &self.payload),
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut t = ip.tcp(sport, dport, 0x1000_0000, 64240);
                if flags & tcpf::SYN != 0 {
                    t = t.syn();
                }
                if flags & tcpf::ACK != 0 {
                    t = t.ack(0x2000_0000);
                }
                if flags & tcpf::FIN != 0 {
                    t = t.fin();
                }
                if flags & tcpf::RST != 0 {
                    t = t.rst();
                }
                if flags & tcpf::PSH != 0 {
                    t = t.psh();
                }
                t.write(&mut out, &self.payload)
            }
            L4::EchoRequest { id, seq } if v6 => ip
                .icmpv6_echo_request(id, seq)
                .write(&mut out, &self.payload),
            L4::EchoRequest { id, seq } => ip
                .icmpv4_echo_request(id, seq)
                .write(&mut out, &self.payload),
            L4::EchoReply { id, seq } if v6 => {
                ip.icmpv6_echo_reply(id, seq).write(&mut out, &self.payload)
            }
            L4::EchoReply { id, seq } => {
                ip.icmpv4_echo_reply(id, seq).write(&mut out, &self.payload)
            }
        }
        .expect("etherparse builds the test frame");
        out
    }
}

/// Rewrites the IPv4 header of an Ethernet frame (then recomputes its
/// checksum with etherparse).
pub fn edit_ipv4(frame: &mut [u8], f: impl FnOnce(&mut Ipv4Header)) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).expect("ipv4 header");
    let len = h.header_len();
    f(&mut h);
    h.header_checksum = h.calc_header_checksum();
    frame[14..14 + len].copy_from_slice(&h.to_bytes());
}

/// An ARP request (RFC 826, Ethernet/IPv4) broadcast by `sender`.
pub fn arp_request(sender_mac: Mac, sender_ip: IpAddr, target_ip: IpAddr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ip4(sender_ip).octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip4(target_ip).octets());
    f
}

/// The IPv6 solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A Neighbor Solicitation (RFC 4861 4.3) for `target` with a source
/// link-layer address option, sent to the solicited-node multicast group.
pub fn neighbor_solicit(sender_mac: Mac, sender_ip: IpAddr, target: IpAddr) -> Vec<u8> {
    let target = ip6(target);
    let dst = solicited_node(target);
    let d = dst.octets();
    let eth_dst = [0x33, 0x33, d[12], d[13], d[14], d[15]];
    let mut body = Vec::new();
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&sender_mac);
    let ty = Icmpv6Type::Unknown {
        type_u8: 135,
        code_u8: 0,
        bytes5to8: [0; 4],
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(sender_mac, eth_dst)
        .ipv6(ip6(sender_ip).octets(), d, 255)
        .icmpv6(ty)
        .write(&mut out, &body)
        .expect("NS");
    out
}

/// An ICMPv4/ICMPv6 error (`ty`/`code`, bytes 5..8 `rest`) from `src` to
/// `dst` quoting `quoted` (an IP packet, no Ethernet), as Ethernet `eth_src`
/// -> `eth_dst`.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    eth_src: Mac,
    eth_dst: Mac,
    src: IpAddr,
    dst: IpAddr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2(eth_src, eth_dst);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ty = etherparse::Icmpv4Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            };
            eth.ipv4(s.octets(), d.octets(), 64)
                .icmpv4(ty)
                .write(&mut out, quoted)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ty = Icmpv6Type::Unknown {
                type_u8: ty,
                code_u8: code,
                bytes5to8: rest,
            };
            eth.ipv6(s.octets(), d.octets(), 64)
                .icmpv6(ty)
                .write(&mut out, quoted)
        }
        _ => panic!("mixed families"),
    }
    .expect("icmp error");
    out
}

/// The VXLAN header (RFC 7348 5): I flag, reserved zero, VNI.
pub fn vxlan_header(vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [0x08, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// `inner` (an Ethernet frame) wrapped in VXLAN/UDP/IP/Ethernet from node B
/// to node A as node B would send it.
pub fn vxlan_from_b(underlay: Fam, sport: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vxlan_header(vni).to_vec();
    payload.extend_from_slice(inner);
    let mut p = Pkt::new(
        B_UPLINK_MAC,
        A_UPLINK_MAC,
        underlay.node_b(),
        underlay.node_a(),
        udp(sport, VXLAN_PORT),
    );
    p.payload = payload;
    let mut f = p.build();
    if underlay == Fam::V4 {
        // Tunnel endpoints send outer IPv4 UDP without a checksum and DF clear.
        edit_ipv4(&mut f, |h| h.dont_fragment = false);
        f[14 + 20 + 6] = 0;
        f[14 + 20 + 7] = 0;
    }
    f
}

/// The inner Ethernet frame node B's VTEP sends for an IP packet.
pub fn inner_from_b(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
    Pkt::new(B_VTEP_MAC, A_VTEP_MAC, src, dst, l4)
}

// ---------------------------------------------------------------------------
// Fragments
// ---------------------------------------------------------------------------

/// Splits the IP packet in an Ethernet frame into fragments whose payloads
/// are at most `chunk` bytes (a multiple of 8), IPv4 style or with an IPv6
/// fragment header, all with identification `ident`.
pub fn fragment(frame: &[u8], chunk: usize, ident: u32) -> Vec<Vec<u8>> {
    assert_eq!(chunk % 8, 0);
    let eth = &frame[..14];
    let ip = &frame[14..];
    let mut out = Vec::new();
    if ip[0] >> 4 == 4 {
        let (h, _) = Ipv4Header::from_slice(ip).expect("ipv4");
        let payload = &ip[h.header_len()..h.total_len as usize];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mut fh = h.clone();
            fh.identification = ident as u16;
            fh.dont_fragment = false;
            fh.more_fragments = end < payload.len();
            fh.fragment_offset = IpFragOffset::try_new((off / 8) as u16).expect("offset");
            fh.total_len = (fh.header_len() + end - off) as u16;
            fh.header_checksum = fh.calc_header_checksum();
            let mut f = eth.to_vec();
            f.extend_from_slice(&fh.to_bytes());
            f.extend_from_slice(&payload[off..end]);
            out.push(f);
            off = end;
        }
    } else {
        let (h, _) = Ipv6Header::from_slice(ip).expect("ipv6");
        let payload = &ip[40..40 + h.payload_length as usize];
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let fragh = FragHeader6 {
                next_header: h.next_header.0,
                offset: off as u16,
                more: end < payload.len(),
                ident,
            };
            let mut nh = h.clone();
            nh.next_header = IpNumber(44);
            nh.payload_length = (8 + end - off) as u16;
            let mut f = eth.to_vec();
            let mut hb = Vec::new();
            nh.write(&mut hb).expect("ipv6 header");
            f.extend_from_slice(&hb);
            f.extend_from_slice(&fragh.to_bytes());
            f.extend_from_slice(&payload[off..end]);
            out.push(f);
            off = end;
        }
    }
    out
}

/// The IPv6 Fragment header (RFC 8200 4.5), written and read by hand from
/// the RFC's bit layout: etherparse before 0.20 swapped the offset's low
/// bits and the M flag (its issue #150), so these bytes stay pinned to the
/// RFC whatever etherparse version is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragHeader6 {
    pub next_header: u8,
    /// Offset in bytes (a multiple of 8).
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

impl FragHeader6 {
    /// Bytes 2..4 are one big-endian word: offset (8-byte units) in the top
    /// 13 bits, 2 reserved bits, M in the least significant bit.
    pub fn to_bytes(self) -> [u8; 8] {
        let w = (self.offset / 8) << 3 | self.more as u16;
        let w = w.to_be_bytes();
        let id = self.ident.to_be_bytes();
        [self.next_header, 0, w[0], w[1], id[0], id[1], id[2], id[3]]
    }

    #[track_caller]
    pub fn parse(b: &[u8]) -> FragHeader6 {
        assert!(b.len() >= 8, "fragment header");
        let w = u16::from_be_bytes([b[2], b[3]]);
        FragHeader6 {
            next_header: b[0],
            offset: (w >> 3) * 8,
            more: w & 1 == 1,
            ident: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Adds IPv4 options (a multiple of 4 bytes) to the frame's IPv4 header,
/// fixing IHL, total length and the header checksum (L4 is unchanged: its
/// pseudo-header does not cover options).
pub fn with_ipv4_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv4Header::from_slice(&frame[14..]).expect("ipv4");
    let payload = &rest[..h.total_len as usize - h.header_len()];
    h.options = etherparse::Ipv4Options::try_from(opts).expect("options");
    h.total_len = (h.header_len() + payload.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut f = frame[..14].to_vec();
    f.extend_from_slice(&h.to_bytes());
    f.extend_from_slice(payload);
    f
}

/// Inserts an IPv6 Destination Options header (next header 60, one PadN
/// option) between the IPv6 header and the upper layer.
pub fn with_ipv6_dest_opts(frame: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv6Header::from_slice(&frame[14..]).expect("ipv6");
    let upper = h.next_header.0;
    let payload = &rest[..h.payload_length as usize];
    h.next_header = IpNumber(60);
    h.payload_length += 8;
    let mut f = frame[..14].to_vec();
    h.write(&mut f).expect("ipv6 header");
    // RFC 8200 4.6: next header, length 0 (8 bytes), PadN of 4 data bytes.
    f.extend_from_slice(&[upper, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}
