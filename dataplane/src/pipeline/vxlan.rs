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

/// The outer family toward `r`: IPv4 whenever both ends have an IPv4 underlay
/// address (one VTEP per node, as flannel's `flannel.1`), IPv6 otherwise (an
/// IPv6-only underlay carries both inner families).
#[inline]
pub(crate) fn outer_family(c: &NodeConfig, r: &RemoteNode) -> Option<u8> {
    if c.node_ipv4.is_some() && r.ipv4.is_some() {
        Some(4)
    } else if c.node_ipv6.is_some() && r.ipv6.is_some() {
        Some(6)
    } else {
        None
    }
}

/// The largest inner IP packet sent over the overlay: the underlay MTU minus
/// the outer headers (50 bytes over IPv4, 70 over IPv6); IPv6 inner packets are
/// held to the IPv6 overhead whatever the outer family, so the path MTU a pod
/// learns does not change with the underlay family.
#[inline]
pub(crate) fn inner_limit(mtu: u16, inner: u8, outer: u8) -> usize {
    // Inner Ethernet + VXLAN + UDP + outer IP.
    let outer_ip = if inner == 6 || outer == 6 { 40 } else { 20 };
    let overhead = ETH_LEN + VXLAN_LEN + UDP_LEN + outer_ip;
    (mtu as usize).saturating_sub(overhead)
}

/// Encapsulates the frame (its Ethernet header at the head) toward `r`: rewrites
/// the inner MACs to the VTEPs and pushes outer Ethernet/IP/UDP/VXLAN headers.
/// `outer` is from [`outer_family`].
#[inline]
pub(crate) fn encap(
    frame: &mut Frame,
    c: &NodeConfig,
    r: &RemoteNode,
    outer: u8,
    hash: u64,
    ident: u16,
) -> Result<(), DropReason> {
    {
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&r.vtep_mac);
        d[6..12].copy_from_slice(&c.vtep_mac);
    }
    let inner = frame.len();
    let sport = source_port(hash);
    if outer == 4 {
        let (Some(src), Some(dst)) = (c.node_ipv4, r.ipv4) else {
            return Err(DropReason::NoRemoteUnderlay);
        };
        if !frame.push_head(OVERHEAD_V4) {
            return Err(DropReason::Truncated);
        }
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&r.underlay_mac);
        d[6..12].copy_from_slice(&c.uplink_mac);
        d[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut d[ETH_LEN..ETH_LEN + 20];
        let total = (20 + UDP_LEN + VXLAN_LEN + inner) as u16;
        ip[0] = 0x45;
        ip[1] = 0;
        wr16(ip, 2, total);
        wr16(ip, 4, ident);
        wr16(ip, 6, 0); // DF clear, no fragment
        ip[8] = 64;
        ip[9] = crate::proto::UDP;
        wr16(ip, 10, 0);
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst);
        let cs = checksum::finish(checksum::sum(ip));
        wr16(ip, 10, cs);
        write_udp_vxlan(&mut d[ETH_LEN + 20..], sport, c.vxlan_port, inner, c.vni);
    } else {
        let (Some(src), Some(dst)) = (c.node_ipv6, r.ipv6) else {
            return Err(DropReason::NoRemoteUnderlay);
        };
        if !frame.push_head(OVERHEAD_V6) {
            return Err(DropReason::Truncated);
        }
        let d = frame.data_mut();
        d[0..6].copy_from_slice(&r.underlay_mac);
        d[6..12].copy_from_slice(&c.uplink_mac);
        d[12..14].copy_from_slice(&[0x86, 0xdd]);
        let udp_len = (UDP_LEN + VXLAN_LEN + inner) as u16;
        let src = src.octets();
        {
            let ip = &mut d[ETH_LEN..ETH_LEN + 40];
            // Version 6, traffic class 0, flow label from the flow hash (ECMP).
            let fl = (hash as u32) & 0x000f_ffff;
            ip[0..4].copy_from_slice(&(0x6000_0000u32 | fl).to_be_bytes());
            wr16(ip, 4, udp_len);
            ip[6] = crate::proto::UDP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&src);
            ip[24..40].copy_from_slice(&dst);
        }
        let u = ETH_LEN + 40;
        write_udp_vxlan(&mut d[u..], sport, c.vxlan_port, inner, c.vni);
        let sum = checksum::pseudo_v6(&src, &dst, crate::proto::UDP, udp_len as u32)
            + checksum::sum(&d[u..u + udp_len as usize]);
        let mut cs = checksum::finish(sum);
        if cs == 0 {
            cs = 0xffff;
        }
        wr16(d, u + 6, cs);
    }
    Ok(())
}

#[inline]
fn write_udp_vxlan(d: &mut [u8], sport: u16, dport: u16, inner: usize, vni: u32) {
    wr16(d, 0, sport);
    wr16(d, 2, dport);
    wr16(d, 4, (UDP_LEN + VXLAN_LEN + inner) as u16);
    wr16(d, 6, 0);
    d[8..12].copy_from_slice(&[0x08, 0, 0, 0]);
    d[12..16].copy_from_slice(&(vni << 8).to_be_bytes());
}

/// Whether an outer UDP destination port is the configured VXLAN port.
#[inline]
pub(crate) fn is_vxlan_port(d: &[u8], l4: usize, port: u16) -> bool {
    d.len() >= l4 + UDP_LEN && rd16(d, l4 + 2) == port
}
