//! Two pods (namespaces with a veth into the node namespace) ping each other
//! through twill: XDP steering, AF_XDP sockets sharing one UMEM, and the
//! pipeline, which answers the pods' ARP for their gateway and forwards the
//! echo requests and replies. Needs root (fails otherwise).

mod io_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use dataplane::io::{
    netns, Forwarder, FrameAccount, IfaceMode, IoStats, RunOptions, SteerConfig, SteerStats,
    Steering, Xsk, XskConfig,
};
use dataplane::pipeline::{Counters, Pipeline};
use dataplane::state::demo::{self, CLIENT_MAC, CLIENT_PORT, WEB_LOCAL_MAC, WEB_LOCAL_PORT};
use io_support::{StopOnDrop, Topo};

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Addresses a pod as twill's CNI will: a /32, its gateway on-link, and the
/// default route through it.
fn pod_addr(topo: &Topo, ns: &str, m: [u8; 6], ip: &str) {
    topo.ip(ns, &["link", "set", "eth0", "address", &mac(m)]);
    topo.ip(ns, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    topo.ip(
        ns,
        &["route", "add", "10.244.1.1", "dev", "eth0", "scope", "link"],
    );
    topo.ip(
        ns,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.244.1.1",
            "dev",
            "eth0",
        ],
    );
}

struct Result_ {
    counters: Counters,
    io: IoStats,
    steer: SteerStats,
    account: FrameAccount,
}

#[test]
fn two_pods_ping_each_other_through_the_pipeline_which_answers_arp_for_the_gateway() {
    let mut topo = Topo::new("fw");
    let node = topo.netns("node");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    pod_addr(&topo, &pod1, CLIENT_MAC, "10.244.1.2");
    pod_addr(&topo, &pod2, WEB_LOCAL_MAC, "10.244.1.3");

    let tables = Arc::new(demo::demo_tables().expect("demo tables"));
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let r = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // Bounds the run if the test neither finishes nor unwinds.
        s.spawn(|| {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let h = s.spawn(|| {
            netns::enter_named(&node).expect("enter node namespace");
            let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
            st.add_node_addr(demo::NODE_V4.into()).unwrap();
            st.add_node_addr(demo::NODE_V6.into()).unwrap();
            let mut xsk = Xsk::new(XskConfig::default()).expect("umem");
            for (ifname, port) in [("p1", CLIENT_PORT), ("p2", WEB_LOCAL_PORT)] {
                let (ifindex, _) = st.attach(ifname, IfaceMode::Pod, 1).expect("attach");
                xsk.add_socket(ifname, 0, port).expect("socket");
                let (fd, _, q) = xsk.fd(port).unwrap();
                st.set_socket(ifindex, q, fd).expect("xskmap");
            }
            let mut fwd = Forwarder::new(xsk, Pipeline::standalone(tables.clone()));
            ready_tx.send(()).unwrap();
            fwd.run(
                &stop,
                RunOptions {
                    busy_poll: false,
                    idle_polls: 16,
                    sleep_ms: 5,
                },
            );
            fwd.xsk_mut().reclaim();
            Result_ {
                counters: *fwd.pipeline().counters(),
                io: fwd.stats(),
                steer: st.stats(),
                account: fwd.xsk().account(),
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("dataplane thread ready");
        let ping = topo.exec(
            &pod1,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.3"],
        );
        let neigh = topo.exec(&pod1, &["ip", "neigh", "show", "10.244.1.1"]);
        stop.store(true, Ordering::Relaxed);
        let r = h.join().expect("dataplane thread");
        assert!(
            ping.status.success(),
            "pod1 -> pod2 ping through the dataplane: {}\n{:?}\n{:?}",
            String::from_utf8_lossy(&ping.stdout),
            r.io,
            r.counters
        );
        let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
        assert!(
            neigh.contains(&mac(demo::GATEWAY_MAC)),
            "pod1 resolved its gateway to the dataplane's MAC: {neigh}"
        );
        r
    });

    let c = &r.counters;
    assert!(
        c.arp_replies >= 2,
        "each pod's ARP for its gateway was answered: {c:?}"
    );
    assert!(c.tx >= 6, "3 echo requests and 3 replies forwarded: {c:?}");
    assert!(r.io.staged_tx >= 8, "{:?}", r.io);
    assert_eq!(r.io.pass_unhandled, 0, "{:?}", r.io);
    assert_eq!(r.io.tx_unknown_port, 0, "{:?}", r.io);
    assert!(r.steer.redirected >= 8, "{:?}", r.steer);
    assert_eq!(r.steer.no_socket, 0, "{:?}", r.steer);
    assert_eq!(r.account.missing(), 0, "no frame leaked: {:?}", r.account);
    assert_eq!((r.account.held, r.account.tx), (0, 0), "{:?}", r.account);
    assert!(
        r.io.sleeps > 0,
        "the idle loop blocked in poll(): {:?}",
        r.io
    );
}
