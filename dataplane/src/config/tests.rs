use super::*;

const EXAMPLE: &str = include_str!("../../../configs/node.example.toml");

fn minimal() -> String {
    "[node]\nipv4 = \"192.168.50.1\"\nuplink = \"eth0\"\nunderlay_gateway_mac = \"02:50:00:00:00:fe\"\n\
     pod_gateway_ipv4 = \"10.244.1.1\"\npod_gateway_mac = \"02:44:00:00:00:01\"\n\
     vtep_mac = \"02:ee:00:00:00:01\"\n"
        .to_string()
}

fn err(text: &str) -> String {
    NodeFile::parse(text, "node.toml")
        .expect_err("the file is refused")
        .to_string()
}

fn macs(f: &NodeFile) -> Macs {
    Macs {
        uplink: [2, 0x50, 0, 0, 0, 1],
        underlay_gateway: [2, 0x50, 0, 0, 0, 0xfe],
        remotes: f
            .remote_nodes
            .iter()
            .map(|r| r.underlay_mac.get().unwrap_or([2, 0x50, 0, 0, 0, 2]))
            .collect(),
    }
}

#[test]
fn the_example_config_parses_and_its_tables_build() {
    let f = NodeFile::parse(EXAMPLE, "node.example.toml").expect("example parses");
    assert_eq!(f.node.uplink, "eth0");
    assert_eq!(f.node.uplink_mac, MacSpec::Auto);
    assert_eq!(f.node.underlay_gateway_mac, MacSpec::Auto);
    assert_eq!(f.node.snat_ports, Some((61000, 65535)));
    assert_eq!(f.workers.cpus, vec![0]);
    assert_eq!(f.workers.zero_copy, ZeroCopyMode::Auto);
    assert_eq!(f.pods.len(), 2);
    assert_eq!(f.pods[1].mac, [0x0a, 0x58, 10, 244, 1, 3]);
    assert_eq!(f.remote_nodes[0].underlay_mac, MacSpec::Auto);
    assert_eq!(
        f.remote_nodes[1].underlay_mac,
        MacSpec::Mac([2, 0x50, 0, 0, 0, 3])
    );
    assert_eq!(f.services.len(), 3);
    let web = f.services[0].spec();
    assert_eq!((web.proto, web.port, web.node_port), (6, 80, Some(30080)));
    assert_eq!(web.vips.len(), 2);
    assert!(web.backends[3].terminating && !web.backends[3].ready);
    let lb = f.services[2].spec();
    assert!(lb.ext_local);
    assert!(lb
        .vips
        .contains(&("192.168.50.100".parse().unwrap(), VipKind::LoadBalancer)));
    assert_eq!(f.services[1].spec().affinity_timeout_s, Some(10800));

    let t = f
        .tables("node.example.toml", &macs(&f))
        .expect("tables build");
    assert_eq!(t.pods().len(), 2);
    assert_eq!(t.pods()[0].port, 1);
    assert_eq!(t.remotes()[1].underlay_mac, [2, 0x50, 0, 0, 0, 3]);
    assert_eq!(t.config().uplink_mac, [2, 0x50, 0, 0, 0, 1]);
    assert_eq!(t.config().vxlan_port, 8472);
    assert_eq!(
        t.route4([10, 244, 1, 3]),
        crate::state::RouteTarget::LocalPod(1)
    );
}

#[test]
fn a_minimal_config_takes_the_node_defaults() {
    let f = NodeFile::parse(&minimal(), "node.toml").expect("parses");
    assert_eq!(f.workers(), vec![None]);
    let c = f.node_config(&macs(&f));
    let d = NodeConfig::default();
    assert_eq!((c.vxlan_port, c.vni, c.underlay_mtu), (8472, 1, 1500));
    assert_eq!(c.snat_ports, d.snat_ports);
    assert_eq!(c.uplink, UPLINK_PORT);
}

#[test]
fn a_bad_mac_is_reported_with_the_file_line_section_and_key() {
    let text = minimal().replace("02:ee:00:00:00:01", "02:ee:zz");
    let e = err(&text);
    assert!(
        e.starts_with("node.toml: line 7, [node], vtep_mac: "),
        "{e}"
    );
    assert!(e.contains("\"02:ee:zz\" is not a MAC address"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn an_unknown_field_is_an_error_naming_it() {
    let e = err(&format!("{}\n[workers]\ncpu = [0]\n", minimal()));
    assert!(e.contains("[workers]") && e.contains("cpu"), "{e}");
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn a_missing_required_field_is_named() {
    let e = err(&minimal().replace("uplink = \"eth0\"\n", ""));
    assert!(e.contains("missing field `uplink`"), "{e}");
}

#[test]
fn bad_values_are_refused_with_their_field_path() {
    let pods = "\n[[pods]]\nname = \"a\"\ninterface = \"p1\"\nmac = \"0a:58:0a:f4:01:02\"\nipv4 = \"10.244.1.2\"\n\
                \n[[pods]]\nname = \"b\"\ninterface = \"p2\"\nmac = \"0a:58:0a:f4:01:03\"\nipv4 = \"10.244.1.2\"\n";
    let e = err(&format!("{}{pods}", minimal()));
    assert_eq!(
        e,
        "node.toml: pods[1] (b): address 10.244.1.2 is used twice"
    );
    let e = err(&format!("{}snat_ports = [5, 1]\n", minimal()));
    assert_eq!(
        e,
        "node.toml: node.snat_ports: [5, 1] is not a range of ports"
    );
    let e = err(&format!("{}\n[workers]\ncpus = [0, 0]\n", minimal()));
    assert_eq!(e, "node.toml: workers.cpus: CPU 0 is listed twice");
    let e = err(&minimal().replace("underlay_gateway_mac = \"02:50:00:00:00:fe\"\n", ""));
    assert!(
        e.contains("node.underlay_gateway_mac: \"auto\" needs"),
        "{e}"
    );
    let svc = "\n[[services]]\nname = \"s\"\nprotocol = \"icmp\"\nport = 1\ncluster_ips = [\"10.96.0.1\"]\n";
    let e = err(&format!("{}{svc}", minimal()));
    assert!(e.contains("line 11, [[services]], protocol"), "{e}");
    assert!(e.contains("not a protocol"), "{e}");
}

#[test]
fn a_file_that_cannot_be_read_is_named() {
    let e = NodeFile::load(Path::new("/nonexistent/twill.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/nonexistent/twill.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn macs_parse_in_both_notations_and_print_back() {
    assert_eq!(
        parse_mac("0a:58:0A:f4:01:02"),
        Some([0x0a, 0x58, 0x0a, 0xf4, 1, 2])
    );
    assert_eq!(
        parse_mac("0a-58-0a-f4-01-02"),
        Some([0x0a, 0x58, 0x0a, 0xf4, 1, 2])
    );
    assert_eq!(parse_mac("0a:58:0a:f4:01"), None);
    assert_eq!(parse_mac("0a:58:0a:f4:01:02:03"), None);
    assert_eq!(parse_mac("0a:58:0a:f4:01:2"), None);
    assert_eq!(
        fmt_mac(&[0x0a, 0x58, 0x0a, 0xf4, 1, 2]),
        "0a:58:0a:f4:01:02"
    );
}
