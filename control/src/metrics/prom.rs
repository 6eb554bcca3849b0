//! The Prometheus endpoint: `/metrics` (text exposition, OpenMetrics) and
//! `/healthz`.
//!
//! Two kinds of metrics. Control's own ([`Metrics`]: publish latency,
//! published generation, snapshot bytes, source health, reports) are
//! ordinary prometheus-client metrics that control's main loop updates. The
//! dataplane's (packets and bytes per port, pipeline verdicts, drops by
//! reason, conntrack occupancy, workers' announced generations) are read
//! from the shared-memory file at scrape time by a collector, so a scrape
//! shows the counters as the workers last stored them (once per batch) and
//! control keeps no copy. Per-Service packets, bytes, connections and
//! rejects come from the Service directory and the workers' counter lines
//! (`state::shm` `services`), labelled with the Service-port name
//! (`ns/svc:port`) and summed over workers; a Service whose id was reused
//! starts from its baseline, so it never shows its predecessor's counts.
//!
//! `/healthz` answers 200 `ok` while the dataplane's heartbeat in the file
//! is fresh (or no file is configured), else 503 with the reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dataplane::pipeline::DropReason;
use dataplane::state::shm::{monotonic_ns, Role, Shm};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::source::Health;

/// A dataplane heartbeat older than this makes `/healthz` fail.
pub const HEARTBEAT_STALE_NS: u64 = 5_000_000_000;

/// The states a source's health gauge has one series for.
pub const HEALTH_STATES: [&str; 3] = ["starting", "synced", "degraded"];

/// Labels of the source health gauge.
type SourceLabels = Vec<(&'static str, String)>;

/// Control's own metrics, and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    /// Seconds from a source update to its snapshot being published.
    pub publish_latency: Histogram,
    /// The last generation control published.
    pub published_generation: Gauge,
    /// Bytes of the last published snapshot.
    pub snapshot_bytes: Gauge,
    /// Snapshots published.
    pub publishes: Counter,
    /// Publish attempts that failed (the live generation stayed).
    pub publish_errors: Counter,
    /// Reports (bad manifests, skipped objects) in the last update.
    pub reports: Gauge,
    /// 1 for the state a source is in, 0 for the others.
    source_health: Family<SourceLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("twill_control");
        // 100 µs .. ~3.3 s.
        let publish_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1e-4, 2.0, 16),
        );
        let m = Metrics {
            publish_latency,
            published_generation: Gauge::default(),
            snapshot_bytes: Gauge::default(),
            publishes: Counter::default(),
            publish_errors: Counter::default(),
            reports: Gauge::default(),
            source_health: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "publish_latency_seconds",
            "Seconds from a source update to its snapshot being published",
            m.publish_latency.clone(),
        );
        registry.register(
            "published_generation",
            "The last generation control published",
            m.published_generation.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Bytes of the last published snapshot",
            m.snapshot_bytes.clone(),
        );
        registry.register("publishes", "Snapshots published", m.publishes.clone());
        registry.register(
            "publish_errors",
            "Publish attempts that failed (the live generation stayed)",
            m.publish_errors.clone(),
        );
        registry.register(
            "reports",
            "Reports (bad manifests, skipped objects) in the last update",
            m.reports.clone(),
        );
        registry.register(
            "source_health",
            "1 for the state the source is in (starting, synced, degraded), 0 for the others",
            m.source_health.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records a publish: its latency, generation and size.
    pub fn published(&self, latency_s: f64, generation: u64, bytes: usize) {
        self.publish_latency.observe(latency_s);
        self.published_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.publishes.inc();
    }

    /// Sets source `source`'s health (one series per state, the current
    /// one 1).
    pub fn set_source_health(&self, source: &str, health: &Health) {
        let now = match health {
            Health::Starting => "starting",
            Health::Synced => "synced",
            Health::Degraded { .. } => "degraded",
        };
        for st in HEALTH_STATES {
            self.source_health
                .get_or_create(&vec![
                    ("source", source.to_string()),
                    ("state", st.to_string()),
                ])
                .set(i64::from(st == now));
        }
    }

    /// The text exposition: control's metrics, then the dataplane's read
    /// from `shm` now (none without a file).
    pub fn encode(&self, shm: Option<&Shm>) -> Result<String, std::fmt::Error> {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut s = String::new();
        encode_registry(&mut s, &self.registry)?;
        if let Some(shm) = shm {
            let mut r = Registry::with_prefix("twill");
            r.register_collector(Box::new(ShmCollector { shm: shm.clone() }));
            encode_registry(&mut s, &r)?;
        }
        encode_eof(&mut s)?;
        Ok(s)
    }
}

/// Reads the dataplane's metrics from the file at each scrape.
#[derive(Debug)]
struct ShmCollector {
    shm: Shm,
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for ShmCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = self.shm.all_stats();
        let sum = crate::ctl::stats::totals(&workers);
        let c = &sum.counters;

        // The interface each port is, as the dataplane named it ("" for a
        // port it has not named: released, or a dataplane without names).
        let names: std::collections::BTreeMap<usize, String> = self
            .shm
            .port_names()
            .into_iter()
            .map(|n| (usize::from(n.port), n.interface))
            .collect();
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        let mut port_drops = Vec::new();
        for (port, p) in sum.ports.iter().enumerate() {
            let iface = names.get(&port).cloned().unwrap_or_default();
            for r in DropReason::ALL {
                let n = p.drops.get(r.index()).copied().unwrap_or(0);
                if n != 0 {
                    let l = vec![
                        ("port", port.to_string()),
                        ("interface", iface.clone()),
                        ("reason", r.name().to_string()),
                    ];
                    port_drops.push((l, n));
                }
            }
            if p.rx_packets == 0 && p.tx_packets == 0 {
                continue;
            }
            for (dir, n, b) in [
                ("rx", p.rx_packets, p.rx_bytes),
                ("tx", p.tx_packets, p.tx_bytes),
            ] {
                let l = vec![
                    ("port", port.to_string()),
                    ("interface", iface.clone()),
                    ("direction", dir.to_string()),
                ];
                packets.push((l.clone(), n));
                bytes.push((l, b));
            }
        }
        counter_family(
            &mut enc,
            "port_drops",
            "Frames received on a dataplane port and dropped, by reason, all workers",
            &port_drops,
        )?;
        counter_family(
            &mut enc,
            "port_packets",
            "Frames received on / sent to a dataplane port, all workers",
            &packets,
        )?;
        counter_family(
            &mut enc,
            "port_bytes",
            "Bytes received on / sent to a dataplane port, all workers",
            &bytes,
        )?;
        let verdicts: Vec<(Labels, u64)> = [
            ("tx", c.tx),
            ("reply", c.reply),
            ("pass", c.pass),
            ("drop", c.dropped),
        ]
        .into_iter()
        .map(|(v, n)| (vec![("verdict", v.to_string())], n))
        .collect();
        counter_family(
            &mut enc,
            "pipeline_packets",
            "Frames through the pipeline by verdict, all workers",
            &verdicts,
        )?;
        let drops: Vec<(Labels, u64)> = DropReason::ALL
            .iter()
            .map(|r| (vec![("reason", r.name().to_string())], c.drop_count(*r)))
            .collect();
        counter_family(
            &mut enc,
            "drops",
            "Frames dropped by reason (see twillctl stats), all workers",
            &drops,
        )?;
        let events: Vec<(Labels, u64)> = crate::ctl::stats::events(c)
            .into_iter()
            .skip(5)
            .map(|(k, n)| (vec![("event", k.to_string())], n))
            .collect();
        counter_family(
            &mut enc,
            "pipeline_events",
            "Pipeline events (encap, decap, conntrack hits, NAT...), all workers",
            &events,
        )?;

        let svc = self.shm.service_report();
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        let mut conns = Vec::new();
        let mut rejects = Vec::new();
        for s in &svc.services {
            let c = &s.counts;
            for (dir, n, b) in [
                ("to", c.packets_to, c.bytes_to),
                ("reply", c.packets_reply, c.bytes_reply),
            ] {
                let l = vec![("service", s.name.clone()), ("direction", dir.to_string())];
                packets.push((l.clone(), n));
                bytes.push((l, b));
            }
            conns.push((vec![("service", s.name.clone())], c.connections));
            rejects.push((vec![("service", s.name.clone())], c.rejects));
        }
        counter_family(
            &mut enc,
            "service_packets",
            "Packets of a Service port's flows, toward the Service or replies, all workers",
            &packets,
        )?;
        counter_family(
            &mut enc,
            "service_bytes",
            "Bytes (Ethernet frames, without the overlay) of a Service port's flows, all workers",
            &bytes,
        )?;
        counter_family(
            &mut enc,
            "service_connections",
            "New connections to a Service port, all workers",
            &conns,
        )?;
        counter_family(
            &mut enc,
            "service_rejects",
            "First packets to a Service port refused for want of a usable endpoint, all workers",
            &rejects,
        )?;
        gauge(
            &mut enc,
            "service_counter_unassigned",
            "Service ports without counters now (more than the shared-memory file has room for)",
            i(svc.unassigned),
        )?;
        counter(
            &mut enc,
            "service_counter_full",
            "Service ports that found no free counter id, each counted once",
            svc.full_total,
        )?;

        match self.shm.conntrack_view() {
            Ok(t) => {
                let s = t.stats();
                gauge(
                    &mut enc,
                    "conntrack_flows",
                    "Live conntrack flows",
                    i(s.live),
                )?;
                gauge(
                    &mut enc,
                    "conntrack_capacity",
                    "Conntrack capacity (flows)",
                    i(t.capacity() as u64),
                )?;
                let ops: Vec<(Labels, u64)> = [
                    ("inserted", s.inserted),
                    ("refused_full", s.refused_full),
                    ("reply_taken", s.reply_taken),
                    ("evicted_expired", s.evicted_expired),
                    ("evicted_unassured", s.evicted_unassured),
                    ("reclaimed", s.reclaimed),
                    ("removed", s.removed),
                ]
                .into_iter()
                .map(|(k, n)| (vec![("op", k.to_string())], n))
                .collect();
                counter_family(
                    &mut enc,
                    "conntrack_ops",
                    "Conntrack inserts, refusals and evictions",
                    &ops,
                )?;
            }
            Err(_) => {
                // Not initialised by a dataplane yet: no conntrack series.
            }
        }

        let now = monotonic_ns();
        let gens: Vec<(Labels, i64)> = self
            .shm
            .announcements()
            .into_iter()
            .filter(|a| a.index < self.shm.layout().workers as usize)
            .map(|a| (vec![("worker", a.index.to_string())], i(a.generation)))
            .collect();
        gauge_family(
            &mut enc,
            "worker_generation",
            "The table generation each worker announces",
            &gens,
        )?;
        gauge(
            &mut enc,
            "live_generation",
            "The live generation in the shared-memory file",
            i(self.shm.live_generation()),
        )?;
        let dp = self.shm.process(Role::Dataplane);
        let up = dp.is_live(now, HEARTBEAT_STALE_NS);
        gauge(
            &mut enc,
            "dataplane_up",
            "1 while the dataplane's heartbeat is fresh",
            i64::from(up),
        )?;
        Ok(())
    }
}

/// Why `/healthz` fails, or `None` when healthy.
pub fn unhealthy(shm: Option<&Shm>) -> Option<String> {
    let shm = shm?;
    let dp = shm.process(Role::Dataplane);
    if dp.pid == 0 {
        return Some("no dataplane has registered in the shared-memory file".into());
    }
    let now = monotonic_ns();
    if !dp.is_live(now, HEARTBEAT_STALE_NS) {
        let age = now.saturating_sub(dp.heartbeat_ns);
        return Some(format!(
            "dataplane pid {} heartbeat {} ms old",
            dp.pid,
            age / 1_000_000
        ));
    }
    None
}

#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    shm: Option<Shm>,
}

async fn metrics_page(State(s): State<Served>) -> Response {
    match s.metrics.encode(s.shm.as_ref()) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

async fn healthz(State(s): State<Served>) -> Response {
    match unhealthy(s.shm.as_ref()) {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// The router serving `/metrics` and `/healthz` (for tests and for
/// embedding into another server).
pub fn router(metrics: Arc<Metrics>, shm: Option<Shm>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(Served { metrics, shm })
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics server on {addr}: {op}: {source}")]
pub struct ServeError {
    pub addr: SocketAddr,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// Binds `addr` and serves until the task is dropped or the listener fails.
/// Returns the bound address at once (port 0 picks one) and the serving
/// future to spawn.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shm: Option<Shm>,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ServeError>>,
    ),
    ServeError,
> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError {
            addr,
            op: "bind",
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError {
        addr,
        op: "local address",
        source,
    })?;
    let app = router(metrics, shm);
    let fut = async move {
        axum::serve(listener, app)
            .await
            .map_err(|source| ServeError {
                addr: bound,
                op: "serve",
                source,
            })
    };
    Ok((bound, fut))
}

/// Serves `/metrics` and `/healthz` on `addr` until an error.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shm: Option<Shm>,
) -> Result<(), ServeError> {
    let (_, fut) = bind(addr, metrics, shm).await?;
    fut.await
}
