//! `twillctl` as an operator runs it: the built binary against a real
//! shared-memory file in a temporary directory (published snapshot, stats
//! blocks, conntrack flows), tables and `--json`; broken files give one
//! line on stderr and exit code 1.

mod ctl_support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ctl_support::{populated, tcp_frame, TempDir, BACKEND, CLIENT, VIP};
use dataplane::io::hooks::ShmHooks;
use dataplane::pipeline::{DropReason, Verdict};
use dataplane::state::shm::Shm;
use serde_json::Value;

fn twillctl(shm: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twillctl"))
        .arg("--shm")
        .arg(shm)
        .args(args)
        .output()
        .expect("run twillctl")
}

fn ok(shm: &Path, args: &[&str]) -> String {
    let o = twillctl(shm, args);
    assert!(
        o.status.success(),
        "twillctl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(shm: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(shm, &a)).expect("valid JSON")
}

/// Exit code 1 and exactly one line on stderr, naming `what`.
fn fails_with(shm: &Path, args: &[&str], what: &str) {
    let o = twillctl(shm, args);
    assert_eq!(o.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("twillctl: "), "{err}");
    assert!(err.contains(what), "{err:?} should say {what:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn status_shows_the_generation_the_processes_the_workers_and_conntrack() {
    let d = TempDir::new("ctl-status");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["status"]);
    assert!(out.contains("generation:  1"), "{out}");
    let pid = std::process::id().to_string();
    assert!(out.contains(&format!("pid {pid} (running)")), "{out}");
    assert!(
        out.contains("worker 0") && out.contains("worker 1"),
        "{out}"
    );
    assert!(out.contains("2 / 1024 flows"), "{out}");
    let v = json(&f, &["status"]);
    assert_eq!(v["generation"], 1);
    assert_eq!(v["layout"]["workers"], 2);
    assert_eq!(
        v["processes"]["dataplane"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert_eq!(v["conntrack"]["live"], 2);
    let gens: Vec<u64> = v["announcements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(gens, vec![1, 1]);
}

#[test]
fn services_endpoints_routes_and_pods_come_from_the_live_snapshot() {
    let d = TempDir::new("ctl-views");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["services"]);
    assert!(out.contains("default/web:http"), "{out}");
    assert!(out.contains("203.0.113.7 (lb)"), "{out}");
    assert!(out.contains("30080") && out.contains("ext=Local"), "{out}");
    assert!(out.contains("ClientIP 10800s"), "{out}");
    let v = json(&f, &["services"]);
    assert_eq!(v["services"][0]["ready_endpoints"], 1);
    assert_eq!(v["services"][1]["protocol"], "udp");
    // Each Service port's counters, from the Service directory.
    assert!(
        out.contains("PKTS TO/REPLY") && out.contains("2/1"),
        "{out}"
    );
    assert!(out.contains("140/1500"), "{out}");
    let web = &v["services"][0]["counters"];
    assert_eq!(web["connections"], 1);
    assert_eq!(web["bytes_reply"], 1500);
    assert_eq!(v["services"][1]["counters"]["rejects"], 2);

    let out = ok(&f, &["endpoints"]);
    assert!(
        out.contains("10.244.1.5:8080") && out.contains("ready,serving"),
        "{out}"
    );
    assert!(
        out.contains("10.244.2.9:8080") && out.contains("terminating"),
        "{out}"
    );
    assert!(out.contains("<none>"), "the DNS Service has none: {out}");
    let v = json(&f, &["endpoints"]);
    assert_eq!(v["services"][0]["endpoints"][0]["local"], true);

    let out = ok(&f, &["routes"]);
    assert!(
        out.contains("10.244.2.0/24") && out.contains("node-b"),
        "{out}"
    );
    assert!(
        out.contains("vxlan 192.168.0.12 vtep 02:00:00:00:0b:0b"),
        "{out}"
    );
    assert!(
        out.contains("10.244.1.5/32") && out.contains("veth-web1"),
        "{out}"
    );
    let v = json(&f, &["routes"]);
    let prefixes: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(
        prefixes,
        [
            "10.244.1.5/32",
            "10.244.1.2/32",
            "10.244.2.0/24",
            "192.168.0.12/32"
        ]
    );

    let out = ok(&f, &["pods"]);
    assert!(
        out.contains("default/client") && out.contains("auto"),
        "{out}"
    );
    let v = json(&f, &["pods"]);
    assert_eq!(v["pods"][0]["worker"], 1);
    assert_eq!(v["pods"][0]["mac"], "02:00:00:00:01:05");
}

#[test]
fn conntrack_lists_live_flows_and_filters_by_address_port_and_protocol() {
    let d = TempDir::new("ctl-ct");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["conntrack"]);
    assert!(out.contains("10.244.1.2:40000 -> 10.96.0.10:80"), "{out}");
    assert!(out.contains("dnat 10.244.1.5:8080"), "{out}");
    assert!(out.contains("2 shown, 2 matching, 2 live of 1024"), "{out}");
    let v = json(&f, &["conntrack", "proto=tcp"]);
    assert_eq!(v["matched"], 1);
    assert_eq!(v["flows"][0]["reply"]["src"], "10.244.1.5");
    let backend = std::net::Ipv4Addr::from(BACKEND).to_string();
    assert_eq!(
        json(&f, &["conntrack", &format!("ip={backend}")])["matched"],
        1,
        "the backend finds the DNATed flow"
    );
    assert_eq!(json(&f, &["conntrack", "port=53"])["matched"], 1);
    assert_eq!(
        json(&f, &["conntrack", "port=53", "proto=tcp"])["matched"],
        0
    );
    let client = std::net::Ipv4Addr::from(CLIENT).to_string();
    assert_eq!(
        json(&f, &["conntrack", &format!("ip={client}")])["matched"],
        2
    );
    assert_eq!(json(&f, &["conntrack", "--limit", "1"])["shown"], 1);
    let _ = VIP;
    fails_with(&f, &["conntrack", "ip=nope"], "ip=nope");
}

#[test]
fn stats_services_lists_each_services_counters_by_stable_id() {
    let d = TempDir::new("ctl-stats-svc");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["stats", "--services"]);
    assert!(out.contains("BYTES_REPLY"), "{out}");
    let web = out
        .lines()
        .find(|l| l.contains("default/web:http"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = web.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "0",
            "0",
            "default/web:http",
            "1",
            "2",
            "140",
            "1",
            "1500",
            "0"
        ]
    );
    let v = json(&f, &["stats", "--services"]);
    assert_eq!(v["capacity"], 64);
    assert_eq!(v["services"][1]["name"], "kube-system/dns:dns/udp");
    assert_eq!(v["services"][1]["rejects"], 2);
    assert_eq!(v["services"][0]["packets_to"], 2);
}

#[test]
fn stats_sums_the_workers_and_names_drop_reasons() {
    let d = TempDir::new("ctl-stats");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["stats"]);
    assert!(out.contains("NoBackend"), "{out}");
    assert!(out.contains(DropReason::Spoofed.description()), "{out}");
    assert!(out.contains("0 (uplink)"), "{out}");
    assert!(!out.contains("FragTimeout"), "zero reasons hidden: {out}");
    assert!(ok(&f, &["stats", "--all"]).contains("FragTimeout"));
    let v = json(&f, &["stats"]);
    let t = &v["total"]["counters"];
    assert_eq!(t["rx"], 201);
    assert_eq!(t["drops"]["NoBackend"], 14);
    assert_eq!(t["drops"]["Spoofed"], 7);
    let ports = v["total"]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["port"], 0);
    assert_eq!(ports[0]["rx_packets"], 81);
    assert_eq!(ports[1]["rx_bytes"], 12000);
    assert_eq!(v["workers"][1]["counters"]["dropped"], 11);
}

#[test]
fn stats_shows_each_interface_by_name_with_the_drops_that_came_in_on_it() {
    let d = TempDir::new("ctl-stats-if");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let out = ok(&f, &["stats"]);
    // The per-port table names the interfaces; the drops table puts the
    // spoofed frames (3 + 4 over the two workers) on the client pod's.
    assert!(out.contains("eth0"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("veth-client") && l.contains("Spoofed"))
        .unwrap_or_else(|| panic!("no drops line for veth-client: {out}"));
    assert!(line.contains("default/client"), "{line}");
    assert!(line.split_whitespace().any(|w| w == "7"), "{line}");
    assert!(
        !out.lines()
            .any(|l| l.contains("eth0") && l.contains("Spoofed")),
        "{out}"
    );
    let v = json(&f, &["stats"]);
    let ports = v["total"]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["interface"], "eth0");
    assert_eq!(ports[0]["kind"], "uplink");
    assert_eq!(ports[0]["dropped"], 0);
    assert_eq!(ports[1]["interface"], "veth-client");
    assert_eq!(ports[1]["kind"], "pod");
    assert_eq!(ports[1]["pod"], "default/client");
    assert_eq!(ports[1]["drops"]["Spoofed"], 7);
    assert_eq!(ports[1]["dropped"], 7);
    assert_eq!(v["workers"][1]["ports"][1]["drops"]["Spoofed"], 4);
}

#[test]
fn trace_prints_the_verdicts_a_worker_records_and_disarms() {
    let d = TempDir::new("ctl-trace");
    let f = d.path("node.shm");
    let shm = populated(&f);
    let child = Command::new(env!("CARGO_BIN_EXE_twillctl"))
        .arg("--shm")
        .arg(&f)
        .args(["trace", "--count", "2", "--timeout", "20", "port=80"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A worker: waits for the trace to be armed, then runs batches.
    let mut hooks = ShmHooks::new(&shm, 1).unwrap();
    let t0 = Instant::now();
    while !hooks.trace_armed() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never armed");
        std::thread::sleep(Duration::from_millis(2));
    }
    let frames = [
        tcp_frame(CLIENT, VIP, 40001, 80),
        tcp_frame(CLIENT, VIP, 40002, 443),
        tcp_frame(CLIENT, [10, 96, 0, 99], 40003, 80),
    ];
    hooks.note_frames(2, 8472, frames.iter().map(|f| f.as_slice()));
    hooks.after_batch(
        2,
        &[
            Verdict::Tx(1),
            Verdict::Tx(1),
            Verdict::Drop(DropReason::NoService),
        ],
        1,
    );
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("tcp 10.244.1.2:40001 -> 10.96.0.10:80: tx port 1"),
        "{out}"
    );
    assert!(out.contains("10.96.0.99:80: drop NoService"), "{out}");
    assert!(!out.contains(":443"), "filtered out: {out}");
    assert!(!out.contains("before the timeout"), "{out}");
    assert!(!hooks.trace_armed(), "disarmed");
}

#[test]
fn trace_with_nothing_matching_ends_at_its_timeout_disarmed() {
    let d = TempDir::new("ctl-trace-idle");
    let f = d.path("node.shm");
    let shm = populated(&f);
    let v = json(
        &f,
        &["trace", "--count", "3", "--timeout", "0.2", "proto=udp"],
    );
    assert_eq!(v["traced"], 0);
    assert_eq!(v["requested"], 3);
    assert_eq!(shm.trace().remaining(), 0);
}

#[test]
fn a_missing_file_is_one_line_and_exit_code_one() {
    let d = TempDir::new("ctl-missing");
    fails_with(&d.path("nope.shm"), &["status"], "nope.shm");
}

#[test]
fn a_file_that_is_not_twills_is_refused_by_its_magic() {
    let d = TempDir::new("ctl-foreign");
    let f = d.path("node.shm");
    std::fs::write(&f, vec![0xabu8; 64 * 1024]).unwrap();
    fails_with(&f, &["status"], "not a twill shared-memory file");
}

#[test]
fn a_file_of_another_layout_version_is_refused_naming_both_versions() {
    use std::os::unix::fs::FileExt;
    let d = TempDir::new("ctl-version");
    let f = d.path("node.shm");
    drop(populated(&f));
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all_at(&99u64.to_le_bytes(), 8).unwrap();
    fails_with(&f, &["services"], "layout version 99");
}

#[test]
fn a_truncated_file_is_refused() {
    let d = TempDir::new("ctl-trunc");
    let f = d.path("node.shm");
    drop(populated(&f));
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(20000).unwrap();
    fails_with(&f, &["stats"], "needs");
    file.set_len(100).unwrap();
    fails_with(&f, &["stats"], "needs");
}

#[test]
fn a_corrupted_snapshot_is_reported_not_shown() {
    use std::os::unix::fs::FileExt;
    let d = TempDir::new("ctl-corrupt");
    let f = d.path("node.shm");
    let shm = populated(&f);
    let live = shm.slots().into_iter().find(|s| s.live).unwrap();
    let off = shm.geometry().slots_off + shm.geometry().slot_stride * live.slot as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.write_all_at(b"JUNKJUNK", off).unwrap();
    fails_with(&f, &["services"], "live snapshot unreadable");
    // The header-only commands still work.
    ok(&f, &["status"]);
}

#[test]
fn a_file_with_nothing_published_says_so() {
    let d = TempDir::new("ctl-empty");
    let f = d.path("node.shm");
    let _shm = Shm::create_or_open(&f, &ctl_support::layout()).unwrap();
    fails_with(&f, &["pods"], "nothing published yet");
    let out = ok(&f, &["status"]);
    assert!(out.contains("none published"), "{out}");
    assert!(out.contains("conntrack:   unavailable"), "{out}");
    assert!(ok(&f, &["stats"]).contains("no drops"));
}

#[test]
fn the_shm_path_comes_from_the_node_config_when_not_given() {
    let d = TempDir::new("ctl-config");
    let f = d.path("node.shm");
    let _shm = populated(&f);
    let cfg = d.path("node.toml");
    let text = format!(
        "[node]\nuplink = \"eth0\"\nipv4 = \"192.168.0.11\"\nunderlay_gateway_ipv4 = \"192.168.0.1\"\n\
         pod_gateway_mac = \"02:00:00:00:00:02\"\nvtep_mac = \"02:00:00:00:00:03\"\n\
         [shm]\npath = {:?}\n",
        f.display().to_string()
    );
    std::fs::write(&cfg, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_twillctl"))
        .arg("--config")
        .arg(&cfg)
        .arg("pods")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("default/web-1"));
}
