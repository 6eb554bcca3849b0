//! Per-flow protocol state: the TCP state machine driven by flags, UDP
//! unreplied/assured, ICMP echo and the generic state, with Linux nf_conntrack's
//! default timeouts.
//!
//! The state of a flow lives in one `u32` of its entry (see [`Word`]) so a
//! packet that changes it does one compare-and-swap and a packet that does not
//! change it writes nothing.

use crate::proto;

/// A flow's protocol state. The discriminant indexes the timeout table.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CtState {
    SynSent = 1,
    SynRecv = 2,
    Established = 3,
    FinWait = 4,
    CloseWait = 5,
    LastAck = 6,
    TimeWait = 7,
    Close = 8,
    UdpUnreplied = 9,
    UdpAssured = 10,
    Icmp = 11,
    Generic = 12,
}

impl CtState {
    pub const ALL: [CtState; 12] = [
        CtState::SynSent,
        CtState::SynRecv,
        CtState::Established,
        CtState::FinWait,
        CtState::CloseWait,
        CtState::LastAck,
        CtState::TimeWait,
        CtState::Close,
        CtState::UdpUnreplied,
        CtState::UdpAssured,
        CtState::Icmp,
        CtState::Generic,
    ];

    #[inline]
    pub(crate) fn from_bits(b: u32) -> CtState {
        match b {
            1 => CtState::SynSent,
            2 => CtState::SynRecv,
            3 => CtState::Established,
            4 => CtState::FinWait,
            5 => CtState::CloseWait,
            6 => CtState::LastAck,
            7 => CtState::TimeWait,
            8 => CtState::Close,
            9 => CtState::UdpUnreplied,
            10 => CtState::UdpAssured,
            11 => CtState::Icmp,
            _ => CtState::Generic,
        }
    }

    /// The state a new flow starts in, from the first packet's protocol and
    /// TCP flags. A TCP flow picked up mid-stream (no SYN) starts ESTABLISHED,
    /// like Linux with `nf_conntrack_tcp_loose=1`, but is not assured.
    pub fn initial(proto_nr: u8, tcp_flags: u8) -> CtState {
        match proto_nr {
            proto::TCP => match TcpEvent::of(tcp_flags) {
                TcpEvent::Syn => CtState::SynSent,
                TcpEvent::Rst => CtState::Close,
                _ => CtState::Established,
            },
            proto::UDP => CtState::UdpUnreplied,
            proto::ICMP | proto::ICMPV6 => CtState::Icmp,
            _ => CtState::Generic,
        }
    }
}

/// Timeouts per state, in seconds. `Default` is Linux nf_conntrack's defaults.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_assured: u32,
    pub icmp: u32,
    pub generic: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_assured: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

impl Timeouts {
    /// The timeout of `state`, in seconds.
    pub fn of(&self, state: CtState) -> u32 {
        match state {
            CtState::SynSent => self.tcp_syn_sent,
            CtState::SynRecv => self.tcp_syn_recv,
            CtState::Established => self.tcp_established,
            CtState::FinWait => self.tcp_fin_wait,
            CtState::CloseWait => self.tcp_close_wait,
            CtState::LastAck => self.tcp_last_ack,
            CtState::TimeWait => self.tcp_time_wait,
            CtState::Close => self.tcp_close,
            CtState::UdpUnreplied => self.udp_unreplied,
            CtState::UdpAssured => self.udp_assured,
            CtState::Icmp => self.icmp,
            CtState::Generic => self.generic,
        }
    }
}

/// What a TCP segment's flags mean to the state machine (Linux's
/// `get_conntrack_index`: RST, then SYN, then FIN, then ACK).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TcpEvent {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
    None,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

impl TcpEvent {
    #[inline]
    pub(crate) fn of(flags: u8) -> TcpEvent {
        if flags & RST != 0 {
            TcpEvent::Rst
        } else if flags & SYN != 0 {
            if flags & ACK != 0 {
                TcpEvent::SynAck
            } else {
                TcpEvent::Syn
            }
        } else if flags & FIN != 0 {
            TcpEvent::Fin
        } else if flags & ACK != 0 {
            TcpEvent::Ack
        } else {
            TcpEvent::None
        }
    }
}

/// The TCP transition for a segment in direction `reply` (false = original),
/// after Linux's `tcp_conntracks` table (invalid and ignored segments leave
/// the state unchanged; SYN_SENT2 is folded into SYN_SENT).
#[inline]
pub(crate) fn tcp_next(cur: CtState, reply: bool, flags: u8) -> CtState {
    use CtState::*;
    match (TcpEvent::of(flags), reply) {
        (TcpEvent::Rst, _) => Close,
        (TcpEvent::Syn, false) => match cur {
            TimeWait | Close => SynSent,
            s => s,
        },
        (TcpEvent::Syn, true) => cur,
        (TcpEvent::SynAck, true) => match cur {
            SynSent => SynRecv,
            s => s,
        },
        (TcpEvent::SynAck, false) => cur,
        (TcpEvent::Fin, _) => match cur {
            SynRecv | Established => FinWait,
            FinWait | CloseWait => LastAck,
            s => s,
        },
        (TcpEvent::Ack, reply) => match cur {
            SynRecv if !reply => Established,
            FinWait => CloseWait,
            LastAck => TimeWait,
            s => s,
        },
        (TcpEvent::None, _) => cur,
    }
}

/// The entry's state word: lifecycle in bits 0-1, [`CtState`] in bits 4-7,
/// "reply seen" in bit 8, "assured" in bit 9, "translated" (reply !=
/// swap(orig)) in bit 10, and what can change it, derived from the rest by
/// [`Word::settle`]: per direction (original in bits 16-23, reply in bits
/// 24-31) the TCP flags whose presence may change it, with bit 3 (PSH,
/// which never matters) standing for "any packet". So "does this packet
/// leave the word alone" ([`Word::steady`]) is a shift and an AND.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Word(pub u32);

pub(crate) const FREE: u32 = 0;
pub(crate) const INSERTING: u32 = 1;
pub(crate) const LIVE: u32 = 2;
pub(crate) const DYING: u32 = 3;
const SEEN_REPLY: u32 = 1 << 8;
const ASSURED: u32 = 1 << 9;
const NAT: u32 = 1 << 10;
const TCP_CHANGERS: u8 = SYN | FIN | RST;
const CHG_SHIFT: u32 = 16;
/// The change bits of both directions.
const CHG_ALL: u32 = 0xffff << CHG_SHIFT;
/// The change-mask bit meaning "any packet" (PSH's place: PSH never
/// changes a state, and [`Word::steady`] sets it in every packet's flags).
const ANY: u32 = 0x08;

impl Word {
    #[inline]
    pub(crate) fn new(life: u32, st: CtState) -> Word {
        Word(life | (st as u32) << 4).settle()
    }

    /// The word with its change bits derived from its state (see the
    /// type's doc); `steady_words_are_ones_no_packet_can_change` checks them
    /// against [`Word::next`] for every state, bit and flag combination.
    #[inline]
    pub(crate) fn settle(self) -> Word {
        let w = self.0 & !CHG_ALL;
        let orig = Word::changers(w, false);
        let reply = Word::changers(w, true);
        Word(w | orig << CHG_SHIFT | reply << (CHG_SHIFT + 8))
    }

    /// The TCP flags (and [`ANY`]) that may change word `w` in a packet in
    /// direction `reply`.
    fn changers(w: u32, reply: bool) -> u32 {
        let seen = w & SEEN_REPLY != 0;
        let assured = w & ASSURED != 0;
        if reply && !seen {
            return 0xff; // the first reply sets "reply seen"
        }
        const TCP_ALWAYS: u32 = TCP_CHANGERS as u32;
        match (w >> 4) & 0xf {
            // ESTABLISHED: FIN/SYN/RST, or any packet if it is to be assured.
            3 if seen && !assured => 0xff,
            3 => TCP_ALWAYS,
            // SYN_RECV (original), FIN_WAIT, LAST_ACK: a bare ACK moves them.
            2 if !reply => TCP_ALWAYS | u32::from(ACK),
            4 | 6 => TCP_ALWAYS | u32::from(ACK),
            1..=8 => TCP_ALWAYS,
            9 if reply => 0xff,
            9 | 11 => 0,
            10 | 12 if seen && !assured => 0xff,
            10 | 12 => 0,
            _ => 0xff,
        }
    }

    #[inline]
    pub(crate) fn life(self) -> u32 {
        self.0 & 3
    }
    #[inline]
    pub(crate) fn with_life(self, life: u32) -> Word {
        Word(self.0 & !3 | life)
    }
    #[inline]
    pub(crate) fn state(self) -> CtState {
        CtState::from_bits((self.0 >> 4) & 0xf)
    }
    #[inline]
    pub(crate) fn with_nat(self, nat: bool) -> Word {
        Word(if nat { self.0 | NAT } else { self.0 & !NAT })
    }
    #[inline]
    pub(crate) fn nat(self) -> bool {
        self.0 & NAT != 0
    }

    /// True when a packet in direction `reply` with `tcp_flags` cannot
    /// change the word: the common case of a data packet of an established
    /// flow, answered by a shift and an AND with the change bits.
    #[inline]
    pub(crate) fn steady(self, reply: bool, tcp_flags: u8) -> bool {
        let chg = self.0 >> (CHG_SHIFT + 8 * u32::from(reply));
        chg & (u32::from(tcp_flags) | ANY) & 0xff == 0
    }

    /// The TCP flags that change this word in direction `reply` (see
    /// [`Word::steady`]); `None` when any packet does.
    #[inline]
    pub(crate) fn change_flags(self, reply: bool) -> Option<u8> {
        let chg = (self.0 >> (CHG_SHIFT + 8 * u32::from(reply))) as u8;
        (u32::from(chg) & ANY == 0).then_some(chg)
    }

    #[inline]
    pub(crate) fn assured(self) -> bool {
        self.0 & ASSURED != 0
    }

    /// The word after a packet in direction `reply` with `tcp_flags`.
    #[inline]
    pub(crate) fn next(self, reply: bool, tcp_flags: u8) -> Word {
        let cur = self.state();
        let mut w = self.0;
        if reply {
            w |= SEEN_REPLY;
        }
        let next = match cur {
            CtState::UdpUnreplied if reply => CtState::UdpAssured,
            CtState::UdpUnreplied | CtState::UdpAssured | CtState::Icmp | CtState::Generic => cur,
            tcp => tcp_next(tcp, reply, tcp_flags),
        };
        let seen = w & SEEN_REPLY != 0;
        let assure = match next {
            CtState::Established => seen,
            CtState::UdpAssured | CtState::Generic => seen,
            _ => false,
        };
        if assure {
            w |= ASSURED;
        }
        Word(w & !0xf0 | (next as u32) << 4).settle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_words_are_ones_no_packet_can_change() {
        for st in CtState::ALL {
            for bits in 0..8u32 {
                let w = Word(Word::new(LIVE, st).0 | bits << 8).settle();
                for flags in 0..=255u8 {
                    for reply in [false, true] {
                        if w.steady(reply, flags) {
                            assert_eq!(w.next(reply, flags), w, "{st:?} {bits} {flags} {reply}");
                        }
                    }
                }
            }
        }
        let est = Word::new(LIVE, CtState::Established).next(true, ACK);
        assert!(est.steady(false, ACK) && est.steady(true, ACK | 0x08));
        assert!(!est.steady(false, FIN | ACK) && !est.steady(true, SYN) && !est.steady(false, RST));
        // Before any reply, original-direction data leaves the word alone.
        let fresh = Word::new(LIVE, CtState::Established);
        assert!(fresh.steady(false, ACK | 0x08) && !fresh.steady(true, ACK));
        let udp = Word::new(LIVE, CtState::UdpUnreplied);
        assert!(udp.steady(false, 0) && !udp.steady(true, 0));
        assert!(udp.next(true, 0).steady(true, 0));
    }

    #[test]
    fn flags_classify_like_linux_rst_then_syn_then_fin_then_ack() {
        assert_eq!(TcpEvent::of(RST | SYN | FIN | ACK), TcpEvent::Rst);
        assert_eq!(TcpEvent::of(SYN | FIN), TcpEvent::Syn);
        assert_eq!(TcpEvent::of(SYN | ACK | FIN), TcpEvent::SynAck);
        assert_eq!(TcpEvent::of(FIN | ACK), TcpEvent::Fin);
        assert_eq!(TcpEvent::of(ACK), TcpEvent::Ack);
        assert_eq!(TcpEvent::of(0x08), TcpEvent::None);
    }
}
