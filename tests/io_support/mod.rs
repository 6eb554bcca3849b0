//! Network-namespace topologies for the AF_XDP integration tests.
//!
//! Every namespace a test makes carries a prefix unique to the process and
//! the test (`tw<pid><tag>-`), and is deleted (with its veths) when the
//! [`Topo`] is dropped, also when the test fails. Traffic stays inside these
//! namespaces: the dataplane thread itself moves into the test's "node"
//! namespace with `dataplane::io::netns::enter_named`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Fails (never skips) unless the test runs as root.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    assert_eq!(
        uid, "0",
        "this test needs root (network namespaces, XDP, AF_XDP): run it as root, as CI does"
    );
}

/// Network namespaces made by one test, deleted on drop.
pub struct Topo {
    prefix: String,
    namespaces: Vec<String>,
}

impl Topo {
    pub fn new(tag: &str) -> Topo {
        require_root();
        Topo {
            prefix: format!("tw{}{}-", std::process::id(), tag),
            namespaces: Vec::new(),
        }
    }

    /// Makes namespace `name` (returns its full name), with loopback up.
    pub fn netns(&mut self, name: &str) -> String {
        let full = format!("{}{}", self.prefix, name);
        run(&["ip", "netns", "add", &full]);
        self.namespaces.push(full.clone());
        run(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        full
    }

    /// A veth pair: `a` in namespace `ns_a`, `b` in `ns_b`, both up.
    pub fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str) {
        run(&[
            "ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ]);
        run(&["ip", "-n", ns_a, "link", "set", a, "up"]);
        run(&["ip", "-n", ns_b, "link", "set", b, "up"]);
    }

    /// `ip -n ns ARGS`, which must succeed.
    pub fn ip(&self, ns: &str, args: &[&str]) {
        let mut v = vec!["ip", "-n", ns];
        v.extend_from_slice(args);
        run(&v);
    }

    /// Runs a command in namespace `ns` and returns its output (any status).
    pub fn exec(&self, ns: &str, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {cmd:?}: {e}"))
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Whether an XDP program is attached to `dev` in namespace `ns`.
pub fn has_xdp(topo: &Topo, ns: &str, dev: &str) -> bool {
    let out = topo.exec(ns, &["ip", "link", "show", "dev", dev]);
    assert!(out.status.success(), "ip link show {dev} in {ns}");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// Runs a command that must succeed.
pub fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets a flag when dropped (stops a dataplane thread even if the test panics).
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The pods' gateway address in these topologies (answered by the dataplane).
pub const POD_GATEWAY: &str = "10.244.1.1";

/// Sets up a pod's `eth0` in `ns` as twill's CNI does: its MAC, a /32
/// address, the gateway on-link and the default route through it, and tx
/// checksum offload off (XDP sees frames before the stack would finish
/// their checksums).
pub fn pod(topo: &Topo, ns: &str, mac: &str, ip: &str) {
    topo.ip(ns, &["link", "set", "eth0", "address", mac]);
    topo.ip(ns, &["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    topo.ip(
        ns,
        &["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"],
    );
    topo.ip(
        ns,
        &["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"],
    );
    run(&[
        "ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off",
    ]);
}

/// Builds `bin` of `package` in this test's profile and returns its path:
/// `cargo test` builds another package's binaries only when asked, and a
/// stale one would test old code.
pub fn cargo_bin(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let target = profile_dir.parent().expect("target dir");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-j2", "-p", package, "--bin", bin])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "building {bin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = profile_dir.join(bin);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// The datagram of the UDP streams between test pods: 512 bytes that
/// begin with "twil".
pub fn stream_datagram() -> [u8; 512] {
    let mut msg = [0x5au8; 512];
    msg[..4].copy_from_slice(b"twil");
    msg
}

/// The receiving half of a UDP stream between test pods: counts what
/// `sock` gets that `keep` accepts, echoing the first `echo` of those back
/// to their sender, until `want` came, `limit` passed, or the stream paused
/// for the socket's read timeout after its first datagram.
pub fn count_datagrams(
    sock: &std::net::UdpSocket,
    want: u64,
    limit: std::time::Duration,
    echo: u64,
    keep: impl Fn(&[u8]) -> bool,
) -> u64 {
    let mut buf = [0u8; 2048];
    let mut got = 0u64;
    let t0 = std::time::Instant::now();
    while got < want && t0.elapsed() < limit {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if keep(&buf[..n]) => {
                got += 1;
                if got <= echo {
                    sock.send_to(&buf[..n], from).unwrap();
                }
            }
            Ok(_) => {}
            Err(_) if got > 0 => break, // the stream is over
            Err(_) => {}
        }
    }
    got
}

/// The sending half: `count` copies of `msg` to `to`, with a millisecond's
/// pause after every `burst` (so a copy-mode ring keeps up), `sent(i)`
/// told after each.
pub fn send_paced(
    sock: &std::net::UdpSocket,
    to: impl std::net::ToSocketAddrs + Copy,
    msg: &[u8],
    count: u64,
    burst: u64,
    sent: impl Fn(u64),
) {
    for i in 0..count {
        sock.send_to(msg, to).unwrap();
        sent(i + 1);
        if i % burst == burst - 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A paced stream of `count` copies of `msg` from pod namespace `from_ns`
/// (bound to `from`) to `to` in `to_ns`, 8 datagrams a millisecond: how
/// many equal to `msg` arrived within `limit`.
pub fn udp_stream(
    from_ns: &str,
    from: &str,
    to_ns: &str,
    to: &str,
    msg: &[u8],
    count: u64,
    limit: std::time::Duration,
) -> u64 {
    std::thread::scope(|s| {
        let rx = s.spawn(|| {
            dataplane::io::netns::enter_named(to_ns).expect("enter the receiving pod");
            let sock = std::net::UdpSocket::bind(to).unwrap();
            sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                .unwrap();
            count_datagrams(&sock, count, limit, 0, |d| d == msg)
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.spawn(|| {
            dataplane::io::netns::enter_named(from_ns).expect("enter the sending pod");
            let sock = std::net::UdpSocket::bind(from).unwrap();
            send_paced(&sock, to, msg, count, 8, |_| {});
        });
        rx.join().expect("receiver")
    })
}
