//! The XDP steering program (`bpf/steer.c`): loading, attaching, and its maps.
//!
//! One program is loaded per process and attached to every interface the
//! dataplane serves; the maps are shared, so a node address or a VIP is
//! written once whatever the number of interfaces. Each interface gets an
//! entry in `ifaces` (its mode and its base slot in the XSKMAP: queue `q`'s
//! socket sits at `base + q`), so the uplink's queue 0 and a pod veth's queue
//! 0 do not collide. Updates are plain map writes: nothing is reloaded.
//!
//! Attachments are BPF links owned by the loaded program: dropping
//! [`Steering`] (or the process ending, SIGKILL included) detaches everything
//! it attached, so no program is left behind.

use std::net::IpAddr;
use std::os::fd::RawFd;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use super::{ifindex, IoError};
use crate::state::NodeConfig;

/// The compiled program, embedded at build time (aligned for the ELF parser).
static STEER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.o"));

/// The program's function name in `steer.c`.
const PROG: &str = "twill_steer";

/// XSKMAP size in `steer.c` (slots for all interfaces' queues).
pub const XSK_SLOTS: u32 = 4096;

/// What an interface is to the steering program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceMode {
    /// The node's NIC: only VXLAN, VIPs, NodePorts and SNAT replies are ours.
    Uplink,
    /// A pod's host-side veth: everything but traffic to node addresses is ours.
    Pod,
}

/// How the program was attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// In the driver (veth, most NICs): what AF_XDP wants.
    Native,
    /// Generic (skb) XDP: works everywhere, slower; used only as a fallback.
    Generic,
}

/// The node-wide steering parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerConfig {
    /// Our VXLAN UDP port (0: no VXLAN).
    pub vxlan_port: u16,
    /// The NodePort range, inclusive ((0, 0): none).
    pub nodeport_range: (u16, u16),
    /// The SNAT source-port range, inclusive ((0, 0): none). It must not
    /// overlap the kernel's `net.ipv4.ip_local_port_range`, or replies to the
    /// node's own connections would be taken from the kernel.
    pub snat_ports: (u16, u16),
}

impl SteerConfig {
    pub fn from_node(c: &NodeConfig) -> SteerConfig {
        SteerConfig {
            vxlan_port: c.vxlan_port,
            nodeport_range: c.nodeport_range,
            snat_ports: c.snat_ports,
        }
    }
}

/// The program's counters (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerStats {
    /// Frames handed to an AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel as not the dataplane's.
    pub passed: u64,
    /// Frames that were the dataplane's but found no socket on their queue
    /// (passed to the kernel).
    pub no_socket: u64,
    /// Frames on an interface without configuration (passed).
    pub unknown_iface: u64,
}

// The map layouts of steer.c, field for field.

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct IfaceCfg {
    mode: u32,
    xsk_base: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SteerCfgC {
    vxlan_port: u16,
    nodeport_lo: u16,
    nodeport_hi: u16,
    snat_lo: u16,
    snat_hi: u16,
    pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AddrKey([u8; 16]);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VipKey {
    addr: [u8; 16],
    port: u16,
    proto: u8,
    pad: u8,
}

// SAFETY: #[repr(C)] structs of integers with no padding (8, 12, 16 and 20
// bytes, each field naturally aligned), so every bit pattern is a valid value
// and the bytes aya copies to and from the kernel are exactly the fields.
unsafe impl aya::Pod for IfaceCfg {}
// SAFETY: as above.
unsafe impl aya::Pod for SteerCfgC {}
// SAFETY: as above.
unsafe impl aya::Pod for AddrKey {}
// SAFETY: as above.
unsafe impl aya::Pod for VipKey {}

const MODE_UPLINK: u32 = 1;
const MODE_POD: u32 = 2;

const STAT_REDIRECT: u32 = 0;
const STAT_PASS: u32 = 1;
const STAT_NO_SOCKET: u32 = 2;
const STAT_UNKNOWN_IFACE: u32 = 3;

fn addr_key(ip: IpAddr) -> AddrKey {
    AddrKey(match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    })
}

fn map_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> IoError {
    IoError::setup(format!("{what}: {e}"))
}

/// One interface the program is attached to.
#[derive(Debug)]
struct Attached {
    ifindex: u32,
    name: String,
    xsk_base: u32,
    queues: u32,
    link: aya::programs::xdp::XdpLinkId,
}

/// The loaded steering program and its maps.
pub struct Steering {
    ebpf: Ebpf,
    xsks: XskMap<MapData>,
    ifaces: HashMap<MapData, u32, IfaceCfg>,
    config: Array<MapData, SteerCfgC>,
    vips: HashMap<MapData, VipKey, u8>,
    node_addrs: HashMap<MapData, AddrKey, u8>,
    stats: PerCpuArray<MapData, u64>,
    attached: Vec<Attached>,
}

impl Steering {
    /// Loads the program (verifier included) with `cfg`; attaches nothing.
    pub fn load(cfg: &SteerConfig) -> Result<Steering, IoError> {
        raise_memlock();
        let mut ebpf = Ebpf::load(STEER_OBJ).map_err(|e| {
            map_err(
                "loading the XDP steering program (needs root or CAP_BPF+CAP_NET_ADMIN, and a kernel with BPF)",
                e,
            )
        })?;
        {
            let prog: &mut Xdp = ebpf
                .program_mut(PROG)
                .ok_or_else(|| IoError::setup(format!("steer.o has no program {PROG}")))?
                .try_into()
                .map_err(|e| map_err("steering program type", e))?;
            prog.load()
                .map_err(|e| map_err("verifying the XDP steering program", e))?;
        }
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| IoError::setup(format!("steer.o has no map {name}")))
        };
        let xsks = XskMap::try_from(take("xsks")?).map_err(|e| map_err("map xsks", e))?;
        let ifaces = HashMap::try_from(take("ifaces")?).map_err(|e| map_err("map ifaces", e))?;
        let config = Array::try_from(take("config")?).map_err(|e| map_err("map config", e))?;
        let vips = HashMap::try_from(take("vips")?).map_err(|e| map_err("map vips", e))?;
        let node_addrs =
            HashMap::try_from(take("node_addrs")?).map_err(|e| map_err("map node_addrs", e))?;
        let stats = PerCpuArray::try_from(take("stats")?).map_err(|e| map_err("map stats", e))?;
        let mut s = Steering {
            ebpf,
            xsks,
            ifaces,
            config,
            vips,
            node_addrs,
            stats,
            attached: Vec::new(),
        };
        s.set_config(cfg)?;
        if let Some((lo, hi)) = snat_overlaps_kernel_ports(cfg.snat_ports) {
            log::warn!(
                "SNAT ports {}-{} overlap the kernel's ephemeral ports {lo}-{hi} \
                 (net.ipv4.ip_local_port_range): replies to the node's own connections \
                 on those ports would be steered to the dataplane; reserve them \
                 (net.ipv4.ip_local_reserved_ports) or move the SNAT range",
                cfg.snat_ports.0,
                cfg.snat_ports.1
            );
        }
        Ok(s)
    }

    /// Replaces the node-wide parameters.
    pub fn set_config(&mut self, cfg: &SteerConfig) -> Result<(), IoError> {
        let c = SteerCfgC {
            vxlan_port: cfg.vxlan_port,
            nodeport_lo: cfg.nodeport_range.0,
            nodeport_hi: cfg.nodeport_range.1,
            snat_lo: cfg.snat_ports.0,
            snat_hi: cfg.snat_ports.1,
            pad: 0,
        };
        self.config
            .set(0, c, 0)
            .map_err(|e| map_err("writing the steering config", e))
    }

    fn prog(&mut self) -> Result<&mut Xdp, IoError> {
        self.ebpf
            .program_mut(PROG)
            .ok_or_else(|| IoError::setup("steering program gone"))?
            .try_into()
            .map_err(|e| map_err("steering program type", e))
    }

    /// Attaches the program to `name` (in the calling thread's network
    /// namespace) as `mode`, with `queues` XSKMAP slots (one per rx queue);
    /// `sockets[q]`, if given, is queue `q`'s AF_XDP socket, put in the map
    /// before the program is attached so no frame of ours finds the map
    /// empty. Tries native XDP first and falls back to generic XDP with a log
    /// line. Returns the interface index and how it was attached.
    pub fn attach(
        &mut self,
        name: &str,
        mode: IfaceMode,
        queues: u32,
        sockets: &[RawFd],
    ) -> Result<(u32, XdpAttachMode), IoError> {
        let idx = ifindex(name)?;
        if self.attached.iter().any(|a| a.ifindex == idx) {
            return Err(IoError::setup(format!("{name}: already attached")));
        }
        let queues = queues.max(sockets.len() as u32).max(1);
        let base = self.free_slots(queues).ok_or_else(|| {
            IoError::setup(format!("{name}: no free XSKMAP slots for {queues} queues"))
        })?;
        let cfg = IfaceCfg {
            mode: match mode {
                IfaceMode::Uplink => MODE_UPLINK,
                IfaceMode::Pod => MODE_POD,
            },
            xsk_base: base,
        };
        for (q, &fd) in sockets.iter().enumerate() {
            if let Err(e) = self.xsks.set(base + q as u32, fd, 0) {
                for k in 0..q as u32 {
                    let _ = self.xsks.unset(base + k);
                }
                return Err(map_err(format!("{name}: inserting its AF_XDP socket"), e));
            }
        }
        if let Err(e) = self.ifaces.insert(idx, cfg, 0) {
            for k in 0..sockets.len() as u32 {
                let _ = self.xsks.unset(base + k);
            }
            return Err(map_err(format!("{name}: writing its steering entry"), e));
        }
        let prog = self.prog()?;
        let (link, how) = match prog.attach_to_if_index(idx, XdpMode::Driver) {
            Ok(l) => (l, XdpAttachMode::Native),
            Err(native) => match prog.attach_to_if_index(idx, XdpMode::Skb) {
                Ok(l) => {
                    log::warn!("{name}: native XDP refused ({native}); attached in generic mode");
                    (l, XdpAttachMode::Generic)
                }
                Err(e) => {
                    let _ = self.ifaces.remove(&idx);
                    for k in 0..sockets.len() as u32 {
                        let _ = self.xsks.unset(base + k);
                    }
                    return Err(map_err(format!("{name}: attaching XDP"), e));
                }
            },
        };
        log::info!("{name}: XDP steering attached ({how:?}, {mode:?}, xsk slots {base}..)");
        self.attached.push(Attached {
            ifindex: idx,
            name: name.to_string(),
            xsk_base: base,
            queues,
            link,
        });
        Ok((idx, how))
    }

    /// The first run of `n` free XSKMAP slots.
    fn free_slots(&self, n: u32) -> Option<u32> {
        let mut base = 0;
        loop {
            if base + n > XSK_SLOTS {
                return None;
            }
            match self
                .attached
                .iter()
                .find(|a| base < a.xsk_base + a.queues && a.xsk_base < base + n)
            {
                Some(a) => base = a.xsk_base + a.queues,
                None => return Some(base),
            }
        }
    }

    fn find(&self, idx: u32) -> Result<&Attached, IoError> {
        self.attached
            .iter()
            .find(|a| a.ifindex == idx)
            .ok_or_else(|| IoError::setup(format!("ifindex {idx}: not attached")))
    }

    /// Detaches the program from the interface `idx` and clears its entries.
    pub fn detach(&mut self, idx: u32) -> Result<(), IoError> {
        let pos = self
            .attached
            .iter()
            .position(|a| a.ifindex == idx)
            .ok_or_else(|| IoError::setup(format!("ifindex {idx}: not attached")))?;
        let a = self.attached.remove(pos);
        let _ = self.ifaces.remove(&idx);
        for q in 0..a.queues {
            let _ = self.xsks.unset(a.xsk_base + q);
        }
        let prog = self.prog()?;
        prog.detach(a.link)
            .map_err(|e| map_err(format!("{}: detaching XDP", a.name), e))?;
        log::info!("{}: XDP steering detached", a.name);
        Ok(())
    }

    /// Points queue `queue` of interface `idx` at the AF_XDP socket `fd`.
    pub fn set_socket(
        &mut self,
        idx: u32,
        queue: u32,
        fd: impl std::os::fd::AsRawFd,
    ) -> Result<(), IoError> {
        let a = self.find(idx)?;
        if queue >= a.queues {
            return Err(IoError::setup(format!(
                "{}: queue {queue} beyond the {} attached",
                a.name, a.queues
            )));
        }
        let (slot, name) = (a.xsk_base + queue, a.name.clone());
        self.xsks
            .set(slot, fd, 0)
            .map_err(|e| map_err(format!("{name}: inserting its AF_XDP socket"), e))
    }

    /// Removes queue `queue`'s socket of interface `idx` (its traffic then
    /// goes to the kernel, counted as `no_socket`).
    pub fn clear_socket(&mut self, idx: u32, queue: u32) -> Result<(), IoError> {
        let a = self.find(idx)?;
        let slot = a.xsk_base + queue;
        self.xsks
            .unset(slot)
            .map_err(|e| map_err("removing an AF_XDP socket", e))
    }

    /// Adds one of the node's own addresses (traffic to it from pods is the
    /// kernel's).
    pub fn add_node_addr(&mut self, ip: IpAddr) -> Result<(), IoError> {
        self.node_addrs
            .insert(addr_key(ip), 1, 0)
            .map_err(|e| map_err(format!("adding node address {ip}"), e))
    }

    pub fn remove_node_addr(&mut self, ip: IpAddr) -> Result<(), IoError> {
        self.node_addrs
            .remove(&addr_key(ip))
            .map_err(|e| map_err(format!("removing node address {ip}"), e))
    }

    /// Adds a VIP: with `port` `None`, every packet to the address is ours (a
    /// ClusterIP or LB IP the node does not own); with `Some((proto, port))`
    /// only that protocol and port (an externalIP that is a node address).
    pub fn add_vip(&mut self, ip: IpAddr, port: Option<(u8, u16)>) -> Result<(), IoError> {
        self.vips
            .insert(vip_key(ip, port), 1, 0)
            .map_err(|e| map_err(format!("adding VIP {ip}"), e))
    }

    pub fn remove_vip(&mut self, ip: IpAddr, port: Option<(u8, u16)>) -> Result<(), IoError> {
        self.vips
            .remove(&vip_key(ip, port))
            .map_err(|e| map_err(format!("removing VIP {ip}"), e))
    }

    /// Marks a NodePort as served, on every node address: it is ours even
    /// when a kernel socket has the port. Another port of the NodePort range
    /// is the kernel's when the kernel has a socket for it (twill-control's
    /// healthCheckNodePort servers), else ours (the established flows of a
    /// NodePort that was just removed keep their translation). Kept in the
    /// VIP map under the unspecified address, which no VIP can be.
    pub fn add_node_port(&mut self, proto: u8, port: u16) -> Result<(), IoError> {
        self.vips
            .insert(node_port_key(proto, port), 1, 0)
            .map_err(|e| map_err(format!("adding NodePort {port}/{proto}"), e))
    }

    pub fn remove_node_port(&mut self, proto: u8, port: u16) -> Result<(), IoError> {
        self.vips
            .remove(&node_port_key(proto, port))
            .map_err(|e| map_err(format!("removing NodePort {port}/{proto}"), e))
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> SteerStats {
        let get = |i: u32| -> u64 { self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        SteerStats {
            redirected: get(STAT_REDIRECT),
            passed: get(STAT_PASS),
            no_socket: get(STAT_NO_SOCKET),
            unknown_iface: get(STAT_UNKNOWN_IFACE),
        }
    }

    /// The interfaces attached, by index.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.iter().map(|a| a.ifindex)
    }
}

/// The kernel's ephemeral port range (calling thread's network namespace) if
/// `snat` overlaps it: the uplink rule "replies to the SNAT range are ours"
/// would then take replies meant for the node's own connections. Ports the
/// kernel reserves (`ip_local_reserved_ports`) are not checked.
pub fn snat_overlaps_kernel_ports(snat: (u16, u16)) -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let (lo, hi) = parse_port_range(&s)?;
    (snat.0 != 0 && snat.0 <= hi && lo <= snat.1).then_some((lo, hi))
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(|w| w.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Some((lo, hi)),
        _ => None,
    }
}

/// steer.c's `is_node_port` key: all-zero address, the port and protocol.
fn node_port_key(proto: u8, port: u16) -> VipKey {
    VipKey {
        addr: [0; 16],
        port,
        proto,
        pad: 0,
    }
}

fn vip_key(ip: IpAddr, port: Option<(u8, u16)>) -> VipKey {
    let (proto, port) = port.unwrap_or((0, 0));
    VipKey {
        addr: addr_key(ip).0,
        port,
        proto,
        pad: 0,
    }
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps and UMEMs to
/// it (before 5.11); best effort: newer kernels charge memory cgroups instead.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if r != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK): {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_port_range_file_parses() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("junk"), None);
    }

    #[test]
    fn map_structs_have_the_c_sizes() {
        assert_eq!(std::mem::size_of::<IfaceCfg>(), 8);
        assert_eq!(std::mem::size_of::<SteerCfgC>(), 12);
        assert_eq!(std::mem::size_of::<AddrKey>(), 16);
        assert_eq!(std::mem::size_of::<VipKey>(), 20);
    }

    #[test]
    fn ipv4_addresses_are_keyed_as_mapped_ipv6() {
        let k = addr_key("10.1.2.3".parse().unwrap());
        assert_eq!(&k.0[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.0[12..], &[10, 1, 2, 3]);
    }

    #[test]
    fn the_embedded_program_is_an_elf_bpf_object_with_our_maps() {
        assert_eq!(&STEER_OBJ[..4], b"\x7fELF");
        // e_machine (offset 18, little endian) is EM_BPF (247).
        assert_eq!(u16::from_le_bytes([STEER_OBJ[18], STEER_OBJ[19]]), 247);
        let has = |s: &[u8]| STEER_OBJ.windows(s.len()).any(|w| w == s);
        for name in [
            "xsks",
            "ifaces",
            "config",
            "vips",
            "node_addrs",
            "stats",
            PROG,
        ] {
            assert!(has(name.as_bytes()), "no {name} in steer.o");
        }
    }
}
