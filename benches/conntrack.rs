//! Stage bench: conntrack lookups of established flows (`track`) and
//! inserts of new ones, on a table holding 100k flows (random order, so
//! mostly cache misses) and on 1k hot flows.
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::conntrack::{FlowKey, Table, Timeouts};

const FLOWS: u32 = 100_000;
const NOW: u64 = 1_000_000_000;

fn key(i: u32) -> FlowKey {
    let ip = (0x0a01_0000u32 + (i >> 14)).to_be_bytes();
    FlowKey::v4(ip, [10, 96, 0, 10], 1024 + (i & 0x3fff) as u16, 53, 17)
}

fn reply_of(i: u32) -> FlowKey {
    let mut k = key(i);
    k.dst = [0; 16];
    k.dst[..4].copy_from_slice(&[10, 16, (i >> 8) as u8, i as u8]);
    k.dport = 5353;
    k.swap()
}

fn filled(capacity: usize) -> Table {
    let t = Table::new(capacity, Timeouts::default());
    for i in 0..FLOWS {
        t.insert(&key(i), &reply_of(i), i, 0, NOW).expect("insert");
    }
    t
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    let t = filled(1 << 18);
    let mut i = 0u32;
    g.bench_function("track_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % FLOWS;
            t.track(black_box(&key(i)), 0, NOW)
        })
    });
    // The same lookups over 1,024 flows: the entries stay in cache, which
    // separates the table's own cost from cache misses on 100k flows.
    let mut h = 0u32;
    g.bench_function("track_hit_1k_hot_flows", |b| {
        b.iter(|| {
            h = (h + 7919) % 1024;
            t.track(black_box(&key(h)), 0, NOW)
        })
    });
    let mut j = 0u32;
    g.bench_function("track_reply_hit", |b| {
        b.iter(|| {
            j = (j + 7919) % FLOWS;
            t.track(black_box(&reply_of(j)), 0, NOW)
        })
    });
    g.bench_function("track_miss", |b| {
        b.iter(|| t.track(black_box(&key(FLOWS + 12345)), 0, NOW))
    });
    g.bench_function("insert_new", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(FLOWS as u64) as u32;
                let t = Table::new(1 << 18, Timeouts::default());
                let start = Instant::now();
                for i in 0..n {
                    let _ = black_box(t.insert(&key(i), &reply_of(i), i, 0, NOW));
                }
                spent += start.elapsed();
                left -= n as u64;
            }
            spent
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
