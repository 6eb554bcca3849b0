//! The `file:DIR` source end to end: the demo cluster in
//! `tests/data/manifests`, directories of good and bad manifests through
//! `load_dir`, and the watching task (`spawn`) reacting to edits.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control::source::file::{load_dir, spawn, Loaded, RACY_WINDOW};
use control::source::{Health, ObjKey, Update};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "twill-file-source-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write manifest");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests")
}

fn service(name: &str, ns: Option<&str>, ip: &str, port: &str) -> String {
    let ns = ns
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n{ns}spec:\n  clusterIP: {ip}\n  ports:\n  - name: http\n    port: {port}\n    protocol: TCP\n    targetPort: 8080\n"
    )
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

fn cluster_ip(l: &Loaded, ns: &str, name: &str) -> Option<String> {
    l.state
        .services
        .get(&ObjKey::new(ns, name))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.clone())
}

fn reasons(l: &Loaded) -> String {
    l.reports
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_demo_cluster_loads_completely_and_without_reports() {
    let l = load_dir(&demo_dir(), None);
    assert_eq!(l.health, Health::Synced);
    assert!(l.reports.is_empty(), "{}", reasons(&l));
    let s = &l.state;
    assert_eq!(
        s.namespaces.keys().collect::<Vec<_>>(),
        ["default", "demo", "kube-system"]
    );
    assert_eq!(
        s.nodes.keys().collect::<Vec<_>>(),
        ["node-a", "node-b", "node-c"]
    );
    let services: Vec<String> = s.services.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        services,
        [
            "default/kubernetes",
            "demo/db",
            "demo/search",
            "demo/web",
            "demo/web-lb",
            "demo/web-nodeport",
            "kube-system/kube-dns"
        ]
    );
    assert_eq!(s.endpoint_slices.len(), 6);
    assert_eq!(s.pods.len(), 6);
    assert_eq!(s.network_policies.len(), 1);

    // node-b as flannel annotates it.
    let b = &s.nodes["node-b"];
    assert_eq!(
        b.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.244.1.0/24")
    );
    let ann = b.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(
        ann["flannel.alpha.coreos.com/backend-data"],
        r#"{"VNI":1,"VtepMAC":"0e:4a:7c:11:00:02"}"#
    );
    assert_eq!(ann["flannel.alpha.coreos.com/public-ip"], "192.168.50.2");
    let a = &s.nodes["node-a"];
    let addrs = a
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .expect("addresses");
    assert!(addrs
        .iter()
        .any(|x| x.type_ == "InternalIP" && x.address == "192.168.50.1"));

    // The raw ServiceList items got their kind from the list.
    let dns = &s.services[&ObjKey::new("kube-system", "kube-dns")];
    let ports = dns
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .expect("ports");
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0].protocol.as_deref(), Some("UDP"));

    // targetPort by name survives as a name.
    let web = &s.services[&ObjKey::new("demo", "web")];
    let tp = web
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p[0].target_port.clone());
    assert_eq!(tp, Some(IntOrString::String("http".into())));

    // Slices as the controller writes them, pods on the right nodes.
    let slice = &s.endpoint_slices[&ObjKey::new("demo", "web-8mzkq")];
    assert_eq!(slice.endpoints.len(), 3);
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .map(|l| l["kubernetes.io/service-name"].as_str()),
        Some("web")
    );
    let lb = &s.services[&ObjKey::new("demo", "web-lb")];
    let lb_spec = lb.spec.as_ref().expect("spec");
    assert_eq!(lb_spec.health_check_node_port, Some(32081));
    assert_eq!(lb_spec.external_traffic_policy.as_deref(), Some("Local"));
    for pod in s.pods.values() {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .expect("pod ip");
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .expect("node");
        let prefix = match node {
            "node-a" => "10.244.0.",
            "node-b" => "10.244.1.",
            other => panic!("pod on unexpected node {other}"),
        };
        assert!(ip.starts_with(prefix), "{ip} on {node}");
    }
}

#[test]
fn yaml_json_lists_and_typed_lists_all_feed_the_state() {
    let d = Scratch::new("formats");
    d.write(
        "multi.yaml",
        &format!(
            "{}---\n{}",
            service("a", Some("x"), "10.96.0.11", "80"),
            service("b", None, "10.96.0.12", "81")
        ),
    );
    d.write(
        "ns.json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"x"}}"#,
    );
    d.write(
        "list.yml",
        &format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            namespace("y").replace('\n', "\n  ").trim_end()
        ),
    );
    d.write(
        "sub/typed.json",
        r#"{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"node-b"},"spec":{"podCIDR":"10.244.1.0/24"}}]}"#,
    );
    let l = load_dir(d.path(), None);
    assert!(l.reports.is_empty(), "{}", reasons(&l));
    assert_eq!(cluster_ip(&l, "x", "a").as_deref(), Some("10.96.0.11"));
    assert_eq!(
        cluster_ip(&l, "default", "b").as_deref(),
        Some("10.96.0.12")
    );
    assert_eq!(l.state.namespaces.keys().collect::<Vec<_>>(), ["x", "y"]);
    assert!(l.state.nodes.contains_key("node-b"));
    assert_eq!(l.files, 4);
}

#[test]
fn a_bad_document_is_reported_with_file_and_index_and_the_rest_applies() {
    let d = Scratch::new("bad-doc");
    let f = d.write(
        "svc.yaml",
        &format!(
            "{}---\nkind: Service\napiVersion: v1\nmetadata: {{name: broken\n---\n{}",
            service("a", None, "10.96.0.11", "80"),
            service("c", None, "10.96.0.13", "80")
        ),
    );
    d.write("other.yaml", &namespace("z"));
    let l = load_dir(d.path(), None);
    assert_eq!(l.health, Health::Synced);
    assert!(cluster_ip(&l, "default", "a").is_some());
    assert!(cluster_ip(&l, "default", "c").is_some());
    assert!(l.state.namespaces.contains_key("z"));
    assert_eq!(l.reports.len(), 1, "{}", reasons(&l));
    assert_eq!(l.reports[0].origin, format!("{}#1", f.display()));
    assert!(
        l.reports[0].reason.contains("invalid YAML"),
        "{}",
        reasons(&l)
    );
}

#[test]
fn a_wrong_type_is_reported_with_the_field_and_the_object_is_skipped() {
    let d = Scratch::new("wrong-type");
    d.write(
        "svc.yaml",
        &format!(
            "{}---\n{}",
            service("eighty", None, "10.96.0.80", "eighty"),
            service("ok", None, "10.96.0.81", "80")
        ),
    );
    let l = load_dir(d.path(), None);
    assert!(cluster_ip(&l, "default", "eighty").is_none());
    assert!(cluster_ip(&l, "default", "ok").is_some());
    assert_eq!(l.reports.len(), 1);
    let r = &l.reports[0];
    assert!(r.origin.ends_with("svc.yaml#0"), "{r}");
    assert!(
        r.reason.contains(
            "Service default/eighty: spec.ports[0].port: invalid type: string \"eighty\""
        ),
        "{r}"
    );
}

#[test]
fn an_unknown_kind_is_reported_and_skipped() {
    let d = Scratch::new("unknown");
    d.write(
        "deploy.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {{}}\n---\n{}",
            namespace("n")
        ),
    );
    let l = load_dir(d.path(), None);
    assert!(l.state.namespaces.contains_key("n"));
    assert_eq!(l.reports.len(), 1);
    assert!(l.reports[0].origin.ends_with("deploy.yaml#0"));
    assert!(
        l.reports[0].reason.contains("kind Deployment (apps/v1)"),
        "{}",
        l.reports[0]
    );
}

#[test]
fn an_object_defined_twice_is_reported_and_the_later_file_wins() {
    let d = Scratch::new("dup");
    d.write("a.yaml", &service("web", None, "10.96.0.1", "80"));
    d.write(
        "b/c.yaml",
        &service("web", Some("default"), "10.96.0.2", "80"),
    );
    let l = load_dir(d.path(), None);
    // "a.yaml" < "b/c.yaml" in path order: b/c.yaml wins.
    assert_eq!(
        cluster_ip(&l, "default", "web").as_deref(),
        Some("10.96.0.2")
    );
    assert_eq!(l.reports.len(), 1, "{}", reasons(&l));
    assert!(l.reports[0].origin.ends_with("b/c.yaml#0"));
    assert!(l.reports[0]
        .reason
        .contains("Service default/web is also defined at"));
    assert!(l.reports[0].reason.contains("a.yaml#0"));
}

#[test]
fn a_file_broken_after_parsing_keeps_its_last_good_objects_until_fixed() {
    let d = Scratch::new("last-good");
    let good = format!(
        "{}---\n{}",
        service("a", None, "10.96.0.1", "80"),
        service("b", None, "10.96.0.2", "80")
    );
    d.write("svc.yaml", &good);
    let l1 = load_dir(d.path(), None);
    assert!(l1.reports.is_empty());

    // Mid-save: the second document is cut and the first edited.
    let half = format!(
        "{}---\napiVersion: v1\nkind: Serv",
        service("a", None, "10.96.0.9", "80")
    );
    d.write("svc.yaml", &half);
    let l2 = load_dir(d.path(), Some(&l1));
    assert_eq!(
        cluster_ip(&l2, "default", "a").as_deref(),
        Some("10.96.0.1"),
        "the old a is kept"
    );
    assert_eq!(
        cluster_ip(&l2, "default", "b").as_deref(),
        Some("10.96.0.2"),
        "b is kept"
    );
    assert_eq!(l2.health, Health::Synced);
    assert!(
        reasons(&l2).contains("keeping the 2 objects of its last good version"),
        "{}",
        reasons(&l2)
    );

    // Fixed: the new content applies and the reports are gone.
    d.write("svc.yaml", &service("a", None, "10.96.0.9", "80"));
    let l3 = load_dir(d.path(), Some(&l2));
    assert_eq!(
        cluster_ip(&l3, "default", "a").as_deref(),
        Some("10.96.0.9")
    );
    assert!(cluster_ip(&l3, "default", "b").is_none());
    assert!(l3.reports.is_empty(), "{}", reasons(&l3));
}

#[test]
fn a_file_that_never_parsed_contributes_its_good_documents() {
    let d = Scratch::new("never-good");
    d.write(
        "svc.yaml",
        &format!("{}---\nkind: [\n", service("a", None, "10.96.0.1", "80")),
    );
    let l1 = load_dir(d.path(), None);
    assert!(cluster_ip(&l1, "default", "a").is_some());
    assert_eq!(l1.reports.len(), 1);
    // Still broken, first document edited: the edit applies.
    d.write(
        "svc.yaml",
        &format!("{}---\nkind: [\n", service("a", None, "10.96.0.5", "80")),
    );
    let l2 = load_dir(d.path(), Some(&l1));
    assert_eq!(
        cluster_ip(&l2, "default", "a").as_deref(),
        Some("10.96.0.5")
    );
}

#[test]
fn hidden_files_editor_leftovers_and_other_extensions_are_not_read() {
    let d = Scratch::new("skip");
    d.write("real.yaml", &namespace("real"));
    d.write(".hidden.yaml", &namespace("hidden"));
    d.write(".git/objects.yaml", &namespace("in-hidden-dir"));
    d.write("real.yaml~", &namespace("backup"));
    d.write(".real.yaml.swp", &namespace("swap"));
    d.write("notes.txt", &namespace("txt"));
    d.write("empty.yaml", "");
    d.write("comments.yaml", "# nothing here\n---\n---\n");
    let l = load_dir(d.path(), None);
    assert_eq!(l.state.namespaces.keys().collect::<Vec<_>>(), ["real"]);
    assert!(l.reports.is_empty(), "{}", reasons(&l));
    assert_eq!(l.files, 3);
}

#[test]
fn unchanged_files_are_not_parsed_again() {
    let d = Scratch::new("cache");
    d.write("a.yaml", &namespace("a"));
    d.write("b.yaml", &namespace("b"));
    let l1 = load_dir(d.path(), None);
    assert_eq!(l1.files_parsed, 2);
    // Files changed within RACY_WINDOW of being read are read again.
    std::thread::sleep(RACY_WINDOW + Duration::from_millis(200));
    let l2 = load_dir(d.path(), Some(&l1));
    assert_eq!(l2.files_parsed, 2, "read within the racy window");
    let l3 = load_dir(d.path(), Some(&l2));
    assert_eq!(l3.files_parsed, 0);
    assert!(std::sync::Arc::ptr_eq(&l2.state, &l3.state));
    // Same length, new content: noticed (ctime changed).
    d.write("b.yaml", &namespace("c"));
    let l4 = load_dir(d.path(), Some(&l3));
    assert_eq!(l4.files_parsed, 1);
    assert_eq!(l4.state.namespaces.keys().collect::<Vec<_>>(), ["a", "c"]);
}

#[test]
fn a_missing_directory_is_degraded_keeps_the_last_state_and_recovers() {
    let d = Scratch::new("missing");
    let dir = d.path().join("manifests");
    let l1 = load_dir(&dir, None);
    let Health::Degraded { reason } = &l1.health else {
        panic!("{:?}", l1.health);
    };
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(l1.state.services.is_empty());

    d.write("manifests/svc.yaml", &service("a", None, "10.96.0.1", "80"));
    let l2 = load_dir(&dir, Some(&l1));
    assert_eq!(l2.health, Health::Synced);
    assert!(cluster_ip(&l2, "default", "a").is_some());
    assert!(l2.reports.is_empty(), "{}", reasons(&l2));

    fs::remove_dir_all(&dir).expect("rm");
    let l3 = load_dir(&dir, Some(&l2));
    assert!(matches!(l3.health, Health::Degraded { .. }));
    assert!(cluster_ip(&l3, "default", "a").is_some(), "last state kept");

    let file = d.write("plain-file", "x");
    assert!(
        matches!(load_dir(&file, None).health, Health::Degraded { reason } if reason.contains("not a directory"))
    );
}

#[test]
fn oversized_and_non_utf8_files_are_reported_not_read() {
    let d = Scratch::new("odd");
    let big = fs::File::create(d.path().join("big.yaml")).expect("create");
    big.set_len(control::source::file::MAX_FILE_BYTES + 1)
        .expect("sparse file");
    fs::write(
        d.path().join("latin1.yaml"),
        b"kind: Namespace\nmetadata:\n  name: caf\xe9\n",
    )
    .expect("write");
    d.write("ok.yaml", &namespace("ok"));
    let l = load_dir(d.path(), None);
    assert_eq!(l.state.namespaces.keys().collect::<Vec<_>>(), ["ok"]);
    let text = reasons(&l);
    assert!(text.contains("big.yaml: the file is"), "{text}");
    assert!(text.contains("latin1.yaml: not UTF-8"), "{text}");
}

#[test]
fn a_hundred_thousand_endpoints_in_one_file_load() {
    let d = Scratch::new("huge");
    let mut text = String::with_capacity(20 << 20);
    for s in 0..100 {
        text.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-{s}\n  namespace: demo\n  labels:\n    kubernetes.io/service-name: big\naddressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n"
        ));
        for e in 0..1000 {
            let n = s * 1000 + e;
            text.push_str(&format!(
                "- addresses:\n  - 10.{}.{}.{}\n  conditions:\n    ready: true\n  nodeName: node-b\n",
                100 + n / 65536,
                (n / 256) % 256,
                n % 256
            ));
        }
    }
    d.write("big.yaml", &text);
    let start = Instant::now();
    let l = load_dir(d.path(), None);
    let took = start.elapsed();
    assert!(l.reports.is_empty(), "{}", reasons(&l));
    assert_eq!(l.state.endpoint_slices.len(), 100);
    let total: usize = l
        .state
        .endpoint_slices
        .values()
        .map(|s| s.endpoints.len())
        .sum();
    assert_eq!(total, 100_000);
    eprintln!(
        "100 slices x 1000 endpoints ({} MB of YAML) loaded in {took:?}",
        text.len() >> 20
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

// ---- the watching task ----

/// Waits (bounded) for an update satisfying `pred`; returns it and how many
/// updates were seen on the way.
async fn wait_for(
    rx: &mut watch::Receiver<Update>,
    within: Duration,
    pred: impl Fn(&Update) -> bool,
) -> (Update, usize) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = 0;
    loop {
        {
            let u = rx.borrow_and_update();
            if pred(&u) {
                return (u.clone(), seen);
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => seen += 1,
            Ok(Err(_)) => panic!("the source task ended"),
            Err(_) => {
                let u = rx.borrow();
                panic!(
                    "no matching update within {within:?}; last: rev {} {:?} {:?}",
                    u.revision, u.health, u.reports
                );
            }
        }
    }
}

fn has_service(u: &Update, name: &str, ip: &str) -> bool {
    u.state
        .services
        .get(&ObjKey::new("default", name))
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.cluster_ip.as_deref())
        == Some(ip)
}

const DEBOUNCE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_adding_and_removing_files_publish_updates_within_a_second() {
    let d = Scratch::new("watch");
    d.write("a.yaml", &service("a", None, "10.96.0.1", "80"));
    let mut rx = spawn(d.path().to_path_buf(), DEBOUNCE);
    let (first, _) = wait_for(&mut rx, Duration::from_secs(5), |u| {
        u.health == Health::Synced
    })
    .await;
    assert!(has_service(&first, "a", "10.96.0.1"));
    assert!(first.revision >= 1);

    let second = Duration::from_secs(1);
    let t = Instant::now();
    d.write("a.yaml", &service("a", None, "10.96.0.2", "80"));
    let (u, _) = wait_for(&mut rx, second, |u| has_service(u, "a", "10.96.0.2")).await;
    assert!(u.revision > first.revision);
    let edited = t.elapsed();

    d.write("sub/b.yaml", &service("b", None, "10.96.0.3", "80"));
    let (u2, _) = wait_for(&mut rx, second, |u| has_service(u, "b", "10.96.0.3")).await;
    assert!(u2.revision > u.revision);

    fs::remove_file(d.path().join("a.yaml")).expect("rm");
    let (u3, _) = wait_for(&mut rx, second, |u| {
        !u.state.services.contains_key(&ObjKey::new("default", "a"))
    })
    .await;
    assert!(has_service(&u3, "b", "10.96.0.3"));

    // A bad edit is published as a report, the last good objects stay.
    d.write("sub/b.yaml", "apiVersion: v1\nkind: Service\nmetadata: [\n");
    let (u4, _) = wait_for(&mut rx, second, |u| !u.reports.is_empty()).await;
    assert!(has_service(&u4, "b", "10.96.0.3"));
    assert_eq!(u4.health, Health::Synced);
    eprintln!("edit visible after {edited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_is_coalesced_into_few_updates() {
    let d = Scratch::new("burst");
    d.write("a.yaml", &service("a", None, "10.96.0.1", "80"));
    let mut rx = spawn(d.path().to_path_buf(), Duration::from_millis(300));
    let (first, _) = wait_for(&mut rx, Duration::from_secs(5), |u| {
        u.health == Health::Synced
    })
    .await;

    // 30 writes 10 ms apart: well inside the debounce time of each other.
    for i in 0..30 {
        d.write("a.yaml", &service("a", None, &format!("10.96.1.{i}"), "80"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (last, _) = wait_for(&mut rx, Duration::from_secs(3), |u| {
        has_service(u, "a", "10.96.1.29")
    })
    .await;
    // Let anything late arrive, then count.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let end = rx.borrow().clone();
    assert!(has_service(&end, "a", "10.96.1.29"));
    let published = end.revision - first.revision;
    assert!(
        published <= 3,
        "{published} updates for a burst of 30 writes (last at rev {})",
        last.revision
    );
    assert!(published >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_degraded_then_synced_when_it_appears() {
    let d = Scratch::new("appear");
    let dir = d.path().join("later");
    let mut rx = spawn(dir.clone(), DEBOUNCE);
    let (u, _) = wait_for(&mut rx, Duration::from_secs(5), |u| {
        matches!(u.health, Health::Degraded { .. })
    })
    .await;
    assert!(u.state.services.is_empty());
    assert!(u
        .reports
        .iter()
        .any(|r| r.reason.contains("does not exist")));

    d.write("later/a.yaml", &service("a", None, "10.96.0.1", "80"));
    let (u, _) = wait_for(&mut rx, Duration::from_secs(2), |u| {
        u.health == Health::Synced && has_service(u, "a", "10.96.0.1")
    })
    .await;
    assert!(u.reports.is_empty(), "{:?}", u.reports);

    // Watched again once it is back: an edit shows.
    d.write("later/a.yaml", &service("a", None, "10.96.0.7", "80"));
    wait_for(&mut rx, Duration::from_secs(1), |u| {
        has_service(u, "a", "10.96.0.7")
    })
    .await;

    // Removed: degraded, last state kept; back: synced.
    fs::remove_dir_all(&dir).expect("rm");
    let (u, _) = wait_for(&mut rx, Duration::from_secs(2), |u| {
        matches!(u.health, Health::Degraded { .. })
    })
    .await;
    assert!(has_service(&u, "a", "10.96.0.7"));
    d.write("later/a.yaml", &service("a", None, "10.96.0.8", "80"));
    wait_for(&mut rx, Duration::from_secs(2), |u| {
        u.health == Health::Synced && has_service(u, "a", "10.96.0.8")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_config_map_swapping_its_data_link_is_picked_up() {
    // The layout kubelet gives a ConfigMap volume: files are links through
    // `..data` into a hidden timestamped directory, swapped atomically.
    use std::os::unix::fs::symlink;
    let d = Scratch::new("configmap");
    d.write(
        "..2026_11_21_10_00_00.1/svc.yaml",
        &service("a", None, "10.96.0.1", "80"),
    );
    symlink("..2026_11_21_10_00_00.1", d.path().join("..data")).expect("link");
    symlink("..data/svc.yaml", d.path().join("svc.yaml")).expect("link");
    let mut rx = spawn(d.path().to_path_buf(), DEBOUNCE);
    let (u, _) = wait_for(&mut rx, Duration::from_secs(5), |u| {
        u.health == Health::Synced
    })
    .await;
    assert!(has_service(&u, "a", "10.96.0.1"), "{:?}", u.reports);
    assert_eq!(
        u.state.services.len(),
        1,
        "the hidden directory is not read itself"
    );

    d.write(
        "..2026_11_21_10_05_00.2/svc.yaml",
        &service("a", None, "10.96.0.2", "80"),
    );
    symlink("..2026_11_21_10_05_00.2", d.path().join("..data_tmp")).expect("link");
    fs::rename(d.path().join("..data_tmp"), d.path().join("..data")).expect("swap");
    fs::remove_dir_all(d.path().join("..2026_11_21_10_00_00.1")).expect("rm old");
    let (u, _) = wait_for(&mut rx, Duration::from_secs(1), |u| {
        has_service(u, "a", "10.96.0.2")
    })
    .await;
    assert!(u.reports.is_empty(), "{:?}", u.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_replaced_by_rename_is_read_and_watched_anew() {
    let d = Scratch::new("replaced");
    let dir = d.path().join("m");
    d.write("m/a.yaml", &service("a", None, "10.96.0.1", "80"));
    let mut rx = spawn(dir.clone(), DEBOUNCE);
    wait_for(&mut rx, Duration::from_secs(5), |u| {
        has_service(u, "a", "10.96.0.1")
    })
    .await;

    d.write("m.new/a.yaml", &service("a", None, "10.96.0.2", "80"));
    fs::rename(&dir, d.path().join("m.old")).expect("mv away");
    fs::rename(d.path().join("m.new"), &dir).expect("mv in");
    wait_for(&mut rx, Duration::from_secs(2), |u| {
        u.health == Health::Synced && has_service(u, "a", "10.96.0.2")
    })
    .await;

    // The new directory is the one watched: an edit there shows, one in
    // the old one does not.
    let before = rx.borrow().revision;
    d.write("m.old/a.yaml", &service("a", None, "10.96.0.8", "80"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        rx.borrow().revision,
        before,
        "the old directory is not read"
    );
    // Alone, so that only a watch on the new directory can notice it.
    d.write("m/a.yaml", &service("a", None, "10.96.0.3", "80"));
    let (u, _) = wait_for(&mut rx, Duration::from_secs(1), |u| {
        has_service(u, "a", "10.96.0.3")
    })
    .await;
    assert_eq!(u.state.services.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_when_nothing_changed() {
    let d = Scratch::new("quiet");
    d.write("a.yaml", &service("a", None, "10.96.0.1", "80"));
    let mut rx = spawn(d.path().to_path_buf(), DEBOUNCE);
    let (first, _) = wait_for(&mut rx, Duration::from_secs(5), |u| {
        u.health == Health::Synced
    })
    .await;
    // Same content rewritten, an unrelated file touched.
    d.write("a.yaml", &service("a", None, "10.96.0.1", "80"));
    d.write("notes.txt", "hello");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.borrow().revision, first.revision);
}
