//! The `kube` source against a fake API server that speaks the Kubernetes
//! list/watch protocol (tests/kube_support): the initial list, watch events,
//! bookmarks, 410 Gone, dropped connections, the API away, a malformed
//! object, and the node annotation write.

mod kube_support;

use std::collections::BTreeMap;
use std::time::Duration;

use control::source::kube::{annotate_own_node, client_from, spawn};
use control::source::{Health, ObjKey, Update};
use k8s_openapi::api::core::v1::{
    ContainerImage, Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ObjectMeta;
use kube_support::{FakeApi, Served};
use serde_json::json;
use tokio::sync::watch;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(30);

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(Into::into),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn service(ns: &str, name: &str, cluster_ip: &str) -> Service {
    Service {
        metadata: meta(Some(ns), name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let mut metadata = meta(Some(ns), name);
    metadata.labels = Some([("kubernetes.io/service-name".to_string(), svc.to_string())].into());
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                ..Default::default()
            })
            .collect(),
        ports: None,
    }
}

fn node(name: &str, cidr: &str) -> Node {
    Node {
        metadata: meta(None, name),
        spec: Some(NodeSpec {
            pod_cidr: Some(cidr.into()),
            pod_cidrs: Some(vec![cidr.into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: meta(None, name),
        ..Default::default()
    }
}

fn pod(ns: &str, name: &str, node: &str) -> Pod {
    Pod {
        metadata: meta(Some(ns), name),
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn policy(ns: &str, name: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(Some(ns), name),
        ..Default::default()
    }
}

/// One object of each kind (and a pod of another node).
fn populate(api: &FakeApi) {
    api.put(&namespace("default"));
    api.put(&namespace("shop"));
    let mut own = node(NODE, "10.244.0.0/24");
    own.status = Some(NodeStatus {
        images: Some(vec![ContainerImage {
            names: Some(vec!["registry.example/big:1".into()]),
            size_bytes: Some(1 << 30),
        }]),
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: "192.0.2.10".into(),
        }]),
        ..Default::default()
    });
    api.put(&own);
    api.put(&node("node-b", "10.244.1.0/24"));
    api.put(&service("shop", "web", "10.96.0.10"));
    api.put(&service("default", "kubernetes", "10.96.0.1"));
    api.put(&slice(
        "shop",
        "web-abc",
        "web",
        &["10.244.0.5", "10.244.1.7"],
    ));
    api.put(&pod("shop", "web-1", NODE));
    api.put(&pod("shop", "web-2", "node-b"));
    api.put(&policy("shop", "deny-all"));
}

/// Waits (bounded) for an update that satisfies `pred`.
async fn until(
    rx: &mut watch::Receiver<Update>,
    what: &str,
    pred: impl Fn(&Update) -> bool,
) -> Update {
    let waited = tokio::time::timeout(WAIT, async {
        loop {
            {
                let update = rx.borrow_and_update();
                if pred(&update) {
                    return update.clone();
                }
            }
            rx.changed().await.expect("the source ended");
        }
    })
    .await;
    match waited {
        Ok(update) => update,
        Err(_) => {
            let last = rx.borrow();
            panic!(
                "timed out waiting for {what}; last update: revision {} health {:?} reports {:?}",
                last.revision, last.health, last.reports
            )
        }
    }
}

async fn synced(rx: &mut watch::Receiver<Update>) -> Update {
    until(rx, "Synced", |u| u.health == Health::Synced).await
}

fn service_names(update: &Update) -> Vec<String> {
    update
        .state
        .services
        .keys()
        .map(ObjKey::to_string)
        .collect()
}

fn since(requests: &[Served], from: usize) -> &[Served] {
    &requests[from.min(requests.len())..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_list_gives_a_synced_state_with_every_kind_and_only_this_nodes_pods() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    assert_eq!(rx.borrow().health, Health::Starting);
    let update = synced(&mut rx).await;
    let state = &update.state;
    assert_eq!(service_names(&update), ["default/kubernetes", "shop/web"]);
    assert_eq!(
        state.endpoint_slices[&ObjKey::new("shop", "web-abc")]
            .endpoints
            .len(),
        2
    );
    assert_eq!(state.nodes.keys().collect::<Vec<_>>(), [NODE, "node-b"]);
    assert_eq!(
        state.namespaces.keys().collect::<Vec<_>>(),
        ["default", "shop"]
    );
    assert_eq!(
        state.pods.keys().collect::<Vec<_>>(),
        [&ObjKey::new("shop", "web-1")],
        "only the pods of this node"
    );
    assert!(state
        .network_policies
        .contains_key(&ObjKey::new("shop", "deny-all")));
    assert!(update.reports.is_empty(), "{:?}", update.reports);
    // The server sends managedFields; the source does not keep them.
    assert!(api.get("Service", "shop", "web").unwrap()["metadata"]["managedFields"].is_array());
    assert!(state.services[&ObjKey::new("shop", "web")]
        .metadata
        .managed_fields
        .is_none());
    // Nor a Node's image list; its addresses stay.
    let status = state.nodes[NODE].status.as_ref().expect("node status");
    assert!(status.images.is_none());
    assert_eq!(status.addresses.as_ref().map(Vec::len), Some(1));
    // The pods were asked for with the node's field selector.
    let requests = api.requests();
    let pod_list = requests
        .iter()
        .find(|r| r.is_list() && r.path == "/api/v1/pods")
        .expect("a pod list");
    assert_eq!(
        pod_list.query.get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=node-a")
    );
    // Every kind is watched, with bookmarks, from the list's resourceVersion.
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/nodes",
        "/api/v1/namespaces",
        "/api/v1/pods",
        "/apis/networking.k8s.io/v1/networkpolicies",
    ] {
        let watch = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(w) = api
                    .requests()
                    .into_iter()
                    .find(|r| r.is_watch() && r.path == path)
                {
                    return w;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no watch on {path}"));
        assert_eq!(
            watch.query.get("allowWatchBookmarks").map(String::as_str),
            Some("true")
        );
        assert!(watch.query.contains_key("resourceVersion"), "{watch:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_list_is_paged_and_a_burst_of_events_becomes_a_few_updates() {
    let api = FakeApi::start().await;
    populate(&api);
    for i in 0..1200 {
        api.put(&service("bulk", &format!("s{i:04}"), "10.96.1.1"));
    }
    let mut rx = spawn(api.client(), NODE.to_string());
    let update = synced(&mut rx).await;
    assert_eq!(update.state.services.len(), 1202);
    assert!(
        update.revision <= 6,
        "revision {} after the initial list",
        update.revision
    );
    let continued = api
        .requests()
        .iter()
        .filter(|r| r.is_list() && r.path == "/api/v1/services" && r.query.contains_key("continue"))
        .count();
    assert_eq!(continued, 2, "1202 services in pages of 500");

    // A burst of 1000 changes.
    let before = update.revision;
    for i in 0..1000 {
        api.put(&service("bulk", &format!("s{i:04}"), "10.96.2.2"));
    }
    let update = until(&mut rx, "the burst applied", |u| {
        u.state.services[&ObjKey::new("bulk", "s0999")]
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            == Some("10.96.2.2")
    })
    .await;
    assert!(
        update.revision - before <= 20,
        "{} updates for a burst of 1000 events",
        update.revision - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_modified_and_deleted_events_are_reflected() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    synced(&mut rx).await;

    api.put(&service("shop", "cart", "10.96.0.20"));
    let update = until(&mut rx, "cart added", |u| {
        u.state.services.contains_key(&ObjKey::new("shop", "cart"))
    })
    .await;
    assert_eq!(update.health, Health::Synced);

    api.put(&slice("shop", "web-abc", "web", &["10.244.0.5"]));
    until(&mut rx, "the slice modified", |u| {
        u.state.endpoint_slices[&ObjKey::new("shop", "web-abc")]
            .endpoints
            .len()
            == 1
    })
    .await;

    assert!(api.delete("Service", "shop", "web"));
    api.put(&pod("shop", "web-3", NODE));
    api.put(&pod("shop", "web-4", "node-b"));
    let update = until(&mut rx, "web deleted and web-3 added", |u| {
        !u.state.services.contains_key(&ObjKey::new("shop", "web"))
            && u.state.pods.contains_key(&ObjKey::new("shop", "web-3"))
    })
    .await;
    assert!(!update
        .state
        .pods
        .contains_key(&ObjKey::new("shop", "web-4")));
    assert_eq!(service_names(&update), ["default/kubernetes", "shop/cart"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_after_a_gap_relists_and_drops_an_object_deleted_meanwhile() {
    let api = FakeApi::start().await;
    populate(&api);
    api.put(&service("shop", "gone", "10.96.0.30"));
    let mut rx = spawn(api.client(), NODE.to_string());
    let update = synced(&mut rx).await;
    assert!(update
        .state
        .services
        .contains_key(&ObjKey::new("shop", "gone")));
    let mark = api.requests().len();

    // The watches go away; meanwhile a Service is deleted and the history
    // compacted, so the watchers' resourceVersions are too old to resume.
    api.while_disconnected(|gap| {
        assert!(gap.delete("Service", "shop", "gone"));
        gap.compact();
    });
    let update = until(&mut rx, "gone to disappear", |u| {
        !u.state.services.contains_key(&ObjKey::new("shop", "gone"))
    })
    .await;
    assert_eq!(service_names(&update), ["default/kubernetes", "shop/web"]);
    assert_eq!(update.health, Health::Synced);
    assert_eq!(update.state.pods.len(), 1);

    // The watcher resumed from its resourceVersion, met 410 and relisted.
    let requests = api.requests();
    let after = since(&requests, mark);
    let expired = after
        .iter()
        .position(|r| r.is_watch() && r.path == "/api/v1/services" && r.status == 410)
        .expect("a watch answered with 410 Expired");
    assert!(
        after[expired..]
            .iter()
            .any(|r| r.is_list() && r.path == "/api/v1/services" && r.status == 200),
        "a relist after the 410: {after:#?}"
    );
    // ...and watches again from the new list.
    let update = {
        api.put(&service("shop", "after", "10.96.0.31"));
        until(&mut rx, "a change after the relist", |u| {
            u.state.services.contains_key(&ObjKey::new("shop", "after"))
        })
        .await
    };
    assert_eq!(update.health, Health::Synced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bookmark_lets_a_watch_resume_after_compaction_without_a_relist() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    synced(&mut rx).await;
    // Later writes to other kinds leave the Namespace watcher's
    // resourceVersion behind; a bookmark brings it forward.
    api.put(&service("shop", "later", "10.96.0.40"));
    until(&mut rx, "later", |u| {
        u.state.services.contains_key(&ObjKey::new("shop", "later"))
    })
    .await;
    let sent = api.bookmarks_sent();
    api.bookmark();
    // Bookmarks change no state: wait until one went out on each of the six
    // watches (a client reads what was sent before a connection drops).
    let all_sent = tokio::time::timeout(WAIT, async {
        while api.bookmarks_sent() < sent + 6 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        all_sent.is_ok(),
        "{} bookmarks sent",
        api.bookmarks_sent() - sent
    );
    let mark = api.requests().len();

    api.while_disconnected(|gap| gap.compact());
    api.put(&namespace("after"));
    until(&mut rx, "the namespace added after the reconnect", |u| {
        u.state.namespaces.contains_key("after")
    })
    .await;
    let requests = api.requests();
    let after = since(&requests, mark);
    assert!(
        after.iter().all(|r| !r.is_list() && r.status == 200),
        "every watch resumed, none expired, nothing relisted: {after:#?}"
    );
    assert!(after
        .iter()
        .any(|r| r.is_watch() && r.path == "/api/v1/namespaces"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_and_catches_up_without_a_relist() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    synced(&mut rx).await;
    let mark = api.requests().len();

    api.while_disconnected(|gap| {
        assert!(gap.delete("Pod", "shop", "web-1"));
    });
    api.put(&service("shop", "new", "10.96.0.50"));
    let update = until(&mut rx, "the missed deletion and the new service", |u| {
        u.state.pods.is_empty() && u.state.services.contains_key(&ObjKey::new("shop", "new"))
    })
    .await;
    assert_eq!(update.health, Health::Synced);
    let requests = api.requests();
    let after = since(&requests, mark);
    assert!(after.iter().all(|r| !r.is_list()), "no relist: {after:#?}");
    assert!(after
        .iter()
        .any(|r| r.is_watch() && r.path == "/api/v1/pods" && r.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_stopped_the_source_is_degraded_keeps_its_state_and_recovers() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    let good = synced(&mut rx).await;

    api.stop();
    let degraded = until(&mut rx, "Degraded", |u| {
        matches!(u.health, Health::Degraded { .. })
    })
    .await;
    let Health::Degraded { reason } = &degraded.health else {
        unreachable!()
    };
    assert!(!reason.is_empty());
    assert!(!degraded.reports.is_empty());
    assert_eq!(
        service_names(&degraded),
        service_names(&good),
        "the last good state is kept"
    );
    assert_eq!(degraded.state.pods.len(), good.state.pods.len());
    assert_eq!(degraded.state.nodes.len(), good.state.nodes.len());

    // Changes while the watchers cannot see them.
    api.delete("Service", "shop", "web");
    api.put(&node("node-c", "10.244.2.0/24"));
    api.restart().await;
    let update = until(&mut rx, "Synced again with the changes", |u| {
        u.health == Health::Synced
            && !u.state.services.contains_key(&ObjKey::new("shop", "web"))
            && u.state.nodes.contains_key("node-c")
    })
    .await;
    assert!(update.reports.is_empty(), "{:?}", update.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_answering_500_the_source_is_degraded_and_recovers() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    let good = synced(&mut rx).await;

    api.set_failing(Some(500));
    api.drop_watches();
    let degraded = until(&mut rx, "Degraded", |u| {
        matches!(u.health, Health::Degraded { .. })
    })
    .await;
    assert_eq!(service_names(&degraded), service_names(&good));
    assert!(
        degraded.reports.iter().any(|r| r.reason.contains("500")),
        "{:?}",
        degraded.reports
    );
    assert!(api.requests().iter().any(|r| r.status == 500));

    api.set_failing(None);
    api.put(&service("shop", "back", "10.96.0.60"));
    let update = until(&mut rx, "Synced again", |u| {
        u.health == Health::Synced && u.state.services.contains_key(&ObjKey::new("shop", "back"))
    })
    .await;
    assert!(update.reports.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_object_degrades_the_source_until_it_is_fixed_and_the_state_is_kept() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    let good = synced(&mut rx).await;

    // ports must be a list: the watch event, then the relist, fail to parse.
    api.put_value(
        "Service",
        json!({"metadata": {"name": "bad", "namespace": "shop"}, "spec": {"ports": "eighty"}}),
    );
    let degraded = until(&mut rx, "Degraded", |u| {
        matches!(u.health, Health::Degraded { .. })
    })
    .await;
    assert_eq!(service_names(&degraded), service_names(&good));
    assert!(
        degraded.reports.iter().any(|r| r.origin == "kube Service"),
        "{:?}",
        degraded.reports
    );

    api.put(&service("shop", "bad", "10.96.0.70"));
    let update = until(&mut rx, "Synced with the fixed service", |u| {
        u.health == Health::Synced && u.state.services.contains_key(&ObjKey::new("shop", "bad"))
    })
    .await;
    assert_eq!(update.state.services.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotate_own_node_merges_the_annotations_into_the_node() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut n = node(NODE, "10.244.0.0/24");
    n.metadata.annotations = Some([("keep".to_string(), "me".to_string())].into());
    api.put(&n);
    let mut rx = spawn(api.client(), NODE.to_string());
    synced(&mut rx).await;

    let annotations: BTreeMap<String, String> = [
        (
            "flannel.alpha.coreos.com/backend-data".to_string(),
            r#"{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}"#.to_string(),
        ),
        (
            "flannel.alpha.coreos.com/public-ip".to_string(),
            "192.0.2.10".to_string(),
        ),
    ]
    .into();
    let patched = annotate_own_node(api.client(), NODE, annotations.clone())
        .await
        .expect("patch");
    let got = patched.metadata.annotations.expect("annotations");
    assert_eq!(got.get("keep").map(String::as_str), Some("me"));
    assert_eq!(
        got.get("flannel.alpha.coreos.com/public-ip")
            .map(String::as_str),
        Some("192.0.2.10")
    );
    let stored = api.get("Node", "", NODE).expect("node");
    assert_eq!(stored["metadata"]["annotations"]["keep"], "me");
    assert_eq!(
        stored["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"],
        annotations["flannel.alpha.coreos.com/backend-data"].as_str()
    );
    assert!(api
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.path == "/api/v1/nodes/node-a" && r.status == 200));
    // The source sees its own write.
    until(&mut rx, "the annotations in the state", |u| {
        u.state.nodes[NODE]
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("flannel.alpha.coreos.com/public-ip"))
    })
    .await;

    let err = annotate_own_node(api.client(), "no-such-node", annotations)
        .await
        .expect_err("a missing node");
    assert!(err.to_string().contains("no-such-node"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_reads_a_kubeconfig_and_names_a_missing_one() {
    let api = FakeApi::start().await;
    populate(&api);
    let dir = std::env::temp_dir().join(format!("twill-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n\
             current-context: fake\nusers:\n- name: me\n  user:\n    token: t0ken\n",
            api.url()
        ),
    )
    .unwrap();
    let client = client_from(Some(path.clone())).await.expect("client");
    let mut rx = spawn(client, NODE.to_string());
    let update = synced(&mut rx).await;
    assert_eq!(update.state.services.len(), 2);

    let missing = dir.join("missing");
    let Err(err) = client_from(Some(missing.clone())).await else {
        panic!("a client from a missing kubeconfig");
    };
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_away_at_start_the_source_stays_starting_with_reports_then_syncs() {
    let api = FakeApi::start().await;
    populate(&api);
    api.stop();
    let mut rx = spawn(api.client(), NODE.to_string());
    let starting = until(&mut rx, "a report of the failure", |u| {
        !u.reports.is_empty()
    })
    .await;
    assert_eq!(starting.health, Health::Starting);
    assert!(
        starting.state.services.is_empty() && starting.state.nodes.is_empty(),
        "no partial state while starting"
    );
    assert!(starting
        .reports
        .iter()
        .all(|r| r.origin.starts_with("kube ")));

    api.restart().await;
    let update = synced(&mut rx).await;
    assert_eq!(update.state.services.len(), 2);
    assert!(update.reports.is_empty(), "{:?}", update.reports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_ends_the_watches() {
    let api = FakeApi::start().await;
    populate(&api);
    let mut rx = spawn(api.client(), NODE.to_string());
    synced(&mut rx).await;
    let opened = tokio::time::timeout(WAIT, async {
        while api.open_watches() < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(opened.is_ok(), "{} watches open", api.open_watches());
    drop(rx);
    // The aggregator sees the receiver gone at its next publish or at once.
    api.put(&namespace("poke"));
    let closed = tokio::time::timeout(WAIT, async {
        while api.open_watches() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "{} watches still open", api.open_watches());
}
