//! The built service table and its builder.

use super::affinity::{AffinityTable, MAX_BACKENDS};
use super::maglev::{self, Perm};
use super::{hash, ip_bytes, BackendId, BackendSpec, Scope, ServiceSpec, SvcId, VipKind};
use rustc_hash::FxBuildHasher;
use std::net::IpAddr;
use std::sync::Arc;

type FxHashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;
type FxHashSet<K> = hashbrown::HashSet<K, FxBuildHasher>;

/// One (scope, family) Maglev table; `None` = no usable backend. Tables are
/// shared (`Arc`) so a table built by [`ServiceTableBuilder::build_reusing`]
/// takes an unchanged Service's tables from the old one without a copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct MaglevRef {
    table: Option<Arc<[u16]>>,
    usable: u32,
}

impl MaglevRef {
    #[inline]
    fn size(&self) -> u32 {
        self.table.as_ref().map_or(0, |t| t.len() as u32)
    }
}

#[inline]
fn fam_index(family: u8) -> usize {
    usize::from(family == 6)
}

#[inline]
fn usable_bit(scope: Scope, fam: usize) -> u8 {
    1 << (scope as usize * 2 + fam)
}

/// One Service port as built: its settings and where its backends and tables are.
#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    proto: u8,
    port: u16,
    node_port: Option<u16>,
    ext_local: bool,
    int_local: bool,
    affinity_timeout_s: Option<u32>,
    vips: Vec<(IpAddr, VipKind)>,
    first_backend: u32,
    backend_count: u32,
    /// `[scope][family: 0 = IPv4, 1 = IPv6]`.
    tables: [[MaglevRef; 2]; 2],
}

impl Service {
    pub fn name(&self) -> &str {
        &self.name
    }
    #[inline]
    pub fn proto(&self) -> u8 {
        self.proto
    }
    #[inline]
    pub fn port(&self) -> u16 {
        self.port
    }
    #[inline]
    pub fn node_port(&self) -> Option<u16> {
        self.node_port
    }
    /// externalTrafficPolicy: Local.
    #[inline]
    pub fn ext_local(&self) -> bool {
        self.ext_local
    }
    /// internalTrafficPolicy: Local.
    #[inline]
    pub fn int_local(&self) -> bool {
        self.int_local
    }
    /// sessionAffinity ClientIP timeout; None = no affinity.
    #[inline]
    pub fn affinity_timeout_s(&self) -> Option<u32> {
        self.affinity_timeout_s
    }
    pub fn vips(&self) -> &[(IpAddr, VipKind)] {
        &self.vips
    }
    /// The ids of all its backends (usable or not), duplicates of an ip:port removed.
    pub fn backend_ids(&self) -> impl Iterator<Item = BackendId> {
        (self.first_backend..self.first_backend + self.backend_count).map(BackendId)
    }
    /// How many backends `select` chooses among for this scope and family (4 or 6).
    pub fn usable_count(&self, scope: Scope, family: u8) -> u32 {
        self.tables[scope as usize][fam_index(family)].usable
    }
    /// The Maglev table size for this scope and family (0 when nothing is usable).
    pub fn maglev_size(&self, scope: Scope, family: u8) -> u32 {
        self.tables[scope as usize][fam_index(family)].size()
    }
}

/// One backend (endpoint address and port) of one Service.
#[derive(Clone, Debug)]
pub struct Backend {
    ip: IpAddr,
    ip_bytes: [u8; 16],
    family: u8,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
    svc: SvcId,
    /// Bit `scope * 2 + family index`: in that usable set.
    usable: u8,
}

impl Backend {
    #[inline]
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
    /// The address in FlowKey form: IPv4 in the first 4 bytes, the rest zero.
    #[inline]
    pub fn ip_bytes(&self) -> [u8; 16] {
        self.ip_bytes
    }
    /// The IPv4 address bytes (zero for an IPv6 backend).
    #[inline]
    pub fn ipv4_bytes(&self) -> [u8; 4] {
        [
            self.ip_bytes[0],
            self.ip_bytes[1],
            self.ip_bytes[2],
            self.ip_bytes[3],
        ]
    }
    /// 4 or 6.
    #[inline]
    pub fn family(&self) -> u8 {
        self.family
    }
    #[inline]
    pub fn port(&self) -> u16 {
        self.port
    }
    #[inline]
    pub fn ready(&self) -> bool {
        self.ready
    }
    #[inline]
    pub fn serving(&self) -> bool {
        self.serving
    }
    #[inline]
    pub fn terminating(&self) -> bool {
        self.terminating
    }
    /// On this node.
    #[inline]
    pub fn local(&self) -> bool {
        self.local
    }
    /// The Service it belongs to.
    #[inline]
    pub fn service(&self) -> SvcId {
        self.svc
    }
    /// Whether `select` may return it for this scope (for its own family).
    #[inline]
    pub fn usable(&self, scope: Scope) -> bool {
        self.usable & usable_bit(scope, fam_index(self.family)) != 0
    }
}

/// Why a service table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("maglev_max_size {0} is not a prime")]
    MaglevSizeNotPrime(u32),
    #[error("service {service:?} has {count} distinct backends; at most 65535")]
    TooManyBackendsInService { service: String, count: usize },
    #[error("{count} backends in all; at most {max}")]
    TooManyBackends { count: usize, max: u32 },
}

/// A VIP or NodePort claimed by two Services: the first added keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conflict {
    Vip {
        ip: IpAddr,
        port: u16,
        proto: u8,
        kept: SvcId,
        dropped: SvcId,
    },
    NodePort {
        port: u16,
        proto: u8,
        kept: SvcId,
        dropped: SvcId,
    },
}

/// VIP map key: the address as a u128 (FlowKey byte form) and `port | proto | family`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct VipKey(u128, u32);

#[inline]
fn vip_key(ip: &[u8; 16], family: u8, port: u16, proto: u8) -> VipKey {
    VipKey(
        u128::from_be_bytes(*ip),
        (u32::from(port) << 16) | (u32::from(proto) << 8) | u32::from(family),
    )
}

/// Collects Service specs; [`build`](Self::build) turns them into a [`ServiceTable`].
#[derive(Clone, Debug)]
pub struct ServiceTableBuilder {
    maglev_max_size: u32,
    specs: Vec<ServiceSpec>,
}

impl ServiceTableBuilder {
    /// `maglev_max_size` caps every Maglev table; it must be prime (checked by `build`).
    pub fn new(maglev_max_size: u32) -> ServiceTableBuilder {
        ServiceTableBuilder {
            maglev_max_size,
            specs: Vec::new(),
        }
    }

    /// Adds a Service port; its id in the built table is the one returned.
    pub fn add(&mut self, spec: ServiceSpec) -> SvcId {
        let id = SvcId(u32::try_from(self.specs.len()).unwrap_or(u32::MAX));
        self.specs.push(spec);
        id
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// Builds every index and Maglev table.
    pub fn build(self) -> Result<ServiceTable, BuildError> {
        self.build_inner(None)
    }

    /// [`build`](Self::build), taking each Maglev table from `old` (the
    /// table this one replaces) when the Service of the same name there had
    /// the same usable set for that scope and family (same endpoints ip:port
    /// in the same sorted order, hence the same table size and the same
    /// permutations) and the same size cap: the old table's entries are
    /// copied, relabelled to the new backend positions (a plain copy when
    /// they did not move). The result equals `build`'s; only changed
    /// Services pay for Maglev population, so one EndpointSlice change is
    /// cheap at any table size.
    pub fn build_reusing(self, old: &ServiceTable) -> Result<ServiceTable, BuildError> {
        self.build_inner(Some(old))
    }

    fn build_inner(self, old: Option<&ServiceTable>) -> Result<ServiceTable, BuildError> {
        let max = self.maglev_max_size;
        if !maglev::is_prime(max) {
            return Err(BuildError::MaglevSizeNotPrime(max));
        }
        let total: usize = self.specs.iter().map(|s| s.backends.len()).sum();
        let n_vips: usize = self.specs.iter().map(|s| s.vips.len()).sum();
        let mut t = ServiceTable {
            services: Vec::with_capacity(self.specs.len()),
            backends: Vec::with_capacity(total),
            maglev_entries: 0,
            vips: FxHashMap::with_capacity_and_hasher(n_vips, Default::default()),
            nodeports: FxHashMap::with_capacity_and_hasher(
                self.specs.iter().filter(|s| s.node_port.is_some()).count(),
                Default::default(),
            ),
            conflicts: Vec::new(),
            maglev_max_size: max,
        };
        let mut scratch = Scratch::default();
        let mut reuse = old.filter(|o| o.maglev_max_size == max).map(|o| Reuse {
            old: o,
            names: None,
        });
        for (i, spec) in self.specs.into_iter().enumerate() {
            let id = SvcId(i as u32);
            let prev = reuse.as_mut().and_then(|r| r.find(i, &spec.name));
            t.add_service(id, spec, max, &mut scratch, prev)?;
        }
        if t.backends.len() > MAX_BACKENDS as usize {
            return Err(BuildError::TooManyBackends {
                count: t.backends.len(),
                max: MAX_BACKENDS,
            });
        }
        Ok(t)
    }
}

/// Buffers reused across services while building.
#[derive(Default)]
struct Scratch {
    seen: FxHashSet<([u8; 16], u16)>,
    /// Per backend of the current service: (h1, h2) of its ip:port.
    hashes: Vec<(u64, u64)>,
    usable: Vec<u16>,
    previous: Vec<u16>,
    perms: Vec<Perm>,
    next: Vec<u32>,
    /// The old Service's usable set being compared, and old → new positions.
    old_usable: Vec<u16>,
    remap: Vec<u16>,
    /// The Maglev table being populated.
    table: Vec<u16>,
}

/// The table a build reuses Maglev tables from, and its Services by name
/// (built on the first Service not found at its own position).
struct Reuse<'a> {
    old: &'a ServiceTable,
    names: Option<FxHashMap<&'a str, u32>>,
}

impl<'a> Reuse<'a> {
    fn find(&mut self, i: usize, name: &str) -> Option<(&'a ServiceTable, &'a Service)> {
        let old = self.old;
        if let Some(s) = old.services.get(i).filter(|s| s.name == name) {
            return Some((old, s));
        }
        let names = self.names.get_or_insert_with(|| {
            old.services
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), i as u32))
                .collect()
        });
        let j = *names.get(name)?;
        Some((old, &old.services[j as usize]))
    }
}

/// The immutable Service table the workers read.
///
/// Usable backends, per [`Scope`] and family, as kube-proxy decides them: with
/// `Scope::Local` only backends on this node are candidates; among the candidates the
/// ready ones; if none is ready, those both serving and terminating (so connections
/// drain to pods shutting down gracefully rather than fail); if none, nothing (the
/// pipeline answers ICMP port unreachable, or drops for externalTrafficPolicy Local).
#[derive(Clone, Debug)]
pub struct ServiceTable {
    services: Vec<Service>,
    backends: Vec<Backend>,
    /// Maglev entries across all Services (a shared Local table counted once).
    maglev_entries: usize,
    vips: FxHashMap<VipKey, (SvcId, VipKind)>,
    nodeports: FxHashMap<(u16, u8), SvcId>,
    conflicts: Vec<Conflict>,
    /// The cap it was built with (a reusing build needs the same).
    maglev_max_size: u32,
}

impl ServiceTable {
    fn add_service(
        &mut self,
        id: SvcId,
        spec: ServiceSpec,
        max: u32,
        s: &mut Scratch,
        prev: Option<(&ServiceTable, &Service)>,
    ) -> Result<(), BuildError> {
        let first = self.backends.len();
        let tables = match prev.and_then(|(old, os)| self.copy_unchanged(id, &spec, old, os)) {
            Some(tables) => tables,
            None => {
                s.seen.clear();
                s.hashes.clear();
                for b in &spec.backends {
                    let (bytes, family) = ip_bytes(b.ip);
                    if !s.seen.insert((bytes, b.port)) {
                        continue; // the same endpoint listed twice (e.g. in two slices)
                    }
                    self.backends.push(backend(b, bytes, family, id));
                }
                let count = self.backends.len() - first;
                if count > usize::from(u16::MAX) {
                    return Err(BuildError::TooManyBackendsInService {
                        service: spec.name,
                        count,
                    });
                }
                let [c4, l4] = self.scope_tables(first, 0, max, s, prev);
                let [c6, l6] = self.scope_tables(first, 1, max, s, prev);
                [[c4, c6], [l4, l6]]
            }
        };
        let count = self.backends.len() - first;
        for &(ip, kind) in &spec.vips {
            let (bytes, family) = ip_bytes(ip);
            let key = vip_key(&bytes, family, spec.port, spec.proto);
            match self.vips.entry(key) {
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert((id, kind));
                }
                hashbrown::hash_map::Entry::Occupied(o) => {
                    if o.get().0 != id {
                        self.conflicts.push(Conflict::Vip {
                            ip,
                            port: spec.port,
                            proto: spec.proto,
                            kept: o.get().0,
                            dropped: id,
                        });
                    }
                }
            }
        }
        if let Some(np) = spec.node_port {
            match self.nodeports.entry((np, spec.proto)) {
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert(id);
                }
                hashbrown::hash_map::Entry::Occupied(o) => {
                    self.conflicts.push(Conflict::NodePort {
                        port: np,
                        proto: spec.proto,
                        kept: *o.get(),
                        dropped: id,
                    });
                }
            }
        }
        self.services.push(Service {
            name: spec.name,
            proto: spec.proto,
            port: spec.port,
            node_port: spec.node_port,
            ext_local: spec.ext_local,
            int_local: spec.int_local,
            affinity_timeout_s: spec.affinity_timeout_s,
            vips: spec.vips,
            first_backend: first as u32,
            backend_count: count as u32,
            tables,
        });
        Ok(())
    }

    /// The fast path of a reusing build: when `spec` lists exactly the
    /// backends (addresses, ports, conditions, in order) that the old
    /// Service `os` was built from, its backends (usable marks included) and
    /// its Maglev tables (shared, not copied) are taken as they are. An old
    /// list equal to the new one has no duplicates (the old one was deduped),
    /// so nothing else can differ. None if anything differs.
    fn copy_unchanged(
        &mut self,
        id: SvcId,
        spec: &ServiceSpec,
        old: &ServiceTable,
        os: &Service,
    ) -> Option<[[MaglevRef; 2]; 2]> {
        let ob = old
            .backends
            .get(os.first_backend as usize..(os.first_backend + os.backend_count) as usize)?;
        let same = ob.len() == spec.backends.len()
            && ob.iter().zip(&spec.backends).all(|(o, b)| {
                o.ip == b.ip
                    && o.port == b.port
                    && o.ready == b.ready
                    && o.serving == b.serving
                    && o.terminating == b.terminating
                    && o.local == b.local
            });
        if !same {
            return None;
        }
        self.backends.extend(ob.iter().map(|o| Backend {
            svc: id,
            ..o.clone()
        }));
        for fam in 0..2 {
            let [c, l] = [&os.tables[0][fam], &os.tables[1][fam]];
            self.maglev_entries += c.size() as usize;
            let shared = matches!((&c.table, &l.table), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
            if !shared {
                self.maglev_entries += l.size() as usize;
            }
        }
        Some(os.tables.clone())
    }

    /// Marks the usable backends of the service starting at `first` and builds its
    /// Maglev tables for one family: `[cluster, local]`.
    fn scope_tables(
        &mut self,
        first: usize,
        fam: usize,
        max: u32,
        s: &mut Scratch,
        prev: Option<(&ServiceTable, &Service)>,
    ) -> [MaglevRef; 2] {
        let mut out = [MaglevRef::default(), MaglevRef::default()];
        for scope in [Scope::Cluster, Scope::Local] {
            usable_set(&self.backends[first..], scope, fam, &mut s.usable);
            for &i in &s.usable {
                self.backends[first + usize::from(i)].usable |= usable_bit(scope, fam);
            }
            if scope == Scope::Local && s.usable == s.previous {
                // All usable backends are local: share the cluster table.
                out[1] = out[0].clone();
                continue;
            }
            let t = match prev {
                Some((old, os)) => match self.reuse_maglev(first, max, s, old, os, scope, fam) {
                    Some(r) => r,
                    None => self.add_maglev(first, max, s),
                },
                None => self.add_maglev(first, max, s),
            };
            self.maglev_entries += t.size() as usize;
            out[scope as usize] = t;
            std::mem::swap(&mut s.previous, &mut s.usable);
        }
        out
    }

    /// Appends a copy of `os`'s Maglev table for (`scope`, `fam`) if its
    /// usable set is `s.usable`'s (same ip:port sequence), relabelled from
    /// old to new backend positions; None if the sets differ.
    #[allow(clippy::too_many_arguments)]
    fn reuse_maglev(
        &mut self,
        first: usize,
        max: u32,
        s: &mut Scratch,
        old: &ServiceTable,
        os: &Service,
        scope: Scope,
        fam: usize,
    ) -> Option<MaglevRef> {
        let ot = &os.tables[scope as usize][fam];
        let n = s.usable.len();
        if ot.usable as usize != n || ot.size() != maglev::table_size(n, max) {
            return None;
        }
        if n == 0 {
            return Some(MaglevRef::default());
        }
        let ob = old
            .backends
            .get(os.first_backend as usize..(os.first_backend + os.backend_count) as usize)?;
        usable_set(ob, scope, fam, &mut s.old_usable);
        let mine = &self.backends[first..];
        let same = s.old_usable.len() == n
            && s.old_usable.iter().zip(&s.usable).all(|(&o, &m)| {
                let (a, b) = (&ob[usize::from(o)], &mine[usize::from(m)]);
                a.ip_bytes == b.ip_bytes && a.port == b.port
            });
        if !same {
            return None;
        }
        let table = ot.table.as_ref()?;
        if s.old_usable == s.usable {
            return Some(MaglevRef {
                table: Some(Arc::clone(table)),
                usable: n as u32,
            });
        }
        {
            s.remap.clear();
            s.remap.resize(ob.len(), 0);
            for (&o, &m) in s.old_usable.iter().zip(&s.usable) {
                s.remap[usize::from(o)] = m;
            }
            let remap = &s.remap;
            let t: Arc<[u16]> = table
                .iter()
                .map(|&i| remap.get(usize::from(i)).copied().unwrap_or(0))
                .collect();
            Some(MaglevRef {
                table: Some(t),
                usable: n as u32,
            })
        }
    }

    /// Appends the Maglev table for `s.usable` (already in identity order).
    fn add_maglev(&mut self, first: usize, max: u32, s: &mut Scratch) -> MaglevRef {
        let n = s.usable.len();
        let size = maglev::table_size(n, max);
        if size == 0 {
            return MaglevRef::default();
        }
        if s.hashes.is_empty() {
            // The service's backend hashes, once, on its first table built.
            s.hashes.extend(self.backends[first..].iter().map(|b| {
                (
                    hash::backend(hash::SEED_OFFSET, &b.ip_bytes, b.family, b.port),
                    hash::backend(hash::SEED_SKIP, &b.ip_bytes, b.family, b.port),
                )
            }));
        }
        s.perms.clear();
        s.perms.extend(s.usable.iter().map(|&i| {
            let (h1, h2) = s.hashes[usize::from(i)];
            Perm::new(h1, h2, size, i)
        }));
        s.table.clear();
        s.table.resize(size as usize, 0);
        maglev::populate(&s.perms, &mut s.table, &mut s.next);
        MaglevRef {
            table: Some(Arc::from(&s.table[..])),
            usable: n as u32,
        }
    }

    /// The Service and kind for a packet to `ip:port` over `proto`.
    #[inline]
    pub fn lookup_vip(&self, ip: IpAddr, port: u16, proto: u8) -> Option<(SvcId, VipKind)> {
        let (bytes, family) = ip_bytes(ip);
        self.lookup_vip_bytes(&bytes, family, port, proto)
    }

    /// [`lookup_vip`](Self::lookup_vip) on FlowKey-form bytes (IPv4 in the first 4).
    #[inline]
    pub fn lookup_vip_bytes(
        &self,
        ip: &[u8; 16],
        family: u8,
        port: u16,
        proto: u8,
    ) -> Option<(SvcId, VipKind)> {
        self.vips.get(&vip_key(ip, family, port, proto)).copied()
    }

    /// The Service exposed on this node's `port` for `proto`.
    #[inline]
    pub fn lookup_nodeport(&self, port: u16, proto: u8) -> Option<SvcId> {
        self.nodeports.get(&(port, proto)).copied()
    }

    #[inline]
    pub fn service(&self, id: SvcId) -> Option<&Service> {
        self.services.get(id.0 as usize)
    }

    #[inline]
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize)
    }

    /// Picks the backend for a new connection to `svc` from `client`, or None when the
    /// scope has no usable backend of the client's family.
    ///
    /// Without affinity the Maglev slot is `flow_hash % M`. With sessionAffinity
    /// ClientIP, a still-fresh and still-usable entry in `affinity` wins; otherwise the
    /// slot comes from a hash of the client address alone, and the choice is recorded.
    /// Every use refreshes the entry (as kube-proxy's `recent --set` does).
    #[inline]
    pub fn select(
        &self,
        svc: SvcId,
        scope: Scope,
        flow_hash: u64,
        client: IpAddr,
        now: u64,
        affinity: &AffinityTable,
    ) -> Option<BackendId> {
        let s = self.services.get(svc.0 as usize)?;
        let (client_bytes, family) = ip_bytes(client);
        let fam = fam_index(family);
        let table = s.tables[scope as usize][fam].table.as_deref()?;
        let size = table.len() as u64;
        let Some(timeout) = s.affinity_timeout_s else {
            let i = table.get((flow_hash % size) as usize)?;
            return Some(BackendId(s.first_backend + u32::from(*i)));
        };
        if let Some(b) = affinity.lookup(svc, client, now, timeout) {
            let ok = self
                .backends
                .get(b.0 as usize)
                .is_some_and(|be| be.svc == svc && be.usable & usable_bit(scope, fam) != 0);
            if ok {
                affinity.record(svc, client, b, now);
                return Some(b);
            }
        }
        let h = hash::client(&client_bytes, family);
        let i = table.get((h % size) as usize)?;
        let b = BackendId(s.first_backend + u32::from(*i));
        affinity.record(svc, client, b, now);
        Some(b)
    }

    /// Number of Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Number of backends across all Services.
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Every Service with its id.
    pub fn services(&self) -> impl Iterator<Item = (SvcId, &Service)> {
        self.services
            .iter()
            .enumerate()
            .map(|(i, s)| (SvcId(i as u32), s))
    }

    /// The Maglev table for a scope and family (4 or 6): backend indexes into the
    /// service's list (add the first of [`Service::backend_ids`]). For tests and
    /// `twillctl`.
    pub fn maglev(&self, svc: SvcId, scope: Scope, family: u8) -> &[u16] {
        self.services
            .get(svc.0 as usize)
            .and_then(|s| s.tables[scope as usize][fam_index(family)].table.as_deref())
            .unwrap_or(&[])
    }

    /// Total Maglev entries (2 bytes each) across all Services.
    pub fn maglev_entries(&self) -> usize {
        self.maglev_entries
    }

    /// VIPs and NodePorts claimed twice; the first Service added kept each.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }
}

fn backend(b: &BackendSpec, ip_bytes: [u8; 16], family: u8, svc: SvcId) -> Backend {
    Backend {
        ip: b.ip,
        ip_bytes,
        family,
        port: b.port,
        ready: b.ready,
        serving: b.serving,
        terminating: b.terminating,
        local: b.local,
        svc,
        usable: 0,
    }
}

/// kube-proxy's usable set of `mine` (one service's backends) for a scope and family,
/// as indexes into `mine`, sorted by ip:port so the Maglev fill order does not depend
/// on the order endpoints were listed in.
fn usable_set(mine: &[Backend], scope: Scope, fam: usize, out: &mut Vec<u16>) {
    let candidate =
        |b: &Backend| fam_index(b.family) == fam && (scope == Scope::Cluster || b.local);
    out.clear();
    out.extend(
        mine.iter()
            .enumerate()
            .filter(|(_, b)| candidate(b) && b.ready)
            .map(|(i, _)| i as u16),
    );
    if out.is_empty() {
        out.extend(
            mine.iter()
                .enumerate()
                .filter(|(_, b)| candidate(b) && b.serving && b.terminating)
                .map(|(i, _)| i as u16),
        );
    }
    out.sort_unstable_by_key(|&i| {
        let b = &mine[usize::from(i)];
        (b.ip_bytes, b.port)
    });
}

#[cfg(test)]
mod reuse_tests;
