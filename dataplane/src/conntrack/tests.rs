use std::sync::{Barrier, Mutex};

use super::*;
use crate::proto;

const SEC: u64 = 1_000_000_000;
/// One timestamp tick of the table (2^20 ns), to step just past a timeout.
const TICK: u64 = 1 << 20;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn table(cap: usize) -> Table {
    Table::new(cap, Timeouts::default())
}

/// pod 10.0.0.x:sport -> VIP 10.96.0.1:80.
fn client(x: u8, sport: u16, p: u8) -> FlowKey {
    FlowKey::v4([10, 0, 0, x], [10, 96, 0, 1], sport, 80, p)
}

/// The backend a test flow is DNATed to, derived from its source port.
fn backend(k: &FlowKey) -> [u8; 4] {
    [10, 1, (k.sport >> 8) as u8, k.sport as u8]
}

/// The reply tuple of `k` DNATed to `backend(k)`:8080.
fn dnat_reply(k: &FlowKey) -> FlowKey {
    FlowKey::v4(backend(k), k.src_v4(), 8080, k.sport, k.proto)
}

fn insert_dnat(t: &Table, k: &FlowKey, flags: u8, now: u64) -> Hit {
    t.insert(k, &dnat_reply(k), 7, flags, now)
        .expect("inserted")
}

fn state(t: &Table, id: u32) -> CtState {
    t.state_of(id).expect("live").0
}

#[test]
fn entry_and_index_fit_their_budgets() {
    // The const asserts in table.rs hold the budgets; this checks the
    // allocation matches them.
    let t = table(1000);
    assert_eq!(t.memory_bytes(), 1000 * BYTES_PER_FLOW);
    assert!(t.memory_bytes() <= 1000 * (96 + 32));
}

#[test]
fn a_dnat_flow_is_found_from_both_sides_with_its_translation() {
    let t = table(16);
    let k = client(1, 40000, proto::TCP);
    let r = dnat_reply(&k);
    let hit = insert_dnat(&t, &k, SYN, 0);
    assert_eq!(hit.dir, Dir::Orig);
    assert!(hit.nat);
    assert_eq!(hit.user, 7);
    assert_eq!(
        hit.xlate,
        FlowKey::v4([10, 0, 0, 1], backend(&k), 40000, 8080, 6)
    );

    let fwd = t.track(&k, ACK, SEC).expect("orig found");
    assert_eq!((fwd.id, fwd.dir, fwd.xlate), (hit.id, Dir::Orig, hit.xlate));
    let back = t.track(&r, SYN | ACK, SEC).expect("reply found");
    assert_eq!(back.id, hit.id);
    assert_eq!(back.dir, Dir::Reply);
    assert!(back.nat);
    assert_eq!(
        back.xlate,
        FlowKey::v4([10, 96, 0, 1], [10, 0, 0, 1], 80, 40000, 6)
    );
    assert_eq!(back.user, 7);
    assert_eq!(t.len(), 1);
    assert_eq!(t.stats().inserted, 1);
}

#[test]
fn a_flow_without_nat_reports_no_translation() {
    let t = table(4);
    let k = client(2, 1000, proto::UDP);
    let h = t.insert(&k, &k.swap(), 0, 0, 0).unwrap();
    assert!(!h.nat);
    assert_eq!(h.xlate, k);
    let back = t.track(&k.swap(), 0, 1).unwrap();
    assert_eq!(back.dir, Dir::Reply);
    assert!(!back.nat);
    assert_eq!(back.xlate, k.swap());
}

#[test]
fn an_unknown_key_is_a_miss() {
    let t = table(4);
    insert_dnat(&t, &client(1, 1, proto::UDP), 0, 0);
    assert!(t.track(&client(1, 2, proto::UDP), 0, 0).is_none());
    assert!(t.track(&client(1, 1, proto::TCP), 0, 0).is_none());
}

#[test]
fn inserting_a_present_flow_returns_its_entry_and_counts_a_race() {
    let t = table(8);
    let k = client(3, 5000, proto::UDP);
    let a = insert_dnat(&t, &k, 0, 0);
    // The loser may have picked another backend: the winner's NAT stands.
    let b = t.insert(
        &k,
        &FlowKey::v4([9, 9, 9, 9], k.src_v4(), 1, 5000, 17),
        99,
        0,
        1,
    );
    let b = b.unwrap();
    assert_eq!(b.id, a.id);
    assert_eq!(b.xlate, a.xlate);
    assert_eq!(b.user, 7);
    let s = t.stats();
    assert_eq!((s.inserted, s.races, s.live), (1, 1, 1));
}

#[test]
fn a_reply_tuple_held_by_another_flow_is_refused_as_reply_taken() {
    let t = table(8);
    // Two pods SNATed to the same node IP:port toward the same server.
    let server = [1, 1, 1, 1];
    let a = FlowKey::v4([10, 0, 0, 1], server, 1111, 443, 6);
    let b = FlowKey::v4([10, 0, 0, 2], server, 2222, 443, 6);
    let reply = FlowKey::v4(server, [192, 168, 0, 10], 443, 30000, 6);
    t.insert(&a, &reply, 0, SYN, 0).unwrap();
    assert_eq!(
        t.insert(&b, &reply, 0, SYN, 0),
        Err(InsertError::ReplyTaken)
    );
    assert!(t.track(&b, 0, 0).is_none(), "the refused flow left no slot");
    let s = t.stats();
    assert_eq!((s.reply_taken, s.live, s.inserted), (1, 1, 1));
    // Another port works.
    let reply2 = FlowKey::v4(server, [192, 168, 0, 10], 443, 30001, 6);
    let hb = t.insert(&b, &reply2, 0, SYN, 0).unwrap();
    assert_eq!(t.track(&reply2, SYN | ACK, 0).unwrap().id, hb.id);
    assert_eq!(
        t.track(&reply, SYN | ACK, 0).unwrap().xlate.dst_v4(),
        [10, 0, 0, 1]
    );
}

#[test]
fn an_expired_flow_does_not_hold_its_reply_tuple() {
    let t = table(8);
    let server = [1, 1, 1, 1];
    let a = FlowKey::v4([10, 0, 0, 1], server, 1111, 53, 17);
    let b = FlowKey::v4([10, 0, 0, 2], server, 2222, 53, 17);
    let reply = FlowKey::v4(server, [192, 168, 0, 10], 53, 30000, 17);
    t.insert(&a, &reply, 0, 0, 0).unwrap();
    let h = t.insert(&b, &reply, 0, 0, 31 * SEC).unwrap();
    assert_eq!(t.track(&reply, 0, 31 * SEC).unwrap().id, h.id);
    assert!(t.track(&a, 0, 31 * SEC).is_none());
    assert_eq!(t.len(), 1);
}

/// Drives one flow through `steps` of (direction is reply, flags, expected).
fn walk(steps: &[(bool, u8, CtState)]) {
    let t = table(4);
    let k = client(1, 4242, proto::TCP);
    let r = dnat_reply(&k);
    let (first, rest) = steps.split_first().unwrap();
    assert!(!first.0);
    let id = insert_dnat(&t, &k, first.1, 0).id;
    assert_eq!(state(&t, id), first.2, "initial state");
    for (i, &(reply, flags, want)) in rest.iter().enumerate() {
        let key = if reply { r } else { k };
        t.track(&key, flags, SEC).expect("tracked");
        assert_eq!(state(&t, id), want, "after step {}", i + 1);
    }
}

#[test]
fn a_tcp_handshake_goes_syn_sent_syn_recv_established() {
    use CtState::*;
    walk(&[
        (false, SYN, SynSent),
        (false, SYN, SynSent),
        (true, SYN | ACK, SynRecv),
        (true, ACK, SynRecv),
        (false, ACK, Established),
        (false, ACK, Established),
        (true, ACK, Established),
    ]);
}

#[test]
fn a_tcp_close_initiated_by_the_client_goes_through_fin_wait_close_wait_last_ack_time_wait() {
    use CtState::*;
    walk(&[
        (false, SYN, SynSent),
        (true, SYN | ACK, SynRecv),
        (false, ACK, Established),
        (false, FIN | ACK, FinWait),
        (true, ACK, CloseWait),
        (true, FIN | ACK, LastAck),
        (false, ACK, TimeWait),
        (false, SYN, SynSent),
    ]);
}

#[test]
fn a_simultaneous_close_goes_from_fin_wait_to_last_ack() {
    use CtState::*;
    walk(&[
        (false, SYN, SynSent),
        (true, SYN | ACK, SynRecv),
        (false, FIN, FinWait),
        (true, FIN | ACK, LastAck),
        (true, ACK, TimeWait),
    ]);
}

#[test]
fn a_reset_closes_the_flow_from_any_state() {
    use CtState::*;
    walk(&[(false, SYN, SynSent), (true, RST, Close)]);
    walk(&[
        (false, SYN, SynSent),
        (true, SYN | ACK, SynRecv),
        (false, RST | ACK, Close),
    ]);
    walk(&[(false, ACK, Established), (true, RST, Close)]);
    walk(&[
        (false, ACK, Established),
        (false, FIN, FinWait),
        (false, RST, Close),
    ]);
    walk(&[(false, RST, Close)]);
}

#[test]
fn a_tcp_flow_picked_up_mid_stream_starts_established() {
    walk(&[
        (false, ACK, CtState::Established),
        (false, ACK | 0x08, CtState::Established),
    ]);
}

#[test]
fn a_tcp_flow_is_assured_only_once_established_with_a_reply_seen() {
    let t = table(4);
    let k = client(1, 9, proto::TCP);
    let id = insert_dnat(&t, &k, SYN, 0).id;
    assert_eq!(t.state_of(id), Some((CtState::SynSent, false)));
    t.track(&dnat_reply(&k), SYN | ACK, 0).unwrap();
    assert_eq!(t.state_of(id), Some((CtState::SynRecv, false)));
    t.track(&k, ACK, 0).unwrap();
    assert_eq!(t.state_of(id), Some((CtState::Established, true)));
}

/// Inserts a flow in `st` (reached at time 0) and checks it lives exactly
/// its timeout.
fn lives(flags_path: &[(bool, u8)], p: u8, st: CtState, secs: u32) {
    let t = table(4);
    let k = client(1, 777, p);
    let r = dnat_reply(&k);
    let id = insert_dnat(&t, &k, flags_path[0].1, 0).id;
    for &(reply, f) in &flags_path[1..] {
        t.track(if reply { &r } else { &k }, f, 0).unwrap();
    }
    assert_eq!(state(&t, id), st);
    let limit = u64::from(secs) * SEC;
    assert!(
        t.track(&k, 0, limit - 2 * TICK).is_some(),
        "{st:?} alive before"
    );
    let t = table(4);
    let id = insert_dnat(&t, &k, flags_path[0].1, 0).id;
    for &(reply, f) in &flags_path[1..] {
        t.track(if reply { &r } else { &k }, f, 0).unwrap();
    }
    assert_eq!(state(&t, id), st);
    assert!(
        t.track(&k, 0, limit + 2 * TICK).is_none(),
        "{st:?} expired after {secs}s"
    );
    assert_eq!(t.reclaim(limit + 2 * TICK, 4), 1);
    assert!(t.is_empty());
}

#[test]
fn every_tcp_state_lives_its_linux_timeout() {
    use CtState::*;
    let d = Timeouts::default();
    lives(&[(false, SYN)], proto::TCP, SynSent, d.tcp_syn_sent);
    lives(
        &[(false, SYN), (true, SYN | ACK)],
        proto::TCP,
        SynRecv,
        d.tcp_syn_recv,
    );
    lives(&[(false, ACK)], proto::TCP, Established, d.tcp_established);
    lives(
        &[(false, ACK), (false, FIN)],
        proto::TCP,
        FinWait,
        d.tcp_fin_wait,
    );
    lives(
        &[(false, ACK), (false, FIN), (true, ACK)],
        proto::TCP,
        CloseWait,
        d.tcp_close_wait,
    );
    lives(
        &[(false, ACK), (false, FIN), (true, FIN)],
        proto::TCP,
        LastAck,
        d.tcp_last_ack,
    );
    lives(
        &[(false, ACK), (false, FIN), (true, FIN), (false, ACK)],
        proto::TCP,
        TimeWait,
        d.tcp_time_wait,
    );
    lives(&[(false, RST)], proto::TCP, Close, d.tcp_close);
    assert_eq!(
        (
            d.tcp_syn_sent,
            d.tcp_syn_recv,
            d.tcp_established,
            d.tcp_fin_wait
        ),
        (120, 60, 432_000, 120)
    );
    assert_eq!(
        (
            d.tcp_close_wait,
            d.tcp_last_ack,
            d.tcp_time_wait,
            d.tcp_close
        ),
        (60, 30, 120, 10)
    );
}

#[test]
fn a_udp_flow_is_unreplied_for_30s_then_assured_for_120s_once_answered() {
    let t = table(4);
    let k = client(1, 53, proto::UDP);
    let id = insert_dnat(&t, &k, 0, 0).id;
    assert_eq!(t.state_of(id), Some((CtState::UdpUnreplied, false)));
    lives(&[(false, 0)], proto::UDP, CtState::UdpUnreplied, 30);
    t.track(&dnat_reply(&k), 0, SEC).unwrap();
    assert_eq!(t.state_of(id), Some((CtState::UdpAssured, true)));
    lives(
        &[(false, 0), (true, 0)],
        proto::UDP,
        CtState::UdpAssured,
        120,
    );
}

#[test]
fn an_icmp_echo_is_tracked_by_identifier_for_30s() {
    let t = table(4);
    let req = FlowKey::v4([10, 0, 0, 1], [8, 8, 8, 8], 0x1234, 0, proto::ICMP);
    let other_ident = FlowKey::v4([10, 0, 0, 1], [8, 8, 8, 8], 0x1235, 0, proto::ICMP);
    let h = t.insert(&req, &req.swap(), 0, 0, 0).unwrap();
    assert_eq!(t.state_of(h.id), Some((CtState::Icmp, false)));
    let reply = FlowKey::v4([8, 8, 8, 8], [10, 0, 0, 1], 0, 0x1234, proto::ICMP);
    assert_eq!(t.track(&reply, 0, SEC).unwrap().dir, Dir::Reply);
    assert!(t.track(&other_ident, 0, SEC).is_none());
    assert!(t.track(&req, 0, SEC + 30 * SEC - 2 * TICK).is_some());
    assert!(t.track(&req, 0, SEC + 60 * SEC + 2 * TICK).is_none());
    let v6 = FlowKey::v6([1; 16], [2; 16], 7, 0, proto::ICMPV6);
    let h6 = t.insert(&v6, &v6.swap(), 0, 0, 0).unwrap();
    assert_eq!(t.state_of(h6.id).unwrap().0, CtState::Icmp);
}

#[test]
fn other_protocols_get_the_generic_600s_timeout() {
    lives(&[(false, 0)], 47, CtState::Generic, 600);
    lives(&[(false, 0)], proto::SCTP, CtState::Generic, 600);
}

#[test]
fn configured_timeouts_replace_the_defaults() {
    let t = Table::new(
        4,
        Timeouts {
            udp_unreplied: 5,
            ..Timeouts::default()
        },
    );
    let k = client(1, 1, proto::UDP);
    insert_dnat(&t, &k, 0, 0);
    assert!(t.track(&k, 0, 5 * SEC - TICK).is_some());
    assert!(t.track(&k, 0, 10 * SEC + TICK).is_none());
}

#[test]
fn traffic_keeps_a_flow_alive_past_its_timeout() {
    let t = table(4);
    let k = client(1, 1, proto::UDP);
    insert_dnat(&t, &k, 0, 0);
    for s in 1..=100 {
        assert!(t.track(&k, 0, s * 20 * SEC).is_some(), "at {}s", s * 20);
    }
    assert_eq!(t.reclaim(2000 * SEC + 10 * SEC, 4), 0);
}

#[test]
fn reclaim_sweeps_expired_flows_within_its_budget() {
    let t = table(64);
    for i in 0..40 {
        insert_dnat(&t, &client(1, i, proto::UDP), 0, 0);
    }
    // Keep the last ten fresh.
    for i in 30..40 {
        t.track(&client(1, i, proto::UDP), 0, 25 * SEC).unwrap();
    }
    let now = 40 * SEC;
    assert!(t.reclaim(now, 16) <= 16);
    let mut total = 0;
    while t.len() > 10 {
        total += t.reclaim(now, 16);
    }
    assert_eq!(t.len(), 10);
    assert_eq!(t.stats().reclaimed, 30);
    assert!(total <= 30);
    for i in 0..40 {
        let k = client(1, i, proto::UDP);
        assert_eq!(t.track(&k, 0, now).is_some(), i >= 30);
        assert_eq!(t.track(&dnat_reply(&k), 0, now).is_some(), i >= 30);
    }
    // Freed entries and slots are reusable.
    for i in 100..154 {
        insert_dnat(&t, &client(2, i, proto::UDP), 0, now);
    }
    assert_eq!(t.len(), 64);
    assert_eq!(t.stats().refused_full, 0);
}

#[test]
fn a_removed_flow_is_gone_from_both_sides_and_its_id_reuse_is_not_mistaken() {
    let t = table(4);
    let a = client(1, 1, proto::UDP);
    let ha = insert_dnat(&t, &a, 0, 0);
    t.remove(ha.id);
    t.remove(ha.id);
    t.remove(u32::MAX);
    assert_eq!(t.stats().removed, 1);
    assert!(t.track(&a, 0, 0).is_none());
    assert!(t.track(&dnat_reply(&a), 0, 0).is_none());
    assert!(t.is_empty());
    let b = client(2, 2, proto::UDP);
    let hb = insert_dnat(&t, &b, 0, 0);
    assert_eq!(hb.id, ha.id, "the free list hands the id out again");
    assert!(t.track(&a, 0, 0).is_none());
    assert_eq!(t.track(&b, 0, 0).unwrap().id, hb.id);
}

#[test]
fn a_full_table_evicts_expired_then_unassured_flows_and_counts_refusals() {
    let t = table(4);
    let k: Vec<FlowKey> = (0..8).map(|i| client(1, 100 + i, proto::UDP)).collect();
    // k0 assured at 0 (lives 120s); k1 unassured, k2 and k3 assured at 100s.
    insert_dnat(&t, &k[0], 0, 0);
    t.track(&dnat_reply(&k[0]), 0, 0).unwrap();
    for key in &k[1..4] {
        insert_dnat(&t, key, 0, 100 * SEC);
    }
    for key in [&k[2], &k[3]] {
        t.track(&dnat_reply(key), 0, 100 * SEC).unwrap();
    }
    let now = 125 * SEC; // k0 idle 125s > 120s; k1 idle 25s < 30s.
    insert_dnat(&t, &k[4], 0, now);
    let s = t.stats();
    assert_eq!((s.evicted_expired, s.evicted_unassured), (1, 0));
    assert!(t.track(&k[0], 0, now).is_none());
    assert!(
        t.track(&k[1], 0, now).is_some(),
        "unassured k1 kept while k0 expired"
    );

    // Now full with k1, k4 unassured; a new flow evicts one of them.
    insert_dnat(&t, &k[5], 0, now);
    assert_eq!(t.stats().evicted_unassured, 1);
    assert!(t.track(&k[2], 0, now).is_some());
    assert!(t.track(&k[3], 0, now).is_some());
    let unassured_left = [&k[1], &k[4]]
        .iter()
        .filter(|key| t.track(key, 0, now).is_some())
        .count();
    assert_eq!(unassured_left, 1);

    // All assured and fresh: refused, counted.
    for key in &k[1..6] {
        if let Some(h) = t.track(key, 0, now) {
            t.track(&dnat_reply(key), 0, now).unwrap();
            assert!(t.state_of(h.id).unwrap().1);
        }
    }
    assert_eq!(insert_dnat_err(&t, &k[6], now), InsertError::Full);
    assert_eq!(t.stats().refused_full, 1);
    assert_eq!(t.len(), 4);
}

fn insert_dnat_err(t: &Table, k: &FlowKey, now: u64) -> InsertError {
    t.insert(k, &dnat_reply(k), 0, 0, now).unwrap_err()
}

#[test]
fn iter_live_copies_every_live_flow() {
    let t = table(8);
    for i in 0..5 {
        insert_dnat(&t, &client(1, i, proto::TCP), SYN, 0);
    }
    let snaps: Vec<FlowSnapshot> = t.iter_live(3 * SEC).collect();
    assert_eq!(snaps.len(), 5);
    for s in &snaps {
        assert_eq!(s.reply, dnat_reply(&s.orig));
        assert_eq!(s.state, CtState::SynSent);
        assert_eq!(s.user, 7);
        assert!(s.idle_ns >= 3 * SEC - TICK && s.idle_ns <= 3 * SEC);
    }
}

#[test]
fn ipv4_and_ipv6_flows_share_the_table() {
    let t = table(8);
    let v6 = FlowKey::v6([0xfd; 16], [0xfe; 16], 1, 2, proto::TCP);
    let v4 = client(1, 1, proto::TCP);
    let h6 = t.insert(&v6, &v6.swap(), 1, SYN, 0).unwrap();
    let h4 = insert_dnat(&t, &v4, SYN, 0);
    assert_ne!(h6.id, h4.id);
    assert_eq!(t.track(&v6.swap(), SYN | ACK, 0).unwrap().id, h6.id);
}

/// Threads insert the same flows at the same moment, plus their own, while
/// others look up and remove: one entry per flow, no torn tuples, counts add up.
#[test]
fn concurrent_workers_agree_on_one_entry_per_flow_and_never_see_torn_tuples() {
    const THREADS: usize = 4;
    const ROUNDS: u16 = 40;
    const SHARED: u16 = 64;
    const OWN: u16 = 32;
    let t = table(20_000);
    let barrier = Barrier::new(THREADS);
    let ids = Mutex::new(vec![[u32::MAX; THREADS]; usize::from(SHARED)]);
    let check = |k: &FlowKey, h: &Hit| {
        let want = if h.dir == Dir::Orig {
            dnat_reply(k).swap()
        } else {
            FlowKey::v4([10, 96, 0, 1], k.dst_v4(), 80, k.dport, k.proto)
        };
        assert_eq!(h.xlate, want, "torn or foreign tuple for {k:?}");
    };
    let shared_key = |r: u16, i: u16| client(1, r * SHARED + i, proto::UDP);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (t, barrier, ids, check) = (&t, &barrier, &ids, &check);
            s.spawn(move || {
                for r in 0..ROUNDS {
                    let now = u64::from(r) * SEC;
                    barrier.wait();
                    let mut mine = [u32::MAX; SHARED as usize];
                    for j in 0..SHARED {
                        let i = (j + th as u16 * 17) % SHARED;
                        let k = shared_key(r, i);
                        let h = insert_dnat(t, &k, 0, now);
                        check(&k, &h);
                        mine[usize::from(i)] = h.id;
                        let own = client(2 + th as u8, r * OWN + j % OWN, proto::UDP);
                        if j < OWN {
                            let ho = insert_dnat(t, &own, 0, now);
                            assert_eq!(t.track(&own, 0, now).unwrap().id, ho.id);
                        }
                        // Look at everything shared so far, both directions.
                        let any = shared_key(r, (j * 7) % SHARED);
                        if let Some(h) = t.track(&dnat_reply(&any), 0, now) {
                            check(&dnat_reply(&any), &h);
                        }
                    }
                    {
                        let mut g = ids.lock().unwrap();
                        for (i, id) in mine.iter().enumerate() {
                            g[i][th] = *id;
                        }
                    }
                    barrier.wait();
                    // Each thread removes its quarter of the shared flows of
                    // this round while the others look them all up.
                    for i in 0..SHARED {
                        let k = shared_key(r, i);
                        if usize::from(i) % THREADS == th {
                            let id = t.track(&k, 0, now).expect("present").id;
                            t.remove(id);
                        } else if let Some(h) = t.track(&k, 0, now) {
                            check(&k, &h);
                        }
                    }
                    barrier.wait();
                    if th == 0 {
                        let g = ids.lock().unwrap();
                        for (i, per) in g.iter().enumerate() {
                            assert!(per.iter().all(|&x| x == per[0]), "flow {i}: ids {per:?}");
                            assert!(t.track(&shared_key(r, i as u16), 0, now).is_none());
                        }
                        let own = THREADS * usize::from(OWN) * (usize::from(r) + 1);
                        assert_eq!(t.len(), own, "live count after round {r}");
                    }
                }
                barrier.wait();
                // Everyone sweeps an expired table at once.
                let end = (u64::from(ROUNDS) + 100) * SEC;
                while t.reclaim(end, 257) > 0 || !t.is_empty() {}
            });
        }
    });
    let s = t.stats();
    let shared = u64::from(ROUNDS) * u64::from(SHARED);
    let own = THREADS as u64 * u64::from(ROUNDS) * u64::from(OWN);
    assert_eq!(s.inserted, shared + own, "one entry per flow");
    assert_eq!(
        s.races,
        shared * (THREADS as u64 - 1),
        "every loser counted"
    );
    assert_eq!(s.live, 0);
    assert_eq!(s.reclaimed, own);
    assert_eq!(s.refused_full + s.contended + s.reply_taken, 0);
}

/// The worst race: every thread inserts the very same new flows in the same
/// order, over and over.
#[test]
fn simultaneous_inserts_of_one_new_flow_all_return_the_same_id() {
    const THREADS: usize = 4;
    let t = table(1024);
    let barrier = Barrier::new(THREADS);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut v = Vec::new();
                for i in 0..500u16 {
                    if i % 50 == 0 {
                        barrier.wait();
                    }
                    let k = client(9, i, proto::TCP);
                    v.push(insert_dnat(&t, &k, SYN, 0).id);
                }
                out.lock().unwrap().push(v);
            });
        }
    });
    let out = out.into_inner().unwrap();
    for i in 0..500 {
        assert!(out.iter().all(|v| v[i] == out[0][i]), "flow {i}");
    }
    assert_eq!(t.len(), 500);
    assert_eq!(t.stats().races, 500 * (THREADS as u64 - 1));
}

/// Holds a million flows in a table of capacity one million (slow in debug
/// builds: run with `cargo test --release`).
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release")]
fn a_table_of_capacity_one_million_holds_one_million_flows() {
    const N: u32 = 1_000_000;
    let t = table(N as usize);
    let key = |i: u32| {
        FlowKey::v4(
            [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            [10, 96, 0, 1],
            (i % 50_000) as u16,
            80,
            proto::TCP,
        )
    };
    let start = std::time::Instant::now();
    for i in 0..N {
        let k = key(i);
        t.insert(&k, &dnat_reply(&k), i, SYN, 0)
            .expect("room for every flow");
    }
    let ins = start.elapsed();
    assert_eq!(t.len(), N as usize);
    let start = std::time::Instant::now();
    for i in 0..N {
        let k = key(i);
        let h = t.track(&k, ACK, SEC).expect("found");
        assert_eq!(h.user, i);
        assert!(t.track(&dnat_reply(&k), ACK, SEC).is_some());
    }
    let look = start.elapsed();
    let s = t.stats();
    assert_eq!(
        (s.refused_full, s.evicted_unassured, s.live),
        (0, 0, u64::from(N))
    );
    eprintln!(
        "1M flows: {} MB, insert {:?} ({} ns/flow), 2M lookups {:?}",
        t.memory_bytes() >> 20,
        ins,
        ins.as_nanos() / u128::from(N),
        look
    );
}

/// Prints the cost of `track` on established flows whose entries are in
/// cache (the per-packet hot path) and checks it stays far below a
/// microsecond. Release only: debug timings mean nothing.
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release")]
fn tracking_an_established_flow_costs_tens_of_nanoseconds() {
    const FLOWS: u16 = 1024;
    const ROUNDS: u64 = 2000;
    let t = table(64 * 1024);
    let keys: Vec<FlowKey> = (0..FLOWS).map(|i| client(1, i, proto::TCP)).collect();
    for k in &keys {
        insert_dnat(&t, k, ACK, 0);
        t.track(&dnat_reply(k), ACK, 0).unwrap();
    }
    let start = std::time::Instant::now();
    let mut sum = 0u64;
    for r in 0..ROUNDS {
        for k in &keys {
            let h = t
                .track(std::hint::black_box(k), ACK, r * 1_000_000)
                .unwrap();
            sum = sum.wrapping_add(u64::from(h.xlate.dport));
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / (ROUNDS * u64::from(FLOWS)) as f64;
    assert_eq!(sum, 8080 * ROUNDS * u64::from(FLOWS));
    eprintln!("track, established, in cache: {ns:.1} ns/packet");
    assert!(ns < 1000.0, "{ns} ns per track");
}

/// Threads insert, track and sweep an overlapping key space while time runs
/// (flows expiring and coming back under them): afterwards every live tuple
/// is held by exactly one entry, both indexes agree with the entries, and
/// the counters balance.
#[test]
fn churn_with_expiry_leaves_one_entry_per_tuple_and_balanced_counts() {
    const THREADS: u64 = 4;
    const OPS: u64 = 20_000;
    const KEYS: u64 = 3000;
    let t = Table::new(
        2048,
        Timeouts {
            udp_unreplied: 2,
            udp_assured: 4,
            ..Timeouts::default()
        },
    );
    let clock = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (t, clock) = (&t, &clock);
            s.spawn(move || {
                let mut x = th.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for op in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let now = if th == 0 {
                        clock.fetch_add(SEC / 500, std::sync::atomic::Ordering::Relaxed)
                    } else {
                        clock.load(std::sync::atomic::Ordering::Relaxed)
                    };
                    let k = client(1 + (x % 3) as u8, (x >> 8) as u16 % KEYS as u16, proto::UDP);
                    match x % 8 {
                        0..=3 => match t.insert(&k, &dnat_reply(&k), 7, 0, now) {
                            Ok(h) => assert_eq!(h.xlate, dnat_reply(&k).swap()),
                            Err(e) => assert_eq!(e, InsertError::Full),
                        },
                        4 | 5 => {
                            if let Some(h) = t.track(&dnat_reply(&k), 0, now) {
                                assert_eq!(h.xlate, k.swap(), "torn");
                            }
                        }
                        6 => {
                            if let Some(h) = t.track(&k, 0, now) {
                                assert_eq!(h.xlate, dnat_reply(&k).swap(), "torn");
                                if op % 5 == 0 {
                                    t.remove(h.id);
                                }
                            }
                        }
                        _ => {
                            t.reclaim(now, 64);
                        }
                    }
                }
            });
        }
    });
    let now = clock.into_inner();
    let live: Vec<FlowSnapshot> = t.iter_live(now).collect();
    assert_eq!(live.len(), t.len());
    let mut origs = std::collections::HashSet::new();
    let mut replies = std::collections::HashSet::new();
    for f in &live {
        assert!(origs.insert(f.orig), "duplicate entry for {:?}", f.orig);
        assert!(
            replies.insert(f.reply),
            "duplicate reply tuple {:?}",
            f.reply
        );
        assert_eq!(f.reply, dnat_reply(&f.orig));
        // Both index slots lead back to this entry (unless it expired).
        if let Some(h) = t.track(&f.orig, 0, now) {
            assert_eq!(h.id, f.id);
            assert_eq!(t.track(&f.reply, 0, now).map(|h| h.id), Some(f.id));
        }
    }
    let s = t.stats();
    let gone = s.reclaimed + s.evicted_expired + s.evicted_unassured + s.removed;
    assert_eq!(s.inserted, s.live + gone, "counters balance: {s:?}");
    assert!(s.removed > 0 && s.races > 0, "{s:?}");
    assert!(
        s.inserted > 1000 && s.reclaimed + s.evicted_expired > 100,
        "{s:?}"
    );
    t.check_index().expect("index consistent after churn");
    while t.reclaim(now + 10 * SEC, 512) > 0 {}
    assert!(t.is_empty());
    assert_eq!(t.check_index().expect("empty index").slots, 0);
}

/// Two workers SNAT different flows to the same node port at the same
/// moment: exactly one gets the tuple, the other is told to pick again.
#[test]
fn concurrent_inserts_claiming_one_reply_tuple_leave_exactly_one_owner() {
    const THREADS: usize = 4;
    const PORTS: u16 = 300;
    let t = table(4096);
    let barrier = Barrier::new(THREADS);
    let wins = Mutex::new(vec![0usize; usize::from(PORTS)]);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (t, barrier, wins) = (&t, &barrier, &wins);
            s.spawn(move || {
                barrier.wait();
                for p in 0..PORTS {
                    let orig = FlowKey::v4([10, 0, 0, 10 + th as u8], [1, 1, 1, 1], 5000, 443, 6);
                    let orig = FlowKey {
                        sport: 5000 + p,
                        ..orig
                    };
                    let reply = FlowKey::v4([1, 1, 1, 1], [192, 168, 0, 10], 443, 30000 + p, 6);
                    match t.insert(&orig, &reply, 0, SYN, 0) {
                        Ok(h) => {
                            assert_eq!(h.xlate.src_v4(), [192, 168, 0, 10]);
                            wins.lock().unwrap()[usize::from(p)] += 1;
                        }
                        Err(e) => assert_eq!(e, InsertError::ReplyTaken),
                    }
                }
            });
        }
    });
    assert!(wins.into_inner().unwrap().iter().all(|&w| w == 1));
    let s = t.stats();
    assert_eq!(s.live, u64::from(PORTS));
    assert_eq!(s.reply_taken, u64::from(PORTS) * (THREADS as u64 - 1));
    for p in 0..PORTS {
        let reply = FlowKey::v4([1, 1, 1, 1], [192, 168, 0, 10], 443, 30000 + p, 6);
        let back = t.track(&reply, SYN | ACK, 0).expect("the owner answers");
        assert_eq!(back.xlate.dport, 5000 + p);
    }
}

#[test]
fn inserting_a_tuple_that_is_a_known_reply_returns_that_flow_in_the_reply_direction() {
    let t = table(8);
    let k = client(1, 1, proto::UDP);
    let h = insert_dnat(&t, &k, 0, 0);
    let r = dnat_reply(&k);
    let again = t.insert(&r, &r.swap(), 0, 0, 0).unwrap();
    assert_eq!((again.id, again.dir), (h.id, Dir::Reply));
    assert_eq!(t.len(), 1);
}

/// A table filled to capacity, so that many keys sit past their home
/// bucket: every key is found from both sides, removing half of them leaves
/// the overflow counts equal to a recount, and the removed keys miss.
#[test]
fn a_full_table_finds_displaced_keys_and_keeps_its_overflow_counts_through_removal() {
    const N: u16 = 1024;
    let t = table(usize::from(N));
    let keys: Vec<FlowKey> = (0..N).map(|i| client(3, i, proto::TCP)).collect();
    let ids: Vec<u32> = keys.iter().map(|k| insert_dnat(&t, k, SYN, 0).id).collect();
    let census = t.check_index().expect("consistent when full");
    assert_eq!(census.slots, 2 * usize::from(N));
    assert!(
        census.displaced > 0 && census.max_overflow > 0,
        "{census:?}"
    );
    for (k, id) in keys.iter().zip(&ids) {
        assert_eq!(t.track(k, 0, SEC).map(|h| h.id), Some(*id));
        assert_eq!(t.track(&dnat_reply(k), 0, SEC).map(|h| h.id), Some(*id));
    }
    for id in ids.iter().step_by(2) {
        t.remove(*id);
    }
    let census = t.check_index().expect("consistent after removal");
    assert_eq!(census.slots, usize::from(N));
    for (i, k) in keys.iter().enumerate() {
        let found = t.track(k, 0, SEC).is_some();
        assert_eq!(found, i % 2 == 1, "key {i}");
        assert_eq!(
            t.track(&dnat_reply(k), 0, SEC).is_some(),
            found,
            "reply {i}"
        );
    }
    for k in keys.iter().step_by(2) {
        insert_dnat(&t, k, SYN, 0);
    }
    assert_eq!(
        t.check_index().expect("consistent refilled").slots,
        2 * usize::from(N)
    );
    assert!(keys.iter().all(|k| t.track(k, 0, SEC).is_some()));
}

/// Threads insert, remove and look up an overlapping key space on a table
/// kept full (so inserts evict and keys are displaced past their home
/// bucket). Afterwards every overflow count and tag byte equals what a
/// recount gives, every live flow is found from both sides and every other
/// key misses.
#[test]
fn overflow_counts_and_tag_bytes_match_a_recount_after_concurrent_insert_and_remove_churn() {
    const THREADS: usize = 4;
    const OPS: usize = 20_000;
    const KEYS: u16 = 1500;
    let t = table(512);
    let key = |i: u16| client(4, i, proto::UDP);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for th in 0..THREADS {
            let (t, barrier) = (&t, &barrier);
            s.spawn(move || {
                let mut x = (th as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                barrier.wait();
                for _ in 0..OPS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = key((x >> 16) as u16 % KEYS);
                    match x % 10 {
                        0..=3 => match t.insert(&k, &dnat_reply(&k), 7, 0, 0) {
                            Ok(h) => assert_eq!(h.xlate, dnat_reply(&k).swap(), "torn"),
                            Err(e) => assert_eq!(e, InsertError::Full),
                        },
                        4..=6 => {
                            if let Some(h) = t.track(&k, 0, 0) {
                                t.remove(h.id);
                            }
                        }
                        _ => {
                            if let Some(h) = t.track(&dnat_reply(&k), 0, 0) {
                                assert_eq!(h.xlate, k.swap(), "torn");
                            }
                        }
                    }
                }
            });
        }
    });
    let census = t.check_index().expect("index consistent after churn");
    assert!(census.displaced > 0, "the table was full: {census:?}");
    let live: std::collections::HashMap<FlowKey, u32> =
        t.iter_live(0).map(|f| (f.orig, f.id)).collect();
    assert_eq!(live.len(), t.len());
    assert_eq!(census.slots, 2 * live.len());
    for i in 0..KEYS {
        let k = key(i);
        let want = live.get(&k).copied();
        assert_eq!(t.track(&k, 0, 0).map(|h| h.id), want, "key {i}");
        assert_eq!(
            t.track(&dnat_reply(&k), 0, 0).map(|h| h.id),
            want,
            "reply {i}"
        );
    }
    let s = t.stats();
    assert!(s.removed > 1000 && s.evicted_unassured > 100, "{s:?}");
    let gone = s.evicted_expired + s.evicted_unassured + s.removed;
    assert_eq!(s.inserted, s.live + gone, "counters balance: {s:?}");
}

/// The index hash spreads the key shapes real traffic has: a million
/// flows from pods (sequential addresses, sequential source ports) to one
/// ClusterIP, DNATed to ten backends (so the reply keys differ only in
/// addresses and the destination port), in a table 80% full: nothing is
/// refused and no key sits far from its home bucket. Release only (slow in
/// debug builds).
#[test]
#[cfg_attr(debug_assertions, ignore = "run with --release")]
fn a_million_service_flows_spread_over_the_index() {
    const N: u32 = 1_000_000;
    const PORTS: u32 = 50_000;
    let t = table(N as usize * 5 / 4);
    for n in 0..N {
        let pod = n / PORTS;
        let k = FlowKey::v4(
            [10, 244, (pod >> 8) as u8, pod as u8],
            [10, 96, 0, 10],
            (1024 + n % PORTS) as u16,
            80,
            proto::TCP,
        );
        let r = FlowKey::v4(
            [10, 245, 1, (n % 10) as u8],
            k.src_v4(),
            8080,
            k.sport,
            proto::TCP,
        );
        t.insert(&k, &r, 0, SYN, 0).expect("room");
    }
    let census = t.check_index().expect("consistent");
    eprintln!("{census:?}");
    assert_eq!(t.stats().refused_full, 0);
    assert!(census.max_displacement <= 6, "{census:?}");
}

#[test]
fn prefetching_a_key_changes_nothing() {
    let t = table(64);
    let k = client(5, 1, proto::UDP);
    t.prefetch(&k);
    assert!(t.track(&k, 0, 0).is_none());
    let h = insert_dnat(&t, &k, 0, 0);
    t.prefetch(&k);
    t.prefetch(&dnat_reply(&k));
    assert_eq!(t.track(&k, 0, 0).map(|x| x.id), Some(h.id));
    assert_eq!(t.check_index().expect("consistent").slots, 2);
}

#[test]
fn a_revisit_holds_while_the_entry_keeps_its_version_state_and_time() {
    let t = table(16);
    let k = client(1, 40000, proto::TCP);
    let r = dnat_reply(&k);
    insert_dnat(&t, &k, SYN, 0);
    t.track(&r, SYN | ACK, SEC).expect("reply");
    // The handshake's last ACK changes the state: nothing to expect yet.
    let ack = t.track_lean(&k.words(), ACK, 2 * SEC).expect("hit");
    assert_eq!(t.expect(ack.word, ack.dir), None);
    // Established: an ACK changes nothing, so the hit has a word to expect.
    let h = t.track_lean(&k.words(), ACK, 2 * SEC).expect("hit");
    let x = t.expect(h.word, h.dir).expect("steady");
    assert!(t.revisit(h.id, h.seq, &x, ACK, 3 * SEC));
    // A FIN would change the state: not this path's to take.
    assert!(!t.revisit(h.id, h.seq, &x, ACK | FIN, 3 * SEC));
    // Past the established timeout (counted from the last revisit).
    let est = u64::from(Timeouts::default().tcp_established) * SEC;
    assert!(!t.revisit(h.id, h.seq, &x, ACK, 3 * SEC + est + TICK));
    // A state change by the other direction (a FIN from the backend).
    t.track(&r, FIN | ACK, 4 * SEC).expect("reply");
    assert!(!t.revisit(h.id, h.seq, &x, ACK, 4 * SEC));
    // A packet that changes the state leaves nothing to expect.
    let fin = t.track_lean(&k.words(), FIN | ACK, 5 * SEC).expect("hit");
    assert_eq!(t.expect(fin.word, fin.dir), None);
    // A removed entry, or one reused, has another version.
    let k2 = client(2, 40000, proto::UDP);
    insert_dnat(&t, &k2, 0, 6 * SEC);
    let h2 = t.track_lean(&k2.words(), 0, 6 * SEC).expect("hit");
    let x2 = t.expect(h2.word, h2.dir).expect("steady");
    assert!(t.revisit(h2.id, h2.seq, &x2, 0, 6 * SEC));
    t.remove(h2.id);
    assert!(!t.revisit(h2.id, h2.seq, &x2, 0, 6 * SEC));
}
