//! The filters of `twillctl conntrack` and `twillctl trace`: words of the
//! form `key=value`, all of which must hold. `ip=ADDR` matches either
//! address, `port=N` either port, `proto=` a name (tcp, udp, sctp, icmp,
//! icmpv6) or a number, `in_port=N` the dataplane port a traced frame came
//! in on (trace only).

use std::net::IpAddr;

use dataplane::conntrack::{FlowKey, FlowSnapshot};
use dataplane::state::shm::TraceFilter;

use super::CtlError;

/// A parsed filter; `None` fields match anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub proto: Option<u8>,
    pub in_port: Option<u16>,
}

/// An IP protocol by name or number.
pub fn parse_proto(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(dataplane::proto::TCP),
        "udp" => Some(dataplane::proto::UDP),
        "sctp" => Some(dataplane::proto::SCTP),
        "icmp" => Some(dataplane::proto::ICMP),
        "icmpv6" | "icmp6" => Some(dataplane::proto::ICMPV6),
        n => n.parse().ok(),
    }
}

impl Filter {
    /// Parses `key=value` words (see the module doc).
    pub fn parse(words: &[String]) -> Result<Filter, CtlError> {
        let mut f = Filter::default();
        for w in words {
            let bad = |why: &str| CtlError::Filter(format!("{w:?}: {why}"));
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| bad("expected key=value (ip=, port=, proto=, in_port=)"))?;
            match k {
                "ip" | "addr" | "host" => {
                    f.ip = Some(v.parse().map_err(|_| bad("not an IP address"))?);
                }
                "port" => f.port = Some(v.parse().map_err(|_| bad("not a port (0-65535)"))?),
                "proto" | "protocol" => {
                    f.proto = Some(parse_proto(v).ok_or_else(|| {
                        bad("not a protocol (tcp, udp, sctp, icmp, icmpv6 or 0-255)")
                    })?)
                }
                "in_port" | "inport" => {
                    f.in_port = Some(v.parse().map_err(|_| bad("not a port number"))?)
                }
                _ => return Err(bad("unknown key (ip, port, proto, in_port)")),
            }
        }
        Ok(f)
    }

    /// The trace region's form.
    pub fn to_trace(&self) -> TraceFilter {
        TraceFilter {
            proto: self.proto,
            addr: self.ip,
            port: self.port,
            in_port: self.in_port,
        }
    }

    fn key_matches(&self, k: &FlowKey) -> bool {
        self.proto.is_none_or(|p| p == k.proto)
            && self
                .ip
                .is_none_or(|ip| ip == k.src_ip() || ip == k.dst_ip())
            && self.port.is_none_or(|p| p == k.sport || p == k.dport)
    }

    /// Whether a flow matches: its original or its reply tuple (so a
    /// backend's address finds the flows DNATed to it). `in_port` is not a
    /// property of a flow and is ignored.
    pub fn matches_flow(&self, f: &FlowSnapshot) -> bool {
        self.key_matches(&f.orig) || self.key_matches(&f.reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn filters_parse_addresses_ports_and_protocols_by_name_or_number() {
        let f = Filter::parse(&words("ip=10.0.0.1 port=80 proto=tcp in_port=3")).unwrap();
        assert_eq!(f.ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((f.port, f.proto, f.in_port), (Some(80), Some(6), Some(3)));
        assert_eq!(Filter::parse(&words("proto=17")).unwrap().proto, Some(17));
        assert_eq!(
            Filter::parse(&words("ip=fd00::1")).unwrap().ip,
            Some("fd00::1".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_filter_word_is_named_in_the_error() {
        for w in ["ip=nope", "port=70000", "proto=xyz", "colour=red", "80"] {
            let e = Filter::parse(&[w.to_string()]).unwrap_err().to_string();
            assert!(e.contains(w), "{e}");
        }
    }

    #[test]
    fn a_flow_matches_by_its_original_or_its_reply_tuple() {
        let orig = FlowKey::v4([10, 0, 0, 1], [10, 96, 0, 10], 40000, 80, 6);
        let reply = FlowKey::v4([10, 244, 1, 5], [10, 0, 0, 1], 8080, 40000, 6);
        let flow = FlowSnapshot {
            id: 1,
            orig,
            reply,
            user: 0,
            state: dataplane::conntrack::CtState::Established,
            assured: true,
            idle_ns: 0,
        };
        let m = |s: &str| Filter::parse(&words(s)).unwrap().matches_flow(&flow);
        assert!(m(""));
        assert!(m("ip=10.96.0.10 port=80"));
        assert!(m("ip=10.244.1.5 port=8080 proto=tcp"), "the backend side");
        assert!(!m("proto=udp"));
        assert!(!m("ip=10.96.0.10 port=8080"), "both on one tuple");
    }
}
