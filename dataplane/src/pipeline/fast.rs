//! The established-flow fast path: the common frame shape read from fixed
//! offsets, in front of the general stages, with the same results.
//!
//! A frame qualifies when it comes from a pod port, is untagged Ethernet with
//! IPv4 without options, not a fragment, TCP or UDP, TTL above 1, a header
//! checksum that verifies, the sending pod's own source address (the
//! anti-spoofing check kept) and a unicast destination; or when it is VXLAN
//! for this node from the uplink carrying such a frame. The frame's bytes are
//! only read here ([`parse`]), so anything else goes to the general stages
//! untouched. What a port is (and a pod's own address) is looked up once per
//! run of frames from one port ([`Ports`]). For a qualifying frame the flow
//! key's words are built straight from the bytes (no `Meta`) and looked up
//! in the worker's flow cache ([`super::flows`], [`look`]).
//!
//! A cached flow is checked against its conntrack entry alone
//! ([`Table::revisit`]: same version, same state word, not expired, this
//! packet's flags change nothing) and sent as its slot says ([`send`]): NAT
//! with one folded checksum delta per header (the TTL decrement's in the
//! IPv4 one; see [`Edit`]) on one fixed-size span of the buffer taken with
//! one bounds check, then the pod's or the uplink's Ethernet addresses, or
//! toward a remote node its 64-byte `Pre4` line (outer headers and inner
//! Ethernet header) with the flow's UDP source port and the per-packet
//! fields (lengths, identification, the checksum from the template's
//! partial sum). While few flows are cached (`FlowCache::hot`) and every
//! earlier frame of the batch is decided, this happens in the first pass
//! itself ([`finish_cached`]): no second walk, no `Lean` stored. Otherwise
//! the frame waits for the second pass with the line it reads first
//! prefetched (the cached flow's conntrack entry, else the key's index
//! bucket), where [`finish`] takes a cached flow the same way and looks any
//! other up ([`Table::track_v4`]), routes its translated destination, and
//! caches an established flow with NAT. Every other outcome (a miss: a new
//! flow; a hit routed elsewhere or too big) fills the frame's `Meta` as
//! parsing would have and runs the general stages on it (a miss goes
//! straight to the flow stage's first-packet decision, with the route
//! already found), at the frame's place in the batch, so conntrack sees the
//! batch's packets in order and results (bytes, verdicts, counters, the
//! outer IPv4 identification sequence) are the general path's.
//!
//! Callgrind, instructions per packet (`bench-pipeline`, see the binary's
//! help), general path alone -> first fast path -> second -> with the flow
//! cache -> this one: service-encap 749 -> 607 -> 495 -> 371 (389 once
//! per-Service counters came) -> 290, decap-reverse 820 -> 589 -> 490 ->
//! 391 -> 325, pod-to-pod 472 -> 348 -> 290 -> 277 -> 287, new-flow 1812 ->
//! 1887 -> 1802 -> 1821 -> 1835. From 389 to 290: cached flows finished in
//! the first pass (about 30: the second loop, the `Lean` stores and reloads
//! and the entry prefetch of a line about to be read), the send action in
//! the slot instead of the route's remote-node lookups and the inner MACs
//! (about 25), four ways per set (two lost the flows of sets of three, and
//! each miss left the rest of its batch to the second pass), `revisit`
//! comparing the whole state word with the timeout and change flags taken
//! when cached (about 8), the probe handing its slot over and keeping no
//! index (about 10), the conntrack hit passed on as four words rather than
//! through memory (about 15 on every full lookup), and smaller cuts (the
//! header template's partial sum in its checksum field, one rotate for the
//! outer checksum's fold). What is left of service-encap's 290: about 75
//! the frame, port and header checks with the header checksum, 25 the key
//! and its probe, 30 the conntrack check and last-seen, 15 the counters
//! (per-Service packets and bytes, hits, encap), 30 the NAT, TTL and
//! checksum rewrite, 50 the headroom span, the 64-byte line, the source
//! port and the outer fields, and the rest the loop, verdicts and spills.
//! Wall clock against the session's start (`bench-pipeline`, best of five,
//! one core): 1,024 flows 18.1 ns against 22.8, and no slower from 2,000
//! to 1,000,000 flows. What the earlier fast paths did away with: the port
//! and pod lookup per frame (now per run of frames from one port), bounds
//! checks per header write (one span), the `Meta` flag stores, the verdict
//! tally loop, and a second conntrack lookup and route lookup for a new
//! flow.

use super::drop::DropReason;
use super::flow;
use super::flows::{Edit, FlowCache, Out, Slot, SPORT_SHIFT};
use super::forward;
use super::nat;
use super::parse::{fold64, header_sum_ok, Frag, Ingress, Meta, ETH_LEN, L4};
use super::verdict::Verdict;
use super::vxlan::{self, OVERHEAD_V4, UDP_LEN, VXLAN_LEN};
use super::{Env, Frame, State};
use crate::conntrack::{Dir, Expect, FlowKey, Table};
use crate::proto;
use crate::state::{NodeConfig, PortKind, RemoteNode, RouteTarget, Tables, PRE4_SUM};
use crate::{Mac, PortId};

const L3: usize = ETH_LEN;
const L4_AT: usize = L3 + 20;
/// The header bytes the fast path rewrites: Ethernet, IPv4, and the L4
/// header up to TCP's checksum (UDP's ends before; a qualifying frame holds
/// every byte written).
const HDRS: usize = L4_AT + 18;

/// What the batch loop does with a frame in its flow pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Step {
    /// Decided at ingress.
    #[default]
    Done,
    /// The general flow and forwarding stages, on its `Meta`.
    General,
    /// [`finish`], on its [`Lean`].
    Fast,
}

/// What [`parse`] learned about a qualifying frame.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lean {
    /// Set by the batch loop for every frame.
    pub step: Step,
    pub tcp_flags: u8,
    /// The IP packet's end in the (inner) frame (Ethernet padding beyond is
    /// trimmed).
    pub end: u16,
    /// VXLAN: the outer IP packet's end; 0 for a frame from a pod.
    pub outer_end: u16,
    /// The [`FlowCache`] handle of the frame's flow; 0: not cached.
    pub cached: u32,
    /// The flow key: the addresses (`FlowKey` words 0 and 2, the source in
    /// the low half) and `FlowKey` word 4.
    pub k0: u64,
    pub k1: u64,
    /// The key's conntrack index hash, when not `cached`.
    pub h: u64,
}

/// The words of an IPv4 flow key that vary: 0 (source), 2 (destination) and
/// 4 (ports, protocol, family); 1 and 3, the upper address words, are zero.
/// A conntrack hit's translation of an IPv4 key is an IPv4 key too (both
/// tuples of an entry have one family: Services and masquerade translate
/// within a family), so it is taken as one of these as well.
#[derive(Clone, Copy, Debug)]
struct V4 {
    s: u64,
    d: u64,
    p: u64,
}

impl V4 {
    #[inline(always)]
    fn of_lean(l: &Lean) -> V4 {
        V4::of_key(l.k0, l.k1)
    }

    /// The key of `Lean::k0` and `k1`.
    #[inline(always)]
    fn of_key(k0: u64, k1: u64) -> V4 {
        V4 {
            s: k0 & 0xffff_ffff,
            d: k0 >> 32,
            p: k1,
        }
    }

    /// The translation an [`Edit`] holds.
    #[inline(always)]
    fn of_edit(e: &Edit) -> V4 {
        V4 {
            s: e.xa & 0xffff_ffff,
            d: e.xa >> 32,
            p: e.xp,
        }
    }

    #[inline(always)]
    fn of(w: &[u64; 5]) -> V4 {
        V4 {
            s: w[0],
            d: w[2],
            p: w[4],
        }
    }

    #[inline(always)]
    fn words(self) -> [u64; 5] {
        [self.s, 0, self.d, 0, self.p]
    }
}

/// What [`parse`] needs of the port the last frame came from, looked up
/// again only when the port changes (one per batch: the tables do not
/// change within one). Plain fields rather than an enum with data, so a
/// frame's check is a compare and a load, not a rebuild of the variant.
pub(crate) struct Ports {
    /// The fast path is on (off: every port is `Other`).
    on: bool,
    port: PortId,
    kind: Kind,
    /// A pod's own address (native-endian image of its bytes).
    own: u32,
    /// The uplink's VXLAN: this node's address, UDP port and VNI.
    node: [u8; 4],
    vxlan_port: u16,
    vni: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing the fast path takes (no port, a pod without IPv4, an uplink
    /// on a node without IPv4).
    Other,
    Uplink,
    Pod,
}

impl Ports {
    pub(crate) fn new(t: &Tables, on: bool) -> Ports {
        let c = t.config();
        let mut p = Ports {
            on,
            port: 0,
            kind: Kind::Other,
            own: 0,
            node: t.node_v4().unwrap_or_default(),
            vxlan_port: c.vxlan_port,
            vni: c.vni,
        };
        p.load(t, PortId::MAX);
        p
    }

    #[inline(never)]
    fn load(&mut self, t: &Tables, port: PortId) {
        self.port = port;
        if !self.on {
            self.kind = Kind::Other;
            return;
        }
        self.kind = match t.port(port) {
            PortKind::Pod(idx) => match t.pod(idx).and_then(|p| p.ipv4) {
                Some(own) => {
                    self.own = u32::from_ne_bytes(own);
                    Kind::Pod
                }
                None => Kind::Other,
            },
            PortKind::Uplink if t.node_v4().is_some() => Kind::Uplink,
            _ => Kind::Other,
        };
    }
}

/// Checks whether the frame qualifies and fills `l` (all but `step`); reads
/// only.
#[inline(always)]
pub(crate) fn parse(t: &Tables, ports: &mut Ports, frame: &Frame, l: &mut Lean) -> bool {
    let d = frame.data();
    if frame.port != ports.port {
        ports.load(t, frame.port);
    }
    match ports.kind {
        Kind::Pod => {
            if !ipv4(d, Some(ports.own), l) {
                return false;
            }
            l.outer_end = 0;
        }
        Kind::Uplink => {
            let Some(end) = overlay(d, ports.node, ports.vxlan_port, ports.vni) else {
                return false;
            };
            let Some(inner) = d.get(OVERHEAD_V4..end) else {
                return false;
            };
            if !ipv4(inner, None, l) {
                return false;
            }
            l.outer_end = end as u16;
        }
        Kind::Other => return false,
    }
    true
}

/// The first pass's rest for a frame [`parse`] accepted: its flow looked
/// up in the flow cache (its slot; the caller keeps its handle in
/// `Lean::cached` if the frame is left to the second pass); for a flow
/// not cached, the key's conntrack index hash computed and its bucket
/// prefetched.
#[inline(always)]
pub(crate) fn look<'a>(ct: &Table, flows: &'a FlowCache, l: &mut Lean) -> Option<&'a Slot> {
    if flows.on {
        if let Some(c) = flows.find(l.k0, l.k1) {
            return Some(c);
        }
    }
    l.h = Table::key_hash(&V4::of_lean(l).words());
    ct.prefetch_hashed(l.h);
    None
}

/// For a cached flow left to the second pass: its conntrack entry (the one
/// line [`finish`] reads first) prefetched.
#[inline(always)]
pub(crate) fn prefetch_cached(ct: &Table, c: &Slot) {
    ct.prefetch_entry(c.id);
}

/// The IPv4 TCP/UDP shape of the module doc (`own`: the sending pod's
/// address, `None` for a decapsulated frame); fills `l`'s key, hash, end and
/// TCP flags.
#[inline(always)]
fn ipv4(d: &[u8], own: Option<u32>, l: &mut Lean) -> bool {
    let Some(h) = d.first_chunk::<{ L4_AT + 8 }>() else {
        return false;
    };
    let Some(ip) = h[L3..].first_chunk::<20>() else {
        return false;
    };
    // Ethertype IPv4 and version 4 with a 20-byte header (the TOS byte
    // free); flags and fragment offset (DF free), TTL and protocol: a word.
    let ethertype = u16::from_le_bytes([h[12], h[13]]);
    let ftp = u32::from_le_bytes([ip[6], ip[7], ip[8], ip[9]]);
    let (ttl, p) = ((ftp >> 16) as u8, (ftp >> 24) as u8);
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4len = if p == proto::TCP { 20 } else { 8 };
    if ethertype != 0x0008
        || ip[0] != 0x45
        || ftp & 0xff3f != 0
        || (p != proto::TCP && p != proto::UDP)
        || ttl <= 1
        || own.is_some_and(|o| u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]) != o)
        || ip[16] >= 224
        || L3 + total > d.len()
        || total < 20 + l4len
        || !header_sum_ok(ip)
    {
        return false;
    }
    l.tcp_flags = if p == proto::TCP {
        let Some(&f) = d.get(L4_AT + 13) else {
            return false;
        };
        f
    } else {
        0
    };
    // Source port in the low half, destination port above (host order).
    let ports = u32::from_be_bytes([h[L4_AT], h[L4_AT + 1], h[L4_AT + 2], h[L4_AT + 3]]);
    let k = V4 {
        s: u64::from(u32::from_le_bytes([ip[12], ip[13], ip[14], ip[15]])),
        d: u64::from(u32::from_le_bytes([ip[16], ip[17], ip[18], ip[19]])),
        p: u64::from(ports.rotate_left(16)) | u64::from(p) << 32 | 4 << 40,
    };
    l.k0 = k.s | k.d << 32;
    l.k1 = k.p;
    l.end = (L3 + total) as u16;
    true
}

/// VXLAN for `node` in the shape `vxlan::fast_decap_v4` takes, with a VXLAN
/// header `vxlan::decap` accepts and an untagged inner frame: the outer IP
/// packet's end. Reads only.
#[inline(always)]
fn overlay(d: &[u8], node: [u8; 4], port: u16, vni: u32) -> Option<usize> {
    let h = d.first_chunk::<{ OVERHEAD_V4 + ETH_LEN }>()?;
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
        || u16::from_be_bytes([udp[2], udp[3]]) != port
        || end > d.len()
        || end < OVERHEAD_V4 + ETH_LEN
        || vx[0] & 0x08 == 0
        || u32::from_be_bytes([0, vx[4], vx[5], vx[6]]) != vni
        || !header_sum_ok(ip)
    {
        return None;
    }
    Some(end)
}

/// A cached flow's frame in the first pass: finished when its conntrack
/// entry still holds it (`Some`, true when sent), else left untouched for
/// [`finish`] in the second pass (`None`). Kept to the cached flow's own
/// steps, so that the first pass's loop stays small for the frames it
/// leaves to the second.
#[inline(always)]
pub(crate) fn finish_cached(
    env: &Env,
    st: &mut State,
    c: &Slot,
    frame: &mut Frame,
    m: &mut Meta,
    l: &Lean,
    v: &mut Verdict,
) -> Option<bool> {
    let x = Expect {
        word: c.word,
        timeout: c.timeout,
        chg: c.chg,
    };
    if !env.ct.revisit(c.id, c.seq, &x, l.tcp_flags, env.now) {
        return None;
    }
    // Held: decapsulated (if VXLAN), counted, then sent as the slot says
    // or, when that does not fit, by `dispatch`. (The decapsulation and
    // trim are written out here and in `finish`: the same lines as one
    // inlined helper cost service-encap 13 instructions a packet in
    // register spills.)
    if l.outer_end != 0 {
        frame.trim(l.outer_end as usize);
        frame.pull_head(OVERHEAD_V4);
        st.cnt.decap += 1;
    }
    // `parse` saw the IP packet end within the frame: the frame's length is
    // now `l.end`.
    frame.trim(l.end as usize);
    st.cnt.ct_hits += 1;
    env.svc.packet(c.user, c.reply, u64::from(l.end));
    if send(env.t, st, frame, c, l, v) {
        return Some(true);
    }
    Some(hit_other(env, st, c, frame, m, *l, v))
}

/// [`finish_cached`]'s frame that its slot's action does not fit (too big, no room):
/// `dispatch` on the slot's route.
#[cold]
#[inline(never)]
fn hit_other(
    env: &Env,
    st: &mut State,
    c: &Slot,
    frame: &mut Frame,
    m: &mut Meta,
    l: Lean,
    v: &mut Verdict,
) -> bool {
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&((c.xa >> 32) as u32).to_le_bytes());
    let route = st.route.lookup(env.t, 4, &dst);
    dispatch(env, st, frame, m, &l, v, c.edit(), route, true)
}

/// The flow and forwarding stages for a frame [`parse`] and [`look`]
/// accepted: its verdict in `v`; true when that is a `Tx` decided here (the
/// batch skips its verdict tally when every frame's is).
#[inline(always)]
pub(crate) fn finish(
    env: &Env,
    st: &mut State,
    flows: &mut FlowCache,
    frame: &mut Frame,
    m: &mut Meta,
    l: &Lean,
    v: &mut Verdict,
) -> bool {
    if l.cached != 0 {
        // A cached flow whose conntrack entry still holds it: what the full
        // lookup below would have given, without the index, the route
        // lookup, the checksum arithmetic or the remote node's headers.
        if let Some(sent) = finish_cached(env, st, flows.get(l.cached), frame, m, l, v) {
            return sent;
        }
    }
    if l.outer_end != 0 {
        frame.trim(l.outer_end as usize);
        frame.pull_head(OVERHEAD_V4);
        st.cnt.decap += 1;
    }
    // `parse` saw the IP packet end within the frame: the frame's length is
    // now `l.end`.
    frame.trim(l.end as usize);
    let k = V4::of_lean(l);
    let hash = if l.cached != 0 {
        Table::key_hash(&k.words())
    } else {
        l.h
    };
    let route_of = |st: &mut State, x: V4| {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&(x.d as u32).to_le_bytes());
        st.route.lookup(env.t, 4, &dst)
    };
    // Each outcome below has its own copy of `dispatch` (inlined), so that
    // whether the packet is tracked and translated is a constant in the
    // miss's and the cached flow's.
    let Some(h) = env.ct.track_v4(k.s, k.d, k.p, hash, l.tcp_flags, env.now) else {
        // A miss: pod to pod (or a decapsulated packet to a local pod) is
        // forwarded untracked, as the flow stage's first packet does;
        // anything else is left to it in `dispatch`.
        let route = route_of(st, k);
        return dispatch(
            env,
            st,
            frame,
            m,
            l,
            v,
            Edit::new(k, k, false),
            route,
            false,
        );
    };
    st.cnt.ct_hits += 1;
    env.svc
        .packet(h.user, h.dir == Dir::Reply, u64::from(l.end));
    let x = if h.nat { V4::of(&h.xlate) } else { k };
    let route = route_of(st, x);
    let edit = Edit::new(k, x, h.nat);
    if h.nat && flows.on {
        let seen = Seen {
            id: h.id,
            seq: h.seq,
            user: h.user,
            word: h.word,
        };
        remember(env, flows, l.k0, l.k1, edit, route, seen, h.dir);
    }
    dispatch(env, st, frame, m, l, v, edit, route, true)
}

/// What the flow cache keeps of a conntrack hit ([`LeanHit`]'s fields):
/// four words, passed in two registers.
#[derive(Clone, Copy)]
struct Seen {
    id: u32,
    seq: u32,
    user: u32,
    word: u32,
}

/// Caches the flow of a conntrack hit with NAT (`h`, in direction `dir`)
/// of the packet with key `k0`, `k1`, translated by `e` and routed to
/// `route`, with what its packets are sent by (see `flows::Out`), unless
/// the hit changed the entry's state. Out of line, and given the hit's
/// words alone: the whole hit passed on kept it in memory on the hot path.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn remember(
    env: &Env,
    flows: &mut FlowCache,
    k0: u64,
    k1: u64,
    e: Edit,
    route: RouteTarget,
    h: Seen,
    dir: Dir,
) {
    if let Some(x) = env.ct.expect(h.word, dir) {
        flows.put(cached(env.t, k0, k1, &e, route, h, dir, x));
    }
}

/// The flow cache's slot for [`remember`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cached(
    t: &Tables,
    k0: u64,
    k1: u64,
    e: &Edit,
    route: RouteTarget,
    h: Seen,
    dir: Dir,
    x: Expect,
) -> Slot {
    let mut s = Slot {
        k0,
        k1,
        xa: e.xa,
        xp: e.xp,
        id: h.id,
        seq: h.seq,
        word: x.word,
        timeout: x.timeout,
        user: h.user,
        ip: e.ip,
        l4: e.l4,
        idx: 0,
        limit: 0,
        out: Out::General,
        reply: dir == Dir::Reply,
        chg: x.chg,
    };
    match route {
        RouteTarget::RemoteNode(idx) => {
            if let (Some(r), Ok(i)) = (t.remote(idx), u16::try_from(idx)) {
                if r.outer == 4 && r.outer4.is_some() && t.pre4(idx).is_some() {
                    let sport = vxlan::source_port(entropy_v4(V4::of_key(k0, k1)));
                    s.xp |= u64::from(sport) << SPORT_SHIFT;
                    let limit = r.inner_limit[0].saturating_add(ETH_LEN as u16);
                    (s.out, s.idx, s.limit) = (Out::Remote, i, limit);
                }
            }
        }
        RouteTarget::LocalPod(idx) => {
            if let (Some(_), Ok(i)) = (t.pod(idx), u16::try_from(idx)) {
                (s.out, s.idx) = (Out::Pod, i);
            }
        }
        RouteTarget::Outside => s.out = Out::Outside,
        _ => {}
    }
    s
}

/// A cached flow's packet sent as its slot says, when it fits (`dispatch`
/// takes any other): the rewrite, then toward a remote node its `Pre4` in
/// front of the IP header with the flow's UDP source port and the outer
/// headers' per-packet fields (lengths, identification, checksum from the
/// template's partial sum), else the pod's or the uplink's Ethernet
/// addresses.
#[inline(always)]
fn send(
    t: &Tables,
    st: &mut State,
    frame: &mut Frame,
    c: &Slot,
    l: &Lean,
    v: &mut Verdict,
) -> bool {
    let cfg = t.config();
    // Remote first, told by its limit (0 for any other `out`): a test of
    // `out` itself became a jump table.
    if l.end <= c.limit && l.outer_end == 0 {
        let Some(p) = t.pre4(u32::from(c.idx)) else {
            return false;
        };
        let sum = u16::from_ne_bytes([p.0[PRE4_SUM], p.0[PRE4_SUM + 1]]);
        let inner = frame.len();
        let Some(s) = frame.push_head_span::<{ OVERHEAD_V4 + HDRS }>(OVERHEAD_V4) else {
            return false;
        };
        // Unreachable elses: the span holds both, at these places.
        let Ok(h) = <&mut [u8; HDRS]>::try_from(&mut s[OVERHEAD_V4..]) else {
            return false;
        };
        rewrite(h, &c.rewrite_edit());
        let Ok(outer) = <&mut [u8; 64]>::try_from(&mut s[..64]) else {
            return false;
        };
        // The outer headers and the inner Ethernet header: one copy.
        *outer = p.0;
        outer[34..36].copy_from_slice(&c.sport().to_be_bytes());
        st.ident = st.ident.wrapping_add(1);
        outer_fields(outer, inner, st.ident, u32::from(sum));
        st.cnt.encap += 1;
        *v = Verdict::Tx(cfg.uplink);
        return true;
    }
    let (port, macs) = match c.out {
        Out::Pod => match t.pod(u32::from(c.idx)) {
            Some(pod) => (pod.port, (&pod.mac, &cfg.gateway_mac)),
            None => return false,
        },
        Out::Outside => (cfg.uplink, (&cfg.uplink_gateway_mac, &cfg.uplink_mac)),
        // Remote: too big, or a decapsulated packet (not sent back out).
        Out::Remote | Out::General => return false,
    };
    let Some(h) = frame.span_mut::<HDRS>(0) else {
        return false;
    };
    rewrite(h, &c.rewrite_edit());
    h[0..6].copy_from_slice(macs.0);
    h[6..12].copy_from_slice(macs.1);
    *v = Verdict::Tx(port);
    true
}

/// The per-packet fields of outer headers over IPv4 in front of an inner
/// frame of `inner` bytes: the IPv4 total length, identification and
/// checksum (from `sum`, the template's partial sum) and the UDP length.
#[inline(always)]
fn outer_fields<const N: usize>(outer: &mut [u8; N], inner: usize, ident: u16, sum: u32) {
    let udp_len = (UDP_LEN + VXLAN_LEN + inner) as u16;
    let total = 20 + udp_len;
    outer[16..18].copy_from_slice(&total.to_be_bytes());
    outer[18..20].copy_from_slice(&ident.to_be_bytes());
    // One's-complement fold of the partial sums (each at most 0xffff): the
    // upper half of the sum plus itself rotated by 16 bits (see `fold64`).
    let s = sum + u32::from(total) + u32::from(ident);
    let cs = !(s.wrapping_add(s.rotate_right(16)) >> 16) as u16;
    outer[24..26].copy_from_slice(&cs.to_be_bytes());
    outer[38..40].copy_from_slice(&udp_len.to_be_bytes());
}

/// [`finish`] once the flow (`tracked`: a conntrack hit) and its route are
/// known.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dispatch(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    l: &Lean,
    v: &mut Verdict,
    edit: Edit,
    route: RouteTarget,
    tracked: bool,
) -> bool {
    let t = env.t;
    let c = t.config();
    match route {
        RouteTarget::RemoteNode(idx) if l.outer_end == 0 => {
            if let Some(r) = t.remote(idx) {
                if r.outer != 0 && usize::from(l.end) - ETH_LEN <= usize::from(r.inner_limit[0]) {
                    st.ident = st.ident.wrapping_add(1);
                    return encap(st, frame, c, r, l, &edit, v);
                }
            }
        }
        RouteTarget::LocalPod(idx) => {
            if let Some(pod) = t.pod(idx) {
                deliver(frame, &edit, &pod.mac, &c.gateway_mac);
                *v = Verdict::Tx(pod.port);
                return true;
            }
        }
        RouteTarget::Outside if tracked => {
            deliver(frame, &edit, &c.uplink_gateway_mac, &c.uplink_mac);
            *v = Verdict::Tx(c.uplink);
            return true;
        }
        _ => {}
    }
    // Anything else (a new flow, an ICMP error to build, a drop): the
    // general stages.
    *v = if tracked {
        general_hit(env, st, frame, m, *l, V4::of_edit(&edit), edit.nat)
    } else {
        general_miss(env, st, frame, m, *l, route)
    };
    false
}

/// A miss: the flow stage's first-packet decision (conntrack was just
/// looked up, and the route of the untranslated destination found), then
/// forwarding.
#[cold]
#[inline(never)]
fn general_miss(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    l: Lean,
    route: RouteTarget,
) -> Verdict {
    fill(env, m, &l, frame);
    match flow::first_packet(env, st, frame, m, route) {
        Some(v) => v,
        None => forward::run(env, st, frame, m),
    }
}

/// A hit that is not finished here: from where the flow stage's hit would
/// leave it, forwarding.
#[cold]
#[inline(never)]
fn general_hit(
    env: &Env,
    st: &mut State,
    frame: &mut Frame,
    m: &mut Meta,
    l: Lean,
    x: V4,
    nat: bool,
) -> Verdict {
    fill(env, m, &l, frame);
    if nat {
        let xkey = FlowKey::from_words(&x.words());
        nat::rewrite(frame.data_mut(), m, &m.key, &xkey);
        m.xkey = xkey;
        m.nat = true;
    }
    forward::run(env, st, frame, m)
}

/// Fills `m` as ingress parsing fills it for this frame (whose headers are
/// still as received).
fn fill(env: &Env, m: &mut Meta, l: &Lean, frame: &Frame) {
    let w = &V4::of_lean(l).words();
    let p = (w[4] >> 32) as u8;
    let tcp = p == proto::TCP;
    let d = frame.data();
    let b = |i: usize| d.get(i).copied().unwrap_or(0);
    *m = Meta {
        ingress: match env.t.port(frame.port) {
            PortKind::Pod(idx) if l.outer_end == 0 => Ingress::Pod(idx),
            _ => Ingress::Overlay,
        },
        l3: L3 as u16,
        l4: L4_AT as u16,
        family: 4,
        proto: p,
        ttl: b(L3 + 8),
        tcp_flags: l.tcp_flags,
        l4kind: if tcp { L4::Tcp } else { L4::Udp },
        frag: Frag::None,
        frag_ident: 0,
        dont_frag: b(L3 + 6) & 0x40 != 0,
        key: FlowKey::from_words(w),
        xkey: m.xkey,
        nat: false,
        csum_at: if tcp {
            (L4_AT + 16) as u16
        } else if b(L4_AT + 6) | b(L4_AT + 7) != 0 {
            (L4_AT + 6) as u16
        } else {
            0
        },
        sport_at: L4_AT as u16,
        dport_at: (L4_AT + 2) as u16,
        pseudo: true,
        route: None,
    };
}

/// To a local pod or off-cluster: the rewrite and the Ethernet addresses
/// (by reference: the cold copy below takes them by value, and a tuple of
/// them built here went through the stack on the hot path).
#[inline(always)]
fn deliver(frame: &mut Frame, e: &Edit, dst: &Mac, src: &Mac) {
    let e = *e;
    match frame.span_mut::<HDRS>(0) {
        Some(h) => {
            rewrite(h, &e);
            h[0..6].copy_from_slice(dst);
            h[6..12].copy_from_slice(src);
        }
        None => edit_copy(frame, e, Some((*dst, *src))),
    }
}

/// [`deliver`]'s edits (or the rewrite alone) for a frame that ends less
/// than [`HDRS`] bytes before its buffer does: on a copy of its headers,
/// written back.
#[cold]
#[inline(never)]
fn edit_copy(frame: &mut Frame, e: Edit, macs: Option<(Mac, Mac)>) {
    let d = frame.data_mut();
    let n = d.len().min(HDRS);
    let mut h = [0u8; HDRS];
    h[..n].copy_from_slice(&d[..n]);
    rewrite(&mut h, &e);
    if let Some((dst, src)) = macs {
        h[0..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
    }
    d[..n].copy_from_slice(&h[..n]);
}

/// Toward a remote node: the rewrite, then VXLAN over IPv4 with `r`'s
/// precomputed outer headers (as `vxlan::encap` builds them), written
/// through one span of the headroom and the frame's headers; true when sent
/// from here. `l`: the packet's (its key's flow hash picks the outer
/// source port).
#[inline(always)]
fn encap(
    st: &mut State,
    frame: &mut Frame,
    c: &NodeConfig,
    r: &RemoteNode,
    l: &Lean,
    e: &Edit,
    v: &mut Verdict,
) -> bool {
    let inner = frame.len();
    let (4, Some(o)) = (r.outer, &r.outer4) else {
        *v = encap_other(st, frame, c, r, V4::of_lean(l), *e);
        return false;
    };
    let Some(s) = frame.push_head_span::<{ OVERHEAD_V4 + HDRS }>(OVERHEAD_V4) else {
        *v = encap_other(st, frame, c, r, V4::of_lean(l), *e);
        return false;
    };
    let (outer, h) = s.split_at_mut(OVERHEAD_V4);
    let (Ok(outer), Ok(h)) = (
        <&mut [u8; OVERHEAD_V4]>::try_from(outer),
        <&mut [u8; HDRS]>::try_from(h),
    ) else {
        // Unreachable: the span's two parts have these lengths.
        *v = Verdict::Drop(DropReason::Truncated);
        return false;
    };
    rewrite(h, e);
    h[0..6].copy_from_slice(&r.vtep_mac);
    h[6..12].copy_from_slice(&c.vtep_mac);
    *outer = o.hdr;
    let sport = vxlan::source_port(entropy_v4(V4::of_lean(l)));
    outer[34..36].copy_from_slice(&sport.to_be_bytes());
    outer_fields(outer, inner, st.ident, o.sum);
    st.cnt.encap += 1;
    *v = Verdict::Tx(c.uplink);
    true
}

/// [`encap`] over an IPv6 underlay, or without the headroom or buffer it
/// takes: the rewrite, then `vxlan::encap`.
#[cold]
#[inline(never)]
fn encap_other(
    st: &mut State,
    frame: &mut Frame,
    c: &NodeConfig,
    r: &RemoteNode,
    k: V4,
    e: Edit,
) -> Verdict {
    match frame.span_mut::<HDRS>(0) {
        Some(h) => rewrite(h, &e),
        None => edit_copy(frame, e, None),
    }
    match vxlan::encap(frame, c, r, r.outer, entropy_v4(k), st.ident) {
        Ok(()) => {
            st.cnt.encap += 1;
            Verdict::Tx(c.uplink)
        }
        Err(e) => Verdict::Drop(e),
    }
}

impl Edit {
    /// The edit of a packet with key `w` whose translation is `x` (when
    /// `nat`): the sums of `nat::rewrite`'s checksum arithmetic, which
    /// depend on the key and its translation alone, so a flow's packets
    /// share them.
    #[inline(always)]
    fn new(w: V4, x: V4, nat: bool) -> Edit {
        if !nat {
            return Edit {
                xa: w.s | w.d << 32,
                xp: w.p,
                ..Edit::default()
            };
        }
        // The addresses' words in native byte order (the key words are
        // little-endian byte images). RFC 1624's `~m + m'` per word, with
        // each `~m` of a 32-bit word written as `0xffff_ffff - m` and the
        // constants gathered: the same integer, in fewer instructions.
        let ne = |v: u64| u64::from(u32::from_ne_bytes((v as u32).to_le_bytes()));
        let addr = ne(x.s) + ne(x.d) + 0x1_ffff_fffe - (ne(w.s) + ne(w.d));
        // Both ports as one 32-bit word, as the header holds them (as
        // `nat` sums addresses: 2^16 = 1 mod 0xffff, and a word is all ones
        // exactly when both its halves are).
        let port = |p: u64| u64::from(u32::from_ne_bytes((p as u32).rotate_left(16).to_be_bytes()));
        Edit {
            xa: (x.s & 0xffff_ffff) | x.d << 32,
            xp: x.p,
            // The TTL decrement's 0xfffe (see `rewrite`) summed in: one
            // fold for both, the same value as two (a fold of a nonzero
            // sum is the one value in 1..=0xffff of its residue).
            ip: fold64(addr + 0xfffe),
            l4: fold64(addr + 0xffff_ffff + port(x.p) - port(w.p)),
            nat: true,
        }
    }
}

/// RFC 1624 eqn. 3, as `nat` applies it (`~HC` as `0xffff - HC`), with the
/// sum of `~m + m'` already folded (`Edit`): the same value as folding it
/// all at once (the result depends on the total's residue mod 0xffff and on
/// whether it is zero, and folding a part keeps both). At most 0x1fffe
/// before the fold, so one fold.
#[inline(always)]
fn apply(csum: u16, sum: u16) -> u16 {
    let s = 0xffff - u32::from(csum) + u32::from(sum);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// The NAT rewrite of `e` (when `e.nat`) and the TTL decrement, on the
/// headers of a qualifying frame, with the checksum arithmetic of
/// `nat::rewrite` and `forward`'s TTL decrement (so the bytes are theirs,
/// zero representations included).
#[inline(always)]
fn rewrite(h: &mut [u8; HDRS], e: &Edit) {
    const TTL: usize = L3 + 8;
    const CSUM: usize = L3 + 10;
    let ttl = h[TTL];
    let ip_csum = u16::from_ne_bytes([h[CSUM], h[CSUM + 1]]);
    if !e.nat {
        // TTL - 1: see `forward::dec_ttl`.
        let s = u32::from(!ip_csum) + 0xfffe;
        let c = !(((s & 0xffff) + (s >> 16)) as u16);
        h[TTL] = ttl.wrapping_sub(1);
        h[CSUM..CSUM + 2].copy_from_slice(&c.to_ne_bytes());
        return;
    }
    // Source and destination address: one 8-byte store.
    h[L3 + 12..L3 + 20].copy_from_slice(&e.xa.to_le_bytes());
    h[CSUM..CSUM + 2].copy_from_slice(&apply(ip_csum, e.ip).to_ne_bytes());
    h[TTL] = ttl.wrapping_sub(1);
    let new = (e.xp as u32).rotate_left(16).to_be_bytes();
    h[L4_AT..L4_AT + 4].copy_from_slice(&new);
    if h[L3 + 9] == proto::TCP {
        const AT: usize = L4_AT + 16;
        let c = apply(u16::from_ne_bytes([h[AT], h[AT + 1]]), e.l4);
        h[AT..AT + 2].copy_from_slice(&c.to_ne_bytes());
    } else {
        // UDP: a zero checksum field is no checksum; a computed zero is
        // sent as all ones.
        const AT: usize = L4_AT + 6;
        let f = u16::from_ne_bytes([h[AT], h[AT + 1]]);
        if f != 0 {
            let c = match apply(f, e.l4) {
                0 => 0xffff,
                c => c,
            };
            h[AT..AT + 2].copy_from_slice(&c.to_ne_bytes());
        }
    }
}

/// `vxlan::flow_entropy` of the key with these words.
#[cfg(test)]
fn entropy(w: &[u64; 5]) -> u64 {
    let x = w[0] ^ w[1].rotate_left(16) ^ w[2].rotate_left(32) ^ w[3].rotate_left(48) ^ w[4];
    let p = u128::from(x) * u128::from(0x9e37_79b9_7f4a_7c15u64);
    (p as u64) ^ ((p >> 64) as u64)
}

/// [`entropy`] of an IPv4 key (words 1 and 3 zero, the destination's
/// rotation a shift).
#[inline(always)]
fn entropy_v4(k: V4) -> u64 {
    let x = (k.s & 0xffff_ffff) ^ k.d << 32 ^ k.p;
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
            assert_eq!(entropy_v4(V4::of(&k.words())), vxlan::flow_entropy(&k));
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
        /// Where the frame sits in its buffer: 0, the usual headroom and
        /// tailroom; 1, no headroom and the buffer ending with the frame;
        /// 2, 20 bytes of headroom, the buffer ending with the frame (no
        /// room to encapsulate, no room past short headers).
        room: u8,
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
            (
                0u8..3,
                0u8..20,
                prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2)],
            ),
        )
            .prop_map(
                |((o, sp, dst, sport), (udp, ttl, f), (len, nc, bc), (ov, vni, room))| Pkt {
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
                    room,
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
            let mut bufs = Vec::new();
            let mut heads = Vec::new();
            let mut ports = Vec::new();
            let mut lens = Vec::new();
            for p in chunk {
                let (b, port) = bytes(p, &c);
                let (head, size) = match p.room {
                    0 => (HEADROOM, FRAME_SIZE),
                    1 => (0, b.len()),
                    _ => (20, 20 + b.len()),
                };
                let mut buf = vec![0u8; size];
                buf[head..head + b.len()].copy_from_slice(&b);
                bufs.push(buf);
                heads.push(head);
                ports.push(port);
                lens.push(b.len());
            }
            let mut frames: Vec<Frame> = bufs
                .iter_mut()
                .zip(heads.iter().zip(ports.iter().zip(&lens)))
                .map(|(b, (&head, (&port, &len)))| Frame::new(b, head, len, port))
                .collect();
            let mut v = vec![Verdict::Pass; frames.len()];
            pipe.process(&mut frames, &mut v, 1_000_000_000 + n as u64 * 1_000_000);
            for (f, v) in frames.iter().zip(v) {
                out.push((v, f.data().to_vec()));
            }
        }
        out
    }

    #[test]
    fn a_cached_flow_whose_conntrack_entry_went_away_is_tracked_anew() {
        let t = Arc::new(demo_tables().expect("demo tables build"));
        let mut fast = Pipeline::standalone(t.clone());
        let mut slow = Pipeline::standalone(t);
        slow.set_fast_path(false);
        let p = Pkt {
            from_other: false,
            spoof: false,
            // The DNS Service (UDP).
            dst: 2,
            sport: 40000,
            udp: true,
            ttl: 64,
            flags: 0,
            len: 20,
            no_udp_csum: false,
            bad_ip_csum: false,
            overlay: false,
            bad_vni: false,
            room: 0,
        };
        // New, then a full lookup that fills the cache, then cached.
        let pkts = vec![p.clone(), p.clone(), p.clone()];
        assert_eq!(run(&mut fast, &pkts, 1), run(&mut slow, &pkts, 1));
        for pipe in [&fast, &slow] {
            let ct = pipe.conntrack();
            let ids: Vec<u32> = ct.iter_live(0).map(|f| f.id).collect();
            assert_eq!(ids.len(), 1);
            ct.remove(ids[0]);
        }
        let a = run(&mut fast, &pkts, 1);
        assert_eq!(a, run(&mut slow, &pkts, 1));
        assert!(a.iter().all(|(v, _)| matches!(v, Verdict::Tx(_))));
        assert_eq!(fast.counters(), slow.counters());
        assert_eq!(fast.conntrack().stats(), slow.conntrack().stats());
        assert_eq!(fast.conntrack().stats().inserted, 2);
        assert_eq!(fast.counters().ct_hits, 4);
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
