//! A driver for counting the instructions of `conntrack::Table` operations
//! with callgrind:
//!
//! ```text
//! cargo build -j1 --release -p dataplane --example ct_track
//! valgrind --tool=callgrind --toggle-collect='*run_hits*' \
//!     target/release/examples/ct_track [flows] [ops]
//! ```
//!
//! (`*run_misses*`, `*run_inserts*` likewise). Each `run_*` does `ops`
//! operations, so instructions per operation = collected total / ops (the
//! loop around the call costs a few instructions of it).
//!
//! The table has capacity 2^20; `flows` (default 500 000) established,
//! assured, DNATed TCP flows are inserted first (so both index keys of each:
//! a realistic, half-full index).

use std::hint::black_box;

use dataplane::conntrack::{FlowKey, Table, Timeouts};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SEC: u64 = 1_000_000_000;

fn client(i: u32) -> FlowKey {
    FlowKey::v4(
        [10, 0, (i >> 8) as u8, i as u8],
        [10, 96, (i >> 24) as u8, (i >> 16) as u8],
        (i % 60_000) as u16 + 1024,
        80,
        6,
    )
}

fn reply_of(k: &FlowKey, i: u32) -> FlowKey {
    FlowKey::v4(
        [10, 1, (i >> 8) as u8, i as u8],
        k.src_v4(),
        8080,
        k.sport,
        6,
    )
}

/// Looks up established flows (state unchanged: the common case).
#[inline(never)]
fn run_hits(t: &Table, keys: &[FlowKey], now: u64) -> u64 {
    let mut sum = 0u64;
    for k in keys {
        // The whole hit is used, as the pipeline does (xlate for NAT).
        if let Some(h) = black_box(t.track(black_box(k), ACK, now)) {
            sum = sum.wrapping_add(u64::from(h.xlate.dport) + u64::from(h.user));
        }
    }
    sum
}

/// Looks up keys that are not in the table.
#[inline(never)]
fn run_misses(t: &Table, keys: &[FlowKey], now: u64) -> u64 {
    let mut n = 0u64;
    for k in keys {
        if t.track(black_box(k), ACK, now).is_none() {
            n += 1;
        }
    }
    n
}

/// Inserts new DNATed flows (both tuples).
#[inline(never)]
fn run_inserts(t: &Table, keys: &[(FlowKey, FlowKey)], now: u64) -> u64 {
    let mut n = 0u64;
    for (k, r) in keys {
        if t.insert(black_box(k), r, 7, SYN, now).is_ok() {
            n += 1;
        }
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let flows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let ops: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let t = Table::new(1 << 20, Timeouts::default());
    for i in 0..flows {
        let k = client(i);
        let r = reply_of(&k, i);
        t.insert(&k, &r, i, ACK, 0).expect("room");
        t.track(&r, ACK, 0).expect("reply found");
    }
    // Hits spread over the flows (entries mostly out of cache, as in a
    // busy node), misses on keys never inserted, inserts of new flows.
    let step = (flows / ops.max(1)).max(1);
    let hits: Vec<FlowKey> = (0..ops).map(|j| client((j * step) % flows)).collect();
    let misses: Vec<FlowKey> = (0..ops).map(|j| client(flows + j)).collect();
    let news: Vec<(FlowKey, FlowKey)> = (0..ops)
        .map(|j| {
            let i = flows + ops + j;
            let k = client(i);
            (k, reply_of(&k, i))
        })
        .collect();
    let h = run_hits(&t, &hits, SEC);
    let m = run_misses(&t, &misses, SEC);
    let n = run_inserts(&t, &news, SEC);
    println!(
        "flows {flows}, ops {ops}: hits {}, misses {m}, inserted {n}, live {}",
        h,
        t.len()
    );
}
