//! scripts/install-cni.sh puts the plugin and configs/10-twill.conflist
//! where runtimes look, with the node's podCIDRs, and what it installs is a
//! configuration the plugin accepts.

mod cni_support;
mod io_support;

use std::process::Command;

use serde_json::Value;

#[test]
fn the_install_step_puts_a_working_plugin_and_conflist_in_place() {
    let dir = std::env::temp_dir().join(format!("twc{}-install", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (bin, conf) = (dir.join("bin"), dir.join("net.d"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-cni.sh");
    for _ in 0..2 {
        // Twice: the step is idempotent.
        let out = Command::new("bash")
            .arg(script)
            .arg("--bin-dir")
            .arg(&bin)
            .arg("--conf-dir")
            .arg(&conf)
            .args(["--pod-cidrs", "10.244.7.0/24,fd00:244:7::/64", "--binary"])
            .arg(cni_support::twill())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf.join("10-twill.conflist")).unwrap()).unwrap();
    assert_eq!(list["plugins"][0]["type"], "twill");
    assert_eq!(list["plugins"][0]["podCIDRs"][1], "fd00:244:7::/64");
    // The plugin entry as a runtime hands it over: name and version added.
    let mut p = list["plugins"][0].clone();
    p["name"] = list["name"].clone();
    p["cniVersion"] = list["cniVersion"].clone();
    let cfg = cni::config::parse(p.to_string().as_bytes()).expect("twill accepts the conflist");
    assert_eq!(cfg.mtu(), 1450);
    assert_eq!(cfg.gateway(true, None), Some("10.244.7.1".parse().unwrap()));
    let out = Command::new(bin.join("twill"))
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    assert!(out.status.success());
    if std::path::Path::new("/usr/lib/cni/host-local").exists() {
        assert!(bin.join("host-local").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
