//! The control loop: source updates and pod attachments → the model → a
//! snapshot in shared memory, plus what hangs off each new view (the
//! healthCheckNodePort servers, reports in the log).
//!
//! One task owns the [`Publisher`]: it waits for a change (a source update
//! or an attachment), lets a burst settle for the configured debounce, then
//! builds the view and publishes it if it differs from the live one. A view
//! that cannot be published (too large for a slot) is reported and the live
//! snapshot keeps serving. The shared-memory file outlives control: killing
//! it leaves the dataplane forwarding with the last snapshot.

pub mod pods;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::config::PodSection;
use dataplane::state::shm::{monotonic_ns, Publisher, Role, Shm};
use dataplane::state::snapshot::SnapshotRef;
use tokio::sync::watch;

use crate::cni_server::Store;
use crate::metrics::health::HealthServers;
use crate::metrics::prom::{Metrics, HEARTBEAT_STALE_NS};
use crate::model::{Model, NodeIdentity, NodeView};
use crate::source::{Health, Update};

/// Everything the loop needs.
pub struct Loop {
    pub shm: Shm,
    pub node: NodeIdentity,
    pub source: watch::Receiver<Update>,
    pub store: Arc<Mutex<Store>>,
    pub attachments: watch::Receiver<u64>,
    pub debounce: Duration,
    /// Where healthCheckNodePort servers listen.
    pub health_bind: IpAddr,
    pub metrics: Arc<Metrics>,
    /// The source's name in metrics (`kube`, `file`).
    pub source_name: String,
}

/// The snapshot of the current inputs (the model's view and the pods),
/// borrowed: control encodes it straight from the model.
pub fn snapshot<'a>(
    update: &Update,
    view: &'a NodeView,
    pods: &'a [PodSection],
) -> SnapshotRef<'a> {
    SnapshotRef {
        revision: update.revision,
        built_ns: monotonic_ns(),
        services: &view.services,
        remotes: &view.remotes,
        pods,
    }
}

impl Loop {
    /// Runs until `stop` is set (checked at least every second).
    pub async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut publisher = Publisher::new(&self.shm);
        let mut model = Model::new(self.node.clone());
        let proxy_healthy = Arc::new(AtomicBool::new(false));
        let mut health = HealthServers::new(self.health_bind, Arc::clone(&proxy_healthy));
        // The pods of the last published snapshot; whether the last publish
        // failed (the model's view is then not what the slot holds).
        let mut last_pods: Option<Vec<PodSection>> = None;
        let mut publish_failed = false;
        let mut seen_reports: BTreeSet<String> = BTreeSet::new();
        let mut last_health: Option<Health> = None;
        let mut dirty = true;
        let mut changed_at = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            if !dirty {
                tokio::select! {
                    r = self.source.changed() => {
                        if r.is_err() {
                            log::error!("the source stopped; keeping the last state");
                            // Never returns again: keep serving attachments.
                            std::future::pending::<()>().await;
                        }
                        dirty = true;
                        changed_at = Instant::now();
                    }
                    r = self.attachments.changed() => {
                        if r.is_ok() {
                            dirty = true;
                            changed_at = Instant::now();
                        }
                    }
                    _ = tick.tick() => {}
                }
            }
            let now = monotonic_ns();
            self.shm.heartbeat(Role::Control, now);
            let dp = self.shm.process(Role::Dataplane);
            proxy_healthy.store(dp.is_live(now, HEARTBEAT_STALE_NS), Ordering::Relaxed);
            if !dirty {
                continue;
            }
            // Let a burst settle.
            tokio::time::sleep(self.debounce).await;
            dirty = false;
            let update = self.source.borrow_and_update().clone();
            let _ = self.attachments.borrow_and_update();
            if last_health.as_ref() != Some(&update.health) {
                match &update.health {
                    Health::Degraded { reason } => {
                        log::warn!("source degraded, serving the last good state: {reason}")
                    }
                    h => log::info!("source {h:?}"),
                }
                last_health = Some(update.health.clone());
                self.metrics
                    .set_source_health(&self.source_name, &update.health);
            }
            if update.health == Health::Starting {
                // Nothing complete to publish yet: the dataplane keeps what
                // it has (the previous snapshot, or its own config).
                continue;
            }
            let (pods, pod_reports) = match self.store.lock() {
                Ok(store) => pods::pods(&store.snapshot()),
                Err(_) => {
                    log::error!("attachment store poisoned");
                    continue;
                }
            };
            // Only the Services whose objects changed are recomputed.
            model.update(&update.state);
            let view_changed = model.changed();
            let view = model.view();
            let mut reports = update.reports.clone();
            reports.extend(pod_reports);
            reports.extend(view.reports.iter().cloned());
            let now_reports: BTreeSet<String> = reports.iter().map(|r| r.to_string()).collect();
            for r in now_reports.difference(&seen_reports) {
                log::warn!("{r}");
            }
            seen_reports = now_reports;
            self.metrics
                .reports
                .set(i64::try_from(reports.len()).unwrap_or(i64::MAX));
            health.reconcile(&view.health_checks).await;
            for (port, why) in &health.failures {
                log::warn!("healthCheckNodePort {port}: {why}");
            }
            // Unchanged since the last publish that went through: nothing
            // to do (a failed publish is retried with the next change).
            if !view_changed && !publish_failed && last_pods.as_ref() == Some(&pods) {
                continue;
            }
            let snap = snapshot(&update, view, &pods);
            match publisher.publish_parts(snap, monotonic_ns()) {
                Ok(p) => {
                    let latency = changed_at.elapsed();
                    self.metrics
                        .published(latency.as_secs_f64(), p.generation, p.bytes);
                    log::info!(
                        "published generation {}: {} service ports, {} remote nodes, {} pods, \
                         {} bytes, {latency:?} after the change",
                        p.generation,
                        snap.services.len(),
                        snap.remotes.len(),
                        snap.pods.len(),
                        p.bytes,
                    );
                    publish_failed = false;
                    last_pods = Some(pods);
                }
                Err(e) => {
                    self.metrics.publish_errors.inc();
                    publish_failed = true;
                    log::error!("not published, the live snapshot keeps serving: {e}");
                }
            }
        }
    }
}

/// The address healthCheckNodePort servers bind: every address, as
/// kube-proxy's default.
pub fn default_health_bind() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
