//! Every malformed input tried returns the CNI spec's error: JSON on stdout
//! with the right code and a message, a non-zero exit, and nothing made.
//! One table, one row per case. Needs root (the plugin runs in a node
//! namespace the test creates).

mod cni_support;
mod io_support;

use cni_support::{twill, Node, CNI_PATH};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    verb: &'static str,
    /// Environment overrides; "" removes the variable.
    env: Vec<(&'static str, String)>,
    stdin: String,
    code: u64,
    /// A word the message must contain, so a person knows what went wrong.
    says: &'static str,
}

#[test]
fn every_malformed_input_returns_the_specs_error_code() {
    let mut node = Node::new("err", 20);
    node.start_control();
    let ns = node.pod("p");
    let base = node.conf("1.0.0");
    let conf = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c.to_string()
    };
    let c11 = |f: &dyn Fn(&mut Value)| {
        let mut c = node.conf("1.1.0");
        f(&mut c);
        c.to_string()
    };
    // host-local's range of one address, taken by another container first.
    let full = conf(&|c| {
        c["ipam"]["ranges"] =
            json!([[{"subnet": node.cidr4, "rangeStart": "10.88.20.9", "rangeEnd": "10.88.20.9"}]]);
    });
    let hl = std::path::Path::new(CNI_PATH).join("host-local");
    let ipam_full = cni::config::parse(full.as_bytes())
        .unwrap()
        .ipam_conf("1.0.0");
    node.exec(
        &hl,
        "ADD",
        "holder",
        Some("/dev/null"),
        "eth0",
        ipam_full.to_string().as_bytes(),
        &[],
    )
    .expect_ok();
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.20.2/24"}]});
    let not_a_netns = node.dir.join("not-a-netns");
    std::fs::write(&not_a_netns, b"").unwrap();
    let env = |k: &'static str, v: &str| (k, v.to_string());

    let cases = vec![
        Case {
            name: "invalid JSON",
            verb: "ADD",
            env: vec![],
            stdin: "{\"cniVersion\":".into(),
            code: 6,
            says: "not valid JSON",
        },
        Case {
            name: "JSON that is not an object",
            verb: "ADD",
            env: vec![],
            stdin: "[1,2]".into(),
            code: 6,
            says: "not a JSON object",
        },
        Case {
            name: "unknown cniVersion",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["cniVersion"] = json!("9.9.9")),
            code: 1,
            says: "9.9.9",
        },
        Case {
            name: "no cniVersion",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| {
                c.as_object_mut().unwrap().remove("cniVersion");
            }),
            code: 1,
            says: "cniVersion",
        },
        Case {
            name: "cniVersion not a string",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["cniVersion"] = json!(1)),
            code: 7,
            says: "cniVersion",
        },
        Case {
            name: "missing CNI_NETNS",
            verb: "ADD",
            env: vec![env("CNI_NETNS", "")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_NETNS",
        },
        Case {
            name: "netns path that does not exist",
            verb: "ADD",
            env: vec![env("CNI_NETNS", "/run/netns/twill-no-such-netns")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_NETNS",
        },
        Case {
            name: "netns path that is not a netns",
            verb: "ADD",
            env: vec![env("CNI_NETNS", not_a_netns.to_str().unwrap())],
            stdin: conf(&|_| {}),
            code: 4,
            says: "not a network namespace",
        },
        Case {
            name: "missing CNI_CONTAINERID",
            verb: "ADD",
            env: vec![env("CNI_CONTAINERID", "")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_CONTAINERID",
        },
        Case {
            name: "container id with a slash",
            verb: "ADD",
            env: vec![env("CNI_CONTAINERID", "a/b")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_CONTAINERID",
        },
        Case {
            name: "interface name too long",
            verb: "ADD",
            env: vec![env("CNI_IFNAME", "eth0123456789abc")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_IFNAME",
        },
        Case {
            name: "missing CNI_PATH",
            verb: "ADD",
            env: vec![env("CNI_PATH", "")],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_PATH",
        },
        Case {
            name: "missing CNI_COMMAND",
            verb: "",
            env: vec![],
            stdin: conf(&|_| {}),
            code: 4,
            says: "CNI_COMMAND",
        },
        Case {
            name: "unknown CNI_COMMAND",
            verb: "FROB",
            env: vec![],
            stdin: conf(&|_| {}),
            code: 4,
            says: "FROB",
        },
        Case {
            name: "no network name",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            code: 7,
            says: "name",
        },
        Case {
            name: "field of the wrong type",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["mtu"] = json!("big")),
            code: 7,
            says: "invalid network configuration",
        },
        Case {
            name: "neither ipam nor podCIDRs",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| {
                let o = c.as_object_mut().unwrap();
                o.remove("ipam");
                o.remove("podCIDRs");
            }),
            code: 7,
            says: "podCIDRs",
        },
        Case {
            name: "podCIDR that is not a CIDR",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["podCIDRs"] = json!(["10.0.0.0/99"])),
            code: 7,
            says: "10.0.0.0/99",
        },
        Case {
            name: "gatewayMac that is not a MAC",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["gatewayMac"] = json!("02:44")),
            code: 7,
            says: "gatewayMac",
        },
        Case {
            name: "IPAM plugin not in CNI_PATH",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["ipam"]["type"] = json!("no-such-ipam")),
            code: 7,
            says: "no-such-ipam",
        },
        Case {
            name: "unsupported field",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["runtimeConfig"] = json!({"ips": ["10.88.20.50/24"]})),
            code: 2,
            says: "ips",
        },
        // The delegate's own error is passed on, code kept (host-local uses
        // 999, the reference plugins' code for an internal error).
        Case {
            name: "IPAM plugin that fails (bad range)",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["ipam"]["ranges"] = json!([[{"subnet": "10.0.0.0/33"}]])),
            code: 999,
            says: "IPAM plugin host-local failed",
        },
        Case {
            name: "IPAM plugin that fails (no address left)",
            verb: "ADD",
            env: vec![],
            stdin: full.clone(),
            code: 999,
            says: "no IP addresses available",
        },
        Case {
            name: "control down",
            verb: "ADD",
            env: vec![],
            stdin: conf(&|c| c["controlSocket"] = json!("/run/twill-test-no-such.sock")),
            code: 11,
            says: "twill-control is not reachable",
        },
        Case {
            name: "CHECK of an unknown container",
            verb: "CHECK",
            env: vec![],
            stdin: conf(&|c| c["prevResult"] = prev.clone()),
            code: 3,
            says: "not registered",
        },
        Case {
            name: "CHECK without prevResult",
            verb: "CHECK",
            env: vec![],
            stdin: conf(&|_| {}),
            code: 7,
            says: "prevResult",
        },
        Case {
            name: "CHECK with a prevResult that does not decode",
            verb: "CHECK",
            env: vec![],
            stdin: conf(&|c| c["prevResult"] = json!({"ips": 5})),
            code: 6,
            says: "prevResult",
        },
        Case {
            name: "STATUS before CNI 1.1.0",
            verb: "STATUS",
            env: vec![],
            stdin: conf(&|_| {}),
            code: 1,
            says: "1.1.0",
        },
        Case {
            name: "GC before CNI 1.1.0",
            verb: "GC",
            env: vec![],
            stdin: conf(&|_| {}),
            code: 1,
            says: "1.1.0",
        },
        Case {
            name: "GC without valid-attachments",
            verb: "GC",
            env: vec![],
            stdin: c11(&|_| {}),
            code: 7,
            says: "valid-attachments",
        },
        Case {
            name: "STATUS with control down",
            verb: "STATUS",
            env: vec![],
            stdin: c11(&|c| c["controlSocket"] = json!("/run/twill-test-no-such.sock")),
            code: 50,
            says: "twill-control",
        },
        Case {
            name: "DEL with control down",
            verb: "DEL",
            env: vec![],
            stdin: conf(&|c| c["controlSocket"] = json!("/run/twill-test-no-such.sock")),
            code: 11,
            says: "twill-control",
        },
    ];

    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let id = node.container_id(&format!("c{i}"));
        let mut extra: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if c.verb.is_empty() {
            extra.push(("CNI_COMMAND", ""));
        }
        let out = node.exec(
            &twill(),
            c.verb,
            &id,
            Some(&ns),
            "eth0",
            c.stdin.as_bytes(),
            &extra,
        );
        if out.ok {
            failures.push(format!("{}: succeeded: {}", c.name, out.stdout));
            continue;
        }
        let v: Value = match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!(
                    "{}: stdout is not JSON ({e}): {}",
                    c.name, out.stdout
                ));
                continue;
            }
        };
        let msg = v["msg"].as_str().unwrap_or("");
        if v["code"] != c.code || !msg.contains(c.says) || v["cniVersion"].as_str().is_none() {
            failures.push(format!(
                "{}: want code {} saying {:?}, got {}",
                c.name, c.code, c.says, out.stdout
            ));
        }
        // Nothing half-made.
        if !node.host_veths().is_empty() || Node::links(&ns).contains(&"eth0".to_string()) {
            failures.push(format!("{}: left interfaces behind", c.name));
        }
        if node.reservations() != vec!["10.88.20.9".to_string()] {
            failures.push(format!(
                "{}: left reservations {:?}",
                c.name,
                node.reservations()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(node.registered().is_empty());
}

#[test]
fn version_answers_whatever_it_is_given() {
    for stdin in ["{\"cniVersion\":\"0.4.0\"}", "", "garbage"] {
        let mut cmd = std::process::Command::new(twill());
        cmd.env("CNI_COMMAND", "VERSION")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = if stdin.contains("0.4.0") {
            "0.4.0"
        } else {
            "1.1.0"
        };
        assert_eq!(v["cniVersion"], want);
        let versions: Vec<&str> = v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(versions, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    }
}
