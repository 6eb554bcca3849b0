//! Unit tests of the manifest parser (the directory and the watch task are
//! tested end to end in `tests/control_file_source.rs`).

use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::parse::{parse_file, typed, Format, Object, Parsed};
use super::walk::format_of;

fn yaml(text: &str) -> Parsed {
    parse_file("m.yaml", text, Format::Yaml)
}

fn kinds_and_keys(p: &Parsed) -> Vec<String> {
    p.objects
        .iter()
        .map(|o| format!("{} {} @{}", o.object.kind(), o.object.key(), o.origin))
        .collect()
}

const SVC: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  clusterIP: 10.96.10.10
  ports:
  - name: http
    port: 80
    targetPort: http
";

#[test]
fn documents_are_numbered_from_the_first_marker_and_leading_comments_do_not_count() {
    let text = format!("# a comment\n---\n{SVC}---\n---\n# only a comment\n---\n{SVC}");
    let p = yaml(&text);
    assert_eq!(p.errors, 0, "{:?}", p.reports);
    assert!(p.reports.is_empty(), "{:?}", p.reports);
    assert_eq!(
        kinds_and_keys(&p),
        ["Service demo/web @m.yaml#0", "Service demo/web @m.yaml#3"]
    );
}

#[test]
fn a_file_without_markers_is_one_document() {
    let p = yaml(SVC);
    assert_eq!(kinds_and_keys(&p), ["Service demo/web @m.yaml#0"]);
}

#[test]
fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
    let text = format!("\u{feff}---\r\n{}", SVC.replace('\n', "\r\n"));
    let p = yaml(&text);
    assert_eq!(p.errors, 0, "{:?}", p.reports);
    assert_eq!(p.objects.len(), 1);
}

#[test]
fn a_syntax_error_names_the_file_line_and_spares_the_following_documents() {
    // The second document's `ports:` (line 17) is never closed.
    let text = format!(
        "{SVC}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: bad\n  ports: [80\n---\n{SVC}"
    );
    let p = yaml(&text);
    assert_eq!(p.errors, 1);
    assert_eq!(p.objects.len(), 2);
    assert_eq!(p.reports.len(), 1);
    let r = &p.reports[0];
    assert_eq!(r.origin, "m.yaml#1");
    assert!(r.reason.starts_with("invalid YAML"), "{r}");
    // Lines of the file, not of the document (which starts on line 12).
    assert!(r.reason.contains("at line 18 column 1"), "{r}");
    assert!(
        r.reason.contains("flow sequence at line 17 column 10"),
        "{r}"
    );
}

#[test]
fn a_wrong_type_names_the_object_and_the_field_path() {
    let text = SVC.replace("port: 80", "port: eighty");
    let p = yaml(&text);
    assert_eq!(p.errors, 1);
    assert!(p.objects.is_empty());
    let reason = &p.reports[0].reason;
    assert!(
        reason.starts_with("Service demo/web: spec.ports[0].port: invalid type: string \"eighty\""),
        "{reason}"
    );
}

#[test]
fn the_error_path_goes_through_nested_arrays_and_maps() {
    let value = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "a", "labels": {"x": "y"}},
        "spec": {"ports": [{"port": 80}, {"port": 81, "appProtocol": 7}]}
    });
    let err = typed::<Service>(&value).unwrap_err();
    assert_eq!(
        err,
        "spec.ports[1].appProtocol: invalid type: integer `7`, expected a string"
    );
}

#[test]
fn a_container_of_the_wrong_shape_is_reported_at_its_field() {
    let value = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "a"},
        "spec": {"ports": {"port": 80}}
    });
    let err = typed::<Service>(&value).unwrap_err();
    assert_eq!(err, "spec.ports: invalid type: map, expected a sequence");
}

#[test]
fn missing_required_fields_default_as_k8s_openapi_does() {
    // k8s-openapi fills required fields with their defaults; the model
    // reports an EndpointSlice without an addressType.
    let value = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "a"}});
    let slice = typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(&value).expect("lenient");
    assert_eq!(slice.address_type, "");
}

#[test]
fn namespaced_objects_without_a_namespace_go_to_default() {
    let p = yaml(&SVC.replace("  namespace: demo\n", ""));
    let Some(Object::Service(key, svc)) = p.objects.first().map(|o| &o.object) else {
        panic!("no service: {:?}", p.reports);
    };
    assert_eq!(key.to_string(), "default/web");
    assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
}

#[test]
fn unknown_kinds_and_versions_are_reported_but_are_not_errors() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\napiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: old\naddressType: IPv4\n";
    let p = yaml(text);
    assert_eq!(p.errors, 0);
    assert!(p.objects.is_empty());
    assert_eq!(p.reports.len(), 2);
    assert_eq!(p.reports[0].origin, "m.yaml#0");
    assert!(
        p.reports[0].reason.contains("Deployment"),
        "{}",
        p.reports[0]
    );
    assert!(
        p.reports[1].reason.contains("discovery.k8s.io/v1beta1"),
        "{}",
        p.reports[1]
    );
}

#[test]
fn a_truncated_document_of_an_unknown_kind_is_an_error() {
    // What an editor caught mid-save leaves: not a kind twill skips quietly.
    let p = yaml("apiVersion: v1\nkind: Serv");
    assert_eq!(p.errors, 1);
    assert!(
        p.reports[0].reason.contains("Serv has no metadata.name"),
        "{}",
        p.reports[0]
    );
}

#[test]
fn documents_without_kind_name_or_mapping_are_errors() {
    let text = "apiVersion: v1\nmetadata:\n  name: x\n---\napiVersion: v1\nkind: Node\nmetadata: {}\n---\njust a string\n---\n- a\n- list\n---\nkind: Node\nmetadata:\n  name: n\n";
    let p = yaml(text);
    assert_eq!(p.errors, 5, "{:?}", p.reports);
    let reasons: Vec<&str> = p.reports.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].contains("no kind"));
    assert!(reasons[1].contains("no metadata.name"));
    assert!(reasons[2].contains("found a string"));
    assert!(reasons[3].contains("found a list"));
    assert!(reasons[4].contains("no apiVersion"));
}

#[test]
fn a_json_stream_holds_several_objects_and_stops_at_a_syntax_error() {
    let text = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}
{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}"#;
    let p = parse_file("n.json", text, Format::Json);
    assert_eq!(
        kinds_and_keys(&p),
        ["Namespace a @n.json#0", "Namespace b @n.json#1"]
    );
    assert_eq!(p.errors, 1);
    assert_eq!(p.reports[0].origin, "n.json#2");
    assert!(p.reports[0].reason.contains("line 3"), "{}", p.reports[0]);
}

#[test]
fn typed_list_items_take_kind_and_api_version_from_the_list() {
    let text = r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{},
      "items":[{"metadata":{"name":"web-1","namespace":"demo"},"addressType":"IPv4","endpoints":[]},
               {"metadata":{"name":"web-2","namespace":"demo"},"addressType":"IPv4","endpoints":[],"ports":[{"port":"x"}]}]}"#;
    let p = parse_file("l.json", text, Format::Json);
    assert_eq!(
        kinds_and_keys(&p),
        ["EndpointSlice demo/web-1 @l.json#0.items[0]"]
    );
    assert_eq!(p.errors, 1);
    assert_eq!(p.reports[0].origin, "l.json#0.items[1]");
    assert!(
        p.reports[0].reason.contains("ports[0].port"),
        "{}",
        p.reports[0]
    );
}

#[test]
fn items_of_a_plain_list_need_their_own_api_version() {
    let text =
        "apiVersion: v1\nkind: List\nitems:\n- kind: EndpointSlice\n  metadata:\n    name: a\n";
    let p = yaml(text);
    assert_eq!(p.errors, 1);
    assert_eq!(p.reports[0].origin, "m.yaml#0.items[0]");
    assert!(
        p.reports[0]
            .reason
            .contains("EndpointSlice has no apiVersion"),
        "{}",
        p.reports[0]
    );
}

#[test]
fn a_list_inside_a_list_is_not_opened() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n";
    let p = yaml(text);
    assert_eq!(kinds_and_keys(&p), ["Namespace a @m.yaml#0.items[1]"]);
    assert_eq!(p.reports.len(), 1);
    assert_eq!(p.errors, 0);
}

#[test]
fn managed_fields_and_the_last_applied_annotation_are_dropped() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  annotations:\n    keep: me\n    kubectl.kubernetes.io/last-applied-configuration: '{}'\n  managedFields:\n  - manager: kubectl\n    operation: Update\n";
    let p = yaml(text);
    let Some(Object::Namespace(_, ns)) = p.objects.first().map(|o| &o.object) else {
        panic!("{:?}", p.reports);
    };
    assert!(ns.metadata.managed_fields.is_none());
    let ann = ns.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(ann.len(), 1);
    assert_eq!(ann.get("keep").map(String::as_str), Some("me"));
}

#[test]
fn deeply_nested_input_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(yaml(&deep).errors, 1);
    assert_eq!(parse_file("d.json", &deep, Format::Json).errors, 1);
    let aliases = "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
    assert_eq!(yaml(aliases).errors, 1, "alias bombs are refused");
}

#[test]
fn manifest_files_are_chosen_by_extension_and_hidden_or_backup_files_are_not() {
    for yes in ["a.yaml", "a.yml", "A.YAML", "svc.json", "x.y.yaml"] {
        assert!(format_of(yes).is_some(), "{yes}");
    }
    for no in [
        ".a.yaml",
        "a.yaml~",
        "a.yaml.swp",
        ".a.yaml.swp",
        "#a.yaml#",
        "a.txt",
        "yaml",
        "README.md",
    ] {
        assert!(format_of(no).is_none(), "{no}");
    }
}
