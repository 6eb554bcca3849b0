//! Two workers, each with its own UMEM and pipeline: pod 1 is served by
//! worker 0 and pod 2 by worker 1, so every frame between them crosses the
//! hand-off fabric (copied into the other worker's UMEM). A bounded UDP
//! stream must arrive whole, pings must go both ways, no frame may leak in
//! either UMEM and every hand-off slot must be back in the pool. Needs root.

mod io_support;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use dataplane::config::fmt_mac;
use dataplane::io::{
    netns, IfaceMode, RunOptions, SteerConfig, Steering, Workers, WorkersBuilder, XskConfig,
};
use dataplane::pipeline::Pipeline;
use dataplane::state::demo::{
    self, CLIENT_MAC, CLIENT_PORT, OTHER_MAC, OTHER_PORT, WEB_LOCAL_MAC, WEB_LOCAL_PORT,
};
use dataplane::{conntrack, lb};
use io_support::Topo;

#[test]
fn pods_on_different_workers_exchange_a_bounded_stream_through_the_hand_off_without_loss() {
    const N: u64 = 2000;
    let mut topo = Topo::new("wk");
    let node = topo.netns("node");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    io_support::pod(&topo, &pod1, &fmt_mac(&CLIENT_MAC), "10.244.1.2");
    io_support::pod(&topo, &pod2, &fmt_mac(&WEB_LOCAL_MAC), "10.244.1.3");

    let tables = Arc::new(demo::demo_tables().expect("demo tables"));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let dp = {
        let node = node.clone();
        let tables = tables.clone();
        std::thread::spawn(move || {
            netns::enter_named(&node).expect("enter node namespace");
            let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
            st.add_node_addr(demo::NODE_V4.into()).unwrap();
            let c = tables.config();
            let ct = Arc::new(conntrack::Table::new(c.conntrack_capacity, c.timeouts));
            let aff = Arc::new(lb::AffinityTable::new(c.affinity_capacity));
            let mut b = WorkersBuilder::new(st, &[None, None], XskConfig::default(), |_| {
                Pipeline::new(tables.clone(), ct.clone(), aff.clone())
            })
            .expect("workers");
            let (w1, _) = b
                .attach(Some(0), "p1", CLIENT_PORT, IfaceMode::Pod)
                .expect("attach p1");
            let (w2, _) = b
                .attach(Some(1), "p2", WEB_LOCAL_PORT, IfaceMode::Pod)
                .expect("attach p2");
            assert_eq!((w1, w2), (0, 1));
            let opts = RunOptions {
                busy_poll: false,
                idle_polls: 16,
                sleep_ms: 5,
            };
            let mut w = b
                .start(opts, Arc::new(AtomicBool::new(false)))
                .expect("start");
            ready_tx.send(()).unwrap();
            // Until the test is done (or gone), bounded.
            let _ = done_rx.recv_timeout(Duration::from_secs(90));
            let pool = (w.fabric().pool_len(), w.fabric().pool_capacity());
            let reports = w.stop();
            (reports, pool)
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("workers running");

    let ping = topo.exec(
        &pod1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.3"],
    );
    let got = io_support::udp_stream(
        &pod1,
        "10.244.1.2:0",
        &pod2,
        "10.244.1.3:9000",
        &io_support::stream_datagram(),
        N,
        Duration::from_secs(20),
    );
    let _ = done_tx.send(());
    let (reports, (pool, pool_cap)) = dp.join().expect("dataplane thread");

    assert!(
        ping.status.success(),
        "pod1 -> pod2 ping across workers: {}\n{reports:#?}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_eq!(got, N, "every datagram arrived: {reports:#?}");
    let (r0, r1) = (&reports[0], &reports[1]);
    assert_eq!(
        (r0.ports.as_slice(), r1.ports.as_slice()),
        (&[CLIENT_PORT][..], &[WEB_LOCAL_PORT][..])
    );
    assert!(
        r0.io.handed_off >= N + 3,
        "worker 0 handed the stream and the echo requests to worker 1: {r0:#?}"
    );
    assert!(
        r1.handoff.received >= N + 3,
        "worker 1 sent them on p2: {r1:#?}"
    );
    assert!(
        r1.io.handed_off >= 3 && r0.handoff.received >= 3,
        "the echo replies crossed back: {r0:#?} {r1:#?}"
    );
    for r in &reports {
        let h = r.handoff;
        assert_eq!(
            (
                h.no_owner,
                h.no_slot,
                h.inbox_full,
                h.unknown_port,
                h.no_frame
            ),
            (0, 0, 0, 0, 0),
            "no hand-off drop: {r:#?}"
        );
        assert_eq!(r.io.tx_unknown_port, 0, "{r:#?}");
        assert_eq!(r.account.missing(), 0, "no frame leaked: {r:#?}");
        assert_eq!((r.account.held, r.account.tx), (0, 0), "{r:#?}");
        assert!(r.io.sleeps > 0, "idle workers blocked in poll(): {r:#?}");
    }
    assert_eq!(pool, pool_cap, "every hand-off slot is back in the pool");
    assert!(
        !io_support::has_xdp(&topo, &node, "p1") && !io_support::has_xdp(&topo, &node, "p2"),
        "stopping the workers detached XDP"
    );
}

/// Starts two workers in `node` serving p1 (worker 0) and p2 (worker 1);
/// the returned handle is used from any thread (each worker applies
/// control messages in its own thread, in the node namespace).
fn two_workers(node: &str) -> Workers {
    let node = node.to_string();
    std::thread::spawn(move || {
        netns::enter_named(&node).expect("enter node namespace");
        let tables = Arc::new(demo::demo_tables().expect("demo tables"));
        let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
        st.add_node_addr(demo::NODE_V4.into()).unwrap();
        let c = tables.config();
        let ct = Arc::new(conntrack::Table::new(c.conntrack_capacity, c.timeouts));
        let aff = Arc::new(lb::AffinityTable::new(c.affinity_capacity));
        let mut b = WorkersBuilder::new(st, &[None, None], XskConfig::default(), |_| {
            Pipeline::new(tables.clone(), ct.clone(), aff.clone())
        })
        .expect("workers");
        b.attach(Some(0), "p1", CLIENT_PORT, IfaceMode::Pod)
            .expect("attach p1");
        b.attach(Some(1), "p2", WEB_LOCAL_PORT, IfaceMode::Pod)
            .expect("attach p2");
        let opts = RunOptions {
            busy_poll: false,
            idle_polls: 16,
            sleep_ms: 5,
        };
        b.start(opts, Arc::new(AtomicBool::new(false)))
            .expect("start")
    })
    .join()
    .expect("set-up thread")
}

#[test]
fn a_pod_attached_at_run_time_joins_the_least_loaded_worker_and_detaching_it_leaves_the_others_served(
) {
    let mut topo = Topo::new("wa");
    let node = topo.netns("node");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    let pod3 = topo.netns("pod3");
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    topo.veth(&node, "p3", &pod3, "eth0");
    io_support::pod(&topo, &pod1, &fmt_mac(&CLIENT_MAC), "10.244.1.2");
    io_support::pod(&topo, &pod2, &fmt_mac(&WEB_LOCAL_MAC), "10.244.1.3");
    io_support::pod(&topo, &pod3, &fmt_mac(&OTHER_MAC), "10.244.1.4");

    let mut w = two_workers(&node);
    let ping = |from: &str, to: &str| {
        topo.exec(from, &["ping", "-c", "2", "-i", "0.2", "-W", "2", to])
            .status
            .success()
    };
    assert!(ping(&pod1, "10.244.1.3"), "pod1 -> pod2 before");
    assert!(
        !io_support::has_xdp(&topo, &node, "p3"),
        "p3 is not served yet"
    );

    // Both workers have one port: the tie goes to worker 0.
    let (w3, mode) = w
        .attach(None, "p3", OTHER_PORT, IfaceMode::Pod)
        .expect("attach p3 at run time");
    assert_eq!(w3, 0, "least loaded (first of equals)");
    assert!(io_support::has_xdp(&topo, &node, "p3"));
    assert!(
        ping(&pod3, "10.244.1.2"),
        "pod3 -> pod1 on the same worker ({mode:?})"
    );
    assert!(ping(&pod3, "10.244.1.3"), "pod3 -> pod2 across workers");

    w.detach(OTHER_PORT).expect("detach p3");
    assert!(!io_support::has_xdp(&topo, &node, "p3"), "p3 detached");
    assert!(ping(&pod1, "10.244.1.3"), "pod1 -> pod2 still served");
    assert!(
        w.detach(OTHER_PORT).is_err(),
        "detaching a port no longer attached is an error"
    );

    let live = w.reports();
    assert_eq!(live.len(), 2, "both workers answer between polls");
    assert_eq!(live[0].ports, vec![CLIENT_PORT]);

    // p2 is worker 1's first socket (its UMEM's own): detaching it retires
    // the socket; worker 0 keeps serving p1.
    w.detach(WEB_LOCAL_PORT)
        .expect("detach p2, worker 1's first socket");
    assert!(!io_support::has_xdp(&topo, &node, "p2"), "p2 detached");
    assert!(io_support::has_xdp(&topo, &node, "p1"), "p1 still attached");
    let e = w
        .attach(Some(1), "p2", WEB_LOCAL_PORT, IfaceMode::Pod)
        .expect_err("the retired socket still binds p2");
    assert!(e.to_string().contains("retired socket"), "{e}");
    let live = w.reports();
    assert!(live[1].ports.is_empty(), "{:?}", live[1]);
    assert!(live[1].account.retired > 0, "{:?}", live[1].account);

    let reports = w.stop();
    for r in &reports {
        assert_eq!(r.account.missing(), 0, "no frame leaked: {r:#?}");
        assert_eq!(r.account.held, 0, "{r:#?}");
    }
    assert!(reports[1].handoff.received > 0, "{reports:#?}");
    assert!(!io_support::has_xdp(&topo, &node, "p1"));
}
