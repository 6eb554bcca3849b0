//! `twill-dataplane run --config FILE` as a real process over network
//! namespaces: a node with an uplink to an underlay namespace (its gateway,
//! resolved from the kernel's neighbour table) and two pods. The pods ping
//! each other and a UDP stream passes; SIGTERM detaches everything and
//! prints counters showing no frame leaked; SIGKILL leaves no XDP program
//! behind; a bad config file or a CPU that does not exist is one clear error
//! line and exit code 1. Needs root (fails otherwise).
//!
//! The binary is built by cargo from the test (see [`binary`]).

mod io_support;

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::io::netns;
use io_support::Topo;

/// twill-dataplane, built once per test process in this test's profile.
fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| io_support::cargo_bin("dataplane", "twill-dataplane"))
        .clone()
}

const POD1_MAC: &str = "0a:58:0a:f4:01:02";
const POD2_MAC: &str = "0a:58:0a:f4:01:03";
const GATEWAY_MAC: &str = "02:44:00:00:00:01";

/// The node's config: uplink `up0` (MAC and gateway MAC "auto"), pods on
/// `p1` and `p2`, one remote node whose underlay MAC is resolved.
fn config(workers: &str) -> String {
    format!(
        r#"
[node]
name = "test-node"
ipv4 = "192.168.77.1"
uplink = "up0"
uplink_mac = "auto"
underlay_gateway_ipv4 = "192.168.77.254"
underlay_gateway_mac = "auto"
pod_gateway_ipv4 = "10.244.1.1"
pod_gateway_mac = "{GATEWAY_MAC}"
vtep_mac = "02:ee:00:00:00:01"
snat_ports = [61000, 65535]
cluster_cidrs = ["10.244.0.0/16"]
service_cidrs = ["10.96.0.0/12"]
conntrack_capacity = 4096
neighbour_refresh_s = 1

[workers]
{workers}
zero_copy = "auto"
idle_polls = 16
sleep_ms = 5

[[pods]]
name = "pod1"
interface = "p1"
mac = "{POD1_MAC}"
ipv4 = "10.244.1.2"

[[pods]]
name = "pod2"
interface = "p2"
mac = "{POD2_MAC}"
ipv4 = "10.244.1.3"

[[remote_nodes]]
name = "other"
ipv4 = "192.168.77.2"
pod_cidrs = ["10.244.2.0/24"]
vtep_mac = "02:ee:00:00:00:02"
"#
    )
}

struct Node {
    topo: Topo,
    node: String,
    under: String,
    pod1: String,
    pod2: String,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// node (up0 <-> underlay's eth0, p1 <-> pod1, p2 <-> pod2) and a config
/// file in a fresh directory.
fn node(tag: &str, workers: &str) -> (Node, PathBuf) {
    node_with(tag, workers, 1)
}

/// As [`node`], the uplink veth with `queues` rx/tx queues each side.
fn node_with(tag: &str, workers: &str, queues: u32) -> (Node, PathBuf) {
    let mut topo = Topo::new(tag);
    let node = topo.netns("node");
    let under = topo.netns("under");
    let pod1 = topo.netns("pod1");
    let pod2 = topo.netns("pod2");
    let q = queues.to_string();
    topo.ip(
        &node,
        &[
            "link",
            "add",
            "up0",
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &under,
        ],
    );
    topo.ip(&node, &["link", "set", "up0", "up"]);
    topo.ip(&under, &["link", "set", "eth0", "up"]);
    topo.ip(&node, &["addr", "add", "192.168.77.1/24", "dev", "up0"]);
    topo.ip(&under, &["addr", "add", "192.168.77.254/24", "dev", "eth0"]);
    topo.veth(&node, "p1", &pod1, "eth0");
    topo.veth(&node, "p2", &pod2, "eth0");
    io_support::pod(&topo, &pod1, POD1_MAC, "10.244.1.2");
    io_support::pod(&topo, &pod2, POD2_MAC, "10.244.1.3");
    let dir = std::env::temp_dir().join(format!("twill-run-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, config(workers)).unwrap();
    (
        Node {
            topo,
            node,
            under,
            pod1,
            pod2,
            dir,
        },
        cfg,
    )
}

/// The dataplane process (`ip netns exec` execs it: the child's PID is the
/// dataplane's). Killed on drop if still running.
struct Dataplane {
    child: Child,
    lines: mpsc::Receiver<String>,
    out: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Dataplane {
    fn start(ns: &str, cfg: &std::path::Path) -> Dataplane {
        Dataplane::start_with(ns, cfg, &["--stats-interval", "0"])
    }

    fn start_with(ns: &str, cfg: &std::path::Path, args: &[&str]) -> Dataplane {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(binary())
            .args(["run", "--config"])
            .arg(cfg)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start twill-dataplane");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Dataplane {
            child,
            lines,
            out: Vec::new(),
            stderr,
        }
    }

    /// Waits for the "running" line (panics with the output otherwise).
    fn wait_running(&mut self) {
        self.wait_line("twill-dataplane: running");
    }

    /// Waits for a stdout line starting with `prefix`; returns it.
    fn wait_line(&mut self, prefix: &str) -> String {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let found = l.starts_with(prefix);
                    self.out.push(l.clone());
                    if found {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        panic!("twill-dataplane exited early ({st}): {:?}", self.out);
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line {prefix:?} from twill-dataplane: {:?}", self.out);
    }

    fn signal(&self, sig: &str) {
        // Only the process this test started, by its PID.
        io_support::run(&["kill", sig, &self.child.id().to_string()]);
    }

    /// Waits (bounded) for the exit; returns (success, stdout, stderr).
    fn wait(mut self) -> (Option<i32>, String, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("twill-dataplane did not exit: {:?}", self.out);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.out.push(l);
        }
        let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        let err = stderr.join().unwrap_or_default();
        (status.code(), self.out.join("\n"), err)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `Cpus_allowed_list` of the thread named `name` of process `pid`.
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let status = std::fs::read_to_string(dir.join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_string());
        }
    }
    None
}

fn no_xdp_left(n: &Node) {
    for dev in ["up0", "p1", "p2"] {
        let t0 = Instant::now();
        while io_support::has_xdp(&n.topo, &n.node, dev) && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !io_support::has_xdp(&n.topo, &n.node, dev),
            "no XDP program left on {dev}"
        );
    }
}

fn udp_stream(n: &Node, count: u64) -> u64 {
    io_support::udp_stream(
        &n.pod1,
        "10.244.1.2:0",
        &n.pod2,
        "10.244.1.3:9000",
        &io_support::stream_datagram(),
        count,
        Duration::from_secs(20),
    )
}

#[test]
fn the_dataplane_process_forwards_pings_and_a_udp_stream_between_pods_and_detaches_on_sigterm() {
    const N: u64 = 1000;
    let (n, cfg) = node("rn", "cpus = []");
    let mut dp = Dataplane::start(&n.node, &cfg);
    dp.wait_running();
    assert!(io_support::has_xdp(&n.topo, &n.node, "p1"), "p1 attached");
    assert!(
        io_support::has_xdp(&n.topo, &n.node, "up0"),
        "uplink attached"
    );
    let ping = n.topo.exec(
        &n.pod1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.3"],
    );
    let got = udp_stream(&n, N);
    dp.signal("-TERM");
    let (code, out, err) = dp.wait();
    assert!(
        ping.status.success(),
        "pod1 -> pod2 ping through the process: {}\n{out}\n{err}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_eq!(got, N, "every datagram arrived:\n{out}\n{err}");
    assert_eq!(code, Some(0), "clean exit on SIGTERM:\n{out}\n{err}");
    assert!(out.contains("stopped by signal"), "{out}");
    assert!(out.contains("missing 0"), "no frame leaked:\n{out}");
    assert!(
        !out.contains("missing -") && !err.contains("panicked"),
        "{out}\n{err}"
    );
    assert!(
        err.contains("AF_XDP socket bound in"),
        "the log says which mode each socket got:\n{err}"
    );
    assert!(
        !err.contains("not in the kernel's neighbour table yet"),
        "the gateway was resolved from the kernel's neighbour table:\n{err}"
    );
    assert!(
        err.contains("remote node other: not in the kernel's neighbour table"),
        "the absent remote node is reported:\n{err}"
    );
    no_xdp_left(&n);
}

#[test]
fn the_dataplane_killed_by_pid_leaves_no_xdp_program_attached() {
    let (n, cfg) = node("rk", "cpus = []");
    let mut dp = Dataplane::start_with(&n.node, &cfg, &["--busy-poll", "--stats-interval", "1"]);
    let running = dp.wait_line("twill-dataplane: running");
    assert!(running.ends_with(", busy-polling"), "{running}");
    dp.wait_line("counters:");
    let w0 = dp.wait_line("  worker 0");
    assert!(
        w0.contains(" sleeps 0;"),
        "a busy-polling worker never blocks: {w0}"
    );
    for dev in ["up0", "p1", "p2"] {
        assert!(io_support::has_xdp(&n.topo, &n.node, dev), "{dev} attached");
    }
    dp.signal("-KILL");
    let (code, out, _) = dp.wait();
    assert_eq!(code, None, "killed by a signal: {out}");
    no_xdp_left(&n);
}

#[test]
fn a_bad_config_file_is_one_clear_error_line_and_exit_code_1() {
    let dir = std::env::temp_dir().join(format!("twill-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            config("cpus = []").replace("vtep_mac = \"02:ee:00:00:00:01\"", "vtep_mac = \"02:ee\""),
            "line 11, [node], vtep_mac: \"02:ee\" is not a MAC address",
        ),
        (
            config("cpus = []").replace("[workers]\n", "[workers]\nthreads = 2\n"),
            "[workers], threads: unknown field `threads`",
        ),
        (
            config("cpus = []").replace("ipv4 = \"10.244.1.3\"", "ipv4 = \"10.244.1.2\""),
            "pods[1] (pod2): address 10.244.1.2 is used twice",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = Command::new(binary())
            .args(["run", "--config"])
            .arg(&f)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!("twill-dataplane: config {}: ", f.display())),
            "names the file: {err}"
        );
        assert!(err.contains(want), "{want:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cpu_that_does_not_exist_is_a_clear_error_and_nothing_stays_attached() {
    let (n, cfg) = node("rc", "cpus = [4095]");
    let dp = Dataplane::start(&n.node, &cfg);
    let (code, out, err) = dp.wait();
    assert_eq!(code, Some(1), "{out}\n{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("twill-dataplane: workers.cpus: CPU 4095 does not exist"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    no_xdp_left(&n);
}

#[test]
fn with_two_pinned_workers_the_uplink_queues_are_split_and_pods_on_different_workers_talk() {
    const N: u64 = 1000;
    let cpus = dataplane::io::available_cpus();
    assert!(cpus.len() >= 2, "this test needs 2 CPUs, has {cpus:?}");
    let (c0, c1) = (cpus[0], cpus[1]);
    let (n, cfg) = node_with("r2", &format!("cpus = [{c0}, {c1}]"), 2);
    let mut dp = Dataplane::start(&n.node, &cfg);
    dp.wait_running();
    for (w, cpu) in [(0, c0), (1, c1)] {
        assert_eq!(
            thread_cpus(dp.child.id(), &format!("twill-worker-{w}")),
            Some(cpu.to_string()),
            "worker {w} is pinned to CPU {cpu}"
        );
    }
    let ping = n.topo.exec(
        &n.pod1,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.3"],
    );
    let got = udp_stream(&n, N);
    dp.signal("-INT");
    let (code, out, err) = dp.wait();
    assert!(ping.status.success(), "ping across workers:\n{out}\n{err}");
    assert_eq!(got, N, "every datagram arrived:\n{out}\n{err}");
    assert_eq!(code, Some(0), "clean exit on SIGINT:\n{out}\n{err}");
    assert!(
        out.contains(&format!(
            "running 2 worker(s) on CPUs [Some({c0}), Some({c1})], uplink up0 (2 queue(s))"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("worker 0 (cpu {c0}) ports [0, 1]"))
            && out.contains(&format!("worker 1 (cpu {c1}) ports [0, 2]")),
        "uplink queue i on worker i, pods spread:\n{out}"
    );
    assert!(err.contains("up0 queue 1: AF_XDP socket bound in"), "{err}");
    assert!(
        !out.contains("handed_off 0 "),
        "both directions crossed workers:\n{out}"
    );
    assert!(out.contains("handoff_drops 0 "), "{out}");
    assert!(
        !out.contains("missing -") && out.matches("missing 0").count() == 2,
        "{out}"
    );
    no_xdp_left(&n);
    println!("{out}");
}

#[test]
fn a_next_hop_learnt_by_the_kernel_after_start_is_picked_up_and_encapsulated_traffic_reaches_it() {
    let (n, cfg) = node("rr", "cpus = []");
    // The gateway's MAC is given (and wrong for the remote node); the remote
    // node 192.168.77.2 lives on the underlay but answers no ARP, so at start
    // it is unresolved and its VXLAN frames go to the gateway's MAC.
    std::fs::write(
        &cfg,
        config("cpus = []").replace(
            "underlay_gateway_mac = \"auto\"",
            "underlay_gateway_mac = \"02:00:00:00:00:99\"",
        ),
    )
    .unwrap();
    let under = n.under.clone();
    n.topo.ip(
        &under,
        &["link", "set", "eth0", "address", "02:77:00:00:00:02"],
    );
    n.topo.ip(&under, &["link", "set", "eth0", "arp", "off"]);
    n.topo
        .ip(&under, &["addr", "add", "192.168.77.2/24", "dev", "eth0"]);

    let got = std::sync::Mutex::new(Vec::<Vec<u8>>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (bound_tx, bound) = mpsc::channel();
    let mut dp = Dataplane::start(&n.node, &cfg);
    dp.wait_running();
    let (before, after) = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter_named(&under).expect("enter underlay");
            let sock = UdpSocket::bind("192.168.77.2:8472").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            bound_tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            let t0 = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(30)
            {
                if let Ok(len) = sock.recv(&mut buf) {
                    got.lock().unwrap().push(buf[..len].to_vec());
                }
            }
        });
        let ping = || {
            n.topo
                .exec(&n.pod1, &["ping", "-c", "1", "-W", "1", "10.244.2.5"]);
        };
        bound
            .recv_timeout(Duration::from_secs(10))
            .expect("underlay socket bound");
        ping();
        let before = got.lock().unwrap().len();
        // The kernel learns the remote node (as ARP would make it).
        n.topo.ip(
            &n.node,
            &[
                "neigh",
                "replace",
                "192.168.77.2",
                "lladdr",
                "02:77:00:00:00:02",
                "dev",
                "up0",
                "nud",
                "reachable",
            ],
        );
        let t0 = Instant::now();
        while got.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(8) {
            ping();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (before, got.lock().unwrap().clone())
    });
    dp.signal("-TERM");
    let (code, out, err) = dp.wait();
    assert_eq!(
        before, 0,
        "nothing reached the remote node before it was resolved"
    );
    assert!(
        !after.is_empty(),
        "VXLAN reached the remote node once the kernel knew its MAC:\n{out}\n{err}"
    );
    let v = &after[0];
    assert!(v.len() >= 8 + 14 + 20, "{v:?}");
    assert_eq!(v[0], 0x08, "VXLAN I flag");
    assert_eq!(&v[4..7], &[0, 0, 1], "VNI 1");
    assert_eq!(
        &v[8..14],
        &[0x02, 0xee, 0, 0, 0, 0x02],
        "inner dst: its VTEP MAC"
    );
    assert_eq!(
        &v[8 + 14 + 16..8 + 14 + 20],
        &[10, 244, 2, 5],
        "inner dst IP"
    );
    assert!(
        err.contains("next-hop MACs changed: publishing new tables"),
        "{err}"
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let encap: u64 = out
        .split("encap ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        encap > after.len() as u64,
        "the ping before resolution was encapsulated too (to the wrong MAC): {out}"
    );
}
