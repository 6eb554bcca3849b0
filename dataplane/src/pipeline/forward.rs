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

/// Route lookups cached across batches: a direct-mapped cache of recent
/// destinations (one entry per slot, the last lookup wins), reset with the
/// tables. An established flow's translated destination routes as it did for
/// the previous packet, so the LPM walk becomes one compare. Sized for
/// thousands of backends in flight (128 KiB per worker): with 10,000 Services
/// x 10 backends and 1024 flows, 64 slots cost +60 instructions per packet in
/// LPM walks, 1024 slots +37, 4096 slots +13.
pub(crate) struct RouteCache {
    slots: Box<[Slot; ROUTE_CACHE_SLOTS]>,
}

/// Slots of the route cache (a power of two).
const ROUTE_CACHE_SLOTS: usize = 4096;
/// The multiplicative index keeps the top bits: 64 - log2(slots).
const ROUTE_CACHE_SHIFT: u32 = 64 - ROUTE_CACHE_SLOTS.trailing_zeros();
const _: () = assert!(ROUTE_CACHE_SLOTS.is_power_of_two());

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// 0: empty; else the address family.
    family: u8,
    dst: u128,
    target: RouteTarget,
}

const EMPTY: Slot = Slot {
    family: 0,
    dst: 0,
    target: RouteTarget::Outside,
};

impl Default for RouteCache {
    fn default() -> Self {
        let slots: Box<[Slot]> = vec![EMPTY; ROUTE_CACHE_SLOTS].into_boxed_slice();
        RouteCache {
            // The length is ROUTE_CACHE_SLOTS by construction.
            slots: slots
                .try_into()
                .unwrap_or_else(|_| Box::new([EMPTY; ROUTE_CACHE_SLOTS])),
        }
    }
}

impl RouteCache {
    /// Inlined, with a multiplicative index (callgrind: a hit went from 47
    /// instructions, call included, to about 15).
    #[inline(always)]
    pub fn lookup(&mut self, t: &Tables, family: u8, dst: &[u8; 16]) -> RouteTarget {
        let d = u128::from_ne_bytes(*dst);
        let x = (d as u64) ^ ((d >> 64) as u64);
        let i = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> ROUTE_CACHE_SHIFT) as usize;
        let slot = &mut self.slots[i & (ROUTE_CACHE_SLOTS - 1)];
        if slot.dst == d && slot.family == family {
            return slot.target;
        }
        self.fill(t, i, family, dst)
    }

    #[cold]
    #[inline(never)]
    fn fill(&mut self, t: &Tables, i: usize, family: u8, dst: &[u8; 16]) -> RouteTarget {
        let d = u128::from_ne_bytes(*dst);
        let slot = &mut self.slots[i & (ROUTE_CACHE_SLOTS - 1)];
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
            let hash = vxlan::flow_entropy(&m.key);
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
        let Some(h) = d.get_mut(l3..).and_then(|h| h.first_chunk_mut::<12>()) else {
            return;
        };
        // The TTL/protocol word drops by 0x100 (the TTL is at least 2 here):
        // RFC 1624 eqn. 3 with ~m + m' = ~m + m - 0x100 = 0xfeff, whatever the
        // protocol byte, so the old word is not read. Summed in native byte
        // order (0xfeff byte-swapped is 0xfffe); one end-around carry
        // suffices below 0x1_fffe (callgrind: -12, then -9).
        let s = u32::from(!u16::from_ne_bytes([h[10], h[11]])) + 0xfffe;
        let c = !(((s & 0xffff) + (s >> 16)) as u16);
        h[8] = m.ttl.wrapping_sub(1);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
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
