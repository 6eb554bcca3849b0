//! Stage bench: longest-prefix match on 10,000 IPv4 and IPv6 prefixes
//! (remote nodes' pod CIDRs).
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::route::{Lpm4, Lpm6, Prefix};

fn bench(c: &mut Criterion) {
    let mut l4 = Lpm4::new();
    let mut l6 = Lpm6::new();
    for i in 0..10_000u32 {
        let p: Prefix = format!("10.{}.{}.0/24", 16 + (i >> 8), i & 0xff)
            .parse()
            .expect("prefix");
        l4.insert(p, i).expect("insert");
        let p: Prefix = format!("fd00:10:{:x}:{:x}::/64", 0x244 + (i >> 8), i & 0xff)
            .parse()
            .expect("prefix");
        l6.insert(p, i).expect("insert");
    }
    let mut g = c.benchmark_group("lpm");
    let mut i = 0u32;
    g.bench_function("lookup_v4", |b| {
        b.iter(|| {
            i = (i + 7919) % 10_000;
            let a = [10, 16 + (i >> 8) as u8, i as u8, 77];
            l4.lookup(black_box(&a))
        })
    });
    let mut j = 0u32;
    g.bench_function("lookup_v6", |b| {
        b.iter(|| {
            j = (j + 7919) % 10_000;
            let hi = 0x244 + (j >> 8);
            let mut a = [0u8; 16];
            a[..6].copy_from_slice(&[0xfd, 0, 0, 0x10, (hi >> 8) as u8, hi as u8]);
            a[7] = j as u8;
            a[15] = 1;
            l6.lookup(black_box(&a))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
