//! The XDP steering program on a pod's veth: traffic to the node's own
//! address reaches the kernel (ping works), everything else lands in the
//! AF_XDP socket. Needs root (fails otherwise).

mod io_support;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::io::{
    netns, BindMode, FrameAccount, IfaceMode, SteerConfig, SteerStats, Steering, XdpAttachMode,
    Xsk, XskConfig,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use io_support::{StopOnDrop, Topo};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

struct Seen {
    /// ICMP echo requests to OTHER_IP read from the socket.
    echo_to_other: u32,
    /// Frames to NODE_IP read from the socket (must stay 0).
    to_node: u32,
    steer: SteerStats,
    account: FrameAccount,
}

fn classify(frame: &[u8], seen: &mut Seen) {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return;
    };
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        return;
    };
    let dst = ip.header().destination_addr();
    if dst == NODE_IP {
        seen.to_node += 1;
    }
    if dst == OTHER_IP {
        if let Some(TransportSlice::Icmpv4(icmp)) = p.transport {
            if icmp.type_u8() == 8 {
                seen.echo_to_other += 1;
            }
        }
    }
}

#[test]
fn steering_on_a_pod_port_passes_node_traffic_to_the_kernel_and_redirects_the_rest() {
    let mut topo = Topo::new("st");
    let node = topo.netns("node");
    let pod = topo.netns("pod");
    topo.veth(&node, "h1", &pod, "eth0");
    topo.ip(&node, &["addr", "add", "10.77.0.1/24", "dev", "h1"]);
    topo.ip(&pod, &["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    // A neighbour that does not exist: frames to it are sent without ARP.
    topo.ip(
        &pod,
        &[
            "neigh",
            "add",
            "10.77.0.9",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );

    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let seen = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let h = s.spawn(|| {
            netns::enter_named(&node).expect("enter node namespace");
            let mut st = Steering::load(&SteerConfig {
                vxlan_port: 8472,
                nodeport_range: (30000, 32767),
                snat_ports: (0, 0),
            })
            .expect("load steering program");
            st.add_node_addr(NODE_IP.into()).unwrap();
            let mut xsk = Xsk::new(XskConfig::default()).expect("umem");
            let mode = xsk.add_socket("h1", 0, 1).expect("socket");
            let (fd, _, _) = xsk.fd(1).unwrap();
            let (_, how) = st.attach("h1", IfaceMode::Pod, 1, &[fd]).expect("attach");
            ready_tx.send((how, mode)).unwrap();

            let mut seen = Seen {
                echo_to_other: 0,
                to_node: 0,
                steer: SteerStats::default(),
                account: FrameAccount::default(),
            };
            let mut tokens = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                xsk.refill(0);
                if xsk.rx(0, &mut tokens, 64) == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                for mut t in tokens.drain(..) {
                    let (h, l) = (t.head as usize, t.len as usize);
                    classify(&xsk.chunk(&mut t)[h..h + l], &mut seen);
                    xsk.free(t);
                }
            }
            seen.steer = st.stats();
            seen.account = xsk.account();
            seen
        });
        let (how, mode) = ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("dataplane thread ready");
        assert_eq!(how, XdpAttachMode::Native, "veth takes native XDP");
        assert_eq!(mode, BindMode::Copy);

        let ok = topo.exec(
            &pod,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.1"],
        );
        assert!(
            ok.status.success(),
            "ping to the node address must go through the kernel: {}",
            String::from_utf8_lossy(&ok.stdout)
        );
        let other = topo.exec(
            &pod,
            &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.77.0.9"],
        );
        assert!(!other.status.success(), "nobody answers 10.77.0.9");
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        h.join().expect("dataplane thread")
    });

    assert_eq!(
        seen.echo_to_other, 3,
        "the 3 echo requests to 10.77.0.9 reach the socket"
    );
    assert_eq!(
        seen.to_node, 0,
        "nothing addressed to the node reaches the socket"
    );
    assert!(seen.steer.redirected >= 3, "{:?}", seen.steer);
    // 3 echo requests and an ARP request for the node address, at least.
    assert!(seen.steer.passed >= 4, "{:?}", seen.steer);
    assert_eq!(seen.steer.no_socket, 0, "{:?}", seen.steer);
    assert_eq!(seen.account.missing(), 0, "{:?}", seen.account);
    assert_eq!(seen.account.held, 0, "{:?}", seen.account);
}

/// Marker "protocol" for ICMP errors in [`flows`] (not an IP protocol number in use here).
const ICMP_ERR: u8 = 201;

/// What the uplink test found in the socket: (destination, protocol, port).
fn flows(frame: &[u8], out: &mut Vec<(std::net::IpAddr, u8, u16)>) {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return;
    };
    let dst: std::net::IpAddr = match &p.net {
        Some(NetSlice::Ipv4(ip)) => ip.header().destination_addr().into(),
        Some(NetSlice::Ipv6(ip)) => ip.header().destination_addr().into(),
        _ => return,
    };
    let key = match &p.transport {
        Some(TransportSlice::Udp(u)) => (dst, 17, u.destination_port()),
        Some(TransportSlice::Tcp(t)) => (dst, 6, t.destination_port()),
        Some(TransportSlice::Icmpv4(i)) if i.type_u8() == 3 => {
            // Destination unreachable: keyed by the quoted packet's source
            // port, under the marker protocol ICMP_ERR.
            let q = i.payload();
            let ihl = (q.first().copied().unwrap_or(0) & 0xf) as usize * 4;
            match q.get(ihl..ihl + 2) {
                Some(b) => (dst, ICMP_ERR, u16::from_be_bytes([b[0], b[1]])),
                None => return,
            }
        }
        Some(TransportSlice::Icmpv4(i)) => (dst, 1, i.type_u8() as u16),
        Some(TransportSlice::Icmpv6(i)) => (dst, 58, i.type_u8() as u16),
        _ => return,
    };
    if !out.contains(&key) {
        out.push(key);
    }
}

#[test]
fn steering_on_the_uplink_takes_vxlan_vips_nodeports_and_snat_replies_and_leaves_the_rest_and_the_kernels_sockets(
) {
    use dataplane::io::ZeroCopy;
    use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};

    let mut topo = Topo::new("up");
    let node = topo.netns("node");
    let ext = topo.netns("ext");
    topo.veth(&node, "up0", &ext, "eth0");
    topo.ip(&node, &["addr", "add", "192.168.50.1/24", "dev", "up0"]);
    topo.ip(
        &node,
        &["addr", "add", "fd00:50::1/64", "dev", "up0", "nodad"],
    );
    topo.ip(&ext, &["addr", "add", "192.168.50.9/24", "dev", "eth0"]);
    topo.ip(
        &ext,
        &["addr", "add", "fd00:50::9/64", "dev", "eth0", "nodad"],
    );
    topo.ip(
        &ext,
        &["route", "add", "10.96.0.0/16", "via", "192.168.50.1"],
    );

    let node_v4: IpAddr = "192.168.50.1".parse().unwrap();
    let node_v6: IpAddr = "fd00:50::1".parse().unwrap();
    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (found_steer_mode, snat_err, other_err) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let h = s.spawn(|| {
            netns::enter_named(&node).expect("enter node namespace");
            let mut st = Steering::load(&SteerConfig {
                vxlan_port: 8472,
                nodeport_range: (30000, 32767),
                snat_ports: (40000, 40100),
            })
            .expect("load");
            st.add_node_addr(node_v4).unwrap();
            st.add_node_addr(node_v6).unwrap();
            st.add_vip(vip, None).unwrap();
            // An externalIP equal to the node address: only TCP 8443 is ours.
            st.add_vip(node_v4, Some((6, 8443))).unwrap();
            // A served NodePort: UDP 30080, ours although a kernel socket
            // has it too. 30081, in the range and served by nobody, has a
            // kernel socket (as a healthCheckNodePort server): the kernel's.
            // 30082 has neither: ours (a NodePort just removed keeps its
            // established flows).
            st.add_node_port(17, 30080).unwrap();
            let kernel_udp = |port: u16| {
                let u = UdpSocket::bind(("192.168.50.1", port)).expect("kernel socket");
                u.set_nonblocking(true).unwrap();
                u
            };
            let (k30080, k30081) = (kernel_udp(30080), kernel_udp(30081));
            let mut xsk = Xsk::new(XskConfig {
                zero_copy: ZeroCopy::Auto,
                ..XskConfig::default()
            })
            .expect("umem");
            let mode = xsk.add_socket("up0", 0, 0).expect("socket");
            let (ifindex, _) = st.attach("up0", IfaceMode::Uplink, 1, &[]).expect("attach");
            // Inserted after attaching here (the other order is attach's own).
            let (fd, _, q) = xsk.fd(0).unwrap();
            st.set_socket(ifindex, q, fd).expect("xskmap");
            ready_tx.send(()).unwrap();
            let mut found = Vec::new();
            let mut tokens = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                xsk.refill(0);
                if xsk.rx(0, &mut tokens, 64) == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                for mut t in tokens.drain(..) {
                    let (h, l) = (t.head as usize, t.len as usize);
                    flows(&xsk.chunk(&mut t)[h..h + l], &mut found);
                    xsk.free(t);
                }
            }
            let heard = |u: &UdpSocket| {
                let mut b = [0u8; 64];
                std::iter::from_fn(|| u.recv(&mut b).ok()).count()
            };
            let kernel_heard = (heard(&k30080), heard(&k30081));
            (found, st.stats(), mode, kernel_heard)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("dataplane thread ready");

        // The node's own traffic still works through the kernel (ARP, ND, ICMP).
        let ping = topo.exec(
            &ext,
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.50.1"],
        );
        assert!(
            ping.status.success(),
            "IPv4 ping to the node through the kernel"
        );
        let ping6 = topo.exec(
            &ext,
            &[
                "ping",
                "-6",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "fd00:50::1",
            ],
        );
        assert!(
            ping6.status.success(),
            "IPv6 ping to the node through the kernel"
        );

        s.spawn(|| {
            netns::enter_named(&ext).expect("enter ext namespace");
            let u4 = UdpSocket::bind("192.168.50.9:0").unwrap();
            let u6 = UdpSocket::bind("[fd00:50::9]:0").unwrap();
            for _ in 0..2 {
                for dst in [
                    "192.168.50.1:8472",
                    "192.168.50.1:30080",
                    "192.168.50.1:30081",
                    "192.168.50.1:30082",
                    "192.168.50.1:40050",
                    "10.96.0.10:80",
                    "192.168.50.1:5353",
                    "192.168.50.1:8443",
                ] {
                    u4.send_to(b"twill", dst).unwrap();
                }
                u6.send_to(b"twill", "[fd00:50::1]:8472").unwrap();
                u6.send_to(b"twill", "[fd00:50::1]:5353").unwrap();
            }
            let syn: SocketAddr = "192.168.50.1:8443".parse().unwrap();
            // Nobody answers the SYN (it is ours, not the kernel's): times out.
            assert!(TcpStream::connect_timeout(&syn, Duration::from_millis(300)).is_err());
        })
        .join()
        .expect("sender thread");
        // The node sends to a closed port of ext from an SNAT port and from
        // another port: ext's "port unreachable" about the first is steered
        // to the dataplane (its socket never hears of it), about the second
        // it reaches the kernel (ECONNREFUSED).
        let (snat_err, other_err) = s
            .spawn(|| {
                netns::enter_named(&node).expect("enter node namespace");
                let probe = |port: u16| {
                    let u = UdpSocket::bind(("192.168.50.1", port)).unwrap();
                    u.connect("192.168.50.9:9").unwrap();
                    u.set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    u.send(b"twill").unwrap();
                    let mut b = [0u8; 16];
                    u.recv(&mut b).unwrap_err().kind()
                };
                (probe(40060), probe(5000))
            })
            .join()
            .expect("node sender thread");
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        (h.join().expect("dataplane thread"), snat_err, other_err)
    });
    let ((found, steer, zc_mode, kernel_heard), snat_err, other_err) =
        (found_steer_mode, snat_err, other_err);
    assert_eq!(
        kernel_heard,
        (0, 2),
        "the kernel socket on the served NodePort hears nothing; the one on an unserved \
         port of the range hears both datagrams"
    );
    assert_eq!(
        other_err,
        std::io::ErrorKind::ConnectionRefused,
        "an ICMP error about the node's own port reaches the kernel"
    );
    assert_ne!(
        snat_err,
        std::io::ErrorKind::ConnectionRefused,
        "an ICMP error about an SNAT port does not reach the kernel"
    );

    assert_eq!(
        zc_mode,
        BindMode::Copy,
        "veth has no zero-copy: fell back to copy mode"
    );
    let has = |ip: IpAddr, proto: u8, port: u16| found.contains(&(ip, proto, port));
    for (ip, proto, port, what) in [
        (node_v4, 17, 8472, "VXLAN"),
        (node_v6, 17, 8472, "VXLAN over IPv6"),
        (node_v4, 17, 30080, "a served NodePort"),
        (node_v4, 17, 30082, "an unserved port of the NodePort range"),
        (node_v4, 17, 40050, "a reply to the SNAT range"),
        (vip, 17, 80, "a VIP"),
        (node_v4, 6, 8443, "an externalIP:port on the node address"),
        (node_v4, ICMP_ERR, 40060, "an ICMP error about an SNAT port"),
    ] {
        assert!(
            has(ip, proto, port),
            "{what} must reach the socket: {found:?}"
        );
    }
    for (ip, proto, port, what) in [
        (node_v4, 17, 5353, "another UDP port of the node"),
        (
            node_v4,
            17,
            30081,
            "an unserved port of the NodePort range with a kernel socket",
        ),
        (node_v6, 17, 5353, "another UDP port of the node (IPv6)"),
        (node_v4, 17, 8443, "UDP to the TCP-only externalIP port"),
        (node_v4, 1, 8, "pings to the node"),
        (node_v6, 58, 128, "IPv6 pings to the node"),
        (
            node_v4,
            ICMP_ERR,
            5000,
            "an ICMP error about the node's own port",
        ),
    ] {
        assert!(
            !has(ip, proto, port),
            "{what} must stay with the kernel: {found:?}"
        );
    }
    assert_eq!(steer.no_socket, 0, "{steer:?}");
    assert!(steer.passed >= 8, "{steer:?}");
}

#[test]
fn attaching_a_missing_interface_fails_naming_it_and_leaves_nothing_attached() {
    use dataplane::io::Forwarder;
    use dataplane::pipeline::Pipeline;
    use dataplane::state::demo;

    let mut topo = Topo::new("ms");
    let node = topo.netns("node");
    let pod = topo.netns("pod");
    topo.veth(&node, "h1", &pod, "eth0");
    let (err, attached, h1_xdp) = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter_named(&node).expect("enter node namespace");
            let tables = std::sync::Arc::new(demo::demo_tables().unwrap());
            let mut st = Steering::load(&SteerConfig::from_node(tables.config())).expect("load");
            let xsk = Xsk::new(XskConfig::default()).expect("umem");
            let mut fwd = Forwarder::new(xsk, Pipeline::standalone(tables));
            fwd.attach(&mut st, "h1", 1, IfaceMode::Pod).expect("h1");
            let err = fwd
                .attach(&mut st, "nope0", 2, IfaceMode::Pod)
                .expect_err("no such interface");
            let attached = st.attached().count();
            let h1 = io_support::has_xdp(&topo, &node, "h1");
            (err.to_string(), attached, h1)
        })
        .join()
        .expect("thread")
    });
    assert!(
        err.contains("nope0"),
        "the error names the interface: {err}"
    );
    assert_eq!(attached, 1, "only h1 is attached");
    assert!(h1_xdp, "h1 was attached while the forwarder lived");
    assert!(
        !io_support::has_xdp(&topo, &node, "h1"),
        "and detached when it ended"
    );
}
