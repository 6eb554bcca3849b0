//! The whole pipeline on batches of 64 frames, in three scenarios:
//! (a) established pod -> ClusterIP -> remote pod (DNAT + encap),
//! (b) VXLAN in -> decap -> reverse NAT -> local pod,
//! (c) every packet a new flow (Maglev pick + conntrack insert);
//! plus plain pod -> pod, each for IPv4 and IPv6 pods. Template restore happens
//! outside the timed region.
mod common;

use std::time::{Duration, Instant};

use common::{build_pipeline, workload, Bufs, Scenario, Shape, BATCH};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::pipeline::Verdict;

fn bench_scenario(c: &mut Criterion, scenario: Scenario, flows: u32, packets: u64, family: u8) {
    let shape = Shape {
        flows,
        services: 100,
        backends: 10,
        packets,
        family,
    };
    let mut w = workload(scenario, shape);
    let mut bufs = Bufs::new();
    let mut verdicts = [Verdict::Pass; BATCH];
    let mut at = 0usize;
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(format!("{}/ipv{family}", scenario.name()), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if at + BATCH > w.templates.len() {
                    at = 0;
                    if scenario == Scenario::NewFlow {
                        // Every packet must stay a new flow: start over on an
                        // empty conntrack (outside the timed region).
                        w.pipeline = build_pipeline(&shape, scenario);
                    }
                }
                let batch = &w.templates[at..at + BATCH];
                bufs.load(batch);
                let mut frames = bufs.frames(batch);
                let t = Instant::now();
                w.pipeline.process(&mut frames, &mut verdicts, w.now);
                spent += t.elapsed();
                black_box(&verdicts);
                debug_assert!(verdicts
                    .iter()
                    .zip(&w.expected[at..at + BATCH])
                    .all(|(v, e)| v == e));
                w.now += 1_000;
                at += BATCH;
            }
            spent
        })
    });
    g.finish();
    // Prove the work was done: the last batch got the expected verdicts
    // (new-flow may wrap onto flows that exist by then: still Tx(uplink)).
    let last = at.saturating_sub(BATCH);
    for (v, e) in verdicts.iter().zip(&w.expected[last..last + BATCH]) {
        assert_eq!(v, e, "{}: unexpected verdict", scenario.name());
    }
}

fn pipeline(c: &mut Criterion) {
    for family in [4, 6] {
        bench_scenario(c, Scenario::ServiceEncap, 4096, 0, family);
        bench_scenario(c, Scenario::DecapReverse, 4096, 0, family);
        bench_scenario(c, Scenario::NewFlow, 1, 1 << 18, family);
        bench_scenario(c, Scenario::PodToPod, 4096, 0, family);
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
