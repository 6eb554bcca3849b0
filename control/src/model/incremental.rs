//! The incremental model: [`Model`] keeps what each Service produced (its
//! specs, health check and reports) and, on the next state, recomputes only
//! the Services whose inputs changed; the steps over the whole node (order,
//! VIP/NodePort conflicts, the backend cap, remote nodes, reports) run on
//! every update exactly as [`super::build`] runs them, so the view equals a
//! full build's.
//!
//! A Service's inputs are its own object, the EndpointSlices naming it, and
//! this node's name and zone. An object is unchanged when it is the same
//! `Arc` as last time (the sources share untouched objects between states),
//! else when its content is equal; a differing `resourceVersion` settles
//! "changed" without comparing. The version alone never settles
//! "unchanged": a manifest edited by hand keeps the version it was exported
//! with. The zone changing (this node's Node relabelled) recomputes every
//! Service.
//!
//! Cost of an update: one ordered walk over the Services and the slices
//! (pointer compares for untouched objects), the changed Services, then the
//! global steps over the specs (a copy, a nearly sorted sort, one hash map
//! pass).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::Resource;

use super::endpoints::{self, SliceRef};
use super::services::{self, Ctx, Out};
use super::{
    complete, nodes, own_node_report, resolve, spec_order, HealthCheck, NodeIdentity, NodeView,
};
use crate::source::{ClusterState, ObjKey, Report};
use dataplane::lb::ServiceSpec;

/// What one EndpointSlice contributes, as last seen.
struct SliceEntry {
    obj: Arc<k8s_openapi::api::discovery::v1::EndpointSlice>,
    /// The Service it belongs to (`namespace`, `kubernetes.io/service-name`)
    /// when it is usable.
    group: Option<ObjKey>,
    /// Why it can belong to no Service.
    report: Option<Report>,
}

/// What one Service produced, as last computed.
struct SvcEntry {
    obj: Arc<k8s_openapi::api::core::v1::Service>,
    out: Out,
    /// Where each of `out.specs` sits in the view's sorted services.
    at: Vec<usize>,
}

/// The node's view kept between states (see the module doc).
pub struct Model {
    node: NodeIdentity,
    /// The zone the cached Services were computed with.
    zone: Option<String>,
    slices: BTreeMap<ObjKey, SliceEntry>,
    /// Usable slices by the Service they name, each list in key order (the
    /// order [`super::build`] hands them to the Service).
    groups: BTreeMap<ObjKey, Vec<ObjKey>>,
    services: BTreeMap<ObjKey, SvcEntry>,
    /// Groups naming a Service that does not exist (their slices reported).
    orphans: BTreeSet<ObjKey>,
    /// Services recomputed by the last update (for tests and logs).
    recomputed: usize,
    /// The last view: patched in place when Services changed only in
    /// content (same spec names), rebuilt when the set of specs changed.
    view: NodeView,
    /// Whether `view` has been assembled once.
    assembled: bool,
    /// The specs of `view` the node-wide steps (conflicts, the backend cap)
    /// changed, sorted: restored from their Services' own specs before
    /// those steps run again, so they run on exactly what `build` sorts.
    touched: Vec<usize>,
    /// Whether the last update changed the view's services or remotes.
    changed: bool,
}

/// One difference between the cached objects and a state's.
enum Change<'s, T> {
    /// New, or different content.
    Upsert(&'s ObjKey, &'s Arc<T>),
    /// Another `Arc` with equal content: keep the result, take the pointer.
    Same(&'s ObjKey, &'s Arc<T>),
    Remove(ObjKey),
}

/// Whether two versions of an object have the same content (see the
/// module doc for the role of `resourceVersion`).
fn same<T: Resource + PartialEq>(a: &Arc<T>, b: &Arc<T>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    let (va, vb) = (&a.meta().resource_version, &b.meta().resource_version);
    if va.is_some() && vb.is_some() && va != vb {
        return false;
    }
    **a == **b
}

/// The differences between `old` (the cache, its object by `obj`) and
/// `new`, both in key order: one merged walk.
fn diff<'s, E, T: Resource + PartialEq>(
    old: &BTreeMap<ObjKey, E>,
    obj: impl Fn(&E) -> &Arc<T>,
    new: &'s BTreeMap<ObjKey, Arc<T>>,
) -> Vec<Change<'s, T>> {
    use std::cmp::Ordering::*;
    let mut out = Vec::new();
    let mut o = old.iter().peekable();
    for (k, n) in new {
        loop {
            match o.peek().map(|(ok, e)| (ok.cmp(&k), *ok, *e)) {
                Some((Less, ok, _)) => {
                    out.push(Change::Remove(ok.clone()));
                    o.next();
                }
                Some((Equal, _, e)) => {
                    let a = obj(e);
                    if !Arc::ptr_eq(a, n) {
                        out.push(if same(a, n) {
                            Change::Same(k, n)
                        } else {
                            Change::Upsert(k, n)
                        });
                    }
                    o.next();
                    break;
                }
                _ => {
                    out.push(Change::Upsert(k, n));
                    break;
                }
            }
        }
    }
    out.extend(o.map(|(ok, _)| Change::Remove(ok.clone())));
    out
}

impl Model {
    /// An empty model for `node`: the first [`update`](Self::update)
    /// computes every Service.
    pub fn new(node: NodeIdentity) -> Model {
        Model {
            node,
            zone: None,
            slices: BTreeMap::new(),
            groups: BTreeMap::new(),
            services: BTreeMap::new(),
            orphans: BTreeSet::new(),
            recomputed: 0,
            view: NodeView::default(),
            assembled: false,
            touched: Vec::new(),
            changed: false,
        }
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// How many Services the last update recomputed.
    pub fn recomputed(&self) -> usize {
        self.recomputed
    }

    /// Whether the last update changed the view's services or remote nodes
    /// (what a snapshot carries besides the pods): when not, there is
    /// nothing new to publish.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The view of the last update.
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// The view of `state`: equal to `build(state, node)`.
    pub fn update(&mut self, state: &ClusterState) -> &NodeView {
        // The set of specs (names, order) changed: assemble the view anew.
        let mut structural = !self.assembled;
        let zone = nodes::zone_of(state, &self.node.name);
        if zone != self.zone.as_deref() {
            // Topology hints depend on the zone: every Service again.
            self.services.clear();
            self.zone = zone.map(str::to_owned);
            structural = true;
        }
        if self.slices.is_empty() && self.services.is_empty() {
            // Nothing cached (the first update): build the caches in bulk.
            self.start(state, zone);
            self.assemble(state);
            return &self.view;
        }
        // Services whose slices changed, or whose existence did.
        let mut dirty: BTreeSet<ObjKey> = BTreeSet::new();
        self.apply_slices(state, &mut dirty);

        for change in diff(&self.services, |e| &e.obj, &state.services) {
            match change {
                Change::Upsert(k, _) => {
                    dirty.insert(k.clone());
                }
                Change::Same(k, n) => {
                    if let Some(e) = self.services.get_mut(k) {
                        e.obj = Arc::clone(n);
                    }
                }
                Change::Remove(k) => {
                    dirty.insert(k);
                }
            }
        }

        let ctx = Ctx {
            node: &self.node,
            zone,
        };
        let mut eps = Vec::new();
        let mut refs: Vec<SliceRef<'_>> = Vec::new();
        // Services whose specs changed in content only.
        let mut changed: Vec<&ObjKey> = Vec::new();
        self.recomputed = 0;
        for key in &dirty {
            let group = self.groups.get(key);
            let Some((skey, svc)) = state.services.get_key_value(key) else {
                if let Some(old) = self.services.remove(key) {
                    structural |= !old.out.specs.is_empty();
                }
                if group.is_some() {
                    self.orphans.insert(key.clone());
                } else {
                    self.orphans.remove(key);
                }
                continue;
            };
            self.orphans.remove(key);
            // The slices mirror the state: every grouped key is there.
            push_slices(&mut refs, state, skey, group.into_iter().flatten());
            let mut out = Out::default();
            services::service(skey, svc, &refs, &ctx, &mut out, &mut eps);
            self.recomputed += 1;
            let old = self.services.remove(skey);
            let at = match old {
                Some(old) if same_names(&old.out.specs, &out.specs) => {
                    if old.out.specs != out.specs {
                        changed.push(skey);
                    }
                    old.at
                }
                None if out.specs.is_empty() => Vec::new(),
                _ => {
                    structural = true;
                    Vec::new()
                }
            };
            self.services.insert(
                skey.clone(),
                SvcEntry {
                    obj: Arc::clone(svc),
                    out,
                    at,
                },
            );
        }
        drop(refs);
        if structural {
            self.assemble(state);
        } else {
            self.patch(state, &changed);
        }
        &self.view
    }

    /// Fills the empty caches from `state` in one pass per kind, in key
    /// order (bulk-built maps), computing every Service.
    fn start(&mut self, state: &ClusterState, zone: Option<&str>) {
        let mut grouped: Vec<(ObjKey, ObjKey)> = Vec::new();
        let mut slices = Vec::with_capacity(state.endpoint_slices.len());
        for (k, n) in &state.endpoint_slices {
            let (group, report) = match endpoints::classify(k, n) {
                Ok(svc) => (svc.map(|s| ObjKey::new(k.namespace.as_str(), s)), None),
                Err(r) => (None, Some(r)),
            };
            if let Some(g) = &group {
                grouped.push((g.clone(), k.clone()));
            }
            let obj = Arc::clone(n);
            slices.push((k.clone(), SliceEntry { obj, group, report }));
        }
        self.slices = slices.into_iter().collect();
        // Stable: a group's slices stay in key order.
        grouped.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<(ObjKey, Vec<ObjKey>)> = Vec::new();
        for (g, k) in grouped {
            match groups.last_mut() {
                Some((last, list)) if *last == g => list.push(k),
                _ => groups.push((g, vec![k])),
            }
        }
        self.groups = groups.into_iter().collect();
        self.orphans = self
            .groups
            .keys()
            .filter(|g| !state.services.contains_key(*g))
            .cloned()
            .collect();

        let ctx = Ctx {
            node: &self.node,
            zone,
        };
        let mut eps = Vec::new();
        let mut refs: Vec<SliceRef<'_>> = Vec::new();
        let mut entries = Vec::with_capacity(state.services.len());
        let mut groups = self.groups.iter().peekable();
        for (skey, svc) in &state.services {
            // Both in key order: walk the groups alongside.
            while groups.next_if(|(g, _)| *g < skey).is_some() {}
            let list = groups.next_if(|(g, _)| *g == skey).map(|(_, l)| l);
            push_slices(&mut refs, state, skey, list.into_iter().flatten());
            let mut out = Out::default();
            services::service(skey, svc, &refs, &ctx, &mut out, &mut eps);
            let obj = Arc::clone(svc);
            entries.push((
                skey.clone(),
                SvcEntry {
                    obj,
                    out,
                    at: Vec::new(),
                },
            ));
        }
        self.recomputed = entries.len();
        self.services = entries.into_iter().collect();
    }

    /// Brings the slice mirror and the groups up to date; marks the groups
    /// (Services) whose slices changed.
    fn apply_slices(&mut self, state: &ClusterState, dirty: &mut BTreeSet<ObjKey>) {
        for change in diff(&self.slices, |e| &e.obj, &state.endpoint_slices) {
            match change {
                Change::Same(k, n) => {
                    if let Some(e) = self.slices.get_mut(k) {
                        e.obj = Arc::clone(n);
                    }
                }
                Change::Upsert(k, n) => {
                    let (group, report) = match endpoints::classify(k, n) {
                        Ok(svc) => (svc.map(|s| ObjKey::new(k.namespace.as_str(), s)), None),
                        Err(r) => (None, Some(r)),
                    };
                    let old = self.slices.insert(
                        k.clone(),
                        SliceEntry {
                            obj: Arc::clone(n),
                            group: group.clone(),
                            report,
                        },
                    );
                    if let Some(g) = old.and_then(|o| o.group) {
                        self.ungroup(&g, k);
                        dirty.insert(g);
                    }
                    if let Some(g) = group {
                        let list = self.groups.entry(g.clone()).or_default();
                        if let Err(at) = list.binary_search(k) {
                            list.insert(at, k.clone());
                        }
                        dirty.insert(g);
                    }
                }
                Change::Remove(k) => {
                    if let Some(g) = self.slices.remove(&k).and_then(|o| o.group) {
                        self.ungroup(&g, &k);
                        dirty.insert(g);
                    }
                }
            }
        }
    }

    fn ungroup(&mut self, group: &ObjKey, slice: &ObjKey) {
        if let Some(list) = self.groups.get_mut(group) {
            if let Ok(at) = list.binary_search(slice) {
                list.remove(at);
            }
            if list.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// The reports of the inputs: this node's Node, the slices, the
    /// Services (those of the node-wide steps come later).
    fn reports(&self, state: &ClusterState) -> Vec<Report> {
        let mut reports = Vec::new();
        own_node_report(state, &self.node, &mut reports);
        reports.extend(self.slices.values().filter_map(|e| e.report.clone()));
        for g in &self.orphans {
            for k in self.groups.get(g).into_iter().flatten() {
                reports.push(endpoints::orphan_report(k, &g.namespace, &g.name));
            }
        }
        for e in self.services.values() {
            reports.extend(e.out.reports.iter().cloned());
        }
        reports
    }

    fn health_checks(&self) -> Vec<HealthCheck> {
        self.services
            .values()
            .flat_map(|e| e.out.health.iter().cloned())
            .collect()
    }

    /// The view anew from every Service's specs, as `build` makes it.
    fn assemble(&mut self, state: &ClusterState) {
        let n: usize = self.services.values().map(|e| e.out.specs.len()).sum();
        // Each spec with its place in the Services' key order; sorted the
        // way `build` sorts (stable, so the same order for equal names).
        let mut items: Vec<(usize, ServiceSpec)> = Vec::with_capacity(n);
        for e in self.services.values() {
            for s in &e.out.specs {
                items.push((items.len(), s.clone()));
            }
        }
        items.sort_by(|(_, a), (_, b)| spec_order(a).cmp(&spec_order(b)));
        let mut sorted_at = vec![0usize; n];
        for (pos, (i, _)) in items.iter().enumerate() {
            sorted_at[*i] = pos;
        }
        let mut next = sorted_at.into_iter();
        for e in self.services.values_mut() {
            e.at.clear();
            e.at.extend(next.by_ref().take(e.out.specs.len()));
        }
        let mut specs: Vec<ServiceSpec> = items.into_iter().map(|(_, s)| s).collect();
        let mut reports = self.reports(state);
        let mut touched = Vec::new();
        resolve(&mut specs, &mut reports, &mut touched);
        touched.sort_unstable();
        touched.dedup();
        let view = complete(specs, self.health_checks(), reports, state, &self.node);
        self.changed = !self.assembled
            || view.services != self.view.services
            || view.remotes != self.view.remotes;
        self.view = view;
        self.touched = touched;
        self.assembled = true;
    }

    /// The view patched: the specs of `changed` Services replaced in place
    /// (their names, hence the order, are the same), the specs the
    /// node-wide steps changed last time restored, those steps run again.
    fn patch(&mut self, state: &ClusterState, changed: &[&ObjKey]) {
        let old_touched = std::mem::take(&mut self.touched);
        // The specs about to be rewritten, as they were (to tell whether
        // the view changed).
        let mut saved: BTreeMap<usize, ServiceSpec> = BTreeMap::new();
        let positions = changed
            .iter()
            .filter_map(|k| self.services.get(*k))
            .flat_map(|e| e.at.iter().copied());
        for p in old_touched.iter().copied().chain(positions) {
            if let Some(s) = self.view.services.get(p) {
                saved.entry(p).or_insert_with(|| s.clone());
            }
        }
        let specs = &mut self.view.services;
        if !old_touched.is_empty() {
            for e in self.services.values() {
                for (s, &p) in e.out.specs.iter().zip(&e.at) {
                    if old_touched.binary_search(&p).is_ok() {
                        if let Some(slot) = specs.get_mut(p) {
                            slot.clone_from(s);
                        }
                    }
                }
            }
        }
        for key in changed {
            if let Some(e) = self.services.get(*key) {
                for (s, &p) in e.out.specs.iter().zip(&e.at) {
                    if let Some(slot) = specs.get_mut(p) {
                        slot.clone_from(s);
                    }
                }
            }
        }
        let mut reports = self.reports(state);
        let mut touched = Vec::new();
        resolve(&mut self.view.services, &mut reports, &mut touched);
        touched.sort_unstable();
        touched.dedup();
        let services = std::mem::take(&mut self.view.services);
        let old_remotes = std::mem::take(&mut self.view.remotes);
        self.view = complete(services, self.health_checks(), reports, state, &self.node);
        let specs = &self.view.services;
        let mut differs = saved.iter().any(|(p, s)| specs.get(*p) != Some(s));
        // Specs changed by the node-wide steps this time only: they were
        // their Service's own spec before.
        let fresh: Vec<usize> = touched
            .iter()
            .copied()
            .filter(|p| !saved.contains_key(p))
            .collect();
        if !differs && !fresh.is_empty() {
            differs = self.services.values().any(|e| {
                e.out
                    .specs
                    .iter()
                    .zip(&e.at)
                    .any(|(s, p)| fresh.binary_search(p).is_ok() && specs.get(*p) != Some(s))
            });
        }
        self.changed = differs || self.view.remotes != old_remotes;
        self.touched = touched;
    }
}

/// Replaces `refs` with Service `skey`'s slices among `keys` (those the
/// state still holds).
fn push_slices<'a>(
    refs: &mut Vec<SliceRef<'a>>,
    state: &'a ClusterState,
    skey: &'a ObjKey,
    keys: impl IntoIterator<Item = &'a ObjKey>,
) {
    refs.clear();
    for k in keys {
        if let Some((key, slice)) = state.endpoint_slices.get_key_value(k) {
            refs.push(SliceRef {
                svc: (skey.namespace.as_str(), skey.name.as_str()),
                key,
                slice,
            });
        }
    }
}

/// Whether two lists of specs have the same names, protocols and ports in
/// the same order (so they take the same places in the sorted view).
fn same_names(a: &[ServiceSpec], b: &[ServiceSpec]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| spec_order(x) == spec_order(y))
}

#[cfg(test)]
mod tests;
