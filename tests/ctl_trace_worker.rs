//! The workers' shared-memory hooks on real AF_XDP sockets: two workers in a
//! network namespace (pod 1 on worker 0, pod 2 on worker 1) connected to a
//! shared-memory file; a ping and a UDP stream from pod 1 to pod 2. The
//! workers announce the generation of the tables they were given, store
//! their counters and per-port counts, and record the armed trace's frames
//! with their verdicts; a UDP stream through a ClusterIP (and its echoes)
//! is counted under the Service's stable id, and datagrams to a ClusterIP
//! port no Service has are counted as drops under the sending pod's
//! interface name. Needs root.

mod io_support;

use std::net::{IpAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::config::fmt_mac;
use dataplane::io::{
    netns, IfaceMode, RunOptions, SteerConfig, Steering, Workers, WorkersBuilder, XskConfig,
};
use dataplane::pipeline::{DropReason, Pipeline};
use dataplane::proto;
use dataplane::state::demo::{self, CLIENT_MAC, CLIENT_PORT, WEB_LOCAL_MAC, WEB_LOCAL_PORT};
use dataplane::state::shm::{Layout, PortKind, ServiceCounts, Shm, TraceFilter, TraceVerdict};
use dataplane::{conntrack, lb};
use io_support::Topo;

static N: AtomicU32 = AtomicU32::new(0);

fn layout() -> Layout {
    Layout {
        workers: 2,
        ports: 16,
        conntrack_capacity: 1024,
        slot_bytes: 1 << 16,
        slots: 2,
        trace_records: 64,
        services: 64,
    }
}

fn start(node: &str, shm: &Shm) -> Workers {
    let node = node.to_string();
    let shm = shm.clone();
    std::thread::spawn(move || {
        netns::enter_named(&node).expect("enter node namespace");
        let tables = Arc::new(demo::demo_tables().expect("demo tables"));
        let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
        st.add_node_addr(demo::NODE_V4.into()).unwrap();
        let c = tables.config();
        let ct = Arc::new(conntrack::Table::new(c.conntrack_capacity, c.timeouts));
        let aff = Arc::new(lb::AffinityTable::new(c.affinity_capacity));
        let mut b = WorkersBuilder::new(st, &[None, None], XskConfig::default(), |w| {
            let mut p = Pipeline::new(tables.clone(), ct.clone(), aff.clone());
            p.set_service_counters(shm.service_counters(w).expect("service counters"));
            p
        })
        .expect("workers");
        b.set_shm(&shm).expect("shm hooks");
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

/// A fresh shared-memory file in its own temporary directory (`what` names
/// the directory; the test removes it).
fn shm_file(what: &str) -> (std::path::PathBuf, Shm) {
    let dir = std::env::temp_dir().join(format!(
        "twill-ctl-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let shm = Shm::create_or_open(&dir.join("node.shm"), &layout()).expect("shm file");
    (dir, shm)
}

/// The node namespace and the demo's two pods on it: the client (10.244.1.2)
/// behind `p1` and the local web pod (10.244.1.3) behind `p2`.
fn two_pods(tag: &str) -> (Topo, String, String, String) {
    let mut topo = Topo::new(tag);
    let node = topo.netns("node");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    io_support::pod(&topo, &pod1, &fmt_mac(&CLIENT_MAC), "10.244.1.2");
    io_support::pod(&topo, &pod2, &fmt_mac(&WEB_LOCAL_MAC), "10.244.1.3");
    (topo, node, pod1, pod2)
}

#[test]
fn workers_announce_their_generation_store_their_counters_and_trace_matching_frames() {
    const DATAGRAMS: u64 = 200;
    let (dir, shm) = shm_file("trace");
    let (topo, node, pod1, pod2) = two_pods("ctr");

    let mut w = start(&node, &shm);
    // Tables "from generation 5": every worker announces it, even idle.
    let mut b = demo::builder();
    b.published_generation(5);
    let tables = Arc::new(b.build().expect("demo tables"));
    w.set_tables(tables).expect("set tables");
    let t0 = Instant::now();
    loop {
        let a = shm.announcements();
        let gens: Vec<u64> = a
            .iter()
            .filter(|a| a.index < 2)
            .map(|a| a.generation)
            .collect();
        if gens == [5, 5] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "announcements: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Trace the next 3 UDP frames to port 9000.
    let filter = TraceFilter {
        proto: Some(proto::UDP),
        port: Some(9000),
        ..TraceFilter::default()
    };
    let tr = shm.trace();
    tr.arm(&filter, 3, dataplane::state::shm::monotonic_ns());

    let ping = topo.exec(
        &pod1,
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.3"],
    );
    assert!(ping.status.success(), "pod1 -> pod2");
    let got = io_support::udp_stream(
        &pod1,
        "10.244.1.2:0",
        &pod2,
        "10.244.1.3:9000",
        &[0x5a; 100],
        DATAGRAMS,
        Duration::from_secs(10),
    );
    assert!(got >= DATAGRAMS * 9 / 10, "the stream arrived: {got}");

    let (recs, next) = tr.read_since(0);
    assert_eq!(next, 3, "exactly the armed count: {recs:?}");
    assert_eq!(tr.remaining(), 0);
    for r in &recs {
        assert_eq!(r.worker, 0, "pod 1's worker saw them: {r:?}");
        assert_eq!(r.in_port, CLIENT_PORT);
        assert_eq!((r.family, r.proto, r.dport), (4, proto::UDP, 9000));
        assert_eq!(r.src, "10.244.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(r.verdict, TraceVerdict::Tx(WEB_LOCAL_PORT), "{r:?}");
    }

    // Counters: worker 0 received the stream on p1 and sent it toward p2
    // (handed to worker 1); the stats blocks are current once idle.
    std::thread::sleep(Duration::from_millis(300));
    let s0 = shm.worker_stats(0).unwrap();
    let s1 = shm.worker_stats(1).unwrap();
    let p1 = s0.ports[CLIENT_PORT as usize];
    let p2 = s0.ports[WEB_LOCAL_PORT as usize];
    assert!(p1.rx_packets >= got + 2, "{s0:?}");
    assert!(p1.rx_bytes >= got * 142, "{s0:?}");
    assert!(p2.tx_packets >= got + 2, "{s0:?}");
    assert!(
        s0.counters.rx >= got + 2 && s0.counters.tx >= got + 2,
        "{s0:?}"
    );
    assert!(
        s1.ports[WEB_LOCAL_PORT as usize].rx_packets >= 2,
        "the echo replies: {s1:?}"
    );
    assert_eq!(s0.pid, std::process::id());
    let a = shm.announcements();
    let now = dataplane::state::shm::monotonic_ns();
    for x in a.iter().filter(|a| a.index < 2) {
        assert!(
            now.saturating_sub(x.heartbeat_ns) < 2_000_000_000,
            "idle workers keep beating: {x:?}"
        );
    }

    w.stop();
    let a = shm.announcements();
    assert!(
        a.iter().filter(|a| a.index < 2).all(|a| a.generation == 0),
        "stopped workers use no generation: {a:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ClusterIP of the test's UDP echo Service (backend: pod 2, port 9000)
/// and of one without endpoints.
const ECHO_VIP: &str = "10.96.0.77";
const NOBODY_VIP: &str = "10.96.0.78";
const NO_SERVICE_DATAGRAMS: u64 = 3;

#[test]
fn udp_through_a_cluster_ip_is_counted_under_the_services_stable_id_in_shared_memory() {
    const DATAGRAMS: u64 = 100;
    let (dir, shm) = shm_file("svc");
    shm.back_service_counters(2).expect("back the counters");
    // The ports named as the dataplane names them before they carry traffic.
    let names = shm.port_names_writer();
    names.set(CLIENT_PORT, "p1", &PortKind::Pod("default/client".into()));
    names.set(WEB_LOCAL_PORT, "p2", &PortKind::Pod("default/web".into()));

    let (_topo, node, pod1, pod2) = two_pods("ctsv");

    let mut w = start(&node, &shm);
    // The demo Services plus an echo Service on pod 2 and one with no
    // endpoints, with stable ids as the dataplane assigns them.
    let mut b = demo::builder();
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    b.add_service(demo::service(
        "default/echo:udp",
        proto::UDP,
        9000,
        &[ip(ECHO_VIP)],
        vec![demo::backend(ip("10.244.1.3"), 9000, true)],
    ));
    b.add_service(demo::service(
        "default/nobody:udp",
        proto::UDP,
        9001,
        &[ip(NOBODY_VIP)],
        Vec::new(),
    ));
    let mut tables = b.build().expect("tables");
    let mut ids = shm.service_directory();
    let by_svc = ids.update(tables.services().services().map(|(_, s)| s.name()));
    tables.set_service_ids(by_svc);
    w.set_tables(Arc::new(tables)).expect("set tables");
    std::thread::sleep(Duration::from_millis(100));

    let (got, echoed) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            netns::enter_named(&pod2).expect("enter pod2");
            let sock = UdpSocket::bind("10.244.1.3:9000").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            // Echo the first ten back: the Service's replies.
            io_support::count_datagrams(&sock, DATAGRAMS, Duration::from_secs(10), 10, |_| true)
        });
        std::thread::sleep(Duration::from_millis(100));
        let tx = s.spawn(|| {
            netns::enter_named(&pod1).expect("enter pod1");
            let sock = UdpSocket::bind("10.244.1.2:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            io_support::send_paced(&sock, (ECHO_VIP, 9000), &[0x5a; 100], DATAGRAMS, 8, |_| {});
            let mut buf = [0u8; 2048];
            let mut echoed = 0u64;
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                assert_eq!(from.ip(), ip(ECHO_VIP), "replies come from the ClusterIP");
                echoed += 1;
            }
            // One datagram to the Service without endpoints: a reject.
            sock.send_to(&[1; 10], (NOBODY_VIP, 9001)).unwrap();
            // Datagrams to a ClusterIP port no Service has: dropped.
            for _ in 0..NO_SERVICE_DATAGRAMS {
                sock.send_to(&[2; 10], (NOBODY_VIP, 9002)).unwrap();
            }
            echoed
        });
        (rx.join().expect("receiver"), tx.join().expect("sender"))
    });
    assert!(got >= DATAGRAMS * 9 / 10, "the stream arrived: {got}");
    assert!(echoed >= 5, "echoes came back: {echoed}");

    // Read back from the file only, as twillctl and control do.
    let t0 = Instant::now();
    let report = loop {
        let r = Shm::open(&dir.join("node.shm")).unwrap().service_report();
        let rejects = r
            .services
            .iter()
            .find(|s| s.name == "default/nobody:udp")
            .map_or(0, |s| s.counts.rejects);
        if rejects >= 1 || t0.elapsed() > Duration::from_secs(5) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let echo = report
        .services
        .iter()
        .find(|s| s.name == "default/echo:udp")
        .unwrap_or_else(|| panic!("{report:?}"));
    let c = echo.counts;
    assert_eq!(c.connections, 1, "one UDP flow: {c:?}");
    assert!(c.packets_to >= got && c.packets_to <= DATAGRAMS, "{c:?}");
    assert_eq!(c.bytes_to, c.packets_to * 142, "Ethernet frames: {c:?}");
    assert!(c.packets_reply >= echoed && c.packets_reply <= 10, "{c:?}");
    assert_eq!(c.bytes_reply, c.packets_reply * 142, "{c:?}");
    assert_eq!(c.rejects, 0);
    let nobody = report
        .services
        .iter()
        .find(|s| s.name == "default/nobody:udp")
        .unwrap();
    assert_eq!(nobody.counts.rejects, 1, "{report:?}");
    let web = report.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.counts, ServiceCounts::default(), "no traffic to web");

    // The drops, read from the file only: under the interface they came in
    // on (found by name, as twillctl and control do) and their reason.
    let t0 = Instant::now();
    let (p1, drops) = loop {
        let f = Shm::open(&dir.join("node.shm")).unwrap();
        let p1 = f
            .port_names()
            .into_iter()
            .find(|n| n.interface == "p1")
            .expect("p1 is named");
        assert_eq!(p1.kind, PortKind::Pod("default/client".into()));
        let mut drops = [0u64; DropReason::COUNT];
        let mut p2_drops = 0;
        for w in f.all_stats() {
            let p = w.ports[usize::from(p1.port)];
            for (d, n) in drops.iter_mut().zip(p.drops) {
                *d += n;
            }
            p2_drops += w.ports[usize::from(WEB_LOCAL_PORT)].drops[DropReason::NoService.index()];
        }
        assert_eq!(p2_drops, 0, "nothing dropped came in on p2");
        if drops[DropReason::NoService.index()] >= NO_SERVICE_DATAGRAMS
            || t0.elapsed() > Duration::from_secs(5)
        {
            break (p1, drops);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(p1.port, CLIENT_PORT);
    assert_eq!(
        drops[DropReason::NoService.index()],
        NO_SERVICE_DATAGRAMS,
        "{drops:?}"
    );

    w.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
