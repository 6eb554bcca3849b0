//! Stage bench: parsing Ethernet + IPv4 + UDP with the wire views (the
//! checks every packet pays before any lookup).
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::wire::{ethernet, ipv4, udp};
use std::net::Ipv4Addr;

fn parse(frame: &[u8]) -> Option<(Ipv4Addr, u16, u16)> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if !ip.verify_checksum() {
        return None;
    }
    let u = udp::Packet::new_checked(ip.payload()).ok()?;
    Some((ip.dst_addr(), u.src_port(), u.dst_port()))
}

fn wire(c: &mut Criterion) {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([0x0a, 0x58, 0, 0, 0, 2], [2, 0, 0, 0, 0x0a, 0xff])
        .ipv4([10, 1, 0, 2], [10, 96, 0, 1], 64)
        .udp(40000, 53)
        .write(&mut frame, &[7u8; 64])
        .expect("frame");
    assert!(parse(&frame).is_some());
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_eth_ipv4_udp", |b| {
        b.iter(|| parse(black_box(&frame)))
    });
    g.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
