//! The first stage: what port the frame came from, Ethernet and IP parsing,
//! ARP/ND answers on pod ports, anti-spoofing, and VXLAN decapsulation of frames
//! for this node's VTEP (after which the inner frame is parsed as if received).

use super::arp_nd;
use super::drop::DropReason;
use super::parse::{
    ethertype, is_multicast, parse_ip, Frag, Ingress, Meta, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, ETH_LEN, L4,
};
use super::verdict::Verdict;
use super::vxlan;
use super::{Env, Frame, State};
use crate::proto;
use crate::state::PortKind;

/// Classifies and parses one frame; `Some(verdict)` when it is decided here.
#[inline]
pub(crate) fn run(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    let t = env.t;
    let kind = t.port(frame.port);
    let Some((et, l3)) = ethertype(frame.data()) else {
        return Some(Verdict::Drop(DropReason::Truncated));
    };
    match kind {
        PortKind::None => Some(Verdict::Drop(DropReason::UnknownPort)),
        PortKind::Uplink => {
            if l3 != ETH_LEN || (et != ETHERTYPE_IPV4 && et != ETHERTYPE_IPV6) {
                return Some(Verdict::Pass);
            }
            m.ingress = Ingress::Uplink;
            if let Err(r) = parse_trim(frame, l3, et, m) {
                return Some(Verdict::Drop(r));
            }
            if m.l4kind == L4::Udp && m.frag == Frag::None && is_for_node(env, m) {
                let c = t.config();
                if vxlan::is_vxlan_port(frame.data(), m.l4 as usize, c.vxlan_port) {
                    if let Err(r) = vxlan::decap(frame, m.l4 as usize, c.vni) {
                        return Some(Verdict::Drop(r));
                    }
                    st.cnt.decap += 1;
                    return inner(frame, m);
                }
            }
            None
        }
        PortKind::Pod(idx) => {
            let Some(pod) = t.pod(idx) else {
                return Some(Verdict::Drop(DropReason::UnknownPort));
            };
            if l3 != ETH_LEN {
                return Some(Verdict::Drop(DropReason::VlanOnPodPort));
            }
            m.ingress = Ingress::Pod(idx);
            match et {
                ETHERTYPE_ARP => {
                    let v = arp_nd::arp(frame, l3, pod, t.config().gateway_mac);
                    if v == Verdict::Reply {
                        st.cnt.arp_replies += 1;
                    }
                    Some(v)
                }
                ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {
                    if let Err(r) = parse_trim(frame, l3, et, m) {
                        return Some(Verdict::Drop(r));
                    }
                    if m.l4kind == L4::Nd && m.proto == proto::ICMPV6 {
                        let v = arp_nd::nd(frame, m, pod, t.config().gateway_mac);
                        if v == Verdict::Reply {
                            st.cnt.nd_replies += 1;
                        }
                        return Some(v);
                    }
                    let own = if m.family == 4 {
                        pod.ipv4.is_some_and(|a| a == m.key.src_v4())
                    } else {
                        pod.ipv6 == Some(m.key.src)
                    };
                    if !own {
                        return Some(Verdict::Drop(DropReason::Spoofed));
                    }
                    if is_multicast(&m.key) || (m.family == 4 && m.key.dst[..4] == [255; 4]) {
                        return Some(Verdict::Drop(DropReason::Multicast));
                    }
                    None
                }
                _ => Some(Verdict::Drop(DropReason::UnknownEthertype)),
            }
        }
    }
}

#[inline(always)]
fn parse_trim(frame: &mut Frame, l3: usize, et: u16, m: &mut Meta) -> Result<(), DropReason> {
    let end = parse_ip(frame.data(), l3, et, m)?;
    frame.trim(end);
    Ok(())
}

/// Parses a decapsulated inner frame.
#[inline]
fn inner(frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    m.ingress = Ingress::Overlay;
    let Some((et, l3)) = ethertype(frame.data()) else {
        return Some(Verdict::Drop(DropReason::Truncated));
    };
    if l3 != ETH_LEN || (et != ETHERTYPE_IPV4 && et != ETHERTYPE_IPV6) {
        return Some(Verdict::Drop(DropReason::UnknownEthertype));
    }
    if let Err(r) = parse_trim(frame, l3, et, m) {
        return Some(Verdict::Drop(r));
    }
    None
}

/// Whether the packet's destination is the node's own underlay address.
#[inline]
fn is_for_node(env: &Env, m: &Meta) -> bool {
    if m.family == 4 {
        env.t.node_v4() == Some(m.key.dst_v4())
    } else {
        env.t.node_v6() == Some(m.key.dst)
    }
}
