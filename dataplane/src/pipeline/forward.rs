//! The forwarding stage: route the (translated) destination, check and decrement
//! the TTL / hop limit, then deliver to a local pod (MAC rewrite), encapsulate
//! toward a remote node (after the path MTU check), send off-cluster through the
//! uplink's gateway, or pass to the kernel. ICMP errors (time exceeded, too big)
//! are built from the untranslated packet.

use super::drop::DropReason;
use super::icmp_gen::{self, IcmpError};
use super::nat;
use super::parse::{Ingress, Meta, ETH_LEN};
use super::service::v4key;
use super::verdict::Verdict;
use super::vxlan;
use super::{Env, Frame, State};
use crate::state::{RouteTarget, Tables};
use crate::wire::checksum::update16;

/// Route lookups cached across batches: a small direct-mapped cache of recent
/// destinations (one entry per slot, the last lookup wins), reset with the tables.
/// With a handful of backends or peers in flight it turns the LPM walk into one
/// compare.
pub(crate) struct RouteCache {
    slots: [Slot; ROUTE_CACHE_SLOTS],
}

/// Slots of the route cache (a power of two).
const ROUTE_CACHE_SLOTS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// 0: empty; else the address family.
    family: u8,
    dst: u128,
    target: RouteTarget,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            slots: [Slot {
                family: 0,
                dst: 0,
                target: RouteTarget::Outside,
            }; ROUTE_CACHE_SLOTS],
        }
    }
}

impl RouteCache {
    #[inline]
    pub fn lookup(&mut self, t: &Tables, family: u8, dst: &[u8; 16]) -> RouteTarget {
        let d = u128::from_ne_bytes(*dst);
        let x = (d as u64) ^ ((d >> 64) as u64);
        let x = x ^ (x >> 32);
        let i = ((x ^ (x >> 16) ^ (x >> 8)) as usize) & (ROUTE_CACHE_SLOTS - 1);
        let slot = &mut self.slots[i];
        if slot.dst == d && slot.family == family {
            return slot.target;
        }
        let target = t.route(family, dst);
        *slot = Slot {
            family,
            dst: d,
            target,
        };
        target
    }

    pub fn reset(&mut self) {
        for s in self.slots.iter_mut() {
            s.family = 0;
        }
    }
}

/// Forwards one frame whose flow stage is done.
#[inline(always)]
pub(crate) fn run(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Verdict {
    let t = env.t;
    let c = t.config();
    let route = match m.route {
        Some(r) if !m.nat => r,
        _ => {
            let out = m.out();
            st.route.lookup(t, out.family, &out.dst)
        }
    };
    match route {
        RouteTarget::LocalPod(idx) => {
            let Some(pod) = t.pod(idx) else {
                return Verdict::Drop(DropReason::UnknownPod);
            };
            if let Some(v) = ttl(env, st, frame, m) {
                return v;
            }
            let d = frame.data_mut();
            d[0..6].copy_from_slice(&pod.mac);
            d[6..12].copy_from_slice(&c.gateway_mac);
            Verdict::Tx(pod.port)
        }
        RouteTarget::RemoteNode(idx) => {
            if m.ingress == Ingress::Overlay {
                return Verdict::Drop(DropReason::DecapNotLocal);
            }
            let Some(r) = t.remote(idx) else {
                return Verdict::Drop(DropReason::UnknownPod);
            };
            let outer = r.outer;
            if outer == 0 {
                return Verdict::Drop(DropReason::NoRemoteUnderlay);
            }
            if m.ttl <= 1 {
                return error(
                    env,
                    st,
                    frame,
                    m,
                    IcmpError::TimeExceeded,
                    DropReason::TtlExceeded,
                );
            }
            let room = r.inner_limit[(m.family == 6) as usize] as usize;
            if frame.len() - ETH_LEN > room {
                if m.family == 4 && !m.dont_frag {
                    return Verdict::Drop(DropReason::TooBig);
                }
                return error(
                    env,
                    st,
                    frame,
                    m,
                    IcmpError::TooBig(room as u16),
                    DropReason::TooBig,
                );
            }
            dec_ttl(frame, m);
            st.ident = st.ident.wrapping_add(1);
            let hash = m.key.hash();
            match vxlan::encap(frame, c, r, outer, hash, st.ident) {
                Ok(()) => {
                    st.cnt.encap += 1;
                    Verdict::Tx(c.uplink)
                }
                Err(e) => Verdict::Drop(e),
            }
        }
        RouteTarget::Outside => {
            if m.ingress == Ingress::Uplink && !m.nat {
                return Verdict::Pass;
            }
            if let Some(v) = ttl(env, st, frame, m) {
                return v;
            }
            let d = frame.data_mut();
            d[0..6].copy_from_slice(&c.uplink_gateway_mac);
            d[6..12].copy_from_slice(&c.uplink_mac);
            Verdict::Tx(c.uplink)
        }
        RouteTarget::Node => {
            if m.ingress == Ingress::Overlay {
                // A remote pod reaching this node: the kernel's, addressed to
                // the uplink so it accepts the decapsulated frame.
                frame.data_mut()[0..6].copy_from_slice(&c.uplink_mac);
            }
            Verdict::Pass
        }
        RouteTarget::ServiceCidr => Verdict::Drop(DropReason::NoService),
        RouteTarget::ClusterCidr => Verdict::Drop(DropReason::UnknownPod),
    }
}

/// Checks and decrements the TTL / hop limit; `Some` when it expired.
#[inline]
fn ttl(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    if m.ttl <= 1 {
        return Some(error(
            env,
            st,
            frame,
            m,
            IcmpError::TimeExceeded,
            DropReason::TtlExceeded,
        ));
    }
    dec_ttl(frame, m);
    None
}

/// Decrements the TTL (updating the IPv4 header checksum) or the hop limit.
#[inline(always)]
fn dec_ttl(frame: &mut Frame, m: &Meta) {
    let l3 = m.l3 as usize;
    let d = frame.data_mut();
    if m.family == 4 {
        let Some(h) = d.get_mut(l3..l3 + 12) else {
            return;
        };
        // The TTL/protocol word drops by 0x100 (RFC 1624 through update16).
        let old = u16::from_be_bytes([h[8], h[9]]);
        let c = update16(
            u16::from_be_bytes([h[10], h[11]]),
            old,
            old.wrapping_sub(0x100),
        );
        h[8] = m.ttl.wrapping_sub(1);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else if let Some(h) = d.get_mut(l3 + 7) {
        *h = m.ttl.wrapping_sub(1);
    }
}

/// Replaces the frame with an ICMP error about the untranslated packet, sent
/// from the gateway (pods) or the node (uplink); `fallback` when none may be sent.
fn error(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    err: IcmpError,
    fallback: DropReason,
) -> Verdict {
    if m.ingress == Ingress::Overlay || !icmp_gen::allowed(m) {
        return Verdict::Drop(fallback);
    }
    let t = env.t;
    let c = t.config();
    let (src, mac) = match (m.ingress, m.family) {
        (Ingress::Pod(_), 4) => (t.gateway_v4().map(v4key), c.gateway_mac),
        (Ingress::Pod(_), _) => (t.gateway_v6(), c.gateway_mac),
        (_, 4) => (t.node_v4().map(v4key), c.uplink_mac),
        _ => (t.node_v6(), c.uplink_mac),
    };
    let Some(src) = src else {
        return Verdict::Drop(fallback);
    };
    if m.nat {
        let (x, k) = (m.xkey, m.key);
        nat::rewrite(frame.data_mut(), m, &x, &k);
        m.xkey = k;
        m.nat = false;
    }
    if icmp_gen::build(frame, m, err, &src, mac) {
        st.cnt.icmp_errors_sent += 1;
        Verdict::Reply
    } else {
        Verdict::Drop(fallback)
    }
}
