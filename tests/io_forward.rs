//! Two pods (namespaces with a veth into the node namespace) ping each other
//! through twill: XDP steering, AF_XDP sockets sharing one UMEM, and the
//! pipeline, which answers the pods' ARP for their gateway and forwards the
//! echo requests and replies. Needs root (fails otherwise).

mod io_support;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use dataplane::config::fmt_mac;
use dataplane::io::{
    control_channel, netns, reply_channel, Control, ControlSender, Forwarder, FrameAccount,
    IfaceMode, IoStats, RunOptions, SteerConfig, SteerStats, Steering, Xsk, XskConfig,
};
use dataplane::pipeline::{Counters, Pipeline};
use dataplane::state::demo::{self, CLIENT_MAC, CLIENT_PORT, WEB_LOCAL_MAC, WEB_LOCAL_PORT};
use io_support::{StopOnDrop, Topo};

/// Addresses a pod as twill's CNI will: a /32, its gateway on-link, and the
/// default route through it.
fn pod_addr(topo: &Topo, ns: &str, m: [u8; 6], ip: &str, ip6: &str) {
    topo.ip(ns, &["link", "set", "eth0", "address", &fmt_mac(&m)]);
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
    topo.ip(
        ns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{ip6}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    topo.ip(ns, &["-6", "route", "add", "fd00:244:1::1", "dev", "eth0"]);
    topo.ip(
        ns,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:244:1::1",
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
    after_detach: FrameAccount,
    p1_attached: bool,
    p2_attached: bool,
}

/// A node namespace with two pods wired to it by veth pairs (`p1`, `p2` on
/// the node side), addressed as the demo tables' `client` and `web-local`.
fn two_pods(tag: &str) -> (Topo, String, String, String) {
    let mut topo = Topo::new(tag);
    let node = topo.netns("node");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    pod_addr(&topo, &pod1, CLIENT_MAC, "10.244.1.2", "fd00:244:1::2");
    pod_addr(&topo, &pod2, WEB_LOCAL_MAC, "10.244.1.3", "fd00:244:1::3");
    // A pod's TCP/UDP leave its eth0 with the checksum left to the NIC
    // (CHECKSUM_PARTIAL); XDP on the host side sees those bytes as they are,
    // so AF_XDP would forward an unfinished checksum that the receiving pod
    // drops. Pods attached to twill have tx checksum offload off (the CNI
    // plugin's job; see the io module's report).
    for ns in [&pod1, &pod2] {
        io_support::run(&[
            "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off",
        ]);
    }
    (topo, node, pod1, pod2)
}

/// Runs twill (steering, sockets, forwarder) in `node` on the demo tables
/// while `body` runs on this thread; returns `body`'s result and the
/// dataplane's counters once it stopped.
fn with_dataplane<T: Send>(
    topo: &Topo,
    node: &str,
    body: impl FnOnce(&ControlSender) -> T,
) -> (T, Result_) {
    let tables = Arc::new(demo::demo_tables().expect("demo tables"));
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = control_channel();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // Bounds the run if the test neither finishes nor unwinds.
        s.spawn(|| {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
        });
        let h = s.spawn(|| {
            netns::enter_named(node).expect("enter node namespace");
            let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
            st.add_node_addr(demo::NODE_V4.into()).unwrap();
            st.add_node_addr(demo::NODE_V6.into()).unwrap();
            let xsk = Xsk::new(XskConfig::default()).expect("umem");
            let mut fwd = Forwarder::new(xsk, Pipeline::standalone(tables.clone()));
            for (ifname, port) in [("p1", CLIENT_PORT), ("p2", WEB_LOCAL_PORT)] {
                fwd.attach(&mut st, ifname, port, IfaceMode::Pod)
                    .expect("attach");
            }
            ready_tx.send(()).unwrap();
            fwd.run_controlled(
                &stop,
                RunOptions {
                    busy_poll: false,
                    idle_polls: 16,
                    sleep_ms: 5,
                },
                &mut st,
                &ctl_rx,
            );
            fwd.xsk_mut().reclaim();
            let account = fwd.xsk().account();
            // Pod 2 goes away: its program and socket are gone, its frames
            // are back on the free list, pod 1 is still served.
            fwd.detach(&mut st, WEB_LOCAL_PORT).expect("detach pod2");
            Result_ {
                counters: *fwd.pipeline().counters(),
                io: fwd.stats(),
                steer: st.stats(),
                account,
                after_detach: fwd.xsk().account(),
                p1_attached: io_support::has_xdp(topo, node, "p1"),
                p2_attached: io_support::has_xdp(topo, node, "p2"),
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("dataplane thread ready");
        let t = body(&ctl_tx);
        stop.store(true, Ordering::Relaxed);
        (t, h.join().expect("dataplane thread"))
    })
}

#[test]
fn two_pods_ping_each_other_over_ipv4_and_ipv6_through_the_pipeline_which_answers_arp_and_nd_for_the_gateway(
) {
    let (topo, node, pod1, _pod2) = two_pods("fw");
    let ((ping, ping6, neigh), r) = with_dataplane(&topo, &node, |_| {
        let ping = topo.exec(
            &pod1,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.3"],
        );
        let ping6 = topo.exec(
            &pod1,
            &[
                "ping",
                "-6",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "fd00:244:1::3",
            ],
        );
        let neigh = topo.exec(&pod1, &["ip", "neigh", "show", "dev", "eth0"]);
        (ping, ping6, neigh)
    });
    assert!(
        ping.status.success(),
        "pod1 -> pod2 ping through the dataplane: {}\n{:?}\n{:?}",
        String::from_utf8_lossy(&ping.stdout),
        r.io,
        r.counters
    );
    assert!(
        ping6.status.success(),
        "pod1 -> pod2 IPv6 ping through the dataplane: {}",
        String::from_utf8_lossy(&ping6.stdout)
    );
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    let gw = fmt_mac(&demo::GATEWAY_MAC);
    for ip in ["10.244.1.1 ", "fd00:244:1::1 "] {
        assert!(
            neigh.lines().any(|l| l.starts_with(ip) && l.contains(&gw)),
            "pod1 resolved its gateway {ip}to the dataplane's MAC: {neigh}"
        );
    }

    let c = &r.counters;
    assert!(
        c.arp_replies >= 2,
        "each pod's ARP for its gateway was answered: {c:?}"
    );
    assert!(
        c.nd_replies >= 2,
        "each pod's ND for its gateway was answered: {c:?}"
    );
    assert!(
        c.tx >= 12,
        "3 + 3 echo requests and their replies forwarded: {c:?}"
    );
    assert!(r.io.staged_tx >= 16, "{:?}", r.io);
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
    assert!(
        r.p1_attached && !r.p2_attached,
        "detaching pod2 left pod1 attached"
    );
    assert_eq!(r.after_detach.missing(), 0, "{:?}", r.after_detach);
    assert_eq!(
        r.after_detach.free,
        r.account.free + r.account.fill - r.after_detach.fill,
        "pod2's fill-ring frames came back to the free list: {:?} -> {:?}",
        r.account,
        r.after_detach
    );
    assert!(
        !io_support::has_xdp(&topo, &node, "p1"),
        "all detached at the end"
    );
}

#[test]
fn a_udp_stream_between_pods_arrives_whole_and_leaks_no_frame() {
    const N: u64 = 2000;
    let (topo, node, pod1, pod2) = two_pods("ud");
    let (got, r) = with_dataplane(&topo, &node, |_| {
        io_support::udp_stream(
            &pod1,
            "10.244.1.2:0",
            &pod2,
            "10.244.1.3:9000",
            &io_support::stream_datagram(),
            N,
            Duration::from_secs(20),
        )
    });
    assert_eq!(
        got, N,
        "every datagram arrived: {:?} {:?}",
        r.io, r.counters
    );
    assert!(r.counters.tx >= N, "{:?}", r.counters);
    assert_eq!(r.account.missing(), 0, "no frame leaked: {:?}", r.account);
    assert_eq!((r.account.held, r.account.tx), (0, 0), "{:?}", r.account);
    assert_eq!(r.account.free + r.account.fill, r.account.total);
}

#[test]
fn the_node_and_a_pod_reach_each_other_through_the_kernel_while_the_dataplane_runs() {
    let (topo, node, pod1, _pod2) = two_pods("kp");
    // What the CNI plugin sets up for the kernel's share of pod traffic: the
    // host-side veth answers to the gateway MAC the pods send everything to,
    // the node address is local, and each pod has a host route.
    let gw = fmt_mac(&demo::GATEWAY_MAC);
    for dev in ["p1", "p2"] {
        topo.ip(&node, &["link", "set", dev, "address", &gw]);
    }
    topo.ip(&node, &["addr", "add", "192.168.50.1/32", "dev", "lo"]);
    topo.ip(
        &node,
        &[
            "route",
            "add",
            "10.244.1.2",
            "dev",
            "p1",
            "src",
            "192.168.50.1",
        ],
    );
    let ((to_pod, to_node, pod_to_pod), r) = with_dataplane(&topo, &node, |_| {
        let to_pod = topo.exec(
            &node,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.2"],
        );
        let to_node = topo.exec(
            &pod1,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.50.1"],
        );
        let pod_to_pod = topo.exec(
            &pod1,
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.3"],
        );
        (to_pod, to_node, pod_to_pod)
    });
    assert!(to_pod.status.success(), "node -> pod through the kernel");
    assert!(to_node.status.success(), "pod -> node through the kernel");
    assert!(
        pod_to_pod.status.success(),
        "pod -> pod still through the dataplane"
    );
    assert!(
        r.steer.passed >= 6,
        "the node's pings were passed in XDP: {:?}",
        r.steer
    );
    assert_eq!(
        r.io.pass_unhandled, 0,
        "none reached the dataplane: {:?}",
        r.io
    );
    assert!(r.counters.tx >= 4, "{:?}", r.counters);
}

#[test]
fn a_pod_attached_while_a_stream_flows_is_served_and_the_stream_loses_nothing() {
    const N: u64 = 3000;
    let (mut topo, node, pod1, pod2) = two_pods("at");
    let pod3 = topo.netns("pod3");
    topo.veth(&node, "p3", &pod3, "eth0");
    pod_addr(&topo, &pod3, demo::OTHER_MAC, "10.244.1.4", "fd00:244:1::4");
    io_support::run(&[
        "ip", "netns", "exec", &pod3, "ethtool", "-K", "eth0", "tx", "off",
    ]);

    let sent = std::sync::atomic::AtomicU64::new(0);
    let ((got, attached, sent_at_attach, ping), r) = with_dataplane(&topo, &node, |ctl| {
        std::thread::scope(|s| {
            let rx = s.spawn(|| {
                netns::enter_named(&pod2).expect("enter pod2");
                let sock = UdpSocket::bind("10.244.1.3:9000").unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let msg = io_support::stream_datagram();
                io_support::count_datagrams(&sock, N, Duration::from_secs(30), 0, |d| d == msg)
            });
            std::thread::sleep(Duration::from_millis(100));
            s.spawn(|| {
                netns::enter_named(&pod1).expect("enter pod1");
                let sock = UdpSocket::bind("10.244.1.2:0").unwrap();
                let msg = io_support::stream_datagram();
                io_support::send_paced(&sock, "10.244.1.3:9000", &msg, N, 4, |i| {
                    sent.store(i, Ordering::Relaxed)
                });
            });
            // Mid-stream: pod 3 comes up.
            let t0 = Instant::now();
            while sent.load(Ordering::Relaxed) < N / 4 && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let (done, reply) = reply_channel();
            ctl.send(Control::Attach {
                ifname: "p3".into(),
                port: demo::OTHER_PORT,
                mode: IfaceMode::Pod,
                done,
            })
            .unwrap();
            let attached = reply
                .recv_timeout(Duration::from_secs(10))
                .expect("attach reply");
            let sent_at_attach = sent.load(Ordering::Relaxed);
            let ping = topo.exec(
                &pod3,
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.2"],
            );
            (rx.join().expect("receiver"), attached, sent_at_attach, ping)
        })
    });
    assert!(attached.is_ok(), "pod3 attached: {attached:?}");
    assert!(
        (N / 4..N).contains(&sent_at_attach),
        "attached mid-stream ({sent_at_attach} of {N} sent)"
    );
    assert!(ping.status.success(), "pod3 is served once attached");
    assert_eq!(
        got, N,
        "the stream on pod1 -> pod2 lost nothing: {:?}",
        r.io
    );
    assert_eq!(r.account.missing(), 0, "{:?}", r.account);
}
