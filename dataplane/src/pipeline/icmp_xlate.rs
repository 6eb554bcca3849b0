//! ICMP errors about translated flows (RFC 5508 4.2, as Linux's nf_nat does): the
//! error's embedded header is matched against conntrack (its reversed tuple is a
//! packet of the flow), then the embedded addresses and ports, the embedded IPv4
//! header checksum, the embedded L4 checksum (when quoted), the outer addresses
//! and the ICMP checksum (recomputed: it covers the embedded bytes, and for ICMPv6
//! the pseudo-header) are translated, so the error reaches the flow's sender.

use super::drop::DropReason;
use super::nat::rewrite;
use super::parse::{rd16, rd16b, rd4, wr16, Meta, L4};
use crate::conntrack::{FlowKey, Table};
use crate::proto;
use crate::wire::checksum;

/// Translates the ICMP error in `d` (the frame, trimmed to the IP packet's end).
/// Ok(true): translated, `m.xkey` holds the new outer tuple; Ok(false): no
/// translated flow matches (forward as is).
pub(crate) fn translate(
    d: &mut [u8],
    m: &mut Meta,
    ct: &Table,
    now: u64,
) -> Result<bool, DropReason> {
    let e3 = m.l4 as usize + 8;
    let end = d.len();
    let Some((ekey, emeta)) = embedded(d, e3, m.family)? else {
        return Ok(false);
    };
    let k = ekey.swap();
    let Some(hit) = ct.track(&k, 0, now) else {
        return Ok(false);
    };
    if !hit.nat {
        return Ok(false);
    }
    let new_e = hit.xlate.swap();
    // Embedded packet: addresses (and its IPv4 header checksum), ports, and its
    // L4 checksum when quoted.
    rewrite(d, &emeta, &ekey, &new_e);
    // Outer addresses: to the flow's sender; from the peer's translated address
    // when the peer itself sent the error (a router in between keeps its own).
    let mut outer = m.key;
    outer.dst = hit.xlate.dst;
    if m.key.src == k.src {
        outer.src = hit.xlate.src;
    }
    let addr_only = Meta {
        csum_at: 0,
        sport_at: 0,
        dport_at: 0,
        ..*m
    };
    rewrite(d, &addr_only, &m.key, &outer);
    // ICMP checksum over the whole message (plus the pseudo-header for ICMPv6).
    let l4 = m.l4 as usize;
    wr16(d, l4 + 2, 0);
    let msg = &d[l4..end];
    let sum = if m.family == 4 {
        checksum::sum(msg)
    } else {
        checksum::pseudo_v6(&outer.src, &outer.dst, proto::ICMPV6, msg.len() as u32)
            + checksum::sum(msg)
    };
    let c = checksum::finish(sum);
    wr16(d, l4 + 2, c);
    m.xkey = outer;
    m.nat = true;
    Ok(true)
}

/// Parses the embedded packet at `e3`: its tuple, a meta for rewriting it, and
/// the end of the quoted bytes. Ok(None) when it has no tuple we track.
fn embedded(d: &[u8], e3: usize, family: u8) -> Result<Option<(FlowKey, Meta)>, DropReason> {
    let end = d.len();
    let mut em = Meta {
        l3: e3 as u16,
        family,
        ..Meta::default()
    };
    let (src, dst, eproto, e4) = if family == 4 {
        if e3 + 20 > end || d[e3] >> 4 != 4 {
            return Err(DropReason::IcmpErrorMalformed);
        }
        let ihl = (d[e3] & 0x0f) as usize * 4;
        if ihl < 20 || e3 + ihl > end {
            return Err(DropReason::IcmpErrorMalformed);
        }
        if rd16(d, e3 + 6) & 0x1fff != 0 {
            return Ok(None);
        }
        let mut s = [0u8; 16];
        let mut t = [0u8; 16];
        s[..4].copy_from_slice(&rd4(d, e3 + 12));
        t[..4].copy_from_slice(&rd4(d, e3 + 16));
        (s, t, d[e3 + 9], e3 + ihl)
    } else {
        if e3 + 40 > end || d[e3] >> 4 != 6 {
            return Err(DropReason::IcmpErrorMalformed);
        }
        (rd16b(d, e3 + 8), rd16b(d, e3 + 24), d[e3 + 6], e3 + 40)
    };
    em.proto = eproto;
    em.l4 = e4 as u16;
    let icmp = if family == 4 {
        proto::ICMP
    } else {
        proto::ICMPV6
    };
    let (sport, dport) = match eproto {
        proto::TCP | proto::UDP => {
            if e4 + 4 > end {
                return Err(DropReason::IcmpErrorMalformed);
            }
            em.l4kind = if eproto == proto::TCP {
                L4::Tcp
            } else {
                L4::Udp
            };
            em.sport_at = e4 as u16;
            em.dport_at = (e4 + 2) as u16;
            em.pseudo = true;
            let at = e4 + if eproto == proto::TCP { 16 } else { 6 };
            // The quoted L4 checksum, when quoted (and, for UDP over IPv4, used).
            if at + 2 <= end && (eproto == proto::TCP || family == 6 || rd16(d, at) != 0) {
                em.csum_at = at as u16;
            }
            (rd16(d, e4), rd16(d, e4 + 2))
        }
        p if p == icmp => {
            if e4 + 8 > end {
                return Err(DropReason::IcmpErrorMalformed);
            }
            let id = rd16(d, e4 + 4);
            em.csum_at = (e4 + 2) as u16;
            em.pseudo = family == 6;
            match (family, d[e4]) {
                (4, 8) | (6, 128) => {
                    em.l4kind = L4::EchoRequest;
                    em.sport_at = (e4 + 4) as u16;
                    (id, 0)
                }
                (4, 0) | (6, 129) => {
                    em.l4kind = L4::EchoReply;
                    em.dport_at = (e4 + 4) as u16;
                    (0, id)
                }
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let key = if family == 4 {
        FlowKey::v4(rd4(&src, 0), rd4(&dst, 0), sport, dport, eproto)
    } else {
        FlowKey::v6(src, dst, sport, dport, eproto)
    };
    Ok(Some((key, em)))
}
