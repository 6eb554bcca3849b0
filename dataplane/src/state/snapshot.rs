//! The node's state as control publishes it: Services, remote nodes and local
//! pods, with a versioned binary codec so the bytes in a shared-memory slot
//! are understood by exactly the builds that share the version.
//!
//! The format is hand-written little-endian (no serde: the dataplane types
//! are not serde types, and a fixed format is easier to keep stable and
//! fast). Writer: control (`encode_into`, into a reused buffer); reader: the
//! dataplane (`decode`), which trusts nothing: every length is checked
//! against the bytes left, every enum code and prefix length is validated,
//! and a count never reserves more than the bytes left could hold, so bad
//! bytes give a [`DecodeError`], never a panic or a huge allocation.
//!
//! ```text
//! header   magic "TWSN" u32 | version u32 | revision u64 | built_ns u64
//! services u32 count, each:
//!            name str | proto u8 | port u16 | vips u32 × (ip, kind u8)
//!            node_port opt u16 | flags u8 (ext_local, int_local)
//!            affinity opt u32 | backends u32 × (ip, port u16, flags u8)
//! remotes  u32 count, each: name str | ipv4 opt | ipv6 opt
//!            pod_cidrs u32 × (ip, len u8) | vtep_mac 6 | underlay opt mac
//! pods     u32 count, each: name str | interface str | mac 6 | ipv4 opt
//!            ipv6 opt | worker opt u64
//! str = u32 length + UTF-8; ip = family u8 (4|6) + 4|16 bytes;
//! opt = u8 0|1 + value; backend flags: ready 1, serving 2, terminating 4, local 8
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{MacSpec, PodSection, RemoteSection};
use crate::lb::{BackendSpec, ServiceSpec, VipKind};
use crate::route::Prefix;
use crate::Mac;

/// "TWSN".
const MAGIC: u32 = u32::from_le_bytes(*b"TWSN");
/// The codec version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// One published state of the node.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The source revision it was built from (control's counter).
    pub revision: u64,
    /// CLOCK_MONOTONIC ns when control built it (for publish latency).
    pub built_ns: u64,
    pub services: Vec<ServiceSpec>,
    pub remotes: Vec<RemoteSection>,
    pub pods: Vec<PodSection>,
}

/// A snapshot's parts borrowed from wherever they live (control encodes
/// its model's view without copying it into a [`Snapshot`]).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotRef<'a> {
    pub revision: u64,
    pub built_ns: u64,
    pub services: &'a [ServiceSpec],
    pub remotes: &'a [RemoteSection],
    pub pods: &'a [PodSection],
}

/// Why bytes are not a snapshot this build reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("snapshot truncated at byte {at}: {what} needs {need} more bytes")]
    Truncated {
        at: usize,
        need: usize,
        what: &'static str,
    },
    #[error("not a snapshot (magic {found:#010x})")]
    BadMagic { found: u32 },
    #[error("snapshot version {found} is not the version this build reads ({supported})")]
    Version { found: u32, supported: u32 },
    #[error("snapshot byte {at}: bad {what} ({value})")]
    BadValue {
        at: usize,
        what: &'static str,
        value: u64,
    },
    #[error("snapshot byte {at}: {what} is not UTF-8")]
    Utf8 { at: usize, what: &'static str },
    #[error("snapshot has {extra} bytes after its end")]
    Trailing { extra: usize },
}

// ---- encoding ----

struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    #[inline]
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    #[inline]
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    #[inline]
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }
}

fn vip_code(k: VipKind) -> u8 {
    match k {
        VipKind::ClusterIp => 0,
        VipKind::ExternalIp => 1,
        VipKind::LoadBalancer => 2,
    }
}

impl Snapshot {
    /// The encoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_into(&mut v);
        v
    }

    /// Appends the encoding to `out` (reuse one buffer across publishes).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.parts().encode_into(out);
    }

    /// The snapshot as borrowed parts.
    pub fn parts(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            revision: self.revision,
            built_ns: self.built_ns,
            services: &self.services,
            remotes: &self.remotes,
            pods: &self.pods,
        }
    }

    /// Decodes bytes made by [`Snapshot::encode`] of this version.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let mut d = Dec { b: bytes, at: 0 };
        let magic = d.u32("magic")?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        let version = d.u32("version")?;
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::Version {
                found: version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let revision = d.u64("revision")?;
        let built_ns = d.u64("built_ns")?;
        // Smallest encodings bound what a count may reserve.
        let n = d.count("services", 17)?;
        let mut services = Vec::with_capacity(n);
        for _ in 0..n {
            services.push(d.service()?);
        }
        let n = d.count("remotes", 17)?;
        let mut remotes = Vec::with_capacity(n);
        for _ in 0..n {
            remotes.push(d.remote()?);
        }
        let n = d.count("pods", 17)?;
        let mut pods = Vec::with_capacity(n);
        for _ in 0..n {
            pods.push(d.pod()?);
        }
        if d.at != bytes.len() {
            return Err(DecodeError::Trailing {
                extra: bytes.len() - d.at,
            });
        }
        Ok(Snapshot {
            revision,
            built_ns,
            services,
            remotes,
            pods,
        })
    }
}

impl SnapshotRef<'_> {
    /// Appends the encoding to `out` (reuse one buffer across publishes).
    /// Lists longer than `u32::MAX` are not representable; control's tables
    /// are far below that.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let backends: usize = self.services.iter().map(|s| s.backends.len()).sum();
        out.reserve(64 + self.services.len() * 64 + backends * 24);
        let mut e = Enc(out);
        e.u32(MAGIC);
        e.u32(SNAPSHOT_VERSION);
        e.u64(self.revision);
        e.u64(self.built_ns);
        e.count(self.services.len());
        for s in self.services {
            e.str(&s.name);
            e.u8(s.proto);
            e.u16(s.port);
            e.count(s.vips.len());
            for &(ip, kind) in &s.vips {
                e.ip(ip);
                e.u8(vip_code(kind));
            }
            e.opt(s.node_port, |e, p| e.u16(p));
            e.u8(u8::from(s.ext_local) | u8::from(s.int_local) << 1);
            e.opt(s.affinity_timeout_s, |e, t| e.u32(t));
            e.count(s.backends.len());
            for b in &s.backends {
                e.ip(b.ip);
                e.u16(b.port);
                e.u8(u8::from(b.ready)
                    | u8::from(b.serving) << 1
                    | u8::from(b.terminating) << 2
                    | u8::from(b.local) << 3);
            }
        }
        e.count(self.remotes.len());
        for r in self.remotes {
            e.str(&r.name);
            e.opt(r.ipv4, |e, a| e.ip(IpAddr::V4(a)));
            e.opt(r.ipv6, |e, a| e.ip(IpAddr::V6(a)));
            e.count(r.pod_cidrs.len());
            for p in &r.pod_cidrs {
                e.ip(p.addr);
                e.u8(p.len);
            }
            e.0.extend_from_slice(&r.vtep_mac);
            e.opt(r.underlay_mac.get(), |e, m| e.0.extend_from_slice(&m));
        }
        e.count(self.pods.len());
        for p in self.pods {
            e.str(&p.name);
            e.str(&p.interface);
            e.0.extend_from_slice(&p.mac);
            e.opt(p.ipv4, |e, a| e.ip(IpAddr::V4(a)));
            e.opt(p.ipv6, |e, a| e.ip(IpAddr::V6(a)));
            e.opt(p.worker, |e, w| e.u64(w as u64));
        }
    }
}

// ---- decoding ----

struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    #[inline]
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let left = self.b.len() - self.at;
        if n > left {
            return Err(DecodeError::Truncated {
                at: self.at,
                need: n - left,
                what,
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    #[inline]
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    #[inline]
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>(what)?[0])
    }
    #[inline]
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    #[inline]
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    #[inline]
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn bad(&self, what: &'static str, value: u64) -> DecodeError {
        DecodeError::BadValue {
            at: self.at,
            what,
            value,
        }
    }

    /// A count of items of at least `min` bytes each: refused if the bytes
    /// left cannot hold that many, so it never over-reserves.
    fn count(&mut self, what: &'static str, min: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        let left = self.b.len() - self.at;
        if n.saturating_mul(min) > left {
            return Err(DecodeError::Truncated {
                at: self.at,
                need: n.saturating_mul(min) - left,
                what,
            });
        }
        Ok(n)
    }

    fn str(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.u32(what)? as usize;
        let at = self.at;
        let s = self.take(n, what)?;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8 { at, what })
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(what, u64::from(v))),
        }
    }

    #[inline]
    fn ip(&mut self, what: &'static str) -> Result<IpAddr, DecodeError> {
        match self.u8(what)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.arr::<4>(what)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.arr::<16>(what)?))),
            f => Err(self.bad(what, u64::from(f))),
        }
    }

    fn ipv4(&mut self, what: &'static str) -> Result<Option<Ipv4Addr>, DecodeError> {
        if !self.flag(what)? {
            return Ok(None);
        }
        match self.ip(what)? {
            IpAddr::V4(a) => Ok(Some(a)),
            IpAddr::V6(_) => Err(self.bad(what, 6)),
        }
    }

    fn ipv6(&mut self, what: &'static str) -> Result<Option<Ipv6Addr>, DecodeError> {
        if !self.flag(what)? {
            return Ok(None);
        }
        match self.ip(what)? {
            IpAddr::V6(a) => Ok(Some(a)),
            IpAddr::V4(_) => Err(self.bad(what, 4)),
        }
    }

    fn mac(&mut self, what: &'static str) -> Result<Mac, DecodeError> {
        self.arr::<6>(what)
    }

    fn service(&mut self) -> Result<ServiceSpec, DecodeError> {
        let name = self.str("service name")?;
        let proto = self.u8("service proto")?;
        let port = self.u16("service port")?;
        let n = self.count("service vips", 6)?;
        let mut vips = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = self.ip("vip")?;
            let kind = match self.u8("vip kind")? {
                0 => VipKind::ClusterIp,
                1 => VipKind::ExternalIp,
                2 => VipKind::LoadBalancer,
                v => return Err(self.bad("vip kind", u64::from(v))),
            };
            vips.push((ip, kind));
        }
        let node_port = if self.flag("node_port")? {
            Some(self.u16("node_port")?)
        } else {
            None
        };
        let flags = self.u8("service flags")?;
        if flags > 3 {
            return Err(self.bad("service flags", u64::from(flags)));
        }
        let affinity_timeout_s = if self.flag("affinity")? {
            Some(self.u32("affinity")?)
        } else {
            None
        };
        let n = self.count("backends", 8)?;
        let mut backends = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = self.ip("backend ip")?;
            let port = self.u16("backend port")?;
            let f = self.u8("backend flags")?;
            if f > 15 {
                return Err(self.bad("backend flags", u64::from(f)));
            }
            backends.push(BackendSpec {
                ip,
                port,
                ready: f & 1 != 0,
                serving: f & 2 != 0,
                terminating: f & 4 != 0,
                local: f & 8 != 0,
            });
        }
        Ok(ServiceSpec {
            name,
            proto,
            port,
            vips,
            node_port,
            ext_local: flags & 1 != 0,
            int_local: flags & 2 != 0,
            affinity_timeout_s,
            backends,
        })
    }

    fn remote(&mut self) -> Result<RemoteSection, DecodeError> {
        let name = self.str("remote name")?;
        let ipv4 = self.ipv4("remote ipv4")?;
        let ipv6 = self.ipv6("remote ipv6")?;
        let n = self.count("pod_cidrs", 6)?;
        let mut pod_cidrs = Vec::with_capacity(n);
        for _ in 0..n {
            let addr = self.ip("pod_cidr")?;
            let len = self.u8("pod_cidr length")?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(self.bad("pod_cidr length", u64::from(len)));
            }
            pod_cidrs.push(Prefix { addr, len });
        }
        let vtep_mac = self.mac("vtep_mac")?;
        let underlay_mac = if self.flag("underlay_mac")? {
            MacSpec::Mac(self.mac("underlay_mac")?)
        } else {
            MacSpec::Auto
        };
        Ok(RemoteSection {
            name,
            ipv4,
            ipv6,
            pod_cidrs,
            vtep_mac,
            underlay_mac,
        })
    }

    fn pod(&mut self) -> Result<PodSection, DecodeError> {
        let name = self.str("pod name")?;
        let interface = self.str("pod interface")?;
        let mac = self.mac("pod mac")?;
        let ipv4 = self.ipv4("pod ipv4")?;
        let ipv6 = self.ipv6("pod ipv6")?;
        let worker = if self.flag("pod worker")? {
            let w = self.u64("pod worker")?;
            Some(usize::try_from(w).map_err(|_| self.bad("pod worker", w))?)
        } else {
            None
        };
        Ok(PodSection {
            name,
            interface,
            mac,
            ipv4,
            ipv6,
            worker,
        })
    }
}

#[cfg(test)]
mod tests;
