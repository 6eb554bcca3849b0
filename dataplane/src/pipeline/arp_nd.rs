//! Answering pods' address resolution: ARP requests and IPv6 neighbor
//! solicitations on pod ports are answered in place with the gateway MAC, for any
//! target but the pod's own address (proxy-ARP style, so a pod reaches everything,
//! its gateway included, through the dataplane whatever its prefix length).

use super::drop::DropReason;
use super::parse::{rd16, rd16b, wr16, Meta};
use super::verdict::Verdict;
use super::Frame;
use crate::proto;
use crate::state::Pod;
use crate::wire::checksum;
use crate::Mac;

const ARP_LEN: usize = 28;

/// Answers an ARP request from `pod` in place.
pub(crate) fn arp(frame: &mut Frame, l3: usize, pod: &Pod, gateway_mac: Mac) -> Verdict {
    let d = frame.data_mut();
    let Some(a) = d.get_mut(l3..l3 + ARP_LEN) else {
        return Verdict::Drop(DropReason::ArpMalformed);
    };
    // Ethernet (1) / IPv4 (0x0800), 6-byte and 4-byte addresses.
    if rd16(a, 0) != 1 || rd16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
        return Verdict::Drop(DropReason::ArpMalformed);
    }
    if rd16(a, 6) != 1 {
        return Verdict::Drop(DropReason::ArpIgnored);
    }
    let mut sender_hw = [0u8; 6];
    sender_hw.copy_from_slice(&a[8..14]);
    let mut sender_ip = [0u8; 4];
    sender_ip.copy_from_slice(&a[14..18]);
    let mut target_ip = [0u8; 4];
    target_ip.copy_from_slice(&a[24..28]);
    if Some(target_ip) == pod.ipv4 || target_ip == sender_ip {
        // Duplicate address detection or a gratuitous ARP: nothing to answer.
        return Verdict::Drop(DropReason::ArpIgnored);
    }
    wr16(a, 6, 2);
    a[8..14].copy_from_slice(&gateway_mac);
    a[14..18].copy_from_slice(&target_ip);
    a[18..24].copy_from_slice(&sender_hw);
    a[24..28].copy_from_slice(&sender_ip);
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&d[6..12]);
    d[0..6].copy_from_slice(&src_mac);
    d[6..12].copy_from_slice(&gateway_mac);
    Verdict::Reply
}

const NA_LEN: usize = 32; // 8 header + 16 target + 8 target link-layer option

/// Answers an IPv6 neighbor solicitation from `pod` in place; other ND messages
/// are dropped (pods get their routes from the CNI plugin, not from RAs).
pub(crate) fn nd(frame: &mut Frame, m: &Meta, pod: &Pod, gateway_mac: Mac) -> Verdict {
    let l3 = m.l3 as usize;
    let l4 = m.l4 as usize;
    let Some(&ty) = frame.data().get(l4) else {
        return Verdict::Drop(DropReason::Truncated);
    };
    // RFC 4861 7.1.1: hop limit 255, code 0, ICMP length >= 24.
    if ty != 135 || m.ttl != 255 || frame.data().len() < l4 + 24 || frame.data()[l4 + 1] != 0 {
        return Verdict::Drop(DropReason::NdIgnored);
    }
    let d = frame.data();
    let target = rd16b(d, l4 + 8);
    let src = m.key.src;
    if Some(target) == pod.ipv6 || src == [0u8; 16] || target[0] == 0xff {
        return Verdict::Drop(DropReason::NdIgnored);
    }
    let new_len = l4 + NA_LEN;
    if l4 != l3 + 40 || !frame.set_len(new_len) {
        return Verdict::Drop(DropReason::NdIgnored);
    }
    let d = frame.data_mut();
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&d[6..12]);
    d[0..6].copy_from_slice(&src_mac);
    d[6..12].copy_from_slice(&gateway_mac);
    // IPv6: payload length, next header ICMPv6, hop limit 255, target -> soliciter.
    wr16(d, l3 + 4, NA_LEN as u16);
    d[l3 + 6] = proto::ICMPV6;
    d[l3 + 7] = 255;
    d[l3 + 8..l3 + 24].copy_from_slice(&target);
    d[l3 + 24..l3 + 40].copy_from_slice(&src);
    let icmp = &mut d[l4..l4 + NA_LEN];
    icmp[0] = 136;
    icmp[1] = 0;
    wr16(icmp, 2, 0);
    // Router, Solicited, Override.
    icmp[4..8].copy_from_slice(&[0xe0, 0, 0, 0]);
    icmp[8..24].copy_from_slice(&target);
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1; // 8 bytes
    icmp[26..32].copy_from_slice(&gateway_mac);
    let sum =
        checksum::pseudo_v6(&target, &src, proto::ICMPV6, NA_LEN as u32) + checksum::sum(icmp);
    let c = checksum::finish(sum);
    wr16(icmp, 2, c);
    Verdict::Reply
}
