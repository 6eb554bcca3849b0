//! Stage bench: RFC 1624 incremental checksum updates (what NAT pays per
//! rewritten field) against a full RFC 1071 sum.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::wire::checksum;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    g.bench_function("update16", |b| {
        b.iter(|| checksum::update16(black_box(0x1c46), black_box(80), black_box(8080)))
    });
    g.bench_function("update32", |b| {
        b.iter(|| {
            checksum::update32(
                black_box(0x1c46),
                black_box([10, 96, 0, 10]),
                black_box([10, 244, 2, 10]),
            )
        })
    });
    let a = [0x20u8, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let z = [0xfdu8, 0, 0, 0x10, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
    g.bench_function("update128", |b| {
        b.iter(|| checksum::update128(black_box(0x1c46), black_box(&a), black_box(&z)))
    });
    let data = vec![0xa5u8; 1480];
    g.bench_function("full_sum_1480_bytes", |b| {
        b.iter(|| checksum::finish(checksum::sum(black_box(&data))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
