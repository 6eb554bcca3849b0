//! Fragments of NATed flows: every fragment follows the first fragment's
//! translation, in order and out of order (early non-first fragments are
//! stashed, bounded, and released when the first one arrives).
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::Verdict;

const CHUNK: usize = 256;

fn big_payload() -> Vec<u8> {
    (0..900u32).map(|i| (i * 7 + 3) as u8).collect()
}

/// pod1:40000 -> dns VIP:53 (backend pod2:5353), fragmented.
fn dns_fragments(f: Fam, ident: u32) -> Vec<Vec<u8>> {
    let whole = Pkt::from_pod1(f, f.vip(svc::DNS), udp(40000, 53))
        .payload(&big_payload())
        .build();
    let frags = fragment(&whole, CHUNK, ident);
    assert!(frags.len() >= 4);
    frags
}

/// Checks the delivered fragments of the DNS query: each DNATed to pod2,
/// TTL decremented, ident kept; together they reassemble into a datagram
/// with a valid checksum and the translated port.
#[track_caller]
fn check_delivered_dns(f: Fam, outs: &[Out], ident: u32, n: usize) {
    let delivered: Vec<SeenIp> = outs
        .iter()
        .filter(|o| o.verdict == Verdict::Tx(POD2_PORT))
        .map(|o| {
            let s = parse(&o.bytes);
            assert_eq!(s.eth.source, A_GW_MAC);
            assert_eq!(s.eth.destination, POD2_MAC);
            s.ip
        })
        .collect();
    assert_eq!(delivered.len(), n, "every fragment delivered once");
    for s in &delivered {
        assert_eq!(s.src, f.pod1(), "fragment source kept");
        assert_eq!(s.dst, f.pod2(), "fragment DNATed like the first");
        assert_eq!(s.ttl, 63, "fragment TTL decremented");
        match (&s.v4, &s.frag6) {
            (Some(h), _) => assert_eq!(h.identification as u32, ident & 0xffff),
            (_, Some(fh)) => assert_eq!(fh.ident, ident),
            _ => panic!("fragment lost its fragment header"),
        }
    }
    let dgram = reassemble(&delivered);
    let (sport, dport, payload) = check_udp_datagram(f.pod1(), f.pod2(), &dgram);
    assert_eq!((sport, dport), (40000, 5353));
    assert_eq!(payload, big_payload());
}

fn fragments_of_a_service_flow_in_order_all_follow_the_dnat(f: Fam) {
    let mut a = node_a();
    let frags = dns_fragments(f, 0x1234);
    let mut outs: Vec<Out> = frags.iter().map(|fr| a.send(POD1_PORT, fr)).collect();
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x1234, frags.len());
}

fn fragments_of_a_service_flow_in_one_batch_all_follow_the_dnat(f: Fam) {
    let mut a = node_a();
    let frags = dns_fragments(f, 0x2345);
    let batch: Vec<_> = frags.iter().map(|fr| (POD1_PORT, fr.clone())).collect();
    let mut outs = a.send_batch(&batch);
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x2345, frags.len());
}

fn fragments_arriving_before_the_first_are_stashed_then_released(f: Fam) {
    let mut a = node_a();
    let frags = dns_fragments(f, 0x3456);
    let mut outs = Vec::new();
    // Last first, then the middle ones, the first fragment last.
    for fr in frags.iter().skip(1).rev() {
        let o = a.send(POD1_PORT, fr);
        assert!(
            !matches!(o.verdict, Verdict::Tx(_)),
            "a fragment cannot leave before its translation is known: {:?}",
            o.verdict
        );
        outs.push(o);
    }
    outs.extend(a.released());
    outs.push(a.send(POD1_PORT, &frags[0]));
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x3456, frags.len());
}

fn out_of_order_fragments_in_one_batch_are_all_delivered(f: Fam) {
    let mut a = node_a();
    let frags = dns_fragments(f, 0x4567);
    let mut order: Vec<usize> = (0..frags.len()).collect();
    order.rotate_left(2);
    let batch: Vec<_> = order
        .iter()
        .map(|&i| (POD1_PORT, frags[i].clone()))
        .collect();
    let mut outs = a.send_batch(&batch);
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x4567, frags.len());
}

fn stashed_fragments_whose_first_never_comes_are_never_delivered(f: Fam) {
    let mut a = node_a();
    let frags = dns_fragments(f, 0x5678);
    for fr in &frags[1..] {
        a.send(POD1_PORT, fr);
    }
    a.advance_secs(120);
    // Traffic after the timeout lets the stash expire its entries.
    let p = Pkt::from_pod1(f, f.pod2(), udp(1, 2)).build();
    a.send(POD1_PORT, &p);
    let rel = a.released();
    assert!(
        rel.iter().all(|o| !matches!(o.verdict, Verdict::Tx(_))),
        "expired fragments were delivered"
    );
}

fn fragments_of_a_masqueraded_flow_all_follow_the_snat(f: Fam) {
    let mut a = node_a();
    let whole = Pkt::from_pod1(f, f.outside(), udp(40000, 53))
        .payload(&big_payload())
        .build();
    let frags = fragment(&whole, CHUNK, 0x6789);
    let mut outs = Vec::new();
    // The second fragment first, then the rest in order.
    outs.push(a.send(POD1_PORT, &frags[1]));
    for (i, fr) in frags.iter().enumerate() {
        if i != 1 {
            outs.push(a.send(POD1_PORT, fr));
        }
    }
    outs.extend(a.released());
    let delivered: Vec<SeenIp> = outs
        .iter()
        .filter(|o| o.verdict == Verdict::Tx(UPLINK))
        .map(|o| {
            let s = parse(&o.bytes);
            assert_eq!(s.eth.destination, ROUTER_MAC);
            s.ip
        })
        .collect();
    assert_eq!(delivered.len(), frags.len());
    for s in &delivered {
        assert_eq!(s.src, f.node_a(), "every fragment SNATed");
        assert_eq!(s.dst, f.outside());
        assert_eq!(s.ttl, 63);
    }
    let dgram = reassemble(&delivered);
    let (sport, dport, payload) = check_udp_datagram(f.node_a(), f.outside(), &dgram);
    assert!((SNAT_PORTS.0..=SNAT_PORTS.1).contains(&sport));
    assert_eq!(dport, 53);
    assert_eq!(payload, big_payload());
}

fn fragments_of_different_datagrams_do_not_mix(f: Fam) {
    let mut a = node_a();
    let x = dns_fragments(f, 0x0a0a);
    // A second datagram from another source port with the same ident.
    let whole = Pkt::from_pod1(f, f.vip(svc::DNS), udp(40002, 53))
        .payload(&big_payload())
        .build();
    let y = fragment(&whole, CHUNK, 0x0b0b);
    let mut outs = Vec::new();
    outs.push(a.send(POD1_PORT, &y[2]));
    outs.push(a.send(POD1_PORT, &x[2]));
    for fr in x
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, f)| f)
    {
        outs.push(a.send(POD1_PORT, fr));
    }
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x0a0a, x.len());
}

fn a_flood_of_early_fragments_is_bounded_and_later_datagrams_still_pass(f: Fam) {
    use dataplane::pipeline::{DropReason, STASH_SLOTS};
    let mut a = node_a();
    // Far more orphan non-first fragments than the stash holds.
    let mut full = 0;
    for i in 0..(STASH_SLOTS as u32 * 4) {
        let frags = dns_fragments(f, 0x7000 + i);
        let o = a.send(POD1_PORT, &frags[1]);
        assert!(!matches!(o.verdict, Verdict::Tx(_)));
        if o.verdict == Verdict::Drop(DropReason::FragStashFull) {
            full += 1;
        }
    }
    assert!(full > 0, "the stash must refuse beyond its bound");
    assert!(a.released().is_empty());
    // A fresh datagram in order still goes through whole.
    let frags = dns_fragments(f, 0x6fff);
    let mut outs: Vec<Out> = frags.iter().map(|fr| a.send(POD1_PORT, fr)).collect();
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x6fff, frags.len());
    // After the timeout the orphans are gone and out-of-order works again.
    a.advance_secs(31);
    let frags = dns_fragments(f, 0x6ffe);
    let mut outs = vec![a.send(POD1_PORT, &frags[2])];
    outs.extend(a.released());
    for (i, fr) in frags.iter().enumerate() {
        if i != 2 {
            outs.push(a.send(POD1_PORT, fr));
        }
    }
    outs.extend(a.released());
    check_delivered_dns(f, &outs, 0x6ffe, frags.len());
}

both_families!(
    a_flood_of_early_fragments_is_bounded_and_later_datagrams_still_pass,
    fragments_of_a_service_flow_in_order_all_follow_the_dnat,
    fragments_of_a_service_flow_in_one_batch_all_follow_the_dnat,
    fragments_arriving_before_the_first_are_stashed_then_released,
    out_of_order_fragments_in_one_batch_are_all_delivered,
    stashed_fragments_whose_first_never_comes_are_never_delivered,
    fragments_of_a_masqueraded_flow_all_follow_the_snat,
    fragments_of_different_datagrams_do_not_mix,
);
