//! New flows to a Service (ClusterIP, externalIP, LoadBalancer IP, NodePort):
//! backend selection (Maglev through `lb`), the NAT decision, the conntrack insert
//! and the DNAT rewrite; no usable backend answers ICMP port unreachable.
//!
//! NAT decisions, as kube-proxy: traffic from outside the node to an
//! `externalTrafficPolicy: Cluster` Service is SNATed to the node address (so the
//! reply comes back through this node); `Local` keeps the client address and uses
//! local endpoints only (none here but some elsewhere: dropped, counted; none at
//! all: rejected like any Service without endpoints). `internalTrafficPolicy:
//! Local` does the same for pods reaching a ClusterIP. A pod reaching its own
//! Service and landing on itself (hairpin) is SNATed to the gateway address.

use super::drop::DropReason;
use super::icmp_gen::{self, IcmpError};
use super::nat;
use super::parse::{Ingress, Meta};
use super::verdict::Verdict;
use super::{Env, Frame, State};
use crate::lb::{Scope, SvcId, VipKind};

/// How the Service was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    Vip(VipKind),
    NodePort,
}

/// Handles the first packet of a flow to Service `svc`. `None`: translated, go
/// on to forwarding.
pub(crate) fn new_flow(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    svc: SvcId,
    via: Via,
) -> Option<Verdict> {
    let t = env.t;
    let services = t.services();
    let Some(s) = services.service(svc) else {
        return Some(Verdict::Drop(DropReason::NoService));
    };
    let (ext_local, int_local) = (s.ext_local(), s.int_local());
    let external = m.ingress == Ingress::Uplink;
    let scope = if external {
        if ext_local {
            Scope::Local
        } else {
            Scope::Cluster
        }
    } else if int_local && via == Via::Vip(VipKind::ClusterIp) {
        Scope::Local
    } else {
        Scope::Cluster
    };
    let hash = m.key.hash();
    let client = m.key.src_ip();
    let backend = services
        .select(svc, scope, hash, client, env.now, env.aff)
        .and_then(|b| services.backend(b))
        .filter(|b| b.family() == m.family)
        .map(|b| (b.ip_bytes(), b.port()));
    let id = t.service_id(svc);
    let Some((bip, bport)) = backend else {
        env.svc.reject(id);
        // As kube-proxy: a Service with endpoints, none of them local under a
        // Local policy, drops; a Service with no endpoints at all rejects.
        if scope == Scope::Local && s.usable_count(Scope::Cluster, m.family) > 0 {
            return Some(Verdict::Drop(DropReason::NoLocalEndpoint));
        }
        return Some(port_unreachable(env, st, frame, m));
    };
    let mut xkey = m.key;
    xkey.dst = bip;
    xkey.dport = bport;
    let c = t.config();
    let snat_src = if external && !ext_local {
        Some(if m.family == 4 {
            t.node_v4().map(v4key)
        } else {
            t.node_v6()
        })
    } else if !external && bip == m.key.src {
        Some(if m.family == 4 {
            t.gateway_v4().map(v4key)
        } else {
            t.gateway_v6()
        })
    } else {
        None
    };
    let snat = match snat_src {
        Some(Some(a)) => {
            xkey.src = a;
            true
        }
        Some(None) => return Some(Verdict::Drop(DropReason::NoSourceAddress)),
        None => false,
    };
    let (hit, retries) = match nat::insert_flow(
        env.ct,
        &m.key,
        xkey,
        snat,
        c.snat_ports,
        hash,
        id,
        m.tcp_flags,
        env.now,
    ) {
        Ok(x) => x,
        Err(r) => return Some(Verdict::Drop(r)),
    };
    st.cnt.ct_new += 1;
    st.cnt.dnat += 1;
    env.svc.connection(id, frame.len() as u64);
    st.cnt.snat += snat as u64;
    st.cnt.snat_port_retries += retries as u64;
    nat::rewrite(frame.data_mut(), m, &m.key, &hit.xlate);
    m.xkey = hit.xlate;
    m.nat = true;
    None
}

#[inline]
pub(crate) fn v4key(a: [u8; 4]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&a);
    k
}

/// Answers the (untranslated) packet with ICMP port unreachable from the address
/// it was sent to.
fn port_unreachable(env: &Env, st: &mut State, frame: &mut Frame, m: &Meta) -> Verdict {
    if !icmp_gen::allowed(m) {
        return Verdict::Drop(DropReason::NoBackend);
    }
    let c = env.t.config();
    let mac = if m.ingress == Ingress::Uplink {
        c.uplink_mac
    } else {
        c.gateway_mac
    };
    let src = m.key.dst;
    if icmp_gen::build(frame, m, IcmpError::PortUnreachable, &src, mac) {
        st.cnt.icmp_errors_sent += 1;
        Verdict::Reply
    } else {
        Verdict::Drop(DropReason::NoBackend)
    }
}
