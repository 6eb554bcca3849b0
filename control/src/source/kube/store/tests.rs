use ::kube::api::ObjectMeta;
use ::kube::runtime::watcher::Event;

use super::*;

fn svc(ns: &str, name: &str, rv: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn named<K: Default + ::kube::Resource>(name: &str) -> K {
    let mut obj = K::default();
    obj.meta_mut().name = Some(name.into());
    obj
}

/// Lists every kind once with nothing in it.
fn synced() -> Store {
    let mut store = Store::new();
    store.apply::<Service>(Event::InitDone);
    store.apply::<EndpointSlice>(Event::InitDone);
    store.apply::<Node>(Event::InitDone);
    store.apply::<Namespace>(Event::InitDone);
    store.apply::<Pod>(Event::InitDone);
    store.apply::<NetworkPolicy>(Event::InitDone);
    store
}

#[test]
fn the_store_is_starting_until_every_kind_has_been_listed() {
    let mut store = Store::new();
    for kind in Kind::ALL {
        assert_eq!(store.health(), Health::Starting, "before {kind:?}");
        match kind {
            Kind::Service => store.apply::<Service>(Event::InitDone),
            Kind::EndpointSlice => store.apply::<EndpointSlice>(Event::InitDone),
            Kind::Node => store.apply::<Node>(Event::InitDone),
            Kind::Namespace => store.apply::<Namespace>(Event::InitDone),
            Kind::Pod => store.apply::<Pod>(Event::InitDone),
            Kind::NetworkPolicy => store.apply::<NetworkPolicy>(Event::InitDone),
        }
    }
    assert_eq!(store.health(), Health::Synced);
}

#[test]
fn listed_objects_appear_only_at_init_done_and_replace_the_kind() {
    let mut store = synced();
    store.apply(Event::Apply(svc("a", "old", "1")));
    store.apply(Event::Apply(svc("a", "kept", "2")));
    store.apply::<Node>(Event::Apply(named("n1")));
    store.take_changed();

    store.apply::<Service>(Event::Init);
    store.apply(Event::InitApply(svc("a", "kept", "5")));
    store.apply(Event::InitApply(svc("b", "new", "6")));
    assert_eq!(store.state().services.len(), 2);
    assert!(store
        .state()
        .services
        .contains_key(&ObjKey::new("a", "old")));
    assert!(
        !store.take_changed(),
        "a relist in progress changes nothing"
    );

    store.apply::<Service>(Event::InitDone);
    assert!(store.take_changed());
    let keys: Vec<String> = store
        .state()
        .services
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(keys, ["a/kept", "b/new"]);
    assert_eq!(
        store.state().services[&ObjKey::new("a", "kept")]
            .metadata
            .resource_version
            .as_deref(),
        Some("5")
    );
    assert!(
        store.state().nodes.contains_key("n1"),
        "other kinds untouched"
    );
}

#[test]
fn a_relist_that_returns_the_same_objects_changes_nothing() {
    let mut store = synced();
    store.apply(Event::Apply(svc("a", "x", "1")));
    store.take_changed();
    store.apply::<Service>(Event::Init);
    store.apply(Event::InitApply(svc("a", "x", "1")));
    store.apply::<Service>(Event::InitDone);
    assert!(!store.take_changed());
}

#[test]
fn apply_and_delete_change_the_state_and_unknown_deletes_do_not() {
    let mut store = synced();
    store.take_changed();
    store.apply(Event::Apply(svc("a", "x", "1")));
    assert!(store.take_changed());
    store.apply(Event::Apply(svc("a", "x", "2")));
    assert_eq!(
        store.state().services[&ObjKey::new("a", "x")]
            .metadata
            .resource_version
            .as_deref(),
        Some("2")
    );
    store.take_changed();
    store.apply(Event::Delete(svc("a", "missing", "3")));
    assert!(!store.take_changed());
    store.apply(Event::Delete(svc("a", "x", "4")));
    assert!(store.take_changed());
    assert!(store.state().services.is_empty());
}

#[test]
fn namespaced_objects_without_a_namespace_are_filed_under_default() {
    let mut store = synced();
    store.apply::<Pod>(Event::Apply(named("p")));
    assert!(store
        .state()
        .pods
        .contains_key(&ObjKey::new("default", "p")));
}

#[test]
fn an_object_without_a_name_is_skipped_and_reported() {
    let mut store = synced();
    store.apply::<Node>(Event::Apply(Node::default()));
    assert!(store.state().nodes.is_empty());
    let reports = store.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].origin, "kube Node");
    assert!(reports[0].reason.contains("without metadata.name"));
}

#[test]
fn a_failure_degrades_and_keeps_the_state_until_the_kind_lists_again() {
    let mut store = synced();
    store.apply(Event::Apply(svc("a", "x", "1")));
    store.take_changed();
    store.handle(Msg::Failed {
        kind: Kind::EndpointSlice,
        reason: "connection refused".into(),
    });
    assert!(store.take_changed());
    assert_eq!(
        store.health(),
        Health::Degraded {
            reason: "EndpointSlice: connection refused".into()
        }
    );
    assert_eq!(store.state().services.len(), 1);
    assert_eq!(store.reports()[0].origin, "kube EndpointSlice");

    // The same failure again is no news.
    store.handle(Msg::Failed {
        kind: Kind::EndpointSlice,
        reason: "connection refused".into(),
    });
    assert!(!store.take_changed());

    // Events of the failed kind do not make it healthy: only a list does.
    store.apply::<EndpointSlice>(Event::Apply(named("s")));
    assert!(matches!(store.health(), Health::Degraded { .. }));
    store.apply::<EndpointSlice>(Event::Init);
    store.apply::<EndpointSlice>(Event::InitApply(named("s")));
    store.apply::<EndpointSlice>(Event::InitDone);
    assert_eq!(store.health(), Health::Synced);
    assert!(store.reports().is_empty());
}

#[test]
fn failures_of_several_kinds_are_all_named() {
    let mut store = synced();
    store.handle(Msg::Failed {
        kind: Kind::Pod,
        reason: "500".into(),
    });
    store.handle(Msg::Failed {
        kind: Kind::Service,
        reason: "refused".into(),
    });
    assert_eq!(
        store.health(),
        Health::Degraded {
            reason: "Service: refused; Pod: 500".into()
        }
    );
}

#[test]
fn strip_drops_managed_fields_and_the_last_applied_annotation() {
    let mut s = svc("a", "x", "1");
    s.metadata.managed_fields = Some(vec![Default::default()]);
    s.metadata.annotations = Some(
        [
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
            ("keep".to_string(), "me".to_string()),
        ]
        .into(),
    );
    strip(&mut s);
    assert!(s.metadata.managed_fields.is_none());
    assert_eq!(
        s.metadata.annotations,
        Some([("keep".to_string(), "me".to_string())].into())
    );
}

#[test]
fn a_nodes_image_list_is_not_kept_but_its_addresses_are() {
    use k8s_openapi::api::core::v1::{ContainerImage, NodeAddress, NodeStatus};
    let mut node: Node = named("n1");
    node.status = Some(NodeStatus {
        images: Some(vec![ContainerImage {
            names: Some(vec!["registry/big:1".into()]),
            size_bytes: Some(1 << 30),
        }]),
        addresses: Some(vec![NodeAddress {
            type_: "InternalIP".into(),
            address: "192.0.2.10".into(),
        }]),
        ..Default::default()
    });
    Watched::strip(&mut node);
    let status = node.status.expect("status");
    assert!(status.images.is_none());
    assert_eq!(status.addresses.map(|a| a.len()), Some(1));
}
