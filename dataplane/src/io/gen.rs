//! A transmit-only AF_XDP packet generator (the library side of
//! `twill-pktgen`).
//!
//! - [`Flows`] builds UDP frames (IPv4 or IPv6, optionally inside a VXLAN
//!   outer header) with valid checksums, and rewrites only the fields that
//!   vary between flows (source port, the low 32 bits of the source address,
//!   the outer UDP source port) with RFC 1624 incremental checksum updates;
//! - [`TxGen`] owns a UMEM and one AF_XDP socket with a tx ring only. Every
//!   frame is written into the UMEM once; the transmit loop only writes
//!   descriptors (address, length), keeps the tx ring full and kicks the
//!   kernel once per batch when it asks (need_wakeup). When there are more
//!   flows than UMEM frames, the varying fields of a frame are rewritten
//!   before it is sent again (a few 16-bit words, never the whole frame).
//!
//! Flow `k` of a [`Flows`] uses source port `sport + k % sports` and source
//! address `src + (k / sports) % src_ips` (added to the address's low 32
//! bits); with VXLAN its outer UDP source port is a hash of `k` in
//! 32768..61000, as a VTEP derives it from the inner flow.

use std::ffi::CString;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::ptr::NonNull;

use libxdp_sys as sys;

use super::xsk::{cons_ring, prod_ring, Area, ConsRing, ProdRing};
use super::{ifindex, IoError, ZeroCopy};
use crate::pipeline::FRAME_SIZE;
use crate::wire::checksum::{self, Delta};

use super::xsk::{
    set_tx_budget, SOL_XDP, XDP_COPY, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY,
    XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
};

const XDP_STATISTICS: libc::c_int = 7;

/// Smallest and largest frame size accepted (bytes on the wire including
/// the 4-byte FCS, as pktgen and testpmd count them).
pub const MIN_SIZE: usize = 64;
pub const MAX_SIZE: usize = 1518;
const FCS: usize = 4;
const ETH: usize = 14;
const UDP: usize = 8;
const VXLAN: usize = 8;

/// VXLAN outer headers.
#[derive(Clone, Debug)]
pub struct VxlanSpec {
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    pub vni: u32,
    /// Outer UDP destination port (4789 IANA, 8472 Linux/flannel).
    pub port: u16,
    /// Inner Ethernet addresses (the outer ones are the packet's `src_mac`
    /// and `dst_mac`).
    pub inner_src_mac: [u8; 6],
    pub inner_dst_mac: [u8; 6],
}

/// What to send.
#[derive(Clone, Debug)]
pub struct PacketSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// First source port and how many consecutive ports flows use.
    pub sport: u16,
    pub sports: u16,
    /// How many consecutive source addresses flows use.
    pub src_ips: u32,
    pub dport: u16,
    /// Frame size including FCS (the inner frame's with VXLAN).
    pub size: usize,
    /// Distinct flows to cycle over.
    pub flows: u64,
    pub vxlan: Option<VxlanSpec>,
}

/// Where the varying fields of a frame are, and their values in flow 0.
#[derive(Clone, Copy, Debug)]
struct Layout {
    sport: usize,
    /// The low 32 bits of the inner source address.
    src_lo: usize,
    ip_csum: Option<usize>,
    udp_csum: usize,
    outer_sport: Option<usize>,
    outer_csum: Option<usize>,
}

/// A flow set: one template frame and how flow `k` differs from it.
#[derive(Clone, Debug)]
pub struct Flows {
    spec: PacketSpec,
    template: Vec<u8>,
    at: Layout,
    src_lo0: [u8; 4],
    ip_csum0: u16,
    udp_csum0: u16,
    outer_sport0: u16,
    outer_csum0: u16,
}

fn ip_len(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    }
}

fn ethertype(ip: &IpAddr) -> [u8; 2] {
    match ip {
        IpAddr::V4(_) => [0x08, 0x00],
        IpAddr::V6(_) => [0x86, 0xdd],
    }
}

/// Writes an IP header (`payload` bytes follow it) at `b[0..]`; returns its
/// length. IPv4 gets its header checksum; DF set, TTL/hop limit 64.
fn write_ip(b: &mut [u8], src: &IpAddr, dst: &IpAddr, proto: u8, payload: usize) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let h = &mut b[..20];
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&[0, 0]);
            h[6..8].copy_from_slice(&[0x40, 0]);
            h[8] = 64;
            h[9] = proto;
            h[10..12].copy_from_slice(&[0, 0]);
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum::finish(checksum::sum(h));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            20
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = &mut b[..40];
            h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            h[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            40
        }
        _ => 0, // refused by `Flows::new`
    }
}

/// The UDP checksum field for a datagram `udp` (header with a zero checksum
/// field, then payload) between `src` and `dst`; 0 maps to 0xffff.
fn udp_csum(src: &IpAddr, dst: &IpAddr, udp: &[u8]) -> u16 {
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum::pseudo_v4(&s.octets(), &d.octets(), 17, udp.len() as u32)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum::pseudo_v6(&s.octets(), &d.octets(), 17, udp.len() as u32)
        }
        _ => 0,
    };
    let c = checksum::finish(pseudo + checksum::sum(udp));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// A UDP checksum after an incremental update: RFC 768 sends a computed 0 as
/// 0xffff.
fn udp_field(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// VXLAN's outer UDP source port for flow `k` (a multiplicative hash into
/// 32768..61000, as Linux's `udp_flow_src_port` spreads inner flows).
fn outer_sport(k: u64) -> u16 {
    let h = (k.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    32768 + (h % 28232) as u16
}

impl Flows {
    /// Checks `spec` and builds flow 0's frame.
    pub fn new(spec: PacketSpec) -> Result<Flows, String> {
        if spec.src_ip.is_ipv4() != spec.dst_ip.is_ipv4() {
            return Err("--src-ip and --dst-ip must both be IPv4 or both IPv6".into());
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&spec.size) {
            return Err(format!(
                "--size {} out of range {MIN_SIZE}..={MAX_SIZE}",
                spec.size
            ));
        }
        if spec.sports == 0 || spec.src_ips == 0 || spec.flows == 0 {
            return Err("port range, address range and --flows must not be empty".into());
        }
        if u32::from(spec.sport) + u32::from(spec.sports) > 65536 {
            return Err("source port range goes past 65535".into());
        }
        let inner_l3 = ip_len(&spec.src_ip);
        // The inner frame: at least the headers, padded to the size asked.
        let inner_len = (spec.size - FCS).max(ETH + inner_l3 + UDP);
        let outer = match &spec.vxlan {
            None => 0,
            Some(v) => {
                if v.outer_src.is_ipv4() != v.outer_dst.is_ipv4() {
                    return Err("--outer-src and --outer-dst must both be IPv4 or IPv6".into());
                }
                if v.vni >= 1 << 24 {
                    return Err("--vni must fit 24 bits".into());
                }
                ETH + ip_len(&v.outer_src) + UDP + VXLAN
            }
        };
        let total = outer + inner_len;
        if total > FRAME_SIZE {
            return Err(format!("frame of {total} bytes exceeds a UMEM frame"));
        }
        let mut b = vec![0u8; total];
        // Outer headers (Ethernet only without VXLAN).
        b[0..6].copy_from_slice(&spec.dst_mac);
        b[6..12].copy_from_slice(&spec.src_mac);
        let mut outer_sport_at = None;
        let mut outer_csum_at = None;
        let mut outer_sport0 = 0;
        let inner = if let Some(v) = &spec.vxlan {
            b[12..14].copy_from_slice(&ethertype(&v.outer_src));
            let udp_len = total - ETH - ip_len(&v.outer_src);
            let l3 = write_ip(&mut b[ETH..], &v.outer_src, &v.outer_dst, 17, udp_len);
            let u = ETH + l3;
            outer_sport0 = outer_sport(0);
            put16(&mut b, u, outer_sport0);
            put16(&mut b, u + 2, v.port);
            put16(&mut b, u + 4, udp_len as u16);
            let vx = u + UDP;
            b[vx] = 0x08; // I flag: VNI valid
            b[vx + 4..vx + 7].copy_from_slice(&v.vni.to_be_bytes()[1..]);
            let e = vx + VXLAN;
            b[e..e + 6].copy_from_slice(&v.inner_dst_mac);
            b[e + 6..e + 12].copy_from_slice(&v.inner_src_mac);
            outer_sport_at = Some(u);
            // IPv4 outer: checksum 0 (RFC 7348 §5, what Linux sends by
            // default); IPv6 outer: required (RFC 8200 §8.1), filled below.
            if v.outer_src.is_ipv6() {
                outer_csum_at = Some(u + 6);
            }
            e
        } else {
            0
        };
        b[inner + 12..inner + 14].copy_from_slice(&ethertype(&spec.src_ip));
        let l3 = inner + ETH;
        let udp_len = inner_len - ETH - inner_l3;
        write_ip(&mut b[l3..], &spec.src_ip, &spec.dst_ip, 17, udp_len);
        let u = l3 + inner_l3;
        put16(&mut b, u, spec.sport);
        put16(&mut b, u + 2, spec.dport);
        put16(&mut b, u + 4, udp_len as u16);
        // Payload: a recognisable pattern rather than zeros.
        for (i, x) in b[u + UDP..].iter_mut().enumerate() {
            *x = i as u8;
        }
        let uc = udp_csum(&spec.src_ip, &spec.dst_ip, &b[u..]);
        put16(&mut b, u + 6, uc);
        let mut outer_csum0 = 0;
        if let (Some(at), Some(v)) = (outer_csum_at, &spec.vxlan) {
            let ou = at - 6;
            outer_csum0 = udp_csum(&v.outer_src, &v.outer_dst, &b[ou..]);
            put16(&mut b, at, outer_csum0);
        }
        let src_lo = l3 + if spec.src_ip.is_ipv4() { 12 } else { 20 };
        let at = Layout {
            sport: u,
            src_lo,
            ip_csum: spec.src_ip.is_ipv4().then_some(l3 + 10),
            udp_csum: u + 6,
            outer_sport: outer_sport_at,
            outer_csum: outer_csum_at,
        };
        let src_lo0 = [b[src_lo], b[src_lo + 1], b[src_lo + 2], b[src_lo + 3]];
        Ok(Flows {
            ip_csum0: at.ip_csum.map_or(0, |a| u16_at(&b, a)),
            udp_csum0: uc,
            outer_sport0,
            outer_csum0,
            src_lo0,
            at,
            template: b,
            spec,
        })
    }

    /// Flow 0's frame (without FCS).
    pub fn template(&self) -> &[u8] {
        &self.template
    }

    /// Frame length without FCS (what goes in a tx descriptor).
    pub fn len(&self) -> usize {
        self.template.len()
    }

    pub fn is_empty(&self) -> bool {
        self.template.is_empty()
    }

    pub fn count(&self) -> u64 {
        self.spec.flows
    }

    /// Flow `k`'s (inner) source port and the low 32 bits of its source
    /// address.
    pub fn flow_key(&self, k: u64) -> (u16, u32) {
        let k = k % self.spec.flows;
        let ports = u64::from(self.spec.sports);
        let port = self.spec.sport + (k % ports) as u16;
        let off = ((k / ports) % u64::from(self.spec.src_ips)) as u32;
        (port, u32::from_be_bytes(self.src_lo0).wrapping_add(off))
    }

    /// Turns `frame` (a copy of the template, holding any flow) into flow
    /// `k`'s: writes the source port, source address, and the checksums
    /// (updated incrementally from the template's).
    #[inline]
    pub fn write_flow(&self, frame: &mut [u8], k: u64) {
        if frame.len() < self.template.len() {
            return;
        }
        let at = &self.at;
        let (port, lo) = self.flow_key(k);
        let lo = lo.to_be_bytes();
        let addr = Delta::new().add32(self.src_lo0, lo);
        let l4 = addr.add16(self.spec.sport, port);
        put16(frame, at.sport, port);
        frame[at.src_lo..at.src_lo + 4].copy_from_slice(&lo);
        let ipc = at.ip_csum.map(|a| (a, addr.apply(self.ip_csum0)));
        if let Some((a, c)) = ipc {
            put16(frame, a, c);
        }
        let uc = udp_field(l4.apply(self.udp_csum0));
        put16(frame, at.udp_csum, uc);
        if let Some(os) = at.outer_sport {
            let osp = outer_sport(k % self.spec.flows);
            put16(frame, os, osp);
            if let Some(oc) = at.outer_csum {
                // Every inner word that changed is inside the outer UDP
                // payload, at an even offset from its header (see `new`).
                let mut d = Delta::new()
                    .add16(self.outer_sport0, osp)
                    .add16(self.spec.sport, port)
                    .add32(self.src_lo0, lo)
                    .add16(self.udp_csum0, uc);
                if let Some((_, c)) = ipc {
                    d = d.add16(self.ip_csum0, c);
                }
                put16(frame, oc, udp_field(d.apply(self.outer_csum0)));
            }
        }
    }

    /// Flow `k`'s whole frame (for tests and for loading the UMEM).
    pub fn frame(&self, k: u64) -> Vec<u8> {
        let mut f = self.template.clone();
        self.write_flow(&mut f, k);
        f
    }
}

/// Sizes and modes of a [`TxGen`].
#[derive(Clone, Copy, Debug)]
pub struct TxConfig {
    /// tx and completion ring size (a power of two).
    pub ring_size: u32,
    pub zero_copy: ZeroCopy,
    /// Frames one copy-mode kick may send (Linux 6.17+ `XDP_MAX_TX_SKB_BUDGET`;
    /// 0 leaves the kernel's default of 32).
    pub tx_budget: u32,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            ring_size: 2048,
            zero_copy: ZeroCopy::Off,
            tx_budget: 0,
        }
    }
}

/// Transmit counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Descriptors put on the tx ring.
    pub submitted: u64,
    /// Descriptors the kernel completed (sent or dropped by the device).
    pub completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks that returned an error other than "try again".
    pub kick_errors: u64,
    /// Frames whose varying fields were rewritten before sending.
    pub rewrites: u64,
}

/// The kernel's own counters of a socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTxStats {
    pub tx_invalid_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// A UMEM and one tx-only AF_XDP socket. Field order is drop order: the
/// socket, then the UMEM registration, then its rings and memory.
pub struct TxGen {
    sock: NonNull<sys::xsk_socket>,
    tx: ProdRing,
    umem: NonNull<sys::xsk_umem>,
    // The UMEM's fill and completion rings (libxdp points at them).
    comp: ConsRing,
    _fill: ProdRing,
    area: Area,
    fd: RawFd,
    mode: super::BindMode,
    frames: u32,
    frame_len: u32,
    ring_size: u32,
    /// Frames on the tx ring or in flight.
    outstanding: u32,
    /// Sequence number of the next frame to send.
    seq: u64,
    /// Flow count when it exceeds `frames` (fields rewritten per send).
    rewrite_flows: Option<u64>,
    stats: TxStats,
    budget: Option<u32>,
}

impl Drop for TxGen {
    fn drop(&mut self) {
        // SAFETY: `sock` came from xsk_socket__create and is deleted once,
        // before the UMEM it uses; its tx ring box is freed only after.
        unsafe { sys::xsk_socket__delete(self.sock.as_ptr()) };
        // SAFETY: the only socket on it is gone; the area is unmapped after.
        unsafe { sys::xsk_umem__delete(self.umem.as_ptr()) };
    }
}

// SAFETY: the raw pointers and the mapping are owned by this value alone;
// libxdp keeps no thread-local state about them.
unsafe impl Send for TxGen {}

impl TxGen {
    /// Opens a tx-only socket on `ifname` queue `queue` with a UMEM sized for
    /// `flows` and writes every frame once. No XDP program is loaded.
    pub fn open(ifname: &str, queue: u32, cfg: TxConfig, flows: &Flows) -> Result<TxGen, IoError> {
        if !cfg.ring_size.is_power_of_two() || cfg.ring_size < 64 {
            return Err(IoError::setup("--ring must be a power of two >= 64"));
        }
        ifindex(ifname)?;
        // Twice the ring, rounded up to a multiple of the flow count when
        // that stays small, so frame j always holds flow j % flows and
        // nothing is rewritten; otherwise frames are rewritten per send.
        let base = u64::from(cfg.ring_size) * 2;
        let (frames, rewrite) = if flows.count() <= 16384 {
            (base.div_ceil(flows.count()) * flows.count(), None)
        } else {
            (base, Some(flows.count()))
        };
        let frames = frames as u32;
        let area = Area::new(frames as usize * FRAME_SIZE)?;
        let mut fill = prod_ring();
        let mut comp = cons_ring();
        let ucfg = sys::xsk_umem_config {
            fill_size: 64,
            comp_size: cfg.ring_size,
            frame_size: FRAME_SIZE as u32,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem = std::ptr::null_mut();
        // SAFETY: `area` is a live mapping of the size given, kept until
        // after the UMEM is deleted (`Drop`); the ring boxes never move and
        // live as long as the `TxGen`.
        let r = unsafe {
            sys::xsk_umem__create(
                &mut umem,
                area.ptr.as_ptr().cast(),
                area.len as u64,
                &mut *fill,
                &mut *comp,
                &ucfg,
            )
        };
        if r != 0 {
            return Err(IoError::Os {
                what: "registering the AF_XDP UMEM (needs root and a kernel with AF_XDP)".into(),
                source: std::io::Error::from_raw_os_error(-r),
            });
        }
        let umem =
            NonNull::new(umem).ok_or_else(|| IoError::setup("xsk_umem__create gave NULL"))?;
        let modes: &[super::BindMode] = match cfg.zero_copy {
            ZeroCopy::Off => &[super::BindMode::Copy],
            ZeroCopy::Auto => &[super::BindMode::ZeroCopy, super::BindMode::Copy],
            ZeroCopy::Force => &[super::BindMode::ZeroCopy],
        };
        let cname =
            CString::new(ifname).map_err(|_| IoError::NoSuchInterface(ifname.to_string()))?;
        let mut tx = prod_ring();
        let mut last = None;
        let mut got = None;
        for &mode in modes {
            let bind_flags = XDP_USE_NEED_WAKEUP
                | match mode {
                    super::BindMode::Copy => XDP_COPY,
                    super::BindMode::ZeroCopy => XDP_ZEROCOPY,
                };
            let scfg = sys::xsk_socket_config {
                rx_size: 0,
                tx_size: cfg.ring_size,
                __bindgen_anon_1: sys::xsk_socket_config__bindgen_ty_1 {
                    libxdp_flags: XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
                },
                xdp_flags: 0,
                bind_flags,
            };
            let mut sock = std::ptr::null_mut();
            // A socket just closed on this queue (a previous run) is
            // released by the kernel a moment later: EBUSY until then.
            let mut r = -libc::EBUSY;
            for _ in 0..30 {
                // SAFETY: the UMEM is registered and outlives the socket;
                // `tx` never moves and outlives the socket; no rx ring.
                r = unsafe {
                    sys::xsk_socket__create(
                        &mut sock,
                        cname.as_ptr(),
                        queue,
                        umem.as_ptr(),
                        std::ptr::null_mut(),
                        &mut *tx,
                        &scfg,
                    )
                };
                if r != -libc::EBUSY {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if r == 0 {
                if let Some(s) = NonNull::new(sock) {
                    got = Some((s, mode));
                    break;
                }
            }
            last = Some(std::io::Error::from_raw_os_error(-r));
        }
        let Some((sock, mode)) = got else {
            // SAFETY: no socket uses the UMEM; deleted once here.
            unsafe { sys::xsk_umem__delete(umem.as_ptr()) };
            return Err(IoError::Os {
                what: format!("{ifname} queue {queue}: AF_XDP tx socket"),
                source: last.unwrap_or_else(|| std::io::Error::other("no mode")),
            });
        };
        // SAFETY: `sock` is live.
        let fd = unsafe { sys::xsk_socket__fd(sock.as_ptr()) };
        let mut g = TxGen {
            sock,
            tx,
            umem,
            comp,
            _fill: fill,
            area,
            fd,
            mode,
            frames,
            frame_len: flows.len() as u32,
            ring_size: cfg.ring_size,
            outstanding: 0,
            seq: 0,
            rewrite_flows: rewrite,
            stats: TxStats::default(),
            budget: None,
        };
        if cfg.tx_budget > 0 && mode == super::BindMode::Copy {
            g.budget = g.set_budget(cfg.tx_budget);
        }
        for j in 0..frames {
            let f = flows.frame(u64::from(j));
            g.frame_mut(j)[..f.len()].copy_from_slice(&f);
        }
        Ok(g)
    }

    fn set_budget(&mut self, want: u32) -> Option<u32> {
        let v: u32 = want.min(self.ring_size);
        set_tx_budget(self.fd, v).then_some(v)
    }

    /// Frame `j`'s bytes in the UMEM. Only called for a frame the kernel
    /// does not hold (at load, or when its previous send has completed: see
    /// `send`).
    fn frame_mut(&mut self, j: u32) -> &mut [u8] {
        let at = (j % self.frames) as usize * FRAME_SIZE;
        // SAFETY: `at + FRAME_SIZE` is inside the area (j % frames); the
        // `&mut self` borrow makes this the only userspace reference, and the
        // kernel does not touch a frame outside the tx ring (callers'
        // contract, above).
        unsafe { std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(at), FRAME_SIZE) }
    }

    /// The bind mode the socket got.
    pub fn mode(&self) -> super::BindMode {
        self.mode
    }

    /// The copy-mode kick budget set, if the kernel took it.
    pub fn budget(&self) -> Option<u32> {
        self.budget
    }

    /// UMEM frames (each written once at open).
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Whether frames are rewritten before each send (more flows than frames).
    pub fn rewrites(&self) -> bool {
        self.rewrite_flows.is_some()
    }

    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// Frames on the tx ring or in flight.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Takes back completed frames.
    #[inline]
    pub fn reclaim(&mut self) -> u32 {
        if self.outstanding == 0 {
            return 0;
        }
        let mut idx = 0;
        // SAFETY: the completion ring is live and consumed only here.
        let n = unsafe { sys::xsk_ring_cons__peek(&mut *self.comp, self.outstanding, &mut idx) };
        if n > 0 {
            // SAFETY: releases exactly the n entries peeked.
            unsafe { sys::xsk_ring_cons__release(&mut *self.comp, n) };
            self.outstanding -= n;
            self.stats.completed += u64::from(n);
        }
        n
    }

    /// Reclaims completions, puts up to `max` more frames on the tx ring
    /// (as many as fit) and kicks the kernel if it asks. Returns how many
    /// were queued.
    #[inline]
    pub fn send(&mut self, flows: &Flows, max: u32) -> u32 {
        self.reclaim();
        let room = (self.ring_size - self.outstanding).min(max);
        let mut queued = 0;
        if room > 0 {
            let mut idx = 0;
            // SAFETY: the tx ring is live and produced only here.
            let got = unsafe { sys::xsk_ring_prod__reserve(&mut *self.tx, room, &mut idx) };
            for k in 0..got {
                let seq = self.seq + u64::from(k);
                let j = (seq % u64::from(self.frames)) as u32;
                if let Some(n) = self.rewrite_flows {
                    // Frame j was last sent `frames` (>= 2 x ring) sends ago;
                    // at most `ring_size` sends are outstanding, so the
                    // kernel is done with it.
                    flows.write_flow(self.frame_mut(j), seq % n);
                    self.stats.rewrites += 1;
                }
                // SAFETY: slot idx+k was reserved above, written once before
                // submit.
                let d = unsafe { &mut *sys::xsk_ring_prod__tx_desc(&mut *self.tx, idx + k) };
                d.addr = u64::from(j) * FRAME_SIZE as u64;
                d.len = self.frame_len;
                d.options = 0;
            }
            // SAFETY: submits exactly the `got` slots reserved and written.
            unsafe { sys::xsk_ring_prod__submit(&mut *self.tx, got) };
            self.seq += u64::from(got);
            self.outstanding += got;
            self.stats.submitted += u64::from(got);
            queued = got;
        }
        self.kick();
        queued
    }

    /// Kicks the kernel to transmit if the ring asks for it (always in copy
    /// mode) and frames are waiting.
    #[inline]
    pub fn kick(&mut self) {
        if self.outstanding == 0 {
            return;
        }
        // SAFETY: reads the flags word of a live ring.
        if unsafe { sys::xsk_ring_prod__needs_wakeup(&*self.tx) } == 0 {
            return;
        }
        // SAFETY: a zero-length sendto on our own socket with null buffers,
        // the documented AF_XDP tx kick.
        let r = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        self.stats.kicks += 1;
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if !matches!(
                e,
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR)
            ) {
                self.stats.kick_errors += 1;
            }
        }
    }

    /// Kicks and reclaims until every frame queued has completed, or until
    /// `deadline` passes.
    pub fn drain(&mut self, deadline: std::time::Instant) {
        while self.outstanding > 0 && std::time::Instant::now() < deadline {
            self.kick();
            if self.reclaim() == 0 {
                std::thread::yield_now();
            }
        }
    }

    /// The kernel's counters for this socket.
    pub fn kernel_stats(&self) -> KernelTxStats {
        // SAFETY: xdp_statistics is plain integers; all-zero is valid.
        let mut s: sys::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `s`, a live local.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                SOL_XDP,
                XDP_STATISTICS,
                (&mut s as *mut sys::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return KernelTxStats::default();
        }
        KernelTxStats {
            tx_invalid_descs: s.tx_invalid_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        }
    }
}

/// `ifname`'s MAC address and MTU, asked of the kernel (works in a network
/// namespace entered with [`super::netns`], where `/sys` still shows the
/// old one).
pub fn mac_and_mtu(ifname: &str) -> Result<([u8; 6], u32), IoError> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(IoError::NoSuchInterface(ifname.into()));
    }
    let os = |what: &str| IoError::Os {
        what: format!("{ifname}: {what}"),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: socket() has no memory preconditions; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os("socket"));
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR writes into the ifreq we own, for our own fd.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    if r != 0 {
        // SAFETY: closes the fd opened above, once.
        unsafe { libc::close(fd) };
        return Err(IoError::NoSuchInterface(ifname.into()));
    }
    let mut mac = [0u8; 6];
    // SAFETY: after SIOCGIFHWADDR the union holds a sockaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    // SAFETY: as above, SIOCGIFMTU.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    // SAFETY: closes the fd opened above, once.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(os("SIOCGIFMTU"));
    }
    Ok((mac, mtu as u32))
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Installs SIGINT and SIGTERM handlers that set the returned flag (a
/// generator stops cleanly and still prints its figures).
pub fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe; `signal` has no other preconditions.
    unsafe {
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
    &STOP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v6: bool, vx: Option<bool>) -> PacketSpec {
        let (s, d): (IpAddr, IpAddr) = if v6 {
            ("fd00::2".parse().unwrap(), "fd00::1:2".parse().unwrap())
        } else {
            ("10.0.0.2".parse().unwrap(), "10.0.1.2".parse().unwrap())
        };
        PacketSpec {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: s,
            dst_ip: d,
            sport: 65000,
            sports: 500,
            src_ips: 7,
            dport: 53,
            size: 64,
            flows: 3000,
            vxlan: vx.map(|o6| VxlanSpec {
                outer_src: if o6 {
                    "fd01::1".parse().unwrap()
                } else {
                    "192.168.0.1".parse().unwrap()
                },
                outer_dst: if o6 {
                    "fd01::2".parse().unwrap()
                } else {
                    "192.168.0.2".parse().unwrap()
                },
                vni: 0x123456,
                port: 4789,
                inner_src_mac: [2, 0, 0, 0, 1, 1],
                inner_dst_mac: [2, 0, 0, 0, 1, 2],
            }),
        }
    }

    /// Rebuilding flow k from scratch (a spec whose first port/address is
    /// flow k's) gives the same bytes as the incremental rewrite.
    #[test]
    fn incremental_rewrites_equal_frames_built_from_scratch() {
        for (v6, vx) in [
            (false, None),
            (true, None),
            (false, Some(false)),
            (true, Some(true)),
            (false, Some(true)),
        ] {
            let f = Flows::new(spec(v6, vx)).unwrap();
            for k in [0u64, 1, 499, 500, 1234, 2999, 3000, 77_777] {
                let (port, lo) = f.flow_key(k);
                let mut s = spec(v6, vx);
                s.sport = port;
                s.sports = 1;
                s.src_ips = 1;
                s.src_ip = match s.src_ip {
                    IpAddr::V4(_) => IpAddr::V4(lo.into()),
                    IpAddr::V6(a) => {
                        let mut o = a.octets();
                        o[12..].copy_from_slice(&lo.to_be_bytes());
                        IpAddr::V6(o.into())
                    }
                };
                let mut fresh = Flows::new(s).unwrap().template().to_vec();
                if let Some(os) = f.at.outer_sport {
                    // The fresh build numbers its flow 0; patch the outer
                    // port and redo the outer checksum by hand.
                    put16(&mut fresh, os, outer_sport(k % 3000));
                    if let (Some(oc), Some(v)) = (f.at.outer_csum, &f.spec.vxlan) {
                        put16(&mut fresh, oc, 0);
                        let c = udp_csum(&v.outer_src, &v.outer_dst, &fresh[os..]);
                        put16(&mut fresh, oc, c);
                    }
                }
                // Rewrite from a frame that holds another flow.
                let mut g = f.frame(k + 17);
                f.write_flow(&mut g, k);
                assert_eq!(g, fresh, "v6={v6} vxlan={vx:?} flow {k}");
            }
        }
    }

    #[test]
    fn sizes_outside_64_to_1518_are_refused() {
        let mut s = spec(false, None);
        s.size = 63;
        assert!(Flows::new(s.clone()).is_err());
        s.size = 1519;
        assert!(Flows::new(s.clone()).is_err());
        s.size = 1518;
        assert_eq!(Flows::new(s).unwrap().len(), 1514);
    }
}
