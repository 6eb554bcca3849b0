//! Building ICMP and ICMPv6 errors in place: the offending packet (untranslated)
//! stays where it is and becomes the quoted data; new Ethernet, IP and ICMP
//! headers are pushed in front of it and the frame is trimmed to the quote limit
//! (576 bytes total for IPv4, RFC 1812 4.3.2.3; 1280 for IPv6, RFC 4443 2.4).

use super::parse::{is_multicast, wr16, Frag, Meta, ETH_LEN, L4};
use super::Frame;
use crate::proto;
use crate::wire::checksum;
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
    if m.family == 4 {
        let quote = orig_len.min(576 - 28);
        frame.trim(ETH_LEN + quote);
        if !frame.push_head(28) {
            return false;
        }
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&peer_mac);
        d[6..12].copy_from_slice(&our_mac);
        d[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut d[ETH_LEN..ETH_LEN + 20];
        ip[0] = 0x45;
        ip[1] = 0;
        wr16(ip, 2, (28 + quote) as u16);
        wr16(ip, 4, 0);
        wr16(ip, 6, 0);
        ip[8] = 64;
        ip[9] = proto::ICMP;
        wr16(ip, 10, 0);
        ip[12..16].copy_from_slice(&src[..4]);
        ip[16..20].copy_from_slice(&dst[..4]);
        let c = checksum::finish(checksum::sum(ip));
        wr16(ip, 10, c);
        let icmp = &mut d[ETH_LEN + 20..];
        let (t, code, rest) = match err {
            IcmpError::TimeExceeded => (11, 0, 0u32),
            IcmpError::TooBig(mtu) => (3, 4, mtu as u32),
            IcmpError::PortUnreachable => (3, 3, 0),
        };
        icmp[0] = t;
        icmp[1] = code;
        wr16(icmp, 2, 0);
        icmp[4..8].copy_from_slice(&rest.to_be_bytes());
        let c = checksum::finish(checksum::sum(&icmp[..8 + quote]));
        wr16(icmp, 2, c);
    } else {
        let quote = orig_len.min(1280 - 48);
        frame.trim(ETH_LEN + quote);
        if !frame.push_head(48) {
            return false;
        }
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&peer_mac);
        d[6..12].copy_from_slice(&our_mac);
        d[12..14].copy_from_slice(&[0x86, 0xdd]);
        let plen = (8 + quote) as u16;
        {
            let ip = &mut d[ETH_LEN..ETH_LEN + 40];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            wr16(ip, 4, plen);
            ip[6] = proto::ICMPV6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(src);
            ip[24..40].copy_from_slice(&dst);
        }
        let icmp = &mut d[ETH_LEN + 40..];
        let (t, code, rest) = match err {
            IcmpError::TimeExceeded => (3, 0, 0u32),
            IcmpError::TooBig(mtu) => (2, 0, mtu as u32),
            IcmpError::PortUnreachable => (1, 4, 0),
        };
        icmp[0] = t;
        icmp[1] = code;
        wr16(icmp, 2, 0);
        icmp[4..8].copy_from_slice(&rest.to_be_bytes());
        let sum = checksum::pseudo_v6(src, &dst, proto::ICMPV6, plen as u32)
            + checksum::sum(&icmp[..plen as usize]);
        wr16(icmp, 2, checksum::finish(sum));
    }
    true
}
