//! `twill-control`: watches the Kubernetes API (or a directory of manifests)
//! and publishes the node's tables to the dataplane over shared memory.
//!
//! `twill-control --config FILE` reads the node config the dataplane reads
//! (its `[control]` and `[shm]` sections), serves the CNI plugin's
//! attachment socket, runs the source (`kube` or `file:DIR`), and publishes
//! a snapshot after every change. `serve-attachments` serves only the
//! attachment API (a node without a dataplane, or tests of the plugin).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use control::cni_server;
use control::metrics::prom::{self, Metrics};
use control::model::NodeIdentity;
use control::publish::{self, Loop};
use control::source;
use dataplane::config::NodeFile;
use dataplane::state::shm::{monotonic_ns, Role, Shm};

#[derive(Parser)]
#[command(name = "twill-control", about = "twill's node control process")]
struct Cli {
    /// The node config (the file twill-dataplane reads).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `control.source`: `kube` or `file:DIR`.
    #[arg(long)]
    source: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve only the pod-attachment API of the CNI plugin (attachments are
    /// persisted, not published).
    ServeAttachments {
        /// The unix socket the plugin connects to (created mode 0600).
        #[arg(long, default_value = cni::config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Where attachments are persisted (recovered on restart).
        #[arg(long, default_value = "/var/lib/twill/attachments.json")]
        state: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .try_init();
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::ServeAttachments { socket, state }) => {
            let store = cni_server::Store::open(&state)?;
            let n = store.snapshot().len();
            let listener = cni_server::bind(&socket)?;
            eprintln!(
                "twill-control: serving pod attachments on {} ({n} recovered from {})",
                socket.display(),
                state.display()
            );
            cni_server::serve(listener, Arc::new(Mutex::new(store)));
            Ok(())
        }
        None => {
            let config = cli
                .config
                .ok_or_else(|| anyhow!("--config FILE is needed (the node config)"))?;
            run(config, cli.source)
        }
    }
}

fn run(config: PathBuf, source_override: Option<String>) -> anyhow::Result<()> {
    let file = NodeFile::load(&config).map_err(|e| anyhow!("config {e}"))?;
    let (path, layout) = file
        .shm_layout()
        .ok_or_else(|| anyhow!("config {}: a [shm] section is needed", config.display()))?;
    let shm = Shm::create_or_open(&path, &layout)
        .with_context(|| format!("shared memory {}", path.display()))?;
    shm.register(Role::Control, monotonic_ns());
    let c = &file.control;
    let node = NodeIdentity {
        name: file.node.name.clone(),
        ipv4: file.node.ipv4.is_some(),
        ipv6: file.node.ipv6.is_some(),
    };

    let mut store = cni_server::Store::open(&c.attachments)?;
    let (att_tx, att_rx) = tokio::sync::watch::channel(0u64);
    store.notify(att_tx);
    let store = Arc::new(Mutex::new(store));
    let listener = cni_server::bind(&c.socket)?;
    {
        let store = Arc::clone(&store);
        std::thread::Builder::new()
            .name("cni-server".into())
            .spawn(move || cni_server::serve(listener, store))?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let source_spec = source_override.unwrap_or_else(|| c.source.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    rt.block_on(async {
        let rx = if source_spec == "kube" {
            let client = source::kube::client_from(c.kubeconfig.clone())
                .await
                .map_err(|e| anyhow!("kube source: {e}"))?;
            if c.annotate_node {
                // flannel's VXLAN annotations on this Node, so flannel nodes
                // (and other twill nodes) reach this one.
                let n = &file.node;
                let ann = control::model::own_node_annotations(
                    n.vtep_mac,
                    n.ipv4,
                    n.ipv6,
                    n.vni.unwrap_or(1),
                );
                match source::kube::annotate_own_node(client.clone(), &node.name, ann).await {
                    Ok(_) => log::info!("annotated Node {} with its VTEP", node.name),
                    Err(e) => log::error!("annotating Node {}: {e}", node.name),
                }
            }
            source::kube::spawn(client, node.name.clone())
        } else if let Some(dir) = source_spec.strip_prefix("file:") {
            source::file::spawn(PathBuf::from(dir), Duration::from_millis(c.debounce_ms))
        } else {
            anyhow::bail!("control.source {source_spec:?}: expected \"kube\" or \"file:DIR\"");
        };
        log::info!(
            "twill-control: node {}, source {source_spec}, shm {}, attachments on {}",
            node.name,
            path.display(),
            c.socket.display()
        );
        let metrics = Arc::new(Metrics::new());
        if !c.metrics.is_empty() {
            let addr: std::net::SocketAddr = c
                .metrics
                .parse()
                .map_err(|e| anyhow!("control.metrics {:?}: {e}", c.metrics))?;
            // Metrics are for people: a port that cannot be bound is logged,
            // and the node's tables are published all the same.
            match prom::bind(addr, Arc::clone(&metrics), Some(shm.clone())).await {
                Ok((bound, serving)) => {
                    log::info!("metrics on http://{bound}/metrics");
                    tokio::spawn(async move {
                        if let Err(e) = serving.await {
                            log::error!("metrics server: {e}");
                        }
                    });
                }
                Err(e) => log::error!("metrics not served: {e}"),
            }
        }
        let lp = Loop {
            shm,
            node,
            source: rx,
            store,
            attachments: att_rx,
            debounce: Duration::from_millis(c.debounce_ms),
            health_bind: publish::default_health_bind(),
            metrics,
            source_name: source_spec.split(':').next().unwrap_or("file").to_string(),
        };
        lp.run(stop).await;
        Ok(())
    })?;
    log::info!("twill-control: stopped; the dataplane keeps the last snapshot");
    Ok(())
}
