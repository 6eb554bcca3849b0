//! The flow stage: fragments that follow a first fragment's translation, ICMP
//! errors about translated flows, conntrack hits (with their NAT), and the
//! decisions for a flow's first packet (Service, masquerade, pass or drop).

use super::drop::DropReason;
use super::frag::{self, FragAction, FragEntry};
use super::icmp_xlate;
use super::nat;
use super::parse::{Frag, Ingress, Meta, L4};
use super::service::{self, v4key, Via};
use super::verdict::Verdict;
use super::{Env, Frame, State};
use crate::conntrack::Dir;
use crate::state::RouteTarget;

/// Runs the flow stage on one frame; `None`: go on to forwarding with `m.xkey`.
#[inline(always)]
pub(crate) fn run(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    if m.frag == Frag::Later {
        return later_fragment(env, st, frame, m);
    }
    let v = decide(env, st, frame, m);
    if m.frag == Frag::First {
        let action = match v {
            None | Some(Verdict::Tx(_)) => FragAction::Forward,
            Some(Verdict::Pass) => FragAction::Pass,
            _ => FragAction::Drop,
        };
        frag::record(st, m, action, env.now);
    }
    v
}

#[inline(always)]
fn decide(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    if m.l4kind == L4::IcmpError {
        match icmp_xlate::translate(frame.data_mut(), m, env.ct, env.now) {
            Ok(true) => {
                st.cnt.icmp_errors_translated += 1;
                return None;
            }
            Ok(false) => {}
            Err(r) => return Some(Verdict::Drop(r)),
        }
    } else if let Some(hit) = env.ct.track(&m.key, m.tcp_flags, env.now) {
        st.cnt.ct_hits += 1;
        env.svc
            .packet(hit.user, hit.dir == Dir::Reply, frame.len() as u64);
        if hit.nat {
            nat::rewrite(frame.data_mut(), m, &m.key, &hit.xlate);
            m.xkey = hit.xlate;
            m.nat = true;
        }
        return None;
    }
    first_packet_lookup(env, st, frame, m)
}

/// A packet matching no flow.
#[inline(always)]
fn first_packet_lookup(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
) -> Option<Verdict> {
    let route = st.route.lookup(env.t, m.key.family, &m.key.dst);
    first_packet(env, st, frame, m, route)
}

/// A packet matching no flow whose destination routes to `route`.
pub(crate) fn first_packet(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    route: RouteTarget,
) -> Option<Verdict> {
    let t = env.t;
    m.route = Some(route);
    let services = t.services();
    let has_ports = matches!(m.l4kind, L4::Tcp | L4::Udp);
    match m.ingress {
        Ingress::Pod(_) => match route {
            RouteTarget::LocalPod(_) | RouteTarget::RemoteNode(_) => None,
            RouteTarget::Node => {
                if has_ports
                    && is_node_addr(env, m)
                    && in_range(m.key.dport, t.config().nodeport_range)
                {
                    if let Some(svc) = services.lookup_nodeport(m.key.dport, m.proto) {
                        return service::new_flow(env, st, frame, m, svc, Via::NodePort);
                    }
                }
                Some(Verdict::Pass)
            }
            other => {
                if has_ports {
                    if let Some((svc, kind)) =
                        services.lookup_vip_bytes(&m.key.dst, m.family, m.key.dport, m.proto)
                    {
                        return service::new_flow(env, st, frame, m, svc, Via::Vip(kind));
                    }
                }
                match other {
                    RouteTarget::ServiceCidr => Some(Verdict::Drop(DropReason::NoService)),
                    RouteTarget::ClusterCidr => Some(Verdict::Drop(DropReason::UnknownPod)),
                    _ => masquerade(env, st, frame, m),
                }
            }
        },
        Ingress::Uplink => {
            if !has_ports {
                return Some(Verdict::Pass);
            }
            if route == RouteTarget::Node {
                if is_node_addr(env, m) && in_range(m.key.dport, t.config().nodeport_range) {
                    if let Some(svc) = services.lookup_nodeport(m.key.dport, m.proto) {
                        return service::new_flow(env, st, frame, m, svc, Via::NodePort);
                    }
                }
                return Some(Verdict::Pass);
            }
            if let Some((svc, kind)) =
                services.lookup_vip_bytes(&m.key.dst, m.family, m.key.dport, m.proto)
            {
                return service::new_flow(env, st, frame, m, svc, Via::Vip(kind));
            }
            Some(Verdict::Pass)
        }
        Ingress::Overlay => match route {
            RouteTarget::LocalPod(_) | RouteTarget::Node => None,
            _ => Some(Verdict::Drop(DropReason::DecapNotLocal)),
        },
    }
}

#[inline]
fn in_range(p: u16, (lo, hi): (u16, u16)) -> bool {
    lo <= p && p <= hi
}

#[inline]
fn is_node_addr(env: &Env, m: &Meta) -> bool {
    if m.family == 4 {
        env.t.node_v4() == Some(m.key.dst_v4())
    } else {
        env.t.node_v6() == Some(m.key.dst)
    }
}

/// Pod to outside the cluster: SNAT to the node address with a port (or echo
/// identifier) from the SNAT range.
fn masquerade(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    if !matches!(m.l4kind, L4::Tcp | L4::Udp | L4::EchoRequest) {
        return Some(Verdict::Drop(DropReason::UnsupportedProtocol));
    }
    let t = env.t;
    let src = if m.family == 4 {
        t.node_v4().map(v4key)
    } else {
        t.node_v6()
    };
    let Some(src) = src else {
        return Some(Verdict::Drop(DropReason::NoSourceAddress));
    };
    let mut xkey = m.key;
    xkey.src = src;
    let hash = m.key.hash();
    let (hit, retries) = match nat::insert_flow(
        env.ct,
        &m.key,
        xkey,
        true,
        t.config().snat_ports,
        hash,
        u32::MAX,
        m.tcp_flags,
        env.now,
    ) {
        Ok(x) => x,
        Err(r) => return Some(Verdict::Drop(r)),
    };
    st.cnt.ct_new += 1;
    st.cnt.snat += 1;
    st.cnt.snat_port_retries += retries as u64;
    nat::rewrite(frame.data_mut(), m, &m.key, &hit.xlate);
    m.xkey = hit.xlate;
    m.nat = true;
    None
}

/// A non-first fragment: follows its first fragment's decision, or waits in
/// the stash for it.
fn later_fragment(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta) -> Option<Verdict> {
    let key = frag::key(m);
    match st.frags.get(&key, env.now) {
        Some(FragEntry {
            action: FragAction::Forward,
            src,
            dst,
        }) => {
            let mut x = m.key;
            x.src = src;
            x.dst = dst;
            if x != m.key {
                nat::rewrite(frame.data_mut(), m, &m.key, &x);
                m.xkey = x;
                m.nat = true;
            }
            None
        }
        Some(FragEntry {
            action: FragAction::Pass,
            ..
        }) => Some(Verdict::Pass),
        Some(_) => Some(Verdict::Drop(DropReason::FragDropped)),
        None => Some(frag::stash(st, frame, m, env.now)),
    }
}
