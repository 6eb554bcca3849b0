//! The Prometheus endpoint: control's own metrics and the dataplane's, read
//! from a real shared-memory file at scrape time, parsed back from the text
//! exposition; `/metrics` and `/healthz` over HTTP.

mod ctl_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use control::metrics::prom::{bind, Metrics};
use control::source::Health;
use ctl_support::{populated, TempDir};
use dataplane::pipeline::DropReason;
use dataplane::state::shm::{Role, Shm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sample lines (`name{labels} value`) of the exposition, by series.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let (series, value) = l.rsplit_once(' ').expect("series value");
        m.insert(series.to_string(), value.parse().expect("a number"));
    }
    m
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("{series} missing from {:#?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn a_scrape_reads_ports_drops_and_conntrack_from_the_file_and_controls_own_metrics() {
    let d = TempDir::new("metrics");
    let shm = populated(&d.path("node.shm"));
    let m = Metrics::new();
    m.published(0.003, 1, 1234);
    m.reports.set(2);
    m.set_source_health("file", &Health::Synced);
    let text = m.encode(Some(&shm)).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = samples(&text);
    // Ports: two workers summed.
    assert_eq!(
        get(
            &s,
            r#"twill_port_packets_total{port="0",interface="eth0",direction="rx"}"#
        ),
        81.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_port_packets_total{port="0",interface="eth0",direction="tx"}"#
        ),
        180.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_port_bytes_total{port="1",interface="veth-client",direction="rx"}"#
        ),
        12000.0
    );
    // Drops by ingress interface and reason: only the non-zero ones.
    assert_eq!(
        get(
            &s,
            r#"twill_port_drops_total{port="1",interface="veth-client",reason="Spoofed"}"#
        ),
        7.0
    );
    let port_drops: Vec<&String> = s
        .keys()
        .filter(|k| k.starts_with("twill_port_drops_total{"))
        .collect();
    assert_eq!(port_drops.len(), 1, "{port_drops:?}");
    // Drops by reason, every reason present (zero or not).
    assert_eq!(get(&s, r#"twill_drops_total{reason="NoBackend"}"#), 14.0);
    assert_eq!(get(&s, r#"twill_drops_total{reason="Spoofed"}"#), 7.0);
    for r in DropReason::ALL {
        get(
            &s,
            &format!(r#"twill_drops_total{{reason="{}"}}"#, r.name()),
        );
    }
    assert_eq!(
        get(&s, r#"twill_pipeline_packets_total{verdict="drop"}"#),
        21.0
    );
    assert_eq!(
        get(&s, r#"twill_pipeline_events_total{event="ct_new"}"#),
        10.0
    );
    // Conntrack occupancy.
    assert_eq!(get(&s, "twill_conntrack_flows"), 2.0);
    assert_eq!(get(&s, "twill_conntrack_capacity"), 1024.0);
    assert_eq!(get(&s, r#"twill_conntrack_ops_total{op="inserted"}"#), 2.0);
    assert_eq!(
        get(&s, r#"twill_conntrack_ops_total{op="refused_full"}"#),
        0.0
    );
    // Workers and processes.
    assert_eq!(get(&s, r#"twill_worker_generation{worker="1"}"#), 1.0);
    assert_eq!(get(&s, "twill_live_generation"), 1.0);
    assert_eq!(get(&s, "twill_dataplane_up"), 1.0);
    // Control's own.
    assert_eq!(get(&s, "twill_control_published_generation"), 1.0);
    assert_eq!(get(&s, "twill_control_snapshot_bytes"), 1234.0);
    assert_eq!(get(&s, "twill_control_publishes_total"), 1.0);
    assert_eq!(get(&s, "twill_control_reports"), 2.0);
    assert_eq!(get(&s, "twill_control_publish_latency_seconds_count"), 1.0);
    assert_eq!(
        get(
            &s,
            r#"twill_control_publish_latency_seconds_bucket{le="0.0032"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_control_publish_latency_seconds_bucket{le="0.0016"}"#
        ),
        0.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_control_source_health{source="file",state="synced"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_control_source_health{source="file",state="degraded"}"#
        ),
        0.0
    );
    // A change shows at the next scrape, without any copy in control.
    m.set_source_health("file", &Health::Degraded { reason: "x".into() });
    let w = shm.stats_writer(0).unwrap(); // zeroes worker 0's block
    drop(w);
    let s = samples(&m.encode(Some(&shm)).unwrap());
    assert_eq!(get(&s, r#"twill_drops_total{reason="NoBackend"}"#), 7.0);
    assert_eq!(
        get(
            &s,
            r#"twill_control_source_health{source="file",state="degraded"}"#
        ),
        1.0
    );
}

#[test]
fn without_a_file_only_controls_metrics_are_exported() {
    let text = Metrics::new().encode(None).unwrap();
    assert!(text.contains("twill_control_published_generation"));
    assert!(!text.contains("twill_drops_total"));
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap();
    (status, body)
}

#[test]
fn metrics_and_healthz_are_served_over_http() {
    let d = TempDir::new("metrics-http");
    let shm: Shm = populated(&d.path("node.shm"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let m = Arc::new(Metrics::new());
        m.published(0.01, 1, 10);
        let (addr, serve) = bind("127.0.0.1:0".parse().unwrap(), m, Some(shm.clone()))
            .await
            .unwrap();
        let task = tokio::spawn(serve);
        let (code, body) = http_get(addr, "/metrics").await;
        assert_eq!(code, 200);
        let s = samples(&body);
        assert_eq!(get(&s, "twill_conntrack_flows"), 2.0);
        assert_eq!(get(&s, "twill_control_published_generation"), 1.0);
        let (code, body) = http_get(addr, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        // A dataplane whose heartbeat stopped long ago.
        shm.heartbeat(Role::Dataplane, 1);
        let (code, body) = http_get(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("heartbeat"), "{body}");
        assert_eq!(
            get(
                &samples(&http_get(addr, "/metrics").await.1),
                "twill_dataplane_up"
            ),
            0.0
        );
        let (code, _) = http_get(addr, "/nope").await;
        assert_eq!(code, 404);
        task.abort();
    });
}

#[test]
fn a_scrape_exports_each_services_packets_bytes_connections_and_rejects_summed_over_workers() {
    let d = TempDir::new("metrics-svc");
    let shm = populated(&d.path("node.shm"));
    let s = samples(&Metrics::new().encode(Some(&shm)).unwrap());
    let web = |m: &str, dir: &str| {
        get(
            &s,
            &format!(r#"twill_service_{m}_total{{service="default/web:http",direction="{dir}"}}"#),
        )
    };
    assert_eq!(web("packets", "to"), 2.0);
    assert_eq!(web("bytes", "to"), 140.0);
    assert_eq!(web("packets", "reply"), 1.0);
    assert_eq!(web("bytes", "reply"), 1500.0);
    assert_eq!(
        get(
            &s,
            r#"twill_service_connections_total{service="default/web:http"}"#
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_service_rejects_total{service="kube-system/dns:dns/udp"}"#
        ),
        2.0
    );
    assert_eq!(
        get(
            &s,
            r#"twill_service_rejects_total{service="default/web:http"}"#
        ),
        0.0
    );
    assert_eq!(get(&s, "twill_service_counter_unassigned"), 0.0);
    assert_eq!(get(&s, "twill_service_counter_full_total"), 0.0);
}

#[test]
fn a_gone_service_is_no_longer_exported_and_a_new_one_starts_from_zero() {
    let d = TempDir::new("metrics-svc-reuse");
    let shm = populated(&d.path("node.shm"));
    // web goes, a new Service comes (the reuse of an id, with its
    // baseline, is the dataplane's unit tests').
    let mut dir = shm.service_directory();
    dir.update(["kube-system/dns:dns/udp"]);
    let ids = dir.update(["kube-system/dns:dns/udp", "default/new:http"]);
    assert_eq!(ids, vec![1, 2], "a fresh id first");
    let text = Metrics::new().encode(Some(&shm)).unwrap();
    assert!(!text.contains("default/web:http"), "{text}");
    let s = samples(&text);
    assert_eq!(
        get(
            &s,
            r#"twill_service_packets_total{service="default/new:http",direction="to"}"#
        ),
        0.0
    );
}
