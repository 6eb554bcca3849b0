//! The established-flow fast path: the common frame shape read from fixed
//! offsets, in front of the general stages, with the same results.
//!
//! A frame qualifies when it comes from a pod port, is untagged Ethernet with
//! IPv4 without options, not a fragment, TCP or UDP, TTL above 1, a header
//! checksum that verifies, the sending pod's own source address (the
//! anti-spoofing check kept) and a unicast destination; the frame's bytes are
//! only read here ([`parse`]), so anything else goes to the general stages
//! untouched. For a qualifying frame the flow key's five words are built
//! straight from the bytes (no `Meta`) and its conntrack bucket is
//! prefetched; the flow pass ([`finish`]) then looks the flow up
//! ([`Table::track_lean`](crate::conntrack::Table::track_lean)) and routes the
//! translated destination before writing anything. A hit toward a local pod,
//! a remote node (within the path MTU) or off-cluster is finished here: NAT
//! with one checksum delta per header, the TTL decrement, then the MAC
//! rewrite or the remote node's precomputed outer headers. Every other
//! outcome (a miss: a new flow; a hit routed elsewhere or too big) fills the
//! frame's `Meta` as parsing would have and runs the general flow and
//! forwarding stages on it, at the frame's place in the batch, so conntrack
//! sees the batch's packets in order and results (bytes, verdicts, counters,
//! the outer IPv4 identification sequence) are the general path's.
//!
//! Callgrind, instructions per packet, general path alone -> with this path:
//! service-encap 749 -> 607, decap-reverse 820 -> 589, pod-to-pod 472 -> 348
//! (an untracked pod-to-pod miss no longer takes the general stages),
//! new-flow 1812 -> 1887 (a new flow is parsed twice: the fast check, then
//! the `Meta` fill and a second conntrack miss in the flow stage).

use super::flow;
use super::forward;
use super::nat;
use super::parse::{fold64, header_sum_ok, Frag, Ingress, Meta, ETH_LEN, L4};
use super::verdict::Verdict;
use super::vxlan;
use super::{Env, Frame, State};
use crate::conntrack::{FlowKey, Table};
use crate::proto;
use crate::state::{PortKind, RouteTarget};

const L3: usize = ETH_LEN;
const L4_AT: usize = L3 + 20;

/// What [`parse`] learned about a qualifying frame.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lean {
    /// The frame qualifies (the rest is meaningful only then).
    pub ok: bool,
    /// A pod port, or VXLAN for this node from the uplink (`Overlay`).
    pub ingress: Ingress,
    /// The flow key's [`FlowKey::words`].
    pub w: [u64; 5],
    /// Their conntrack index hash.
    pub h: u64,
    /// Where the (inner) Ethernet frame starts: 0, or the outer headers'
    /// length for VXLAN.
    pub base: u16,
    /// The outer IP packet's end (VXLAN only).
    pub outer_end: u16,
    /// The IP packet's end in the (inner) frame (Ethernet padding beyond is
    /// trimmed).
    pub end: u16,
    pub ttl: u8,
    pub tcp_flags: u8,
    /// The L4 checksum is present (UDP over IPv4 may carry none).
    pub csum: bool,
    pub dont_frag: bool,
}

/// Checks whether the frame qualifies and fills `l`; reads only.
#[inline(always)]
pub(crate) fn parse(env: &Env, frame: &Frame, l: &mut Lean) -> bool {
    l.ok = false;
    let t = env.t;
    let d = frame.data();
    let (own, base, lim) = match t.port(frame.port) {
        PortKind::Pod(idx) => {
            let Some(own) = t.pod(idx).and_then(|p| p.ipv4) else {
                return false;
            };
            l.ingress = Ingress::Pod(idx);
            (Some(own), 0, d.len())
        }
        PortKind::Uplink => {
            let Some(end) = overlay(env, d) else {
                return false;
            };
            l.ingress = Ingress::Overlay;
            l.outer_end = end as u16;
            (None, vxlan::OVERHEAD_V4, end)
        }
        PortKind::None => return false,
    };
    let Some(d) = d.get(base..lim) else {
        return false;
    };
    let Some(h) = d.first_chunk::<{ L4_AT + 8 }>() else {
        return false;
    };
    let Some(ip) = h[L3..].first_chunk::<20>() else {
        return false;
    };
    let p = ip[9];
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4len = if p == proto::TCP { 20 } else { 8 };
    if h[12..14] != [0x08, 0x00]
        || ip[0] != 0x45
        || (p != proto::TCP && p != proto::UDP)
        || ip[6] & 0x3f != 0
        || ip[7] != 0
        || ip[8] <= 1
        || own.is_some_and(|o| ip[12..16] != o)
        || ip[16] >= 224
        || L3 + total > d.len()
        || total < 20 + l4len
        || !header_sum_ok(ip)
    {
        return false;
    }
    let u = &h[L4_AT..];
    let (sport, dport) = (
        u16::from_be_bytes([u[0], u[1]]),
        u16::from_be_bytes([u[2], u[3]]),
    );
    if p == proto::TCP {
        let Some(&f) = d.get(L4_AT + 13) else {
            return false;
        };
        l.tcp_flags = f;
        l.csum = true;
    } else {
        l.tcp_flags = 0;
        l.csum = u[6] | u[7] != 0;
    }
    let a = |o: usize| u64::from(u32::from_le_bytes([ip[o], ip[o + 1], ip[o + 2], ip[o + 3]]));
    l.w = [
        a(12),
        0,
        a(16),
        0,
        u64::from(sport) | u64::from(dport) << 16 | u64::from(p) << 32 | 4 << 40,
    ];
    l.h = Table::key_hash(&l.w);
    l.base = base as u16;
    l.end = (L3 + total) as u16;
    l.ttl = ip[8];
    l.dont_frag = ip[6] & 0x40 != 0;
    l.ok = true;
    true
}

/// VXLAN for this node in the shape `vxlan::fast_decap_v4` takes, with a
/// VXLAN header `vxlan::decap` accepts and an untagged inner frame: the outer
/// IP packet's end. Reads only. (Out of line it cost decap-reverse 11
/// instructions per packet and saved service-encap none.)
#[inline(always)]
fn overlay(env: &Env, d: &[u8]) -> Option<usize> {
    let t = env.t;
    let node = t.node_v4()?;
    let c = t.config();
    let h = d.first_chunk::<{ vxlan::OVERHEAD_V4 + ETH_LEN }>()?;
    let ip = h[L3..].first_chunk::<20>()?;
    let udp = h[L4_AT..].first_chunk::<8>()?;
    let vx = h[L4_AT + 8..].first_chunk::<8>()?;
    let end = L3 + u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if h[12..14] != [0x08, 0x00]
        || ip[0] != 0x45
        || ip[9] != proto::UDP
        || ip[6] & 0x3f != 0
        || ip[7] != 0
        || ip[16..20] != node
        || u16::from_be_bytes([udp[2], udp[3]]) != c.vxlan_port
        || end > d.len()
        || end < vxlan::OVERHEAD_V4 + ETH_LEN
        || vx[0] & 0x08 == 0
        || u32::from_be_bytes([0, vx[4], vx[5], vx[6]]) != c.vni
        || !header_sum_ok(ip)
    {
        return None;
    }
    Some(end)
}

/// The flow and forwarding stages for a frame [`parse`] accepted.
#[inline(always)]
pub(crate) fn finish(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    l: &Lean,
) -> Verdict {
    let overlay = l.base != 0;
    if overlay {
        frame.trim(l.outer_end as usize);
        frame.pull_head(l.base as usize);
        st.cnt.decap += 1;
    }
    frame.trim(l.end as usize);
    let hit = env.ct.track_hashed(&l.w, l.h, l.tcp_flags, env.now);
    let tracked = hit.is_some();
    let (x, nat) = match hit {
        Some(h) => {
            st.cnt.ct_hits += 1;
            (if h.nat { h.xlate } else { l.w }, h.nat)
        }
        // A miss: pod to pod (or a decapsulated packet to a local pod) is
        // forwarded untracked, as the flow stage's first packet does;
        // anything else is left to it below.
        None => (l.w, false),
    };
    let t = env.t;
    let c = t.config();
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&(x[2] as u32).to_le_bytes());
    match st.route.lookup(t, 4, &dst) {
        RouteTarget::RemoteNode(idx) if !overlay => {
            if let Some(r) = t.remote(idx) {
                if r.outer != 0 && frame.len() - ETH_LEN <= r.inner_limit[0] as usize {
                    rewrite(frame, l, &x, nat);
                    st.ident = st.ident.wrapping_add(1);
                    return match vxlan::encap(frame, c, r, r.outer, entropy(&l.w), st.ident) {
                        Ok(()) => {
                            st.cnt.encap += 1;
                            Verdict::Tx(c.uplink)
                        }
                        Err(e) => Verdict::Drop(e),
                    };
                }
            }
        }
        RouteTarget::LocalPod(idx) => {
            if let Some(pod) = t.pod(idx) {
                rewrite(frame, l, &x, nat);
                let d = frame.data_mut();
                d[0..6].copy_from_slice(&pod.mac);
                d[6..12].copy_from_slice(&c.gateway_mac);
                return Verdict::Tx(pod.port);
            }
        }
        RouteTarget::Outside if tracked => {
            rewrite(frame, l, &x, nat);
            let d = frame.data_mut();
            d[0..6].copy_from_slice(&c.uplink_gateway_mac);
            d[6..12].copy_from_slice(&c.uplink_mac);
            return Verdict::Tx(c.uplink);
        }
        _ => {}
    }
    // Anything else (a new flow, an ICMP error to build, a drop): the
    // general stages.
    if !tracked {
        return general(env, st, frame, m, l);
    }
    // From where the flow stage's hit would leave them.
    fill(m, l);
    if nat {
        let xkey = FlowKey::from_words(&x);
        nat::rewrite(frame.data_mut(), m, &m.key, &xkey);
        m.xkey = xkey;
        m.nat = true;
    }
    forward::run(env, st, frame, m)
}

/// A miss: the general flow stage (new flow) and forwarding.
#[cold]
#[inline(never)]
fn general(env: &Env, st: &mut State, frame: &mut Frame, m: &mut Meta, l: &Lean) -> Verdict {
    fill(m, l);
    match flow::run(env, st, frame, m) {
        Some(v) => v,
        None => forward::run(env, st, frame, m),
    }
}

/// Fills `m` as ingress parsing fills it for this frame.
fn fill(m: &mut Meta, l: &Lean) {
    let w4 = l.w[4];
    let tcp = (w4 >> 32) as u8 == proto::TCP;
    *m = Meta {
        done: false,
        ingress: l.ingress,
        l3: L3 as u16,
        l4: L4_AT as u16,
        family: 4,
        proto: (w4 >> 32) as u8,
        ttl: l.ttl,
        tcp_flags: l.tcp_flags,
        l4kind: if tcp { L4::Tcp } else { L4::Udp },
        frag: Frag::None,
        frag_ident: 0,
        dont_frag: l.dont_frag,
        key: FlowKey::from_words(&l.w),
        xkey: m.xkey,
        nat: false,
        csum_at: match (tcp, l.csum) {
            (true, _) => (L4_AT + 16) as u16,
            (false, true) => (L4_AT + 6) as u16,
            (false, false) => 0,
        },
        sport_at: L4_AT as u16,
        dport_at: (L4_AT + 2) as u16,
        pseudo: true,
        route: None,
    };
}

/// RFC 1624 eqn. 3, as `nat` applies it.
#[inline(always)]
fn apply(csum: u16, sum: u64) -> u16 {
    !fold64(u64::from(!csum) + sum)
}

/// The NAT rewrite (when `nat`) and the TTL decrement, with the checksum
/// arithmetic of `nat::rewrite` and `forward`'s TTL decrement (so the bytes
/// are theirs, zero representations included).
#[inline(always)]
fn rewrite(frame: &mut Frame, l: &Lean, x: &[u64; 5], nat: bool) {
    let d = frame.data_mut();
    let Some((ip, l4)) = d.split_at_mut_checked(L4_AT) else {
        return;
    };
    let Some(h) = ip.last_chunk_mut::<20>() else {
        return;
    };
    if nat {
        let Some(ports) = l4.first_chunk_mut::<8>() else {
            return;
        };
        // The addresses' words in native byte order (the key words are
        // little-endian byte images).
        let ne = |w: u64| u32::from_ne_bytes((w as u32).to_le_bytes());
        let addr = u64::from(!ne(l.w[0]))
            + u64::from(ne(x[0]))
            + u64::from(!ne(l.w[2]))
            + u64::from(ne(x[2]));
        h[12..16].copy_from_slice(&(x[0] as u32).to_le_bytes());
        h[16..20].copy_from_slice(&(x[2] as u32).to_le_bytes());
        // The TTL decrement's 0xfffe (see below) summed in: one fold for
        // both, the same value as two (a fold of a nonzero sum is the one
        // value in 1..=0xffff of its residue).
        let c = apply(u16::from_ne_bytes([h[10], h[11]]), addr + 0xfffe);
        h[10..12].copy_from_slice(&c.to_ne_bytes());
        h[8] = l.ttl.wrapping_sub(1);
        let (osp, nsp) = ((l.w[4] as u16).to_be_bytes(), (x[4] as u16).to_be_bytes());
        let (odp, ndp) = (
            ((l.w[4] >> 16) as u16).to_be_bytes(),
            ((x[4] >> 16) as u16).to_be_bytes(),
        );
        ports[0..2].copy_from_slice(&nsp);
        ports[2..4].copy_from_slice(&ndp);
        if l.csum {
            let w = |b: [u8; 2]| u64::from(u16::from_ne_bytes(b));
            let sum = addr
                + (!u16::from_ne_bytes(osp) as u64)
                + w(nsp)
                + (!u16::from_ne_bytes(odp) as u64)
                + w(ndp);
            let tcp = (l.w[4] >> 32) as u8 == proto::TCP;
            let at = if tcp { 16 } else { 6 };
            if let Some(f) = l4.get_mut(at..).and_then(|s| s.first_chunk_mut::<2>()) {
                let mut c = apply(u16::from_ne_bytes(*f), sum);
                if c == 0 && !tcp {
                    c = 0xffff;
                }
                *f = c.to_ne_bytes();
            }
        }
        return;
    }
    // TTL - 1: see `forward::dec_ttl`.
    let s = u32::from(!u16::from_ne_bytes([h[10], h[11]])) + 0xfffe;
    let c = !(((s & 0xffff) + (s >> 16)) as u16);
    h[8] = l.ttl.wrapping_sub(1);
    h[10..12].copy_from_slice(&c.to_ne_bytes());
}

/// `vxlan::flow_entropy` of the key with these words.
#[inline(always)]
fn entropy(w: &[u64; 5]) -> u64 {
    let x = w[0] ^ w[1].rotate_left(16) ^ w[2].rotate_left(32) ^ w[3].rotate_left(48) ^ w[4];
    let p = u128::from(x) * u128::from(0x9e37_79b9_7f4a_7c15u64);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entropy_of_key_words_is_the_vxlan_flow_hash() {
        for k in [
            FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 1], 1234, 80, 6),
            FlowKey::v4([10, 244, 1, 7], [10, 244, 2, 9], 40000, 53, 17),
        ] {
            assert_eq!(entropy(&k.words()), vxlan::flow_entropy(&k));
        }
    }

    use super::super::{Frame, Pipeline, FRAME_SIZE, HEADROOM};
    use crate::state::demo::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    /// Destinations: Services (remote and local backends), a local pod, a
    /// remote pod, off-cluster, the gateway, a multicast group.
    const DSTS: [(Ipv4Addr, u16); 9] = [
        (WEB_V4, 80),
        (API_V4, 443),
        (DNS_V4, 53),
        (WEB_LOCAL_V4, 8080),
        (OTHER_V4, 9000),
        (Ipv4Addr::new(10, 244, 2, 2), 8080),
        (Ipv4Addr::new(8, 8, 8, 8), 443),
        (GATEWAY_V4, 22),
        (Ipv4Addr::new(239, 1, 2, 3), 5000),
    ];

    #[derive(Clone, Debug)]
    struct Pkt {
        from_other: bool,
        spoof: bool,
        dst: usize,
        sport: u16,
        udp: bool,
        ttl: u8,
        flags: u8,
        len: usize,
        no_udp_csum: bool,
        bad_ip_csum: bool,
        /// A reply (or request) from a remote pod, VXLAN from the uplink.
        overlay: bool,
        bad_vni: bool,
    }

    /// Remote pods sending through the overlay: Service backends and the
    /// remote pod of `DSTS`.
    const REMOTES: [(Ipv4Addr, u16); 3] = [
        (Ipv4Addr::new(10, 244, 2, 2), 8080),
        (Ipv4Addr::new(10, 244, 3, 2), 8080),
        (Ipv4Addr::new(10, 244, 2, 53), 53),
    ];

    fn pkt() -> impl Strategy<Value = Pkt> {
        (
            (any::<bool>(), 0u8..20, 0..DSTS.len(), 40000u16..40004),
            (
                any::<bool>(),
                prop_oneof![Just(1u8), Just(2), Just(64)],
                0u8..8,
            ),
            (prop_oneof![0usize..64, 1400usize..1500], 0u8..10, 0u8..30),
            (0u8..3, 0u8..20),
        )
            .prop_map(
                |((o, sp, dst, sport), (udp, ttl, f), (len, nc, bc), (ov, vni))| Pkt {
                    from_other: o,
                    spoof: sp == 0,
                    dst,
                    sport,
                    udp,
                    ttl,
                    flags: f,
                    len,
                    no_udp_csum: nc == 0,
                    bad_ip_csum: bc == 0,
                    overlay: ov == 0,
                    bad_vni: vni == 0,
                },
            )
    }

    fn bytes(p: &Pkt, c: &crate::state::NodeConfig) -> (Vec<u8>, crate::PortId) {
        if p.overlay {
            let (src, sport) = REMOTES[p.dst % REMOTES.len()];
            let dst = if p.from_other { OTHER_V4 } else { CLIENT_V4 };
            let inner = Pkt {
                overlay: false,
                ..p.clone()
            };
            let (mut f, _) = bytes(&inner, c);
            // Inner addresses and ports: the remote pod's reply.
            f[26..30].copy_from_slice(&src.octets());
            f[30..34].copy_from_slice(&dst.octets());
            f[34..36].copy_from_slice(&sport.to_be_bytes());
            f[36..38].copy_from_slice(&p.sport.to_be_bytes());
            let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
            let mut h = ip.to_header();
            let payload_at = 14 + 20;
            let l4 = f[payload_at..].to_vec();
            h.header_checksum = h.calc_header_checksum();
            if p.bad_ip_csum {
                h.header_checksum ^= 0x10;
            }
            let mut g = f[..14].to_vec();
            h.write(&mut g).unwrap();
            // The L4 checksum over the new addresses (etherparse).
            let mut l4 = l4;
            if p.udp {
                if !p.no_udp_csum {
                    let u = etherparse::UdpHeaderSlice::from_slice(&l4)
                        .unwrap()
                        .to_header();
                    let cs = u.calc_checksum_ipv4(&h, &l4[8..]).unwrap();
                    l4[6..8].copy_from_slice(&cs.to_be_bytes());
                }
            } else {
                let t = etherparse::TcpHeaderSlice::from_slice(&l4).unwrap();
                let n = t.slice().len();
                let cs = t.to_header().calc_checksum_ipv4(&h, &l4[n..]).unwrap();
                l4[16..18].copy_from_slice(&cs.to_be_bytes());
            }
            g.extend_from_slice(&l4);
            let mut vx = vec![0x08, 0, 0, 0];
            let vni = if p.bad_vni { c.vni ^ 1 } else { c.vni };
            vx.extend_from_slice(&(vni << 8).to_be_bytes());
            vx.extend_from_slice(&g);
            let mut v = Vec::new();
            PacketBuilder::ethernet2(NODE2_MAC, UPLINK_MAC)
                .ipv4(NODE2_V4.octets(), NODE_V4.octets(), 64)
                .udp(50000, c.vxlan_port)
                .write(&mut v, &vx)
                .unwrap();
            return (v, UPLINK);
        }
        let (port, mac, mut src) = if p.from_other {
            (OTHER_PORT, OTHER_MAC, OTHER_V4)
        } else {
            (CLIENT_PORT, CLIENT_MAC, CLIENT_V4)
        };
        if p.spoof {
            src = Ipv4Addr::new(10, 244, 1, 99);
        }
        let (dst, dport) = DSTS[p.dst];
        let payload = vec![0x5a; p.len];
        let b = PacketBuilder::ethernet2(mac, GATEWAY_MAC).ipv4(src.octets(), dst.octets(), p.ttl);
        let mut v = Vec::new();
        if p.udp {
            b.udp(p.sport, dport).write(&mut v, &payload).unwrap();
            if p.no_udp_csum {
                v[40] = 0;
                v[41] = 0;
            }
        } else {
            let mut t = b.tcp(p.sport, dport, 7, 65535);
            if p.flags & 1 != 0 {
                t = t.syn();
            }
            if p.flags & 2 != 0 {
                t = t.ack(1);
            }
            if p.flags & 4 != 0 {
                t = t.fin();
            }
            t.write(&mut v, &payload).unwrap();
        }
        if p.bad_ip_csum {
            v[24] ^= 0x10;
        }
        (v, port)
    }

    /// Runs the packets in batches of `batch` through `pipe`: verdicts and bytes.
    fn run(pipe: &mut Pipeline, pkts: &[Pkt], batch: usize) -> Vec<(Verdict, Vec<u8>)> {
        let c = pipe.tables().config().clone();
        let mut out = Vec::new();
        for (n, chunk) in pkts.chunks(batch).enumerate() {
            let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; FRAME_SIZE]; chunk.len()];
            let mut ports = Vec::new();
            let mut lens = Vec::new();
            for (buf, p) in bufs.iter_mut().zip(chunk) {
                let (b, port) = bytes(p, &c);
                buf[HEADROOM..HEADROOM + b.len()].copy_from_slice(&b);
                ports.push(port);
                lens.push(b.len());
            }
            let mut frames: Vec<Frame> = bufs
                .iter_mut()
                .zip(ports.iter().zip(&lens))
                .map(|(b, (&port, &len))| Frame::new(b, HEADROOM, len, port))
                .collect();
            let mut v = vec![Verdict::Pass; frames.len()];
            pipe.process(&mut frames, &mut v, 1_000_000_000 + n as u64 * 1_000_000);
            for (f, v) in frames.iter().zip(v) {
                out.push((v, f.data().to_vec()));
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_fast_path_gives_the_general_paths_bytes_verdicts_and_counters(
            pkts in proptest::collection::vec(pkt(), 1..120),
            batch in 1usize..70,
        ) {
            let t = Arc::new(demo_tables().expect("demo tables build"));
            let mut fast = Pipeline::standalone(t.clone());
            let mut slow = Pipeline::standalone(t);
            slow.set_fast_path(false);
            let a = run(&mut fast, &pkts, batch);
            let b = run(&mut slow, &pkts, batch);
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                prop_assert_eq!(x.0, y.0, "verdict of packet {}", i);
                prop_assert_eq!(&x.1, &y.1, "bytes of packet {}", i);
            }
            prop_assert_eq!(fast.counters(), slow.counters());
            prop_assert_eq!(fast.conntrack().stats(), slow.conntrack().stats());
        }
    }
}
