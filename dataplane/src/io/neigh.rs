//! Interfaces and next hops from the kernel, over rtnetlink
//! (netlink-packet-route): an interface's MAC and rx queue count, and the
//! kernel's neighbour table (ARP / IPv6 ND), from which the MACs of the
//! underlay next hops (other nodes, the default gateway) are taken.
//!
//! The dataplane sends on the uplink through AF_XDP, beside the kernel's
//! stack, so it relies on the kernel having resolved its next hops (the
//! node's own traffic to other nodes usually has). [`poke`] makes the kernel
//! resolve one it has not: an empty UDP datagram to the discard port of that
//! address, which sends an ARP request / neighbour solicitation first.
//!
//! Everything here runs on a control thread (start-up, the periodic
//! refresh), never on a worker.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NlAddr};

use super::IoError;
use crate::Mac;

/// What the dataplane needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub mac: Option<Mac>,
    /// Receive queues (1 when the kernel does not say).
    pub rx_queues: u32,
}

/// One usable entry of the kernel's neighbour table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub mac: Mac,
}

fn nl_err(what: &str, e: impl std::fmt::Display) -> IoError {
    IoError::setup(format!("netlink ({what}): {e}"))
}

/// Sends a dump request and returns every message of the answer.
fn dump(req: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>, IoError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err(what, e))?;
    socket.bind_auto().map_err(|e| nl_err(what, e))?;
    socket
        .connect(&NlAddr::new(0, 0))
        .map_err(|e| nl_err(what, e))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_DUMP | NLM_F_REQUEST;
    let mut msg = NetlinkMessage::new(hdr, NetlinkPayload::from(req));
    msg.finalize();
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf[..]);
    socket.send(&buf[..], 0).map_err(|e| nl_err(what, e))?;
    let mut out = Vec::new();
    let mut rbuf = vec![0u8; 1 << 16];
    loop {
        let size = socket
            .recv(&mut &mut rbuf[..], 0)
            .map_err(|e| nl_err(what, e))?;
        let mut off = 0;
        while off < size {
            let m: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rbuf[off..size]).map_err(|e| nl_err(what, e))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(nl_err(what, format!("{e:?}"))),
                NetlinkPayload::InnerMessage(i) => out.push(i),
                _ => {}
            }
            if len == 0 {
                return Ok(out);
            }
            off += len;
        }
    }
}

/// The interface named `name` (calling thread's network namespace).
pub fn link(name: &str) -> Result<LinkInfo, IoError> {
    let idx = super::ifindex(name)?;
    for m in dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "dump links",
    )? {
        let RouteNetlinkMessage::NewLink(l) = m else {
            continue;
        };
        if l.header.index != idx {
            continue;
        }
        let mut info = LinkInfo {
            ifindex: idx,
            mac: None,
            rx_queues: 1,
        };
        for a in &l.attributes {
            match a {
                LinkAttribute::Address(b) if b.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(b);
                    info.mac = Some(m);
                }
                LinkAttribute::NumRxQueues(n) => info.rx_queues = (*n).max(1),
                _ => {}
            }
        }
        return Ok(info);
    }
    Err(IoError::NoSuchInterface(name.into()))
}

/// The kernel's usable neighbour entries (reachable, stale, delay, probe,
/// permanent), IPv4 and IPv6.
pub fn neighbours() -> Result<Vec<Neighbour>, IoError> {
    let mut out = Vec::new();
    for m in dump(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        "dump neighbours",
    )? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        let usable = matches!(
            n.header.state,
            NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe
                | NeighbourState::Permanent
        );
        if !usable {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    ip = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    ip = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(b);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            out.push(Neighbour {
                ip,
                ifindex: n.header.ifindex,
                mac,
            });
        }
    }
    Ok(out)
}

/// The MAC of `ip` in `table`, preferring an entry on interface `ifindex`.
pub fn lookup(table: &[Neighbour], ip: IpAddr, ifindex: u32) -> Option<Mac> {
    table
        .iter()
        .find(|n| n.ip == ip && n.ifindex == ifindex)
        .or_else(|| table.iter().find(|n| n.ip == ip))
        .map(|n| n.mac)
}

/// Makes the kernel resolve `ip` (see the module doc); best effort.
pub fn poke(ip: IpAddr) {
    let bind: SocketAddr = match ip {
        IpAddr::V4(_) => "0.0.0.0:0".parse().unwrap_or(SocketAddr::from(([0; 4], 0))),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    };
    if let Ok(s) = UdpSocket::bind(bind) {
        let _ = s.send_to(&[], SocketAddr::new(ip, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_link_is_found_with_its_index_and_queues() {
        let lo = link("lo").expect("lo exists");
        assert_eq!(lo.ifindex, crate::io::ifindex("lo").unwrap());
        assert!(lo.rx_queues >= 1);
        assert_eq!(lo.mac, Some([0; 6]));
    }

    #[test]
    fn a_missing_link_is_named() {
        let e = link("twill-nonexistent0").unwrap_err().to_string();
        assert!(e.contains("twill-nonexistent0"), "{e}");
    }

    #[test]
    fn lookup_prefers_the_entry_on_the_given_interface() {
        let ip: IpAddr = "192.168.50.2".parse().unwrap();
        let t = vec![
            Neighbour {
                ip,
                ifindex: 3,
                mac: [3; 6],
            },
            Neighbour {
                ip,
                ifindex: 2,
                mac: [2; 6],
            },
        ];
        assert_eq!(lookup(&t, ip, 2), Some([2; 6]));
        assert_eq!(lookup(&t, ip, 9), Some([3; 6]));
        assert_eq!(lookup(&t, "10.0.0.1".parse().unwrap(), 2), None);
    }
}
