//! Rewriting a packet's tuple (addresses, ports or the ICMP echo identifier) with
//! incremental checksum updates (RFC 1624, through `wire::checksum`), and picking
//! SNAT ports.
//!
//! A translation is expressed as two flow keys: the tuple the packet has and the
//! tuple it must get; only fields that differ are written. IPv4 header checksums
//! follow the address changes; the L4 checksum follows the address changes when
//! it covers a pseudo-header (TCP, UDP, ICMPv6) and the port/identifier changes.
//! The changes are gathered in a `wire::checksum::Delta` (RFC 1624 eqn. 3 terms)
//! and applied with one fold per checksum.

use super::drop::DropReason;
use super::parse::{rd16, wr16, Meta, L4};
use crate::conntrack::{FlowKey, Hit, InsertError, Table};
use crate::wire::checksum::Delta;

/// The IPv4 address in a key's first 4 bytes as a big-endian value.
#[inline]
fn be32(a: &[u8; 16]) -> u32 {
    u32::from_be_bytes([a[0], a[1], a[2], a[3]])
}

/// `Delta::add32` on big-endian values already in registers (one load per
/// address instead of four byte loads).
#[inline]
fn add32(d: Delta, old: u32, new: u32) -> Delta {
    d.add16((old >> 16) as u16, (new >> 16) as u16)
        .add16(old as u16, new as u16)
}

/// Rewrites the packet at `m`'s offsets in `d` from tuple `from` to tuple `to`:
/// addresses (and the IPv4 header checksum), ports or echo identifier where the
/// packet has them, and the L4 checksum where it has one.
#[inline]
pub(crate) fn rewrite(d: &mut [u8], m: &Meta, from: &FlowKey, to: &FlowKey) {
    let l3 = m.l3 as usize;
    let mut addr = Delta::new();
    let mut changed = false;
    if m.family == 4 {
        let Some(h) = d.get_mut(l3..l3 + 20) else {
            return;
        };
        let (os, ns) = (be32(&from.src), be32(&to.src));
        let (od, nd) = (be32(&from.dst), be32(&to.dst));
        if os != ns {
            addr = add32(addr, os, ns);
            h[12..16].copy_from_slice(&ns.to_be_bytes());
            changed = true;
        }
        if od != nd {
            addr = add32(addr, od, nd);
            h[16..20].copy_from_slice(&nd.to_be_bytes());
            changed = true;
        }
        if changed {
            let c = addr.apply(u16::from_be_bytes([h[10], h[11]]));
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
    } else {
        let Some(h) = d.get_mut(l3..l3 + 40) else {
            return;
        };
        if from.src != to.src {
            addr = addr.add128(&from.src, &to.src);
            h[8..24].copy_from_slice(&to.src);
            changed = true;
        }
        if from.dst != to.dst {
            addr = addr.add128(&from.dst, &to.dst);
            h[24..40].copy_from_slice(&to.dst);
            changed = true;
        }
    }
    let mut l4 = if m.pseudo && changed {
        addr
    } else {
        Delta::new()
    };
    let mut l4_changed = m.pseudo && changed;
    if m.sport_at != 0 && from.sport != to.sport {
        l4 = l4.add16(from.sport, to.sport);
        wr16(d, m.sport_at as usize, to.sport);
        l4_changed = true;
    }
    if m.dport_at != 0 && from.dport != to.dport {
        l4 = l4.add16(from.dport, to.dport);
        wr16(d, m.dport_at as usize, to.dport);
        l4_changed = true;
    }
    if m.csum_at != 0 && l4_changed {
        let at = m.csum_at as usize;
        let mut c = l4.apply(rd16(d, at));
        if c == 0 && m.l4kind == L4::Udp {
            c = 0xffff;
        }
        wr16(d, at, c);
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
