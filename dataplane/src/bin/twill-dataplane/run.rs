//! `twill-dataplane run --config FILE`: the node dataplane as a process.
//!
//! Start-up, in order (any failure is one error line and a non-zero exit,
//! and whatever was attached is detached as the half-built state drops):
//! SIGINT/SIGTERM handlers; the config file; the uplink (MAC, rx queues) and
//! the kernel's neighbour table over netlink for the MACs left `"auto"`;
//! the tables; the steering program with the node addresses and VIPs; one
//! UMEM per worker, the uplink's queue `i` on worker `i`, the pods spread;
//! the pinned workers. Then the main thread (never a packet thread) prints
//! counters every `--stats-interval` seconds, refreshes the next hops' MACs
//! from the neighbour table every `neighbour_refresh_s` and publishes new
//! tables to the workers when one changed. On a signal it detaches every
//! XDP program, stops the workers and prints the final counters.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use dataplane::config::{fmt_mac, Macs, NodeFile, RemoteSection, ZeroCopyMode, UPLINK_PORT};
use dataplane::io::neigh::{self, LinkInfo, Neighbour};
use dataplane::io::{
    RunOptions, SteerConfig, Steering, WorkerReport, WorkersBuilder, XskConfig, ZeroCopy,
};
use dataplane::pipeline::{DropReason, Pipeline};
use dataplane::state::shm::{monotonic_ns, Layout, PortKind, Reader, Role, ServiceDirectory, Shm};
use dataplane::{conntrack, lb, Mac};

use crate::apply::{self, Desired, Ports};

/// The MAC used for a next hop the neighbour table does not know yet
/// (broadcast: still delivered on the segment; replaced at the next refresh).
const UNRESOLVED: Mac = [0xff; 6];

/// Options of the `run` subcommand.
pub struct RunArgs<'a> {
    pub config: &'a Path,
    pub busy_poll: bool,
    /// Seconds between counter lines (0: only at exit).
    pub stats_interval: u64,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .try_init();
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone())
            .context("installing the signal handlers")?;
    }
    let file_name = a.config.display().to_string();
    let file = NodeFile::load(a.config).map_err(|e| anyhow!("config {e}"))?;
    let up = neigh::link(&file.node.uplink).context("the uplink")?;

    // Shared memory with control, when configured: conntrack lives there
    // (established flows survive a restart) and control's snapshots replace
    // the file's pods, remote nodes and Services.
    let shm = match file.shm_layout() {
        Some((path, layout)) => {
            let shm = Shm::create_or_open(&path, &layout)
                .with_context(|| format!("shared memory {}", path.display()))?;
            shm.register(Role::Dataplane, monotonic_ns());
            shm.clear_announcements();
            Some(shm)
        }
        None => None,
    };
    let mut reader = shm.as_ref().map(Reader::new);
    let mut desired = Desired::from_file(&file);
    if let Some(r) = reader.as_mut() {
        match r.poll(monotonic_ns()) {
            Ok(Some((g, snap))) => {
                log::info!("starting from control's snapshot, generation {g}");
                desired = Desired::from_snapshot(g, snap);
            }
            Ok(None) => log::info!("no snapshot from control yet: serving the config file's"),
            Err(e) => {
                log::error!("control's snapshot is unusable ({e}): serving the config file's")
            }
        }
    }
    let mut macs = resolve(&file, &desired.remotes, &up, true)?;
    let mut ports = Ports::new();
    if let Some(shm) = &shm {
        let names = shm.port_names_writer();
        names.set(UPLINK_PORT, &file.node.uplink, &PortKind::Uplink);
        ports.set_names(names);
    }
    for p in &desired.pods {
        ports.assign(&p.interface)?;
    }
    let cpus = file.workers();
    // Stable Service ids: read back from the file (a restart keeps them and
    // their counts), the workers' counter lines backed before they start.
    let mut svc_ids = match &shm {
        Some(shm) => {
            shm.back_service_counters(cpus.len())
                .context("per-Service counters in shared memory")?;
            shm.service_directory()
        }
        None => ServiceDirectory::in_memory(Layout::default().services),
    };
    let tables = Arc::new(
        apply::tables(&file, &desired, &ports, &macs, None, &mut svc_ids)
            .map_err(|e| anyhow!("config {file_name}: {e}"))?,
    );
    let cfg = tables.config().clone();

    let mut st = Steering::load(&SteerConfig::from_node(&cfg))?;
    let node_ips: Vec<IpAddr> = [cfg.node_ipv4.map(IpAddr::V4), cfg.node_ipv6.map(IpAddr::V6)]
        .into_iter()
        .flatten()
        .collect();
    for ip in &node_ips {
        st.add_node_addr(*ip)?;
    }
    for (ip, port) in desired.vips(&node_ips) {
        st.add_vip(ip, port)?;
    }
    for (proto, port) in desired.node_ports() {
        st.add_node_port(proto, port)?;
    }

    let ct = match &shm {
        Some(shm) => {
            let (ct, opened) = shm
                .conntrack(cfg.timeouts)
                .context("conntrack in shared memory")?;
            log::info!("conntrack in shared memory: {opened:?}");
            ct
        }
        None => Arc::new(conntrack::Table::new(cfg.conntrack_capacity, cfg.timeouts)),
    };
    let aff = Arc::new(lb::AffinityTable::new(cfg.affinity_capacity));
    let xsk = XskConfig {
        frames: file.workers.frames.unwrap_or(XskConfig::default().frames),
        zero_copy: match file.workers.zero_copy {
            ZeroCopyMode::Off => ZeroCopy::Off,
            ZeroCopyMode::Auto => ZeroCopy::Auto,
            ZeroCopyMode::Force => ZeroCopy::Force,
        },
        ..XskConfig::default()
    };
    let mut b = WorkersBuilder::new(st, &cpus, xsk, |w| {
        let mut p = Pipeline::new(tables.clone(), ct.clone(), aff.clone());
        if let Some(c) = shm.as_ref().and_then(|s| s.service_counters(w).ok()) {
            p.set_service_counters(c);
        }
        p
    })
    .context("workers.cpus")?;
    let queues = file
        .node
        .uplink_queues
        .unwrap_or(up.rx_queues)
        .min(up.rx_queues)
        .min(cpus.len() as u32);
    if (queues as usize) < cpus.len() {
        log::warn!(
            "uplink {} serves {queues} rx queue(s) for {} workers: workers {queues}.. have no \
             uplink socket (their uplink traffic is handed to worker 0) and their first pod's \
             interface, once detached, cannot be attached again before a restart",
            file.node.uplink,
            cpus.len()
        );
    }
    if let Some(shm) = &shm {
        b.set_shm(shm)
            .context("workers' shared-memory stats and announce lines")?;
    }
    b.attach_uplink(&file.node.uplink, UPLINK_PORT, queues)
        .with_context(|| format!("attaching the uplink {}", file.node.uplink))?;
    apply::attach_initial(&mut b, &desired, &mut ports)?;
    let opts = RunOptions {
        busy_poll: a.busy_poll || file.workers.busy_poll,
        idle_polls: file.workers.idle_polls.unwrap_or(64),
        sleep_ms: file.workers.sleep_ms.unwrap_or(10),
    };
    let mut workers = b.start(opts, Arc::new(AtomicBool::new(false)))?;
    println!(
        "twill-dataplane: running {} worker(s) on CPUs {:?}, uplink {} ({} queue(s)), {} pod(s){}",
        workers.len(),
        cpus,
        file.node.uplink,
        queues,
        desired.pods.len(),
        if opts.busy_poll { ", busy-polling" } else { "" }
    );

    let refresh = Duration::from_secs(file.node.neighbour_refresh_s.unwrap_or(5));
    let stats_every = Duration::from_secs(a.stats_interval);
    let (mut last_refresh, mut last_stats) = (Instant::now(), Instant::now());
    let mut current = tables;
    // Polling the live word is one atomic load: often enough that a new
    // snapshot reaches the workers within milliseconds.
    let tick = if shm.is_some() {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(50)
    };
    while !signalled.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let mut rebuild = false;
        if let (Some(shm), Some(r)) = (&shm, reader.as_mut()) {
            let now = monotonic_ns();
            shm.heartbeat(Role::Dataplane, now);
            match r.poll(now) {
                Ok(Some((g, snap))) => {
                    let next = Desired::from_snapshot(g, snap);
                    apply::apply_changes(&mut workers, &desired, &next, &mut ports, &node_ips);
                    if next.remotes != desired.remotes {
                        match resolve(&file, &next.remotes, &up, false) {
                            Ok(m) => macs = m,
                            Err(e) => log::warn!("neighbour lookup: {e:#}"),
                        }
                    }
                    desired = next;
                    rebuild = true;
                }
                Ok(None) => {}
                Err(e) => log::error!("control's snapshot refused, keeping the last good: {e}"),
            }
        }
        if !refresh.is_zero() && last_refresh.elapsed() >= refresh {
            last_refresh = Instant::now();
            match resolve(&file, &desired.remotes, &up, false) {
                Ok(m)
                    if m.underlay_gateway != macs.underlay_gateway || m.remotes != macs.remotes =>
                {
                    log::info!("next-hop MACs changed: publishing new tables");
                    macs = m;
                    rebuild = true;
                }
                Ok(_) => {}
                Err(e) => log::warn!("neighbour refresh: {e:#}"),
            }
        }
        if rebuild {
            match apply::tables(&file, &desired, &ports, &macs, Some(&current), &mut svc_ids) {
                Ok(t) => {
                    current = Arc::new(t);
                    if let Err(e) = workers.set_tables(current.clone()) {
                        log::error!("publishing tables: {e}");
                    } else if desired.generation != 0 {
                        log::info!(
                            "generation {}: {} pods, {} remote nodes, {} service ports",
                            desired.generation,
                            desired.pods.len(),
                            desired.remotes.len(),
                            desired.services.len()
                        );
                    }
                }
                Err(e) => log::error!("{e}; keeping the last good tables"),
            }
        }
        if !stats_every.is_zero() && last_stats.elapsed() >= stats_every {
            last_stats = Instant::now();
            print_reports("counters", &workers.reports());
        }
    }
    let steer = workers.with_steering(|s| s.stats());
    let reports = workers.stop();
    println!("twill-dataplane: stopped by signal; every XDP program detached");
    print_reports("final counters", &reports);
    println!(
        "steering: redirected {} passed {} no_socket {} unknown_iface {}",
        steer.redirected, steer.passed, steer.no_socket, steer.unknown_iface
    );
    Ok(())
}

/// The MACs the file leaves to the kernel: the uplink's own from the
/// interface, the next hops from the neighbour table (poking the kernel to
/// resolve missing ones at start when `poke`). A next hop still unknown is
/// logged and gets [`UNRESOLVED`] (a remote node: the gateway's MAC).
fn resolve(
    file: &NodeFile,
    remote_nodes: &[RemoteSection],
    up: &LinkInfo,
    poke: bool,
) -> anyhow::Result<Macs> {
    let n = &file.node;
    let uplink = n.uplink_mac.get().or(up.mac).ok_or_else(|| {
        anyhow!(
            "the uplink {} has no MAC address; set node.uplink_mac",
            n.uplink
        )
    })?;
    let gw_ips: Vec<IpAddr> = [
        n.underlay_gateway_ipv4.map(IpAddr::V4),
        n.underlay_gateway_ipv6.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    .collect();
    let wanted = |r: &dataplane::config::RemoteSection| -> Vec<IpAddr> {
        [r.ipv4.map(IpAddr::V4), r.ipv6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect()
    };
    let find = |table: &[Neighbour], ips: &[IpAddr]| {
        ips.iter()
            .find_map(|ip| neigh::lookup(table, *ip, up.ifindex))
    };
    let mut table = neigh::neighbours()?;
    if poke {
        let mut missing = Vec::new();
        if n.underlay_gateway_mac.get().is_none() && find(&table, &gw_ips).is_none() {
            missing.extend(gw_ips.iter().copied());
        }
        for r in remote_nodes {
            if r.underlay_mac.get().is_none() && find(&table, &wanted(r)).is_none() {
                missing.extend(wanted(r));
            }
        }
        if !missing.is_empty() {
            for ip in &missing {
                neigh::poke(*ip);
            }
            std::thread::sleep(Duration::from_millis(300));
            table = neigh::neighbours()?;
        }
    }
    let gateway = match n
        .underlay_gateway_mac
        .get()
        .or_else(|| find(&table, &gw_ips))
    {
        Some(m) => m,
        None => {
            log::warn!(
                "underlay gateway {gw_ips:?}: not in the kernel's neighbour table yet; \
                 sending to {} until it is",
                fmt_mac(&UNRESOLVED)
            );
            UNRESOLVED
        }
    };
    let remotes = remote_nodes
        .iter()
        .map(|r| {
            r.underlay_mac
                .get()
                .or_else(|| find(&table, &wanted(r)))
                .unwrap_or_else(|| {
                    if poke {
                        log::warn!(
                            "remote node {}: not in the kernel's neighbour table; \
                             using the underlay gateway's MAC until it is",
                            r.name
                        );
                    }
                    gateway
                })
        })
        .collect();
    Ok(Macs {
        uplink,
        underlay_gateway: gateway,
        remotes,
    })
}

fn print_reports(title: &str, reports: &[WorkerReport]) {
    println!("{title}:");
    for r in reports {
        let a = r.account;
        println!(
            "  worker {} (cpu {}) ports {:?}: rx {} tx {} handed_off {} handoff_in {} \
             handoff_drops {} dropped {} pass_unhandled {} tx_ring_full {} sleeps {}; \
             frames total {} free {} fill {} tx {} held {} missing {}",
            r.worker,
            r.cpu.map_or("any".into(), |c| c.to_string()),
            r.ports,
            r.io.rx,
            r.xsk.tx,
            r.io.handed_off,
            r.handoff.received,
            r.handoff.no_owner
                + r.handoff.no_slot
                + r.handoff.inbox_full
                + r.handoff.unknown_port
                + r.handoff.no_frame,
            r.io.dropped,
            r.io.pass_unhandled,
            r.xsk.tx_ring_full,
            r.io.sleeps,
            a.total,
            a.free,
            a.fill,
            a.tx,
            a.held,
            a.missing()
        );
        let c = &r.counters;
        println!(
            "    pipeline: rx {} tx {} arp_replies {} nd_replies {} ct_new {} dnat {} snat {} \
             encap {} decap {}",
            c.rx, c.tx, c.arp_replies, c.nd_replies, c.ct_new, c.dnat, c.snat, c.encap, c.decap
        );
        for d in DropReason::ALL {
            if c.drop_count(*d) > 0 {
                println!("    dropped {}: {}", d.name(), c.drop_count(*d));
            }
        }
    }
}
