//! Rewriting a packet's tuple (addresses, ports or the ICMP echo identifier) with
//! incremental checksum updates (RFC 1624, through `wire::checksum`), and picking
//! SNAT ports.
//!
//! A translation is expressed as two flow keys: the tuple the packet has and the
//! tuple it must get; only fields that differ are written. IPv4 header checksums
//! follow the address changes; the L4 checksum follows the address changes when
//! it covers a pseudo-header (TCP, UDP, ICMPv6) and the port/identifier changes.

use super::drop::DropReason;
use super::parse::{rd16, wr16, Frag, Meta, L4};
use crate::conntrack::{FlowKey, Hit, InsertError, Table};
use crate::wire::checksum::{update128, update16, update32};

/// Where the L4 checksum lives and whether it covers the pseudo-header.
#[inline]
fn l4_csum(m: &Meta) -> Option<(usize, bool)> {
    if m.frag == Frag::Later {
        return None;
    }
    match m.l4kind {
        L4::Tcp => Some((16, true)),
        L4::Udp => Some((6, true)),
        L4::EchoRequest | L4::EchoReply | L4::IcmpError | L4::Other | L4::Nd => match m.proto {
            crate::proto::ICMP => Some((2, false)),
            crate::proto::ICMPV6 => Some((2, true)),
            _ => None,
        },
    }
}

/// Rewrites the packet at `m.l3`/`m.l4` in `d` from tuple `from` to tuple `to`.
#[inline]
pub(crate) fn rewrite(d: &mut [u8], m: &Meta, from: &FlowKey, to: &FlowKey) {
    let l3 = m.l3 as usize;
    let l4 = m.l4 as usize;
    let csum = l4_csum(m);
    let (coff, pseudo) = csum.unwrap_or((0, false));
    let mut c = if csum.is_some() {
        rd16(d, l4 + coff)
    } else {
        0
    };
    // UDP over IPv4 with checksum 0 carries no checksum: leave it so.
    let udp_none = m.l4kind == L4::Udp && m.family == 4 && c == 0 && csum.is_some();
    let pseudo = pseudo && !udp_none;
    if m.family == 4 {
        let mut ipc = rd16(d, l3 + 10);
        let (os, ns) = (from.src_v4(), to.src_v4());
        if os != ns {
            ipc = update32(ipc, os, ns);
            if pseudo {
                c = update32(c, os, ns);
            }
            d[l3 + 12..l3 + 16].copy_from_slice(&ns);
        }
        let (od, nd) = (from.dst_v4(), to.dst_v4());
        if od != nd {
            ipc = update32(ipc, od, nd);
            if pseudo {
                c = update32(c, od, nd);
            }
            d[l3 + 16..l3 + 20].copy_from_slice(&nd);
        }
        wr16(d, l3 + 10, ipc);
    } else {
        if from.src != to.src {
            if pseudo {
                c = update128(c, &from.src, &to.src);
            }
            d[l3 + 8..l3 + 24].copy_from_slice(&to.src);
        }
        if from.dst != to.dst {
            if pseudo {
                c = update128(c, &from.dst, &to.dst);
            }
            d[l3 + 24..l3 + 40].copy_from_slice(&to.dst);
        }
    }
    if csum.is_none() {
        return;
    }
    match m.l4kind {
        L4::Tcp | L4::Udp => {
            if from.sport != to.sport {
                if !udp_none {
                    c = update16(c, from.sport, to.sport);
                }
                wr16(d, l4, to.sport);
            }
            if from.dport != to.dport {
                if !udp_none {
                    c = update16(c, from.dport, to.dport);
                }
                wr16(d, l4 + 2, to.dport);
            }
        }
        L4::EchoRequest if from.sport != to.sport => {
            c = update16(c, from.sport, to.sport);
            wr16(d, l4 + 4, to.sport);
        }
        L4::EchoReply if from.dport != to.dport => {
            c = update16(c, from.dport, to.dport);
            wr16(d, l4 + 4, to.dport);
        }
        _ => {}
    }
    if !udp_none {
        if m.l4kind == L4::Udp && c == 0 {
            c = 0xffff;
        }
        wr16(d, l4 + coff, c);
    }
}

/// Bounded number of SNAT ports tried for one new flow.
pub(crate) const SNAT_ATTEMPTS: u32 = 16;

/// Inserts a new flow whose translated tuple is `xkey` with its source port (or
/// echo identifier) chosen from `ports` when `snat` is set: starting from a port
/// derived from `hash`, the next port is tried while the reply tuple is taken, at
/// most [`SNAT_ATTEMPTS`] times. Returns the hit (whose `xlate` is what the packet
/// must become: another worker may have won the race with another choice) and the
/// number of retries.
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_flow(
    ct: &Table,
    key: &FlowKey,
    mut xkey: FlowKey,
    snat: bool,
    ports: (u16, u16),
    hash: u64,
    user: u32,
    tcp_flags: u8,
    now: u64,
) -> Result<(Hit, u32), DropReason> {
    let echo_reply_side = xkey.sport == 0 && xkey.dport != 0 && is_icmp(xkey.proto);
    if !snat {
        return match ct.insert(key, &xkey.swap(), user, tcp_flags, now) {
            Ok(h) => Ok((h, 0)),
            Err(InsertError::Full) => Err(DropReason::ConntrackFull),
            Err(InsertError::ReplyTaken) => Err(DropReason::ReplyTupleTaken),
        };
    }
    if echo_reply_side {
        return Err(DropReason::UnsupportedProtocol);
    }
    let (lo, hi) = ports;
    let span = (hi - lo) as u32 + 1;
    let mut off = ((hash >> 17) % span as u64) as u32;
    for attempt in 0..SNAT_ATTEMPTS {
        xkey.sport = lo + off as u16;
        match ct.insert(key, &xkey.swap(), user, tcp_flags, now) {
            Ok(h) => return Ok((h, attempt)),
            Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
            Err(InsertError::ReplyTaken) => off = (off + 1) % span,
        }
    }
    Err(DropReason::SnatExhausted)
}

#[inline]
fn is_icmp(p: u8) -> bool {
    p == crate::proto::ICMP || p == crate::proto::ICMPV6
}
