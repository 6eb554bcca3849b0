//! The verbs: ADD, DEL, CHECK, STATUS, GC, VERSION.

use std::fs::File;
use std::net::IpAddr;

use serde_json::Value;

use crate::config::{format_mac, host_veth_name, Cidr, Config, Env, LATEST, SUPPORTED_VERSIONS};
use crate::error::{code, Error, Result};
use crate::ipam::Ipam;
use crate::net::{in_netns, Netlink, NlError};
use crate::proto::{Attachment, Client, ClientError, Request};
use crate::types::{CniResult, Interface, IpConfig, Route};

fn nl(e: NlError) -> Error {
    Error::wiring(e.to_string())
}

fn control_err(e: ClientError) -> Error {
    match e {
        ClientError::Unavailable(m) => Error::later(m),
        ClientError::Rejected(m) => Error::later(format!("twill-control refused: {m}")),
    }
}

fn connect(cfg: &Config) -> Result<Client> {
    Client::connect(cfg.control_socket()).map_err(control_err)
}

/// Opens CNI_NETNS; a path that does not exist is an invalid environment.
fn open_netns(env: &Env) -> Result<File> {
    File::open(&env.netns)
        .map_err(|e| Error::env(format!("CNI_NETNS {:?} cannot be opened: {e}", env.netns)))
}

fn pod_netlink(ns: &File, env: &Env) -> Result<Netlink> {
    Netlink::in_netns(ns).map_err(|e| {
        if e.op.starts_with("setns") {
            Error::env(format!(
                "CNI_NETNS {:?} is not a network namespace ({})",
                env.netns, e.detail
            ))
        } else {
            nl(e)
        }
    })
}

fn max_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// What ADD made, undone in reverse when a later step fails.
struct Undo<'a> {
    cfg: &'a Config,
    env: &'a Env,
    ipam: Option<&'a Ipam>,
    host_veth: Option<String>,
}

impl Undo<'_> {
    fn run(self) {
        if let Some(name) = &self.host_veth {
            if let Ok(mut h) = Netlink::host() {
                // Deleting one end of a veth deletes both, and the routes on it.
                let _ = h.del_link(name);
            }
        }
        if let Some(ipam) = self.ipam {
            let _ = ipam.del(self.cfg, self.env, &self.env.container_id, &self.env.ifname);
        }
    }
}

pub fn add(cfg: &Config, env: &Env) -> Result<CniResult> {
    env.require_container_id()?;
    env.require_netns()?;
    env.require_ifname()?;
    env.require_path()?;
    let ns = open_netns(env)?;
    let mut pod = pod_netlink(&ns, env)?;
    // Control first: when it is down nothing is made at all.
    let mut control = connect(cfg)?;
    let st = control.call(&Request::Status).map_err(control_err)?;
    if st.ready == Some(false) {
        return Err(Error::later(format!(
            "twill-control is not ready: {}",
            st.detail.unwrap_or_default()
        )));
    }
    if pod.link(&env.ifname).map_err(nl)?.is_some() {
        return Err(Error::new(
            code::ALREADY_EXISTS,
            format!("interface {} already exists in {}", env.ifname, env.netns),
        ));
    }
    let ipam = Ipam::new(cfg, env)?;
    let prev = match &cfg.conf.prev_result {
        Some(v) => Some(
            serde_json::from_value::<CniResult>(v.clone())
                .map_err(|e| Error::decode(format!("prevResult: {e}")))?,
        ),
        None => None,
    };
    let ipam_res = ipam.add(cfg, env)?;
    let mut undo = Undo {
        cfg,
        env,
        ipam: Some(&ipam),
        host_veth: None,
    };
    match wire(cfg, env, &ns, &mut pod, &mut control, &ipam_res, &mut undo) {
        Ok(mut r) => {
            if let Some(p) = prev {
                r = merge(p, r);
            }
            r.convert_to(cfg.version());
            Ok(r)
        }
        Err(e) => {
            undo.run();
            Err(e)
        }
    }
}

/// Appends `ours` to a chain's `prev` result, interface indices shifted.
fn merge(mut prev: CniResult, ours: CniResult) -> CniResult {
    let off = prev.interfaces.len();
    prev.interfaces.extend(ours.interfaces);
    prev.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i + off);
        ip
    }));
    prev.routes.extend(ours.routes);
    if prev.dns.is_empty() {
        prev.dns = ours.dns;
    }
    prev
}

#[allow(clippy::too_many_arguments)]
fn wire(
    cfg: &Config,
    env: &Env,
    ns: &File,
    pod: &mut Netlink,
    control: &mut Client,
    ipam_res: &CniResult,
    undo: &mut Undo<'_>,
) -> Result<CniResult> {
    let mut addrs = Vec::new();
    for ip in &ipam_res.ips {
        let c = Cidr::parse(&ip.address)
            .ok_or_else(|| Error::decode(format!("IPAM returned address {:?}", ip.address)))?;
        let gw = ip.gateway.as_deref().and_then(|g| g.parse::<IpAddr>().ok());
        addrs.push((c, gw));
    }
    if addrs.is_empty() {
        return Err(Error::config("IPAM returned no address"));
    }
    let mtu = cfg.mtu();
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let mut host = Netlink::host().map_err(nl)?;
    host.add_veth(&host_name, cfg.gateway_mac()?, &env.ifname, ns, mtu)
        .map_err(nl)?;
    undo.host_veth = Some(host_name.clone());
    let hl = host
        .link(&host_name)
        .map_err(nl)?
        .ok_or_else(|| Error::wiring(format!("veth {host_name} vanished after creation")))?;
    host.set_up(hl.index, &host_name).map_err(nl)?;

    let pl = pod.link(&env.ifname).map_err(nl)?.ok_or_else(|| {
        Error::wiring(format!(
            "{} not found in the pod after creation",
            env.ifname
        ))
    })?;
    for (c, _) in &addrs {
        pod.add_addr(pl.index, c.addr, c.len).map_err(nl)?;
    }
    pod.set_up(pl.index, &env.ifname).map_err(nl)?;
    if let Some(lo) = pod.link("lo").map_err(nl)? {
        pod.set_up(lo.index, "lo").map_err(nl)?;
    }

    let mut routes = Vec::new();
    for v4 in [true, false] {
        let fam: Vec<&(Cidr, Option<IpAddr>)> = addrs
            .iter()
            .filter(|(c, _)| c.addr.is_ipv4() == v4)
            .collect();
        let Some(&&(_, ipam_gw)) = fam.first() else {
            continue;
        };
        let Some(gw) = cfg.gateway(v4, ipam_gw) else {
            return Err(Error::config(format!(
                "no IPv{} gateway: set gateway{} or podCIDRs",
                if v4 { 4 } else { 6 },
                if v4 { "Ipv4" } else { "Ipv6" }
            )));
        };
        if !fam.iter().any(|(c, _)| c.contains(gw)) {
            pod.add_route(v4, Some((gw, max_len(gw))), None, pl.index)
                .map_err(nl)?;
        }
        pod.add_route(v4, None, Some(gw), pl.index).map_err(nl)?;
        routes.push(Route {
            dst: if v4 { "0.0.0.0/0" } else { "::/0" }.to_string(),
            gw: Some(gw.to_string()),
            ..Default::default()
        });
        // Routes the IPAM configuration asked for, through the same gateway.
        for r in &ipam_res.routes {
            let Some(d) = Cidr::parse(&r.dst) else {
                continue;
            };
            if d.addr.is_ipv4() != v4 || d.len == 0 {
                continue;
            }
            let via = r.gw.as_deref().and_then(|g| g.parse().ok()).unwrap_or(gw);
            pod.add_route(v4, Some((d.addr, d.len)), Some(via), pl.index)
                .map_err(nl)?;
            routes.push(Route {
                dst: d.to_string(),
                gw: Some(via.to_string()),
                ..Default::default()
            });
        }
    }

    if cfg.conf.tx_checksum_off.unwrap_or(true) {
        tx_checksum_off(ns, &env.ifname)?;
    }

    for (c, _) in &addrs {
        host.add_route(
            c.addr.is_ipv4(),
            Some((c.addr, max_len(c.addr))),
            None,
            hl.index,
        )
        .map_err(nl)?;
    }

    let mac = format_mac(&pl.mac);
    let att = Attachment {
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        network: cfg.conf.name.clone(),
        netns: env.netns.clone(),
        host_veth: host_name.clone(),
        mac: mac.clone(),
        mtu,
        ips: addrs.iter().map(|(c, _)| c.to_string()).collect(),
        pod_namespace: env.k8s("K8S_POD_NAMESPACE"),
        pod_name: env.k8s("K8S_POD_NAME"),
        pod_uid: env.k8s("K8S_POD_UID"),
    };
    control
        .call(&Request::Add { attachment: att })
        .map_err(control_err)?;

    let dns = if ipam_res.dns.is_empty() {
        cfg.conf.dns.clone().unwrap_or_default()
    } else {
        ipam_res.dns.clone()
    };
    Ok(CniResult {
        cni_version: cfg.version().to_string(),
        interfaces: vec![
            Interface {
                name: host_name,
                mac: format_mac(&cfg.gateway_mac()?),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac,
                mtu: Some(mtu),
                sandbox: env.netns.clone(),
                ..Default::default()
            },
        ],
        ips: addrs
            .iter()
            .map(|(c, _)| IpConfig {
                address: c.to_string(),
                gateway: cfg.gateway(c.addr.is_ipv4(), None).map(|g| g.to_string()),
                interface: Some(1),
                ..Default::default()
            })
            .collect(),
        routes,
        dns,
        extra: Default::default(),
    })
}

/// Tx checksum offload off on the pod's interface (see [`crate::ethtool`]).
fn tx_checksum_off(ns: &File, ifname: &str) -> Result<()> {
    in_netns(ns, || crate::ethtool::tx_checksum_off(ifname))
        .and_then(|r| r)
        .map_err(nl)
}

pub fn del(cfg: &Config, env: &Env) -> Result<()> {
    env.require_container_id()?;
    env.require_ifname()?;
    // Everything DEL needs is checked before anything is removed.
    let mut control = connect(cfg)?;
    let ipam = Ipam::new(cfg, env)?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let mut host = Netlink::host().map_err(nl)?;
    // Deleting one end of a veth deletes the pod end too (whether or not its
    // namespace still exists) and every route through it.
    host.del_link(&host_name).map_err(nl)?;
    ipam.del(cfg, env, &env.container_id, &env.ifname)?;
    control
        .call(&Request::Del {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        })
        .map_err(control_err)?;
    Ok(())
}

fn mismatch(msg: String) -> Error {
    Error::new(code::CHECK_MISMATCH, msg)
}

pub fn check(cfg: &Config, env: &Env) -> Result<()> {
    env.require_container_id()?;
    env.require_netns()?;
    env.require_ifname()?;
    let prev: CniResult = match &cfg.conf.prev_result {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Error::decode(format!("prevResult: {e}")))?,
        None => return Err(Error::config("CHECK needs prevResult in the configuration")),
    };
    let mut control = connect(cfg)?;
    let r = control
        .call(&Request::Check {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        })
        .map_err(control_err)?;
    let Some(att) = r.attachment else {
        return Err(Error::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "container {} interface {} is not registered with twill-control",
                env.container_id, env.ifname
            ),
        ));
    };
    let ns = File::open(&env.netns).map_err(|e| {
        Error::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} is gone: {e}", env.netns),
        )
    })?;
    let mut pod = pod_netlink(&ns, env)?;
    let pl = pod
        .link(&env.ifname)
        .map_err(nl)?
        .ok_or_else(|| mismatch(format!("{} is missing in {}", env.ifname, env.netns)))?;
    if !pl.up {
        return Err(mismatch(format!("{} is down", env.ifname)));
    }
    if pl.mtu != att.mtu {
        return Err(mismatch(format!(
            "{} has MTU {}, expected {}",
            env.ifname, pl.mtu, att.mtu
        )));
    }
    // The IPs prevResult gives our interface (by index, else all of them).
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox == env.netns);
    let want: Vec<Cidr> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == idx)
        .filter_map(|ip| Cidr::parse(&ip.address))
        .collect();
    if want.is_empty() {
        return Err(mismatch(
            "prevResult has no address for this interface".into(),
        ));
    }
    let have = pod.addrs(pl.index).map_err(nl)?;
    let routes = pod.routes().map_err(nl)?;
    for c in &want {
        if !have.contains(&(c.addr, c.len)) {
            return Err(mismatch(format!("{} lacks address {c}", env.ifname)));
        }
        let v4 = c.addr.is_ipv4();
        if !routes.iter().any(|r| {
            r.dst.is_none()
                && r.gateway.is_some_and(|g| g.is_ipv4() == v4)
                && r.oif == Some(pl.index)
        }) {
            return Err(mismatch(format!(
                "no IPv{} default route via {}",
                if v4 { 4 } else { 6 },
                env.ifname
            )));
        }
    }
    let mut host = Netlink::host().map_err(nl)?;
    let hl = host
        .link(&att.host_veth)
        .map_err(nl)?
        .ok_or_else(|| mismatch(format!("host veth {} is missing", att.host_veth)))?;
    if !hl.up {
        return Err(mismatch(format!("host veth {} is down", att.host_veth)));
    }
    let hroutes = host.routes().map_err(nl)?;
    for c in &want {
        let host_route = Some((c.addr, max_len(c.addr)));
        if !hroutes
            .iter()
            .any(|r| r.dst == host_route && r.oif == Some(hl.index))
        {
            return Err(mismatch(format!(
                "no host route to {} via {}",
                c.addr, att.host_veth
            )));
        }
    }
    let ipam = Ipam::new(cfg, env)?;
    ipam.check(cfg, env, &prev)
}

fn require_1_1(cfg: &Config, verb: &str) -> Result<()> {
    if cfg.version() != "1.1.0" {
        return Err(Error::version(format!(
            "{verb} needs cniVersion 1.1.0, the configuration has {}",
            cfg.version()
        )));
    }
    Ok(())
}

pub fn status(cfg: &Config, env: &Env) -> Result<()> {
    require_1_1(cfg, "STATUS")?;
    let unavailable = |m: String| Error::new(code::NOT_AVAILABLE, m);
    if !env.path.is_empty() {
        crate::ipam::find(env, &cfg.ipam_type()).map_err(|e| unavailable(e.msg))?;
    }
    if !env.path.is_empty() {
        // A delegate that speaks 1.1.0 is asked too, its error passed on.
        let ipam = Ipam::new(cfg, env).map_err(|e| unavailable(e.msg))?;
        if ipam.speaks_1_1() {
            ipam.status(cfg, env)?;
        }
    }
    let mut c = Client::connect(cfg.control_socket()).map_err(|e| unavailable(e.to_string()))?;
    let r = c
        .call(&Request::Status)
        .map_err(|e| unavailable(e.to_string()))?;
    if r.ready == Some(false) {
        return Err(unavailable(format!(
            "twill-control is not ready: {}",
            r.detail.unwrap_or_default()
        )));
    }
    Ok(())
}

pub fn gc(cfg: &Config, env: &Env) -> Result<()> {
    require_1_1(cfg, "GC")?;
    let Some(valid) = cfg
        .conf
        .valid_attachments
        .as_ref()
        .or(cfg.conf.attachments.as_ref())
    else {
        return Err(Error::config("GC needs cni.dev/valid-attachments"));
    };
    let is_valid = |id: &str, ifname: &str| {
        valid
            .iter()
            .any(|v| v.container_id == id && v.ifname == ifname)
    };
    let mut control = connect(cfg)?;
    let ipam = Ipam::new(cfg, env)?;
    let mut host = Netlink::host().map_err(nl)?;
    let list = control.call(&Request::List).map_err(control_err)?;
    let mut first_err = None;
    // Veths of other twill networks on this node are theirs to collect.
    let others: Vec<String> = list
        .attachments
        .iter()
        .filter(|a| a.network != cfg.conf.name)
        .map(|a| a.host_veth.clone())
        .collect();
    for a in list.attachments {
        if a.network != cfg.conf.name || is_valid(&a.container_id, &a.ifname) {
            continue;
        }
        let r = host
            .del_link(&a.host_veth)
            .map_err(nl)
            .and_then(|_| ipam.del(cfg, env, &a.container_id, &a.ifname))
            .and_then(|_| {
                control
                    .call(&Request::Del {
                        container_id: a.container_id.clone(),
                        ifname: a.ifname.clone(),
                    })
                    .map(drop)
                    .map_err(control_err)
            });
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    // Host veths of ADDs that died before registering (named as twill
    // names them, belonging to no valid attachment).
    let keep: Vec<String> = valid
        .iter()
        .map(|v| host_veth_name(&v.container_id, &v.ifname))
        .chain(others)
        .collect();
    match host.links() {
        Ok(links) => {
            for l in links {
                if crate::config::is_host_veth_name(&l.name) && !keep.contains(&l.name) {
                    if let Err(e) = host.del_link(&l.name) {
                        first_err.get_or_insert(nl(e));
                    }
                }
            }
        }
        Err(e) => {
            first_err.get_or_insert(nl(e));
        }
    }
    // Reservations the IPAM plugin holds for attachments control never saw
    // (an ADD that died between IPAM and registration): an IPAM plugin that
    // speaks 1.1.0 gets the GC itself; for an older host-local, which keeps
    // one file per address holding "<container id>\r\n<ifname>", each
    // stale holder is released with an IPAM DEL.
    if ipam.speaks_1_1() {
        if let Err(e) = ipam.gc(cfg, env) {
            first_err.get_or_insert(e);
        }
    } else if ipam.name == "host-local" {
        for (id, ifname) in host_local_reservations(cfg) {
            if !is_valid(&id, &ifname) {
                if let Err(e) = ipam.del(cfg, env, &id, &ifname) {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn host_local_reservations(cfg: &Config) -> Vec<(String, String)> {
    let data_dir = cfg
        .conf
        .ipam
        .as_ref()
        .and_then(|i| i.get("dataDir"))
        .and_then(Value::as_str)
        .unwrap_or("/var/lib/cni/networks");
    let dir = std::path::Path::new(data_dir).join(&cfg.conf.name);
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<IpAddr>().is_err() {
            continue; // lock, last_reserved_ip.N
        }
        let Ok(s) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = s.lines().map(str::trim);
        let id = lines.next().unwrap_or("").to_string();
        let ifname = lines.next().unwrap_or("eth0").to_string();
        if !id.is_empty() && !out.contains(&(id.clone(), ifname.clone())) {
            out.push((id, ifname));
        }
    }
    out
}

/// VERSION: the versions this plugin speaks.
pub fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_string());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}
