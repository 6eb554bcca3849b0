//! The UMEM's frame account and token rules, without any interface. Needs
//! root (an AF_XDP socket holds the UMEM registration); fails otherwise.

mod io_support;

use dataplane::io::{Xsk, XskConfig};
use dataplane::pipeline::{FRAME_SIZE, HEADROOM};

fn small() -> XskConfig {
    XskConfig {
        frames: 64,
        ring_size: 64,
        fill_per_socket: 32,
        ..XskConfig::default()
    }
}

#[test]
fn every_frame_is_accounted_for_from_allocation_to_free() {
    io_support::require_root();
    let mut xsk = Xsk::new(small()).expect("umem");
    let a = xsk.account();
    assert_eq!((a.total, a.free, a.held, a.missing()), (64, 64, 0, 0));
    let mut held = Vec::new();
    while let Some(t) = xsk.alloc() {
        held.push(t);
    }
    assert_eq!(held.len(), 64, "all frames can be taken");
    let a = xsk.account();
    assert_eq!((a.free, a.held, a.missing()), (0, 64, 0));
    for mut t in held.drain(..) {
        let chunk = xsk.chunk(&mut t);
        assert_eq!(chunk.len(), FRAME_SIZE);
        assert_eq!(t.head as usize, HEADROOM);
        xsk.free(t);
    }
    let a = xsk.account();
    assert_eq!((a.free, a.held, a.missing()), (64, 0, 0));
}

#[test]
fn frames_are_distinct_chunks_of_the_umem() {
    io_support::require_root();
    let mut xsk = Xsk::new(small()).expect("umem");
    let mut held: Vec<_> = std::iter::from_fn(|| xsk.alloc()).collect();
    for (i, t) in held.iter_mut().enumerate() {
        xsk.chunk(t).fill(i as u8);
    }
    for (i, t) in held.iter_mut().enumerate() {
        assert!(
            xsk.chunk(t).iter().all(|&b| b == i as u8),
            "chunk {i} overwritten"
        );
    }
    for t in held {
        xsk.free(t);
    }
}

#[test]
fn a_token_is_honoured_only_by_the_umem_that_issued_it() {
    io_support::require_root();
    let mut a = Xsk::new(small()).expect("umem a");
    let mut b = Xsk::new(small()).expect("umem b");
    let mut t = a.alloc().unwrap();
    assert!(b.chunk(&mut t).is_empty(), "b gives no bytes for a's frame");
    b.free(t);
    assert_eq!(b.account().free, 64, "b's free list did not take a's frame");
    assert_eq!(b.stats().bad_desc, 1);
    assert_eq!(
        a.account().held,
        1,
        "a still counts it held (it was lost, visibly)"
    );
    assert_eq!(a.account().missing(), 0);
}
