//! The pod's wiring over rtnetlink (netlink-packet-route + netlink-sys):
//! veth pairs, addresses, routes, link state. A [`Netlink`] talks to one
//! network namespace: the caller's ([`Netlink::host`]) or a pod's
//! ([`Netlink::in_netns`]: the socket is opened by a thread that joined that
//! namespace with `setns`, and keeps talking to it after the thread ends).

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NlAddr};
use nix::sched::{setns, CloneFlags};

/// A failed netlink operation: what was tried and the kernel's errno.
#[derive(Debug)]
pub struct NlError {
    pub op: String,
    pub errno: Option<i32>,
    pub detail: String,
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.op, self.detail)
    }
}

impl NlError {
    pub fn new(op: &str, detail: impl std::fmt::Display) -> Self {
        NlError {
            op: op.to_string(),
            errno: None,
            detail: detail.to_string(),
        }
    }
    pub fn errno(op: &str, errno: i32) -> Self {
        NlError {
            op: op.to_string(),
            errno: Some(errno),
            detail: nix::errno::Errno::from_raw(errno).desc().to_string(),
        }
    }
    pub fn is(&self, errno: nix::errno::Errno) -> bool {
        self.errno == Some(errno as i32)
    }
}

type Result<T> = std::result::Result<T, NlError>;

/// A link as read back: index, name, MAC, MTU, up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
}

/// A route as read back from the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
}

/// Runs `f` on a thread that joined the network namespace `ns`.
pub fn in_netns<R: Send>(ns: &File, f: impl FnOnce() -> R + Send) -> Result<R> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NlError::new("setns into the pod's network namespace", e))?;
            Ok(f())
        })
        .join()
        .map_err(|_| NlError::new("netns thread", "panicked"))?
    })
}

pub struct Netlink {
    sock: Socket,
    seq: u32,
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink {
    /// A socket in the caller's network namespace.
    pub fn host() -> Result<Netlink> {
        let mut sock =
            Socket::new(NETLINK_ROUTE).map_err(|e| NlError::new("open netlink socket", e))?;
        sock.bind_auto()
            .map_err(|e| NlError::new("bind netlink socket", e))?;
        sock.connect(&NlAddr::new(0, 0))
            .map_err(|e| NlError::new("connect netlink socket", e))?;
        Ok(Netlink { sock, seq: 1 })
    }

    /// A socket in the network namespace `ns`.
    pub fn in_netns(ns: &File) -> Result<Netlink> {
        in_netns(ns, Netlink::host)?
    }

    /// Sends `req`; returns the messages of a dump, or nothing on an ACK.
    fn request(
        &mut self,
        op: &str,
        req: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        self.seq = self.seq.wrapping_add(1);
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(req));
        msg.finalize();
        let mut buf = vec![0; msg.header.length as usize];
        msg.serialize(&mut buf[..]);
        self.sock
            .send(&buf[..], 0)
            .map_err(|e| NlError::new(op, e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let size = self
                .sock
                .recv(&mut &mut rbuf[..], 0)
                .map_err(|e| NlError::new(op, e))?;
            let mut off = 0;
            while off < size {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rbuf[off..size])
                        .map_err(|e| NlError::new(op, e))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Ok(out);
                }
                if m.header.sequence_number != self.seq {
                    off += len; // an answer to an earlier request
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        if e.code.is_none() {
                            return Ok(out);
                        }
                        let errno = -e.raw_code();
                        return Err(NlError {
                            op: op.to_string(),
                            errno: Some(errno),
                            detail: nix::errno::Errno::from_raw(errno).desc().to_string(),
                        });
                    }
                    NetlinkPayload::InnerMessage(i) => {
                        out.push(i);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                off += len;
            }
        }
    }

    fn link_of(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(b) => l.mac = b.clone(),
                LinkAttribute::Mtu(n) => l.mtu = *n,
                _ => {}
            }
        }
        l
    }

    /// The link named `name`, `None` when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(
            &format!("get link {name}"),
            RouteNetlinkMessage::GetLink(m),
            0,
        ) {
            Ok(v) => Ok(v.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(Self::link_of(l)),
                _ => None,
            })),
            Err(e) if e.is(nix::errno::Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        Ok(self
            .request(
                "dump links",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )?
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Self::link_of(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates the veth pair `host` (here, MAC `host_mac`) and `peer`
    /// (created directly in the namespace `peer_ns`), both with `mtu`.
    pub fn add_veth(
        &mut self,
        host: &str,
        host_mac: [u8; 6],
        peer: &str,
        peer_ns: &File,
        mtu: u32,
    ) -> Result<()> {
        let mut p = LinkMessage::default();
        p.attributes.push(LinkAttribute::IfName(peer.to_string()));
        p.attributes.push(LinkAttribute::Mtu(mtu));
        p.attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(host.to_string()));
        m.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::Address(host_mac.to_vec()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
        ]));
        self.request(
            &format!("create veth {host} / {peer}"),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    pub fn set_up(&mut self, index: u32, name: &str) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.request(
            &format!("set link {name} up"),
            RouteNetlinkMessage::SetLink(m),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes link `name`; `false` when it was not there.
    pub fn del_link(&mut self, name: &str) -> Result<bool> {
        let Some(l) = self.link(name)? else {
            return Ok(false);
        };
        let mut m = LinkMessage::default();
        m.header.index = l.index;
        match self.request(
            &format!("delete link {name}"),
            RouteNetlinkMessage::DelLink(m),
            NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is(nix::errno::Errno::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn add_addr(&mut self, index: u32, ip: IpAddr, len: u8) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = family(ip);
        m.header.prefix_len = len;
        m.header.index = index;
        m.header.scope = AddressScope::Universe;
        if ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(ip));
        } else {
            // A pod's address is its own: no duplicate address detection, so
            // it is usable as soon as ADD returns.
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        m.attributes.push(AddressAttribute::Address(ip));
        self.request(
            &format!("add address {ip}/{len}"),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The addresses on link `index`.
    pub fn addrs(&mut self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let msgs = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            for at in &a.attributes {
                if let AddressAttribute::Address(ip) = at {
                    out.push((*ip, a.header.prefix_len));
                }
            }
        }
        Ok(out)
    }

    /// Adds a route in the main table: `dst` (None: default) via `gw` or
    /// directly on link `oif`.
    pub fn add_route(
        &mut self,
        v4: bool,
        dst: Option<(IpAddr, u8)>,
        gw: Option<IpAddr>,
        oif: u32,
    ) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = if gw.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        m.header.kind = RouteType::Unicast;
        if let Some((ip, len)) = dst {
            m.header.destination_prefix_length = len;
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        }
        if let Some(g) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        let what = match (dst, gw) {
            (Some((ip, l)), Some(g)) => format!("add route {ip}/{l} via {g}"),
            (Some((ip, l)), None) => format!("add route {ip}/{l}"),
            (None, Some(g)) => format!("add default route via {g}"),
            (None, None) => "add default route".to_string(),
        };
        self.request(
            &what,
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The routes of the main table (both families).
    pub fn routes(&mut self) -> Result<Vec<RouteInfo>> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            for m in self.request("dump routes", RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)? {
                let RouteNetlinkMessage::NewRoute(r) = m else {
                    continue;
                };
                if r.header.table != RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let mut ri = RouteInfo {
                    dst: None,
                    gateway: None,
                    oif: None,
                };
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(d) => {
                            ri.dst = addr_of(d).map(|ip| (ip, r.header.destination_prefix_length))
                        }
                        RouteAttribute::Gateway(g) => ri.gateway = addr_of(g),
                        RouteAttribute::Oif(o) => ri.oif = Some(*o),
                        _ => {}
                    }
                }
                out.push(ri);
            }
        }
        Ok(out)
    }
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}
