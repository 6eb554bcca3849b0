//! Several workers of one node share conntrack and the affinity table: a
//! flow created by one worker is translated by any other, and workers racing
//! on the same new flow agree on one translation.
#[macro_use]
mod common;

use common::*;
use dataplane::pipeline::Verdict;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Barrier};
use std::thread;

fn a_reply_handled_by_another_worker_is_reverse_natted(f: Fam) {
    let mut w1 = node_a();
    let mut w2 = w1.worker();
    let p = Pkt::from_pod1(f, f.vip(svc::WEB), tcp(40000, 80, tcpf::SYN)).build();
    let s = w1.send(POD1_PORT, &p).tx(POD2_PORT);
    assert_eq!(s.dst, f.pod2());
    let r = Pkt::from_pod2(f, f.pod1(), tcp(8080, 40000, tcpf::SYN | tcpf::ACK)).build();
    let s = w2.send(POD2_PORT, &r).tx(POD1_PORT);
    assert_eq!((s.src, s.sport), (f.vip(svc::WEB), 80));
    // And the masquerade reply, also on the other worker.
    let p = Pkt::from_pod1(f, f.outside(), udp(40001, 53)).build();
    let port = w1.send(POD1_PORT, &p).tx(UPLINK).sport;
    let r = Pkt::from_uplink(f.outside(), f.node_a(), udp(53, port)).build();
    let s = w2.send(UPLINK, &r).tx(POD1_PORT);
    assert_eq!((s.dst, s.dport), (f.pod1(), 40001));
}

fn session_affinity_is_shared_by_workers(f: Fam) {
    let mut w1 = node_a();
    let mut w2 = w1.worker();
    let mut chosen = Vec::new();
    for (i, sport) in (44000..44016u16).enumerate() {
        let w = if i % 2 == 0 { &mut w1 } else { &mut w2 };
        let p = Pkt::from_pod1(f, f.vip(svc::STICKY), tcp(sport, 80, tcpf::SYN)).build();
        let s = w.send(POD1_PORT, &p).tx(UPLINK);
        chosen.push(parse(&s.vxlan().2).dst);
    }
    chosen.dedup();
    assert_eq!(chosen.len(), 1, "{chosen:?}");
}

/// Where each flow ended up: (translated src, sport, dst, dport).
type Xlate = (IpAddr, u16, IpAddr, u16);

/// Two workers on two threads push the same new flows at the same time
/// (batches of 64, in lockstep rounds); both must see one translation per flow.
fn racing_workers(f: Fam, frames: Vec<(u16, Vec<u8>)>, out_port: u16) {
    let w1 = node_a();
    let w2 = w1.worker();
    let frames = Arc::new(frames);
    let barrier = Arc::new(Barrier::new(2));
    let run = |mut w: Node, frames: Arc<Vec<(u16, Vec<u8>)>>, barrier: Arc<Barrier>| {
        thread::spawn(move || {
            let mut seen: Vec<Xlate> = Vec::new();
            for chunk in frames.chunks(64) {
                barrier.wait();
                for o in w.send_batch(chunk) {
                    assert_eq!(o.verdict, Verdict::Tx(out_port));
                    let s = parse(&o.bytes);
                    let s = if out_port == UPLINK && s.eth.destination == B_UPLINK_MAC {
                        parse(&s.vxlan().2)
                    } else {
                        s
                    };
                    seen.push((s.src, s.sport, s.dst, s.dport));
                }
            }
            seen
        })
    };
    let h1 = run(w1, frames.clone(), barrier.clone());
    let h2 = run(w2, frames.clone(), barrier);
    let a = h1.join().expect("worker 1");
    let b = h2.join().expect("worker 2");
    assert_eq!(a.len(), frames.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "flow {i}: the workers translated it differently");
    }
    // Distinct flows got distinct translated tuples (no reply tuple shared).
    let mut uniq: HashMap<Xlate, usize> = HashMap::new();
    for (i, x) in a.iter().enumerate() {
        if let Some(j) = uniq.insert(*x, i) {
            panic!("flows {j} and {i} share the translated tuple {x:?} ({f:?})");
        }
    }
}

fn workers_racing_on_the_same_new_service_flows_agree_on_the_backend(f: Fam) {
    let frames = (0..1024u16)
        .map(|i| {
            let p = Pkt::from_pod1(f, f.vip(svc::MULTI), tcp(20000 + i, 80, tcpf::SYN));
            (POD1_PORT, p.build())
        })
        .collect();
    racing_workers(f, frames, UPLINK);
}

fn workers_racing_on_the_same_new_masqueraded_flows_agree_on_the_snat_port(f: Fam) {
    let frames = (0..1024u16)
        .map(|i| {
            let p = Pkt::from_pod1(f, f.outside(), udp(20000 + i, 53));
            (POD1_PORT, p.build())
        })
        .collect();
    racing_workers(f, frames, UPLINK);
}

fn workers_racing_on_the_same_new_nodeport_flows_agree_on_the_snat_port(f: Fam) {
    let np = f.node_port(svc::WEB_NODEPORT);
    let frames = (0..1024u16)
        .map(|i| {
            let p = Pkt::from_uplink(f.client(), f.node_a(), tcp(20000 + i, np, tcpf::SYN));
            (UPLINK, p.build())
        })
        .collect();
    racing_workers(f, frames, POD2_PORT);
}

both_families!(
    a_reply_handled_by_another_worker_is_reverse_natted,
    session_affinity_is_shared_by_workers,
    workers_racing_on_the_same_new_service_flows_agree_on_the_backend,
    workers_racing_on_the_same_new_masqueraded_flows_agree_on_the_snat_port,
    workers_racing_on_the_same_new_nodeport_flows_agree_on_the_snat_port,
);
