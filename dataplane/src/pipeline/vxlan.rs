//! VXLAN, flannel-compatible: decapsulation of frames for this node's VTEP and
//! encapsulation toward a remote node (outer UDP source port from the inner flow
//! hash, IPv4 outer UDP checksum 0, IPv6 outer UDP checksum computed).

use super::drop::DropReason;
use super::parse::{rd16, wr16, ETH_LEN};
use super::Frame;
use crate::state::{NodeConfig, RemoteNode};
use crate::wire::checksum;

pub(crate) const VXLAN_LEN: usize = 8;
pub(crate) const UDP_LEN: usize = 8;
/// Outer Ethernet + IPv4 + UDP + VXLAN.
pub(crate) const OVERHEAD_V4: usize = ETH_LEN + 20 + UDP_LEN + VXLAN_LEN;
/// Outer Ethernet + IPv6 + UDP + VXLAN.
pub(crate) const OVERHEAD_V6: usize = ETH_LEN + 40 + UDP_LEN + VXLAN_LEN;

/// Checks the VXLAN header at `l4 + 8` (after the outer UDP header) and strips the
/// outer headers, leaving the frame at the inner Ethernet header.
#[inline]
pub(crate) fn decap(frame: &mut Frame, l4: usize, vni: u32) -> Result<(), DropReason> {
    let d = frame.data();
    let v = l4 + UDP_LEN;
    if d.len() < v + VXLAN_LEN + ETH_LEN {
        return Err(DropReason::VxlanMalformed);
    }
    if d[v] & 0x08 == 0 {
        return Err(DropReason::VxlanMalformed);
    }
    let got = u32::from_be_bytes([0, d[v + 4], d[v + 5], d[v + 6]]);
    if got != vni {
        return Err(DropReason::BadVni);
    }
    frame.pull_head(v + VXLAN_LEN);
    Ok(())
}

/// The outer UDP source port for a flow hash: 49152..=65535 (RFC 7348 5).
#[inline]
pub(crate) fn source_port(hash: u64) -> u16 {
    49152 | ((hash ^ (hash >> 32)) as u16 & 0x3fff)
}

/// Encapsulates the frame (its Ethernet header at the head) toward `r`: rewrites
/// the inner MACs to the VTEPs and pushes the node's precomputed outer headers,
/// filling in the per-packet fields. `outer` is from [`outer_family`].
#[inline(always)]
pub(crate) fn encap(
    frame: &mut Frame,
    c: &NodeConfig,
    r: &RemoteNode,
    outer: u8,
    hash: u64,
    ident: u16,
) -> Result<(), DropReason> {
    let inner = frame.len();
    {
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&r.vtep_mac);
        d[6..12].copy_from_slice(&c.vtep_mac);
    }
    let sport = source_port(hash);
    let udp_len = (UDP_LEN + VXLAN_LEN + inner) as u16;
    if outer == 4 {
        let Some(o) = &r.outer4 else {
            return Err(DropReason::NoRemoteUnderlay);
        };
        if !frame.push_head(OVERHEAD_V4) {
            return Err(DropReason::Truncated);
        }
        let Some(h) = frame.data_mut().first_chunk_mut::<OVERHEAD_V4>() else {
            return Err(DropReason::Truncated);
        };
        *h = o.hdr;
        let total = 20 + udp_len;
        h[16..18].copy_from_slice(&total.to_be_bytes());
        h[18..20].copy_from_slice(&ident.to_be_bytes());
        let cs = checksum::finish(o.sum + u32::from(total) + u32::from(ident));
        h[24..26].copy_from_slice(&cs.to_be_bytes());
        h[34..36].copy_from_slice(&sport.to_be_bytes());
        h[38..40].copy_from_slice(&udp_len.to_be_bytes());
    } else {
        let Some(o) = &r.outer6 else {
            return Err(DropReason::NoRemoteUnderlay);
        };
        if !frame.push_head(OVERHEAD_V6) {
            return Err(DropReason::Truncated);
        }
        let d = frame.data_mut();
        let Some(h) = d.first_chunk_mut::<OVERHEAD_V6>() else {
            return Err(DropReason::Truncated);
        };
        *h = o.hdr;
        // Flow label from the flow hash (ECMP in the underlay).
        let fl = (hash as u32) & 0x000f_ffff;
        h[14..18].copy_from_slice(&(0x6000_0000u32 | fl).to_be_bytes());
        h[18..20].copy_from_slice(&udp_len.to_be_bytes());
        h[54..56].copy_from_slice(&sport.to_be_bytes());
        h[58..60].copy_from_slice(&udp_len.to_be_bytes());
        // Pseudo-header length + UDP length field + source port + the rest.
        let s =
            o.sum + 2 * u32::from(udp_len) + u32::from(sport) + checksum::sum(&d[OVERHEAD_V6..]);
        let mut cs = checksum::finish(s);
        if cs == 0 {
            cs = 0xffff;
        }
        wr16(d, ETH_LEN + 40 + 6, cs);
    }
    Ok(())
}

/// Whether an outer UDP destination port is the configured VXLAN port.
#[inline]
pub(crate) fn is_vxlan_port(d: &[u8], l4: usize, port: u16) -> bool {
    d.len() >= l4 + UDP_LEN && rd16(d, l4 + 2) == port
}
