//! What the node serves (pods, remote nodes, Services), from the config file
//! or from control's snapshots in shared memory, and applying a new one to
//! the running workers: pod interfaces attached and detached, the steering
//! program's VIPs and NodePorts updated, new tables built (reusing the Maglev tables of
//! unchanged Services) and handed to the workers.
//!
//! Pod ports are assigned by interface name and kept while the interface
//! stays (a pod keeps its port across snapshots); a freed port is reused
//! only after every other one. Services get stable counter ids the same way
//! (by Service-port name, through `shm::ServiceDirectory`, which also names
//! them in the shared-memory file), set in the tables before any worker
//! sees them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::anyhow;
use dataplane::config::{Macs, NodeFile, PodSection, RemoteSection, UPLINK_PORT};
use dataplane::io::{IfaceMode, Steering, Workers, WorkersBuilder};
use dataplane::lb::ServiceSpec;
use dataplane::state::shm::{PortKind, PortNames, ServiceDirectory};
use dataplane::state::snapshot::Snapshot;
use dataplane::state::Tables;
use dataplane::PortId;

/// The dynamic part of the node.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Shared-memory generation (0: from the config file).
    pub generation: u64,
    pub pods: Vec<PodSection>,
    pub remotes: Vec<RemoteSection>,
    pub services: Vec<ServiceSpec>,
}

impl Desired {
    pub fn from_file(file: &NodeFile) -> Desired {
        Desired {
            generation: 0,
            pods: file.pods.clone(),
            remotes: file.remote_nodes.clone(),
            services: file.services.iter().map(|s| s.spec()).collect(),
        }
    }

    pub fn from_snapshot(generation: u64, s: Snapshot) -> Desired {
        Desired {
            generation,
            pods: s.pods,
            remotes: s.remotes,
            services: s.services,
        }
    }

    /// The steering program's VIP entries: (address, port when the address
    /// is the node's own — then only that Service port is ours).
    pub fn vips(&self, node: &[IpAddr]) -> BTreeSet<(IpAddr, Option<(u8, u16)>)> {
        let mut out = BTreeSet::new();
        for s in &self.services {
            for (ip, _) in &s.vips {
                out.insert((*ip, node.contains(ip).then_some((s.proto, s.port))));
            }
        }
        out
    }

    /// The steering program's NodePort entries (protocol, port): only these
    /// ports of the NodePort range are the dataplane's.
    pub fn node_ports(&self) -> BTreeSet<(u8, u16)> {
        self.services
            .iter()
            .filter_map(|s| s.node_port.map(|np| (s.proto, np)))
            .collect()
    }
}

/// Interface → port, stable across snapshots; with shared memory, each
/// port's interface name is written there before the port carries traffic
/// and cleared when it is released (so per-port counters can be labelled).
#[derive(Default)]
pub struct Ports {
    by_iface: BTreeMap<String, PortId>,
    next: PortId,
    free: Vec<PortId>,
    names: Option<PortNames>,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            by_iface: BTreeMap::new(),
            next: UPLINK_PORT + 1,
            free: Vec::new(),
            names: None,
        }
    }

    /// Writes port names into shared memory from now on.
    pub fn set_names(&mut self, names: PortNames) {
        self.names = Some(names);
    }

    /// Names `port` as interface `iface` of `kind` (no-op without shared
    /// memory).
    pub fn name(&self, port: PortId, iface: &str, kind: &PortKind) {
        if let Some(n) = &self.names {
            n.set(port, iface, kind);
        }
    }

    pub fn get(&self, iface: &str) -> Option<PortId> {
        self.by_iface.get(iface).copied()
    }

    pub fn assign(&mut self, iface: &str) -> anyhow::Result<PortId> {
        if let Some(p) = self.get(iface) {
            return Ok(p);
        }
        let p = if self.next < PortId::MAX {
            self.next += 1;
            self.next - 1
        } else {
            self.free
                .pop()
                .ok_or_else(|| anyhow!("no pod port left for {iface}"))?
        };
        self.by_iface.insert(iface.to_string(), p);
        Ok(p)
    }

    pub fn release(&mut self, iface: &str) -> Option<PortId> {
        let p = self.by_iface.remove(iface)?;
        if let Some(n) = &self.names {
            n.clear(p);
        }
        self.free.insert(0, p);
        Some(p)
    }
}

/// Builds the tables for `d` (reusing `old`'s Maglev tables where the
/// Services did not change), with each Service's stable counter id from
/// `ids` (which names new ones in the file before the tables are handed out).
pub fn tables(
    file: &NodeFile,
    d: &Desired,
    ports: &Ports,
    macs: &Macs,
    old: Option<&Tables>,
    ids: &mut ServiceDirectory,
) -> anyhow::Result<Tables> {
    let pods = d
        .pods
        .iter()
        .filter_map(|p| ports.get(&p.interface).map(|port| (port, p)));
    let mut t = file
        .build_tables(
            macs,
            pods,
            &d.remotes,
            d.services.iter().cloned(),
            d.generation,
            old,
        )
        .map_err(|e| anyhow!("the node's tables cannot be built: {e}"))?;
    let by_svc = ids.update(t.services().services().map(|(_, s)| s.name()));
    t.set_service_ids(by_svc);
    Ok(t)
}

/// Attaches `d`'s pods to a builder (before the workers start).
pub fn attach_initial(
    b: &mut WorkersBuilder,
    d: &Desired,
    ports: &mut Ports,
) -> anyhow::Result<()> {
    for p in &d.pods {
        let port = ports.assign(&p.interface)?;
        ports.name(port, &p.interface, &PortKind::Pod(p.name.clone()));
        match b.attach(p.worker, &p.interface, port, IfaceMode::Pod) {
            Ok((w, _)) => log::info!(
                "pod {} on {} is port {port} on worker {w}",
                p.name,
                p.interface
            ),
            Err(e) => {
                // One pod's interface (gone already, a typo) must not stop
                // the node: the others are served, this one is retried at
                // the next snapshot.
                ports.release(&p.interface);
                log::error!("pod {} ({}): {e}", p.name, p.interface);
            }
        }
    }
    Ok(())
}

/// Applies the pod, VIP and NodePort differences between `old` and `new` to running
/// workers. Errors on one pod are logged and do not stop the others.
pub fn apply_changes(
    workers: &mut Workers,
    old: &Desired,
    new: &Desired,
    ports: &mut Ports,
    node_ips: &[IpAddr],
) {
    let want: BTreeMap<&str, &PodSection> =
        new.pods.iter().map(|p| (p.interface.as_str(), p)).collect();
    let had: BTreeSet<&str> = old.pods.iter().map(|p| p.interface.as_str()).collect();
    for iface in had.iter().filter(|i| !want.contains_key(*i)) {
        if let Some(port) = ports.get(iface) {
            match workers.detach(port) {
                Ok(()) => log::info!("pod interface {iface} (port {port}) detached"),
                Err(e) => log::warn!("detaching {iface}: {e}"),
            }
            ports.release(iface);
        }
    }
    for (iface, p) in &want {
        if ports.get(iface).is_some() {
            continue;
        }
        let port = match ports.assign(iface) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{e}");
                continue;
            }
        };
        ports.name(port, iface, &PortKind::Pod(p.name.clone()));
        match workers.attach(p.worker, iface, port, IfaceMode::Pod) {
            Ok((w, _)) => log::info!("pod {} on {iface} is port {port} on worker {w}", p.name),
            Err(e) => {
                ports.release(iface);
                log::error!("pod {} ({iface}): {e}", p.name);
            }
        }
    }
    let (before, after) = (old.vips(node_ips), new.vips(node_ips));
    workers.with_steering(|s: &mut Steering| {
        for (ip, port) in before.difference(&after) {
            if let Err(e) = s.remove_vip(*ip, *port) {
                log::warn!("steering: removing VIP {ip}: {e}");
            }
        }
        for (ip, port) in after.difference(&before) {
            if let Err(e) = s.add_vip(*ip, *port) {
                log::error!("steering: adding VIP {ip}: {e}");
            }
        }
        let (before, after) = (old.node_ports(), new.node_ports());
        for (proto, port) in before.difference(&after) {
            if let Err(e) = s.remove_node_port(*proto, *port) {
                log::warn!("steering: {e}");
            }
        }
        for (proto, port) in after.difference(&before) {
            if let Err(e) = s.add_node_port(*proto, *port) {
                log::error!("steering: {e}");
            }
        }
    });
}
