//! Stage bench: parsing Ethernet + IPv4 + UDP with the wire views (the
//! checks every packet pays before any lookup).
mod common;

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
    let frame = common::ipv4_udp(
        common::client_mac(0),
        common::GW_MAC,
        common::client_ip(0),
        common::vip(0),
        40000,
        53,
        64,
        &[7u8; 64],
        true,
    );
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
