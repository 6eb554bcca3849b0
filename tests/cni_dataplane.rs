//! Pods made by the `twill` CNI plugin, served by twill-dataplane: two pods
//! ping each other and the node reaches each pod.
//!
//! Until twill-control publishes attachments to the dataplane (the control
//! issue's shared memory), this test does that step by hand: it turns the
//! attachments control persisted into the `[[pods]]` of the dataplane's
//! node config (interface = the host veth, MAC and address of the pod).
//! Needs root.

mod cni_support;
mod io_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cni_support::{sh, twill_dataplane, Node};
use serde_json::{json, Value};

#[test]
fn two_pods_made_by_the_plugin_ping_each_other_and_the_node_reaches_both() {
    let mut node = Node::new("dp", 30);
    node.start_control();
    // The uplink: up0 in the node, its peer in an "underlay" namespace.
    let under = node.pod("under");
    let under_name = under.trim_start_matches("/run/netns/").to_string();
    sh(&[
        "ip",
        "-n",
        &node.netns,
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &under_name,
    ]);
    sh(&[
        "ip",
        "-n",
        &node.netns,
        "addr",
        "add",
        "192.168.77.1/24",
        "dev",
        "up0",
    ]);
    sh(&["ip", "-n", &node.netns, "link", "set", "up0", "up"]);
    sh(&[
        "ip",
        "-n",
        &under_name,
        "addr",
        "add",
        "192.168.77.254/24",
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", &under_name, "link", "set", "eth0", "up"]);

    let mut conf = node.conf("1.0.0");
    conf["podCIDRs"] = json!([node.cidr4]);
    let mut pods = Vec::new();
    for name in ["a", "b"] {
        let ns = node.pod(name);
        let id = node.container_id(name);
        let res = node.twill("ADD", &id, &ns, &conf).expect_ok().json();
        let ip = res["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        pods.push((id, ns, ip));
    }

    // What control's publish step will do: attachments -> the dataplane's pods.
    let state: Value = serde_json::from_slice(&std::fs::read(&node.state).unwrap()).unwrap();
    let mut pod_tables = String::new();
    for a in state["attachments"].as_array().unwrap() {
        pod_tables += &format!(
            "[[pods]]\nname = {:?}\ninterface = {:?}\nmac = {:?}\nipv4 = {:?}\n\n",
            a["containerId"].as_str().unwrap(),
            a["hostVeth"].as_str().unwrap(),
            a["mac"].as_str().unwrap(),
            a["ips"][0].as_str().unwrap().split('/').next().unwrap(),
        );
    }
    let cfg = node.dir.join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[node]
name = "cni-test-node"
ipv4 = "192.168.77.1"
uplink = "up0"
uplink_mac = "auto"
underlay_gateway_ipv4 = "192.168.77.254"
underlay_gateway_mac = "auto"
pod_gateway_ipv4 = "10.88.30.1"
pod_gateway_mac = "02:44:00:00:00:01"
vtep_mac = "02:ee:00:00:00:01"
snat_ports = [61000, 65535]
cluster_cidrs = ["10.88.0.0/16"]
service_cidrs = ["10.96.0.0/12"]
conntrack_capacity = 4096
neighbour_refresh_s = 1

[workers]
zero_copy = "auto"
idle_polls = 16
sleep_ms = 5

{pod_tables}"#
        ),
    )
    .unwrap();

    // `ip netns exec` execs the dataplane: the child's PID is the dataplane's.
    let mut dp = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(twill_dataplane())
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--stats-interval", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start twill-dataplane");
    let (tx, rx) = mpsc::channel();
    let stdout = dp.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.starts_with("twill-dataplane: running") => break,
            Ok(l) => seen.push(l),
            Err(_) => {
                if let Ok(Some(st)) = dp.try_wait() {
                    panic!("twill-dataplane exited ({st}): {seen:?}");
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "dataplane not running: {seen:?}"
                );
            }
        }
    }

    let ping = |ns: &str, dst: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.trim_start_matches("/run/netns/"),
                "ping",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                dst,
            ])
            .output()
            .unwrap()
    };
    let a_to_b = ping(&pods[0].1, &pods[1].2);
    let node_to_a = ping(&node.netns, &pods[0].2);
    let node_to_b = ping(&node.netns, &pods[1].2);
    let _ = dp.kill();
    let _ = dp.wait();
    for (what, o) in [
        ("pod a -> pod b", &a_to_b),
        ("node -> pod a", &node_to_a),
        ("node -> pod b", &node_to_b),
    ] {
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    for (id, ns, _) in &pods {
        node.twill("DEL", id, ns, &conf).expect_ok();
    }
}
