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
            let (ifindex, how) = st.attach("h1", IfaceMode::Pod, 1).expect("attach");
            let mut xsk = Xsk::new(XskConfig::default()).expect("umem");
            let mode = xsk.add_socket("h1", 0, 1).expect("socket");
            let (fd, _, q) = xsk.fd(1).unwrap();
            st.set_socket(ifindex, q, fd).expect("xskmap");
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
