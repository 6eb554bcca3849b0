//! Answering pods' address resolution: ARP requests and IPv6 neighbor
//! solicitations on pod ports are answered in place with the gateway MAC, for any
//! target but the pod's own address (proxy-ARP style, so a pod reaches everything,
//! its gateway included, through the dataplane whatever its prefix length).

use std::net::Ipv6Addr;

use super::drop::DropReason;
use super::parse::{Meta, ETH_LEN};
use super::verdict::Verdict;
use super::Frame;
use crate::proto;
use crate::state::Pod;
use crate::wire::{arp, ethernet, icmpv6, ipv6};
use crate::Mac;

/// Answers an ARP request from `pod` in place.
pub(crate) fn arp(frame: &mut Frame, l3: usize, pod: &Pod, gateway_mac: Mac) -> Verdict {
    let d = frame.data_mut();
    let Some(body) = d.get_mut(l3..) else {
        return Verdict::Drop(DropReason::ArpMalformed);
    };
    let Ok(mut a) = arp::Packet::new_checked(body) else {
        return Verdict::Drop(DropReason::ArpMalformed);
    };
    let req = arp::Repr::parse(&a);
    if req.operation != arp::Operation::Request
        || Some(req.target_ip.octets()) == pod.ipv4
        || req.target_ip == req.sender_ip
    {
        // Not a question, duplicate address detection, or a gratuitous ARP.
        return Verdict::Drop(DropReason::ArpIgnored);
    }
    arp::Repr {
        operation: arp::Operation::Reply,
        sender_hw: gateway_mac,
        sender_ip: req.target_ip,
        target_hw: req.sender_hw,
        target_ip: req.sender_ip,
    }
    .emit(&mut a);
    reply_eth(d, gateway_mac);
    Verdict::Reply
}

/// Turns the Ethernet header around: back to the sender, from `mac`.
#[inline]
fn reply_eth(d: &mut [u8], mac: Mac) {
    let mut eth = ethernet::Frame::new_unchecked(&mut d[..ETH_LEN]);
    let peer = eth.src_addr();
    eth.set_dst_addr(peer);
    eth.set_src_addr(mac);
}

/// The neighbor advertisement's ICMPv6 length: header, target, target
/// link-layer address option.
const NA_LEN: usize = icmpv6::ND_LEN + icmpv6::LLADDR_OPT_LEN;

/// Answers an IPv6 neighbor solicitation from `pod` in place; other ND messages
/// are dropped (pods get their routes from the CNI plugin, not from RAs).
pub(crate) fn nd(frame: &mut Frame, m: &Meta, pod: &Pod, gateway_mac: Mac) -> Verdict {
    let l3 = m.l3 as usize;
    let l4 = m.l4 as usize;
    let Some(Ok(ns)) = frame.data().get(l4..).map(icmpv6::Packet::new_checked) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    // RFC 4861 7.1.1: hop limit 255, code 0; no extension headers in between.
    if ns.msg_type() != icmpv6::NEIGHBOR_SOLICIT || ns.code() != 0 || m.ttl != 255 || l4 != l3 + 40
    {
        return Verdict::Drop(DropReason::NdIgnored);
    }
    let target = ns.nd_target();
    let src = m.key.src;
    if Some(target.octets()) == pod.ipv6 || src == [0u8; 16] || target.is_multicast() {
        // Duplicate address detection, or nothing to answer for.
        return Verdict::Drop(DropReason::NdIgnored);
    }
    if !frame.set_len(l4 + NA_LEN) {
        return Verdict::Drop(DropReason::NdIgnored);
    }
    let d = frame.data_mut();
    reply_eth(d, gateway_mac);
    let (ip, icmp) = d[l3..].split_at_mut(ipv6::HEADER_LEN);
    let from = target.octets();
    ipv6::Repr {
        src: target,
        dst: Ipv6Addr::from(src),
        next_header: proto::ICMPV6,
        payload_len: NA_LEN,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(ip));
    icmpv6::Repr::NeighborAdvert {
        flags: icmpv6::NA_ROUTER | icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE,
        target,
        lladdr: Some(gateway_mac),
    }
    .emit(&mut icmpv6::Packet::new_unchecked(icmp), &from, &src);
    Verdict::Reply
}
