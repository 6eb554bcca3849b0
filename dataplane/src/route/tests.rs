use super::*;
use proptest::prelude::*;

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

#[test]
fn prefixes_parse_and_display_both_families() {
    let a = p("10.244.1.0/24");
    assert_eq!(a.addr, IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0)));
    assert_eq!(a.len, 24);
    assert_eq!(a.family(), 4);
    assert_eq!(a.to_string(), "10.244.1.0/24");
    let b = p("fd00::/64");
    assert_eq!(b.family(), 6);
    assert_eq!(b.len, 64);
    assert_eq!(b.to_string(), "fd00::/64");
    assert_eq!(p("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert_eq!(p("::/0").to_string(), "::/0");
    assert_eq!(p("2001:db8::1/128").to_string(), "2001:db8::1/128");
}

#[test]
fn parsing_clears_host_bits() {
    assert_eq!(p("10.244.1.77/24"), p("10.244.1.0/24"));
    assert_eq!(p("10.255.255.255/12").to_string(), "10.240.0.0/12");
    assert_eq!(p("fd00:1:2:3ff:4::1/57").to_string(), "fd00:1:2:380::/57");
}

#[test]
fn malformed_prefixes_are_rejected_with_the_reason() {
    assert!(matches!(
        "10.0.0.0".parse::<Prefix>(),
        Err(PrefixError::MissingLength(_))
    ));
    assert!(matches!(
        "10.0.0/8".parse::<Prefix>(),
        Err(PrefixError::BadAddress(_))
    ));
    assert!(matches!(
        "10.0.0.0/".parse::<Prefix>(),
        Err(PrefixError::BadLength(_))
    ));
    assert!(matches!(
        "10.0.0.0/+8".parse::<Prefix>(),
        Err(PrefixError::BadLength(_))
    ));
    assert!(matches!(
        "10.0.0.0/1000".parse::<Prefix>(),
        Err(PrefixError::BadLength(_))
    ));
    assert_eq!(
        "10.0.0.0/33".parse::<Prefix>(),
        Err(PrefixError::TooLong { len: 33, max: 32 })
    );
    assert_eq!(
        "fd00::/129".parse::<Prefix>(),
        Err(PrefixError::TooLong { len: 129, max: 128 })
    );
}

#[test]
fn contains_respects_length_and_family() {
    let a = p("10.240.0.0/12");
    assert!(a.contains("10.240.0.1".parse().unwrap()));
    assert!(a.contains("10.255.255.255".parse().unwrap()));
    assert!(!a.contains("10.0.0.1".parse().unwrap()));
    assert!(!a.contains("::a0f0:1".parse().unwrap()));
    assert!(p("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
    assert!(!p("0.0.0.0/0").contains("::1".parse().unwrap()));
    let b = p("fd00:0:0:80::/57");
    assert!(b.contains("fd00:0:0:ff::1".parse().unwrap()));
    assert!(!b.contains("fd00:0:0:7f::1".parse().unwrap()));
}

#[test]
fn ipv4_longest_of_nested_prefixes_wins() {
    let mut t = Lpm4::new();
    t.insert(p("0.0.0.0/0"), 0).unwrap();
    t.insert(p("10.0.0.0/8"), 8).unwrap();
    t.insert(p("10.244.0.0/16"), 16).unwrap();
    t.insert(p("10.244.1.0/24"), 24).unwrap();
    t.insert(p("10.244.1.7/32"), 32).unwrap();
    assert_eq!(t.len(), 5);
    assert_eq!(t.lookup(&v4("10.244.1.7")), Some(32));
    assert_eq!(t.lookup(&v4("10.244.1.8")), Some(24));
    assert_eq!(t.lookup(&v4("10.244.2.7")), Some(16));
    assert_eq!(t.lookup(&v4("10.245.1.7")), Some(8));
    assert_eq!(t.lookup(&v4("11.244.1.7")), Some(0));
    assert_eq!(t.lookup_addr(Ipv4Addr::new(10, 244, 1, 7)), Some(32));
}

#[test]
fn an_empty_table_and_uncovered_addresses_answer_none() {
    let t: Lpm4<u32> = Lpm4::new();
    assert!(t.is_empty());
    assert_eq!(t.lookup(&v4("1.2.3.4")), None);
    let mut t = Lpm4::new();
    t.insert(p("10.244.1.0/24"), 1).unwrap();
    assert_eq!(t.lookup(&v4("10.244.0.255")), None);
    assert_eq!(t.lookup(&v4("10.244.2.0")), None);
    let t6: Lpm6<u32> = Lpm6::new();
    assert_eq!(t6.lookup(&v6("::1")), None);
}

#[test]
fn ipv6_longest_of_nested_prefixes_wins() {
    let mut t = Lpm6::new();
    t.insert(p("::/0"), 0).unwrap();
    t.insert(p("fd00:10::/48"), 48).unwrap();
    t.insert(p("fd00:10:0:1::/64"), 64).unwrap();
    t.insert(p("fd00:10:0:1::42/128"), 128).unwrap();
    assert_eq!(t.lookup(&v6("fd00:10:0:1::42")), Some(128));
    assert_eq!(t.lookup(&v6("fd00:10:0:1::43")), Some(64));
    assert_eq!(t.lookup(&v6("fd00:10:0:2::42")), Some(48));
    assert_eq!(t.lookup(&v6("fd00:11::1")), Some(0));
    assert_eq!(t.lookup_addr("fd00:10:0:1::42".parse().unwrap()), Some(128));
}

#[test]
fn lengths_that_end_inside_a_stride_are_expanded() {
    let mut t = Lpm4::new();
    t.insert(p("10.240.0.0/12"), 12).unwrap();
    t.insert(p("10.244.16.0/20"), 20).unwrap();
    assert_eq!(t.lookup(&v4("10.239.255.255")), None);
    assert_eq!(t.lookup(&v4("10.240.0.0")), Some(12));
    assert_eq!(t.lookup(&v4("10.255.255.255")), Some(12));
    assert_eq!(t.lookup(&v4("10.244.15.255")), Some(12));
    assert_eq!(t.lookup(&v4("10.244.16.0")), Some(20));
    assert_eq!(t.lookup(&v4("10.244.31.255")), Some(20));
    assert_eq!(t.lookup(&v4("10.244.32.0")), Some(12));

    let mut t = Lpm6::new();
    t.insert(p("fd00:0:0:80::/57"), 57).unwrap();
    assert_eq!(t.lookup(&v6("fd00:0:0:7f::1")), None);
    assert_eq!(t.lookup(&v6("fd00:0:0:80::1")), Some(57));
    assert_eq!(t.lookup(&v6("fd00:0:0:ff:ffff::1")), Some(57));
    assert_eq!(t.lookup(&v6("fd00:0:0:100::")), None);
}

#[test]
fn insertion_order_does_not_change_answers() {
    let prefixes = [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.240.0.0/12",
        "10.244.0.0/16",
        "10.244.16.0/20",
        "10.244.17.0/24",
        "10.244.17.5/32",
        "10.244.17.0/25",
    ];
    let probes = [
        "10.244.17.5",
        "10.244.17.6",
        "10.244.17.200",
        "10.244.18.1",
        "10.244.40.1",
        "10.250.0.1",
        "10.1.1.1",
        "9.9.9.9",
    ];
    let forward = {
        let mut t = Lpm4::new();
        for (i, s) in prefixes.iter().enumerate() {
            t.insert(p(s), i).unwrap();
        }
        t
    };
    let backward = {
        let mut t = Lpm4::new();
        for (i, s) in prefixes.iter().enumerate().rev() {
            t.insert(p(s), i).unwrap();
        }
        t
    };
    for probe in probes {
        assert_eq!(
            forward.lookup(&v4(probe)),
            backward.lookup(&v4(probe)),
            "{probe}"
        );
    }
    assert_eq!(forward.lookup(&v4("10.244.17.5")), Some(6));
    assert_eq!(forward.lookup(&v4("10.244.17.6")), Some(7));
    assert_eq!(forward.lookup(&v4("10.244.17.200")), Some(5));
}

#[test]
fn reinserting_a_prefix_replaces_its_value() {
    let mut t = Lpm4::new();
    t.insert(p("10.0.0.0/8"), 1).unwrap();
    t.insert(p("10.1.0.0/16"), 2).unwrap();
    t.insert(p("10.0.0.0/8"), 3).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(&v4("10.2.0.0")), Some(3));
    assert_eq!(t.lookup(&v4("10.1.0.0")), Some(2));
    assert_eq!(t.get(&p("10.0.0.0/8")), Some(3));
    assert_eq!(t.get(&p("10.0.0.0/9")), None);
}

#[test]
fn a_prefix_of_the_other_family_is_refused() {
    let mut t = Lpm4::new();
    assert!(matches!(
        t.insert(p("fd00::/8"), 1),
        Err(PrefixError::WrongFamily { expected: 4, .. })
    ));
    let mut t = Lpm6::new();
    assert!(matches!(
        t.insert(p("10.0.0.0/8"), 1),
        Err(PrefixError::WrongFamily { expected: 6, .. })
    ));
    assert!(t.is_empty());
}

#[test]
fn iter_returns_every_prefix_once() {
    let mut t = Lpm6::new();
    t.insert(p("fd00::/48"), 1).unwrap();
    t.insert(p("fd00::/64"), 2).unwrap();
    let mut all: Vec<_> = t.iter().collect();
    all.sort();
    assert_eq!(all, vec![(p("fd00::/48"), 1), (p("fd00::/64"), 2)]);
}

/// The oracle: scan every prefix, keep the longest that contains the address.
fn naive<V: Copy>(prefixes: &[(Prefix, V)], ip: IpAddr) -> Option<V> {
    let mut best: Option<(u8, V)> = None;
    for &(pf, v) in prefixes {
        let longer = match best {
            None => true,
            Some((l, _)) => pf.len >= l,
        };
        if pf.contains(ip) && longer {
            best = Some((pf.len, v));
        }
    }
    best.map(|(_, v)| v)
}

/// Addresses near the prefixes (same leading bytes, varied tail) plus random ones, so
/// most probes land inside or just beside a prefix.
fn probes4(prefixes: &[(u32, u8)], extra: &[u32]) -> Vec<u32> {
    let mut out = extra.to_vec();
    for &(a, len) in prefixes {
        let host = if len >= 32 { 0 } else { u32::MAX >> len };
        out.push(a);
        out.push(a | host);
        out.push(a.wrapping_sub(1));
        out.push((a | host).wrapping_add(1));
        out.push(a | (host / 3));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ipv4_lookup_matches_a_linear_scan(
        raw in prop::collection::vec((any::<u32>(), 0u8..=32, any::<u16>()), 0..40),
        extra in prop::collection::vec(any::<u32>(), 0..40),
    ) {
        // Cluster prefixes under a few roots so that they overlap.
        let mut prefixes = Vec::new();
        let mut dedup = std::collections::HashMap::new();
        let mut t = Lpm4::new();
        let mut pairs = Vec::new();
        for (a, len, v) in raw {
            let a = match a >> 30 {
                0 => 0x0af4_0000 | (a & 0xffff),
                1 => 0x0a00_0000 | (a & 0x00ff_ffff),
                _ => a,
            };
            let pf = Prefix::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap();
            t.insert(pf, v).unwrap();
            dedup.insert(pf, v);
            let IpAddr::V4(base) = pf.addr else { unreachable!() };
            pairs.push((u32::from(base), len));
        }
        prefixes.extend(dedup.into_iter());
        prop_assert_eq!(t.len(), prefixes.len());
        for a in probes4(&pairs, &extra) {
            let ip = Ipv4Addr::from(a);
            prop_assert_eq!(t.lookup(&ip.octets()), naive(&prefixes, IpAddr::V4(ip)), "{}", ip);
        }
    }

    #[test]
    fn ipv6_lookup_matches_a_linear_scan(
        raw in prop::collection::vec((any::<u128>(), 0u8..=128, any::<u16>()), 0..30),
        extra in prop::collection::vec(any::<u128>(), 0..20),
    ) {
        let mut dedup = std::collections::HashMap::new();
        let mut t = Lpm6::new();
        let mut probes: Vec<u128> = extra;
        for (a, len, v) in raw {
            // Share the first 32 bits among most prefixes so they nest.
            let a = if a & 1 == 0 { (a & (u128::MAX >> 32)) | (0xfd00_0010u128 << 96) } else { a };
            let pf = Prefix::new(IpAddr::V6(Ipv6Addr::from(a)), len).unwrap();
            t.insert(pf, v).unwrap();
            dedup.insert(pf, v);
            let base = match pf.addr { IpAddr::V6(x) => u128::from(x), _ => unreachable!() };
            let host = if len >= 128 { 0 } else { u128::MAX >> len };
            probes.extend([base, base | host, base.wrapping_sub(1), (base | host).wrapping_add(1), base | (host / 5)]);
        }
        let prefixes: Vec<_> = dedup.into_iter().collect();
        for a in probes {
            let ip = Ipv6Addr::from(a);
            prop_assert_eq!(t.lookup(&ip.octets()), naive(&prefixes, IpAddr::V6(ip)), "{}", ip);
        }
    }

    #[test]
    fn insertion_order_independence_holds_for_random_sets(
        raw in prop::collection::vec((any::<u32>(), 0u8..=32), 1..30),
        probes in prop::collection::vec(any::<u32>(), 1..50),
        seed in any::<u64>(),
    ) {
        let prefixes: Vec<(Prefix, usize)> = raw
            .iter()
            .map(|&(a, len)| Prefix::new(IpAddr::V4(Ipv4Addr::from(a & 0xff0f_ffff)), len).unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        let mut shuffled = prefixes.clone();
        // A deterministic shuffle driven by the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut a = Lpm4::new();
        let mut b = Lpm4::new();
        for &(pf, v) in &prefixes { a.insert(pf, v).unwrap(); }
        for &(pf, v) in &shuffled { b.insert(pf, v).unwrap(); }
        for x in probes {
            let x = x & 0xff0f_ffff;
            prop_assert_eq!(a.lookup(&x.to_be_bytes()), b.lookup(&x.to_be_bytes()));
        }
    }
}
