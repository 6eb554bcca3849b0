//! Port names: which interface each port of the stats blocks is, so control
//! and twillctl can label per-port counters (and drops by reason) with an
//! interface name instead of a number the dataplane chose.
//!
//! One entry of [`ENTRY_BYTES`] per port at `names_off + port * ENTRY_BYTES`,
//! in 64-bit words:
//! `[seq, kind | ifname_len << 8 | pod_len << 16, ifname (2 words),
//! pod name (12 words)]`, strings as UTF-8 bytes, little-endian in the words.
//!
//! One writer, the dataplane's main thread (where ports are assigned,
//! attached and released), under a per-entry sequence word: odd while the
//! entry is written (a `Release` fence after it), even once done (`Release`
//! store). Readers load the sequence (`Acquire`), the words (`Relaxed`), an
//! `Acquire` fence and the sequence again, and retry a few times on a
//! change; an entry still changing after that reads as empty. The dataplane
//! clears every entry when it starts (its ports are assigned afresh) and an
//! entry when its pod's interface is detached. Nothing read here is trusted:
//! lengths are clamped and bytes that are not UTF-8 are replaced.

use std::sync::atomic::{fence, AtomicU64, Ordering::*};

use super::region::Slab;
use super::Shm;
use crate::PortId;

/// Bytes of one entry.
pub const ENTRY_BYTES: usize = 128;
const ENTRY_WORDS: usize = ENTRY_BYTES / 8;
/// Longest interface name kept (IFNAMSIZ less the NUL).
pub const IFNAME_BYTES: usize = 16;
/// Longest pod name kept (`namespace/name`, cut on a character boundary).
pub const POD_NAME_BYTES: usize = (ENTRY_WORDS - 4) * 8;
/// Reads of an entry that keeps changing before it is reported empty.
const READ_TRIES: usize = 8;

// Kind 0: an empty entry.
const KIND_UPLINK: u64 = 1;
const KIND_POD: u64 = 2;

/// What a port is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// The node's uplink.
    Uplink,
    /// A pod's host-side interface, with the pod's name (may be empty).
    Pod(String),
}

/// A named port as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortName {
    pub port: PortId,
    /// The interface name.
    pub interface: String,
    pub kind: PortKind,
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &[u8] {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s.as_bytes()[..n]
}

/// An entry's words (all but the sequence word) for a port named
/// `interface` of `kind`; `None` clears the entry.
fn encode(named: Option<(&str, &PortKind)>) -> [u64; ENTRY_WORDS - 1] {
    let mut w = [0u64; ENTRY_WORDS - 1];
    let Some((iface, kind)) = named else {
        return w;
    };
    let (code, pod) = match kind {
        PortKind::Uplink => (KIND_UPLINK, ""),
        PortKind::Pod(p) => (KIND_POD, p.as_str()),
    };
    let name = cut(iface, IFNAME_BYTES);
    let pod = cut(pod, POD_NAME_BYTES);
    w[0] = code | (name.len() as u64) << 8 | (pod.len() as u64) << 16;
    let mut bytes = [0u8; (ENTRY_WORDS - 2) * 8];
    bytes[..name.len()].copy_from_slice(name);
    bytes[IFNAME_BYTES..IFNAME_BYTES + pod.len()].copy_from_slice(pod);
    for (d, c) in w[1..].iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *d = u64::from_le_bytes(b);
    }
    w
}

/// The port named by an entry's words; `None` for an empty entry or an
/// unknown kind.
fn decode(port: PortId, w: &[u64; ENTRY_WORDS - 1]) -> Option<PortName> {
    let mut bytes = [0u8; (ENTRY_WORDS - 2) * 8];
    for (d, v) in bytes.chunks_exact_mut(8).zip(&w[1..]) {
        d.copy_from_slice(&v.to_le_bytes());
    }
    let name_len = ((w[0] >> 8) & 0xff) as usize;
    let pod_len = ((w[0] >> 16) & 0xff) as usize;
    let name = bytes.get(..name_len.min(IFNAME_BYTES)).unwrap_or(&[]);
    let pod = bytes
        .get(IFNAME_BYTES..IFNAME_BYTES + pod_len.min(POD_NAME_BYTES))
        .unwrap_or(&[]);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kind = match w[0] & 0xff {
        KIND_UPLINK => PortKind::Uplink,
        KIND_POD => PortKind::Pod(text(pod)),
        _ => return None,
    };
    Some(PortName {
        port,
        interface: text(name),
        kind,
    })
}

/// The dataplane's handle on the port names (one writer: see the module doc).
pub struct PortNames {
    words: Slab<AtomicU64>,
}

impl PortNames {
    /// Names port `port` (ignored past the file's ports).
    pub fn set(&self, port: PortId, interface: &str, kind: &PortKind) {
        self.write(port, encode(Some((interface, kind))));
    }

    /// Clears port `port`'s name (its interface was detached).
    pub fn clear(&self, port: PortId) {
        self.write(port, encode(None));
    }

    /// Clears every entry.
    pub fn clear_all(&self) {
        for p in 0..self.words.len() / ENTRY_WORDS {
            self.clear(p as PortId);
        }
    }

    fn write(&self, port: PortId, v: [u64; ENTRY_WORDS - 1]) {
        let at = usize::from(port) * ENTRY_WORDS;
        let Some(e) = self.words.get(at..at + ENTRY_WORDS) else {
            return;
        };
        let seq = e[0].load(Relaxed);
        let odd = seq | 1;
        e[0].store(odd, Relaxed);
        fence(Release);
        for (d, x) in e[1..].iter().zip(v) {
            d.store(x, Relaxed);
        }
        e[0].store(odd.wrapping_add(1), Release);
    }
}

impl Shm {
    fn names_words(&self) -> Slab<AtomicU64> {
        let g = &self.inner.geo;
        self.words(g.names_off, (g.names_bytes / 8) as usize)
    }

    /// The writer of the port names, every entry cleared (the dataplane,
    /// when it starts: its ports are assigned afresh).
    pub fn port_names_writer(&self) -> PortNames {
        let n = PortNames {
            words: self.names_words(),
        };
        n.clear_all();
        n
    }

    /// The named ports, by port.
    pub fn port_names(&self) -> Vec<PortName> {
        let words = self.names_words();
        words
            .chunks_exact(ENTRY_WORDS)
            .enumerate()
            .filter_map(|(p, e)| read_entry(e).and_then(|w| decode(p as PortId, &w)))
            .collect()
    }
}

/// An entry's words once two reads of its sequence agree (even, unchanged);
/// `None` if it keeps changing.
fn read_entry(e: &[AtomicU64]) -> Option<[u64; ENTRY_WORDS - 1]> {
    for _ in 0..READ_TRIES {
        let s1 = e[0].load(Acquire);
        if s1 & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let v: [u64; ENTRY_WORDS - 1] = std::array::from_fn(|i| e[i + 1].load(Relaxed));
        fence(Acquire);
        if e[0].load(Relaxed) == s1 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_to_the_name_and_kind_it_was_encoded_from() {
        let pod = PortKind::Pod("default/web-0".into());
        let w = encode(Some(("veth1234", &pod)));
        let n = decode(7, &w).unwrap();
        assert_eq!(
            n,
            PortName {
                port: 7,
                interface: "veth1234".into(),
                kind: pod
            }
        );
        let n = decode(0, &encode(Some(("eth0", &PortKind::Uplink)))).unwrap();
        assert_eq!((n.interface.as_str(), n.kind), ("eth0", PortKind::Uplink));
        assert_eq!(decode(3, &encode(None)), None);
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = format!("ns/{}é", "p".repeat(POD_NAME_BYTES - 4));
        let w = encode(Some((
            "an-interface-name-too-long",
            &PortKind::Pod(long.clone()),
        )));
        let n = decode(1, &w).unwrap();
        assert_eq!(n.interface, "an-interface-nam");
        let PortKind::Pod(p) = n.kind else {
            panic!("not a pod: {n:?}")
        };
        // "é" is two bytes and would end one past the limit: it is left out.
        assert_eq!(p, long[..long.len() - 2]);
        assert!(p.len() <= POD_NAME_BYTES);
    }

    #[test]
    fn garbage_words_decode_without_panicking() {
        let mut w = [u64::MAX; ENTRY_WORDS - 1];
        assert_eq!(decode(0, &w), None); // kind 0xff: unknown
        w[0] = KIND_POD | 0xff << 8 | 0xff << 16;
        let n = decode(0, &w).unwrap();
        assert_eq!(n.interface.chars().count(), IFNAME_BYTES); // replacement chars
    }
}
