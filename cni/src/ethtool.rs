//! Turning tx checksum offload off on an interface, through ethtool's
//! generic-netlink family (kernel 5.6+): what `ethtool -K IF tx off` does,
//! without running the ethtool binary and without the ioctl (no unsafe
//! code). The messages are small and written here byte by byte; the
//! constants are those of `<linux/genetlink.h>` and `<linux/ethtool_netlink.h>`.
//!
//! Why: the dataplane's XDP/AF_XDP sees a pod's frames before the kernel
//! would have completed a checksum left to the (virtual) NIC, so a pod must
//! send frames with complete checksums.

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NlAddr};

use crate::net::NlError;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const ETHTOOL_GENL_VERSION: u8 = 1;
const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;

/// The features `ethtool -K IF tx off` clears (NETIF_F_CSUM_MASK and the
/// CRC offloads, as named in the kernel's netdev_features_strings).
pub const TX_CHECKSUM_FEATURES: &[&str] = &[
    "tx-checksum-ipv4",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv6",
    "tx-checksum-fcoe-crc",
    "tx-checksum-sctp",
];

/// One netlink attribute: header, payload, padding to 4 bytes.
fn nla(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn nla_str(out: &mut Vec<u8>, kind: u16, s: &str) {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    nla(out, kind, &b);
}

fn nested(out: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    nla(out, kind | NLA_F_NESTED, inner);
}

/// A generic-netlink request: nlmsghdr, genlmsghdr, attributes.
fn message(family: u16, cmd: u8, version: u8, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&family.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(attrs);
    m
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// The attributes of a generic-netlink answer (after its two headers).
fn attrs(msg: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 20;
    while let (Some(len), Some(kind)) = (u16_at(msg, off), u16_at(msg, off + 2)) {
        let len = usize::from(len);
        if len < 4 {
            break;
        }
        let Some(payload) = msg.get(off + 4..off + len) else {
            break;
        };
        out.push((kind & !NLA_F_NESTED, payload));
        off += (len + 3) & !3;
    }
    out
}

struct Genl {
    sock: Socket,
    seq: u32,
}

impl Genl {
    fn open(op: &str) -> Result<Genl, NlError> {
        let err = |e: std::io::Error| NlError::new(op, e);
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&NlAddr::new(0, 0)).map_err(err)?;
        Ok(Genl { sock, seq: 0 })
    }

    /// Sends one request; returns the answer messages before the ACK.
    fn call(
        &mut self,
        op: &str,
        family: u16,
        cmd: u8,
        version: u8,
        a: &[u8],
    ) -> Result<Vec<Vec<u8>>, NlError> {
        self.seq += 1;
        let req = message(family, cmd, version, self.seq, a);
        self.sock.send(&req, 0).map_err(|e| NlError::new(op, e))?;
        let mut answers = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .map_err(|e| NlError::new(op, e))?;
            let mut off = 0;
            while let (Some(len), Some(kind), Some(seq)) = (
                u32_at(&buf[..n], off),
                u16_at(&buf[..n], off + 4),
                u32_at(&buf[..n], off + 8),
            ) {
                let len = len as usize;
                let Some(msg) = buf.get(off..off + len).filter(|_| len >= 16) else {
                    return Err(NlError::new(op, "truncated netlink answer"));
                };
                if seq == self.seq {
                    if kind == NLMSG_ERROR {
                        let code = u32_at(msg, 16).map(|c| c as i32).unwrap_or(-1);
                        if code == 0 {
                            return Ok(answers);
                        }
                        return Err(NlError::errno(op, -code));
                    }
                    answers.push(msg.to_vec());
                }
                off += (len + 3) & !3;
            }
        }
    }

    fn family(&mut self, name: &str) -> Result<u16, NlError> {
        let op = format!("resolve generic netlink family {name}");
        let mut a = Vec::new();
        nla_str(&mut a, CTRL_ATTR_FAMILY_NAME, name);
        for m in self.call(&op, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, &a)? {
            for (kind, p) in attrs(&m) {
                if kind == CTRL_ATTR_FAMILY_ID {
                    if let Some(id) = u16_at(p, 0) {
                        return Ok(id);
                    }
                }
            }
        }
        Err(NlError::new(&op, "no family id in the answer"))
    }
}

/// `ethtool -K ifname tx off`, in the caller's network namespace (run it on
/// a thread inside the pod's, see [`crate::net::in_netns`]).
pub fn tx_checksum_off(ifname: &str) -> Result<(), NlError> {
    let mut g = Genl::open("open generic netlink socket")?;
    let family = g.family("ethtool")?;
    let mut header = Vec::new();
    nla_str(&mut header, ETHTOOL_A_HEADER_DEV_NAME, ifname);
    // A bitset without NOMASK: the bits listed are the mask, each one's
    // value is set only if it carries a VALUE flag, so these are cleared.
    let mut bits = Vec::new();
    for f in TX_CHECKSUM_FEATURES {
        let mut bit = Vec::new();
        nla_str(&mut bit, ETHTOOL_A_BITSET_BIT_NAME, f);
        nested(&mut bits, ETHTOOL_A_BITSET_BITS_BIT, &bit);
    }
    let mut wanted = Vec::new();
    nested(&mut wanted, ETHTOOL_A_BITSET_BITS, &bits);
    let mut a = Vec::new();
    nested(&mut a, ETHTOOL_A_FEATURES_HEADER, &header);
    nested(&mut a, ETHTOOL_A_FEATURES_WANTED, &wanted);
    g.call(
        &format!("turn tx checksum offload off on {ifname} (ethtool netlink)"),
        family,
        ETHTOOL_MSG_FEATURES_SET,
        ETHTOOL_GENL_VERSION,
        &a,
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes_and_nested_ones_flagged() {
        let mut out = Vec::new();
        nla_str(&mut out, 2, "eth0");
        // len 4 + "eth0\0" = 9, padded to 12.
        assert_eq!(out, [9, 0, 2, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]);
        let mut n = Vec::new();
        nested(&mut n, 1, &out);
        assert_eq!(u16_at(&n, 0), Some(16));
        assert_eq!(u16_at(&n, 2), Some(1 | NLA_F_NESTED));
    }

    #[test]
    fn answers_are_read_attribute_by_attribute() {
        let mut a = Vec::new();
        nla(&mut a, CTRL_ATTR_FAMILY_ID, &0x1234u16.to_ne_bytes());
        nla_str(&mut a, CTRL_ATTR_FAMILY_NAME, "ethtool");
        let m = message(0x10, 1, 1, 7, &a);
        let got = attrs(&m);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, CTRL_ATTR_FAMILY_ID);
        assert_eq!(u16_at(got[0].1, 0), Some(0x1234));
        assert_eq!(got[1].1, b"ethtool\0");
        // A truncated answer yields what is whole, never a panic.
        assert_eq!(attrs(&m[..m.len() - 3]).len(), 1);
    }
}
