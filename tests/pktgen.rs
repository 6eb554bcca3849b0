//! twill-pktgen's generator on a real veth: frames captured at the other end
//! (tcpdump in the peer namespace) parse with etherparse, every IPv4 header
//! and UDP checksum (inner and, over IPv6, outer VXLAN) is valid, and the
//! flows vary over exactly the source ports and addresses asked for. Needs
//! root and tcpdump (fails otherwise).

mod io_support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::io::gen::{Flows, PacketSpec, TxConfig, TxGen, VxlanSpec};
use dataplane::io::netns;
use etherparse::{
    Ethernet2Header, Ipv4Header, Ipv6Header, NetSlice, SlicedPacket, TransportSlice, UdpHeader,
};
use io_support::Topo;

const GEN_MAC: [u8; 6] = [2, 0, 0, 0, 0x0a, 0x0a];
const SINK_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 0x0b];

/// A generator namespace and a sink namespace joined by a veth (g0 | s0).
fn pair(tag: &str) -> (Topo, String, String) {
    let mut topo = Topo::new(tag);
    let g = topo.netns("gen");
    let s = topo.netns("sink");
    // No IPv6 on these veths: the kernel's own MLD/ND frames stay off the capture.
    for ns in [&g, &s] {
        let out = topo.exec(
            ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        assert!(out.status.success(), "sysctl in {ns}");
    }
    topo.veth(&g, "g0", &s, "s0");
    (topo, g, s)
}

/// tcpdump writing `count` frames from `dev` in `ns` to `file`; returns once
/// it listens.
fn capture(ns: &str, dev: &str, file: &str, count: usize) -> Child {
    let mut c = Command::new("ip")
        .args([
            "netns", "exec", ns, "timeout", "20", "tcpdump", "-n", "-s", "0",
        ])
        .args([
            "-B",
            "32768",
            "-i",
            dev,
            "-w",
            file,
            "-c",
            &count.to_string(),
        ])
        // Only the generator's frames (not the kernel's own IPv6 MLD/ND).
        .args(["ether", "src", "02:00:00:00:0a:0a", "and", "udp"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    let mut err = BufReader::new(c.stderr.take().expect("stderr"));
    let mut line = String::new();
    let t = Instant::now();
    while !line.contains("listening on") {
        line.clear();
        let n = err.read_line(&mut line).expect("tcpdump stderr");
        assert!(n > 0, "tcpdump exited before listening");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tcpdump never listened"
        );
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    c
}

/// The frames of a classic pcap file.
fn pcap_frames(file: &str) -> Vec<Vec<u8>> {
    let b = std::fs::read(file).expect("pcap written");
    assert!(b.len() >= 24, "pcap header");
    assert_eq!(&b[0..4], &0xa1b2c3d4u32.to_le_bytes(), "little-endian pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(b[at + 12..at + 16].try_into().unwrap()) as usize;
        assert_eq!(incl, orig, "frame captured whole");
        out.push(b[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    out
}

/// Sends `n` frames from `dev` in `ns` in paced rounds (the sink's backlog
/// holds 1000), returning the generator's submitted/completed counts.
fn send(ns: &str, dev: &str, flows: &Flows, n: u64) -> (u64, u64, bool) {
    let ns = ns.to_string();
    let dev = dev.to_string();
    let flows = flows.clone();
    std::thread::spawn(move || {
        netns::enter_named(&ns).expect("enter gen namespace");
        let mut g = TxGen::open(&dev, 0, TxConfig::default(), &flows).expect("tx socket");
        let mut left = n;
        while left > 0 {
            let batch = left.min(200) as u32;
            let mut queued = 0;
            while queued < batch {
                queued += g.send(&flows, batch - queued);
            }
            left -= u64::from(batch);
            g.drain(Instant::now() + Duration::from_secs(2));
            std::thread::sleep(Duration::from_millis(3));
        }
        let s = g.stats();
        (s.submitted, s.completed, g.rewrites())
    })
    .join()
    .expect("generator thread")
}

/// Checks one UDP/IP packet (`l3` starts at the IP header) with etherparse;
/// returns (source address, source port, destination port, UDP payload).
fn check_udp(l3: &[u8]) -> (IpAddr, u16, u16, Vec<u8>) {
    let (src, udp, payload) = if l3[0] >> 4 == 4 {
        let (ip, rest) = Ipv4Header::from_slice(l3).expect("IPv4 header");
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 checksum"
        );
        assert_eq!(ip.total_len as usize, l3.len(), "IPv4 total length");
        let (u, p) = UdpHeader::from_slice(rest).expect("UDP header");
        let want = u.calc_checksum_ipv4(&ip, p).expect("udp sum");
        assert_ne!(u.checksum, 0, "UDP checksum present");
        assert_eq!(u.checksum, want, "UDP checksum (IPv4)");
        (IpAddr::from(ip.source), u, p.to_vec())
    } else {
        let (ip, rest) = Ipv6Header::from_slice(l3).expect("IPv6 header");
        assert_eq!(ip.payload_length as usize + 40, l3.len(), "IPv6 length");
        let (u, p) = UdpHeader::from_slice(rest).expect("UDP header");
        let want = u.calc_checksum_ipv6(&ip, p).expect("udp sum");
        assert_eq!(u.checksum, want, "UDP checksum (IPv6)");
        (IpAddr::from(ip.source), u, p.to_vec())
    };
    assert_eq!(usize::from(udp.length), 8 + payload.len(), "UDP length");
    (src, udp.source_port, udp.destination_port, payload)
}

fn spec(src: &str, dst: &str, sport: u16, sports: u16, src_ips: u32, flows: u64) -> PacketSpec {
    PacketSpec {
        src_mac: GEN_MAC,
        dst_mac: SINK_MAC,
        src_ip: src.parse().unwrap(),
        dst_ip: dst.parse().unwrap(),
        sport,
        sports,
        src_ips,
        dport: 5201,
        size: 64,
        flows,
        vxlan: None,
    }
}

fn low32(ip: &IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => u32::from_be_bytes(a.octets()[12..].try_into().unwrap()),
    }
}

#[test]
fn ipv4_frames_at_the_peer_have_valid_checksums_and_cover_every_flow() {
    let (topo, g, s) = pair("pg4");
    let file = std::env::temp_dir().join(format!("twill-pktgen-{}-4.pcap", std::process::id()));
    let file = file.to_str().unwrap().to_string();
    // 100 ports x 10 addresses = 1000 flows; 3000 frames = every flow 3 times.
    let flows = Flows::new(spec("10.0.0.1", "10.0.9.9", 20000, 100, 10, 1000)).unwrap();
    let mut cap = capture(&s, "s0", &file, 3000);
    let (submitted, completed, rewrites) = send(&g, "g0", &flows, 3000);
    assert!(
        cap.wait().expect("tcpdump").success(),
        "tcpdump got 3000 frames"
    );
    assert_eq!((submitted, completed, rewrites), (3000, 3000, false));
    let frames = pcap_frames(&file);
    let _ = std::fs::remove_file(&file);
    assert_eq!(frames.len(), 3000);
    let mut seen = HashSet::new();
    for f in &frames {
        assert_eq!(f.len(), 60, "64-byte frames less FCS");
        let p = SlicedPacket::from_ethernet(f).expect("etherparse");
        assert!(p.link.is_some());
        let (eth, _) = Ethernet2Header::from_slice(f).expect("eth");
        assert_eq!((eth.source, eth.destination), (GEN_MAC, SINK_MAC));
        assert!(matches!(p.net, Some(NetSlice::Ipv4(_))));
        assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
        let (src, sport, dport, _) = check_udp(&f[14..]);
        assert_eq!(dport, 5201);
        let lo = low32(&src) - u32::from(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert!(lo < 10 && (20000..20100).contains(&sport), "{src} {sport}");
        seen.insert((src, sport));
    }
    assert_eq!(seen.len(), 1000, "every flow seen");
    drop(topo);
}

#[test]
fn more_flows_than_umem_frames_are_rewritten_with_valid_checksums() {
    let (topo, g, s) = pair("pgr");
    let file = std::env::temp_dir().join(format!("twill-pktgen-{}-r.pcap", std::process::id()));
    let file = file.to_str().unwrap().to_string();
    // 20 000 flows (> 16384: frames are rewritten per send); the first 2000 sent.
    let flows = Flows::new(spec("10.0.0.1", "10.0.9.9", 1024, 20000, 1, 20000)).unwrap();
    let mut cap = capture(&s, "s0", &file, 2000);
    let (_, completed, rewrites) = send(&g, "g0", &flows, 2000);
    assert!(cap.wait().expect("tcpdump").success());
    assert_eq!(completed, 2000);
    assert!(rewrites, "frames rewritten");
    let frames = pcap_frames(&file);
    let _ = std::fs::remove_file(&file);
    let ports: HashSet<u16> = frames.iter().map(|f| check_udp(&f[14..]).1).collect();
    assert_eq!(ports.len(), 2000, "2000 distinct source ports");
    assert!(ports.iter().all(|p| (1024..3024).contains(p)));
    drop(topo);
}

#[test]
fn vxlan_over_ipv6_carries_ipv6_flows_with_valid_outer_and_inner_checksums() {
    let (topo, g, s) = pair("pgv");
    let file = std::env::temp_dir().join(format!("twill-pktgen-{}-v.pcap", std::process::id()));
    let file = file.to_str().unwrap().to_string();
    let mut sp = spec("fd00:244:1::2", "fd00:96::a", 30000, 50, 2, 100);
    sp.size = 128;
    sp.vxlan = Some(VxlanSpec {
        outer_src: "fd00:50::3".parse().unwrap(),
        outer_dst: "fd00:50::1".parse().unwrap(),
        vni: 0xabcdef,
        port: 8472,
        inner_src_mac: [2, 0xfe, 0, 0, 0, 3],
        inner_dst_mac: [2, 0xfe, 0, 0, 0, 1],
    });
    let flows = Flows::new(sp).unwrap();
    assert_eq!(
        flows.len(),
        124 + 70,
        "inner 124 bytes + outer IPv6 headers"
    );
    let mut cap = capture(&s, "s0", &file, 400);
    let (_, completed, _) = send(&g, "g0", &flows, 400);
    assert!(cap.wait().expect("tcpdump").success());
    assert_eq!(completed, 400);
    let frames = pcap_frames(&file);
    let _ = std::fs::remove_file(&file);
    let mut inner_flows = HashSet::new();
    let mut outer_ports = HashSet::new();
    for f in &frames {
        assert_eq!(&f[12..14], &[0x86, 0xdd], "outer IPv6");
        let (osrc, osport, odport, vx) = check_udp(&f[14..]);
        assert_eq!(osrc, "fd00:50::3".parse::<IpAddr>().unwrap());
        assert_eq!(odport, 8472);
        outer_ports.insert(osport);
        assert_eq!(vx[0], 0x08, "VXLAN I flag");
        assert_eq!(&vx[4..7], &[0xab, 0xcd, 0xef], "VNI");
        let inner = &vx[8..];
        let p = SlicedPacket::from_ethernet(inner).expect("inner etherparse");
        assert!(matches!(p.net, Some(NetSlice::Ipv6(_))));
        let (eth, _) = Ethernet2Header::from_slice(inner).expect("inner eth");
        assert_eq!(eth.destination, [2, 0xfe, 0, 0, 0, 1]);
        let (src, sport, dport, _) = check_udp(&inner[14..]);
        assert_eq!(dport, 5201);
        inner_flows.insert((src, sport));
    }
    assert_eq!(inner_flows.len(), 100, "50 ports x 2 addresses");
    assert!(
        outer_ports.len() > 50,
        "outer source port follows the inner flow"
    );
    drop(topo);
}
