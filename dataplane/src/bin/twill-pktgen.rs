//! `twill-pktgen`: a transmit-only UDP generator over AF_XDP, in the spirit
//! of the kernel's pktgen. Frames are built once in the UMEM; the send loop
//! writes only tx descriptors (and, with more flows than UMEM frames, the few
//! fields that vary), keeps the tx ring full and kicks the kernel once per
//! batch. It prints the achieved packets/s.
//!
//! ```text
//! twill-pktgen --dev vA --dst-mac 02:00:00:00:0b:0b --src-ip 10.244.1.2 \
//!     --dst-ip 10.96.0.10 --dport 8080 --sport 10000-10999 --size 64 --duration 10
//! ```
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dataplane::io::gen::{self, Flows, PacketSpec, TxConfig, TxGen, VxlanSpec};
use dataplane::io::{netns, ZeroCopy};

const AFTER: &str = "\
Sizes count the 4-byte FCS, as pktgen and testpmd do: --size 64 puts 60 bytes
in each descriptor. With --vxlan, --size is the inner frame's and the outer
Ethernet/IP/UDP/VXLAN headers (50 bytes over IPv4, 70 over IPv6) come on top;
--src-mac/--dst-mac are then the outer addresses.

Flow k (0 <= k < --flows) uses source port SPORT_LO + k % PORTS and source
address SRC_LO + (k / PORTS) % ADDRS; with --vxlan its outer source port is a
hash of k. --flows defaults to PORTS x ADDRS.

The run is bounded: it stops after --count frames or --duration seconds,
whichever comes first (default --duration 10), or at SIGINT/SIGTERM, and
prints `RESULT sent=... secs=... pps=...` as its last line. 'sent' counts
frames the kernel took off the tx ring (completions).";

#[derive(Parser)]
#[command(name = "twill-pktgen", about = "transmit-only UDP generator over AF_XDP", after_help = AFTER)]
struct Cli {
    /// Interface to send on.
    #[arg(long)]
    dev: String,
    /// Queue of the interface.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// Run in this network namespace (as named by `ip netns`).
    #[arg(long)]
    netns: Option<String>,
    /// Destination MAC.
    #[arg(long)]
    dst_mac: String,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    src_mac: Option<String>,
    /// Source address, or a range A-B (IPv4 or IPv6; the range varies the low 32 bits).
    #[arg(long)]
    src_ip: String,
    /// Destination address.
    #[arg(long)]
    dst_ip: IpAddr,
    /// Source port, or a range P-Q.
    #[arg(long, default_value = "10000")]
    sport: String,
    /// Destination port.
    #[arg(long, default_value_t = 5201)]
    dport: u16,
    /// Frame size in bytes including FCS, 64..1518.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows to cycle over (default: ports x addresses).
    #[arg(long)]
    flows: Option<u64>,
    /// Stop after this many frames.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds (default 10 unless --count is given).
    #[arg(long)]
    duration: Option<f64>,
    /// Limit to this many packets per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Wrap every frame in VXLAN (needs --outer-src and --outer-dst).
    #[arg(long)]
    vxlan: bool,
    #[arg(long)]
    outer_src: Option<IpAddr>,
    #[arg(long)]
    outer_dst: Option<IpAddr>,
    #[arg(long, default_value_t = 1)]
    vni: u32,
    /// Outer UDP destination port.
    #[arg(long, default_value_t = 4789)]
    vxlan_port: u16,
    /// Inner source MAC with --vxlan.
    #[arg(long, default_value = "02:00:00:00:1a:1a")]
    inner_src_mac: String,
    /// Inner destination MAC with --vxlan.
    #[arg(long, default_value = "02:00:00:00:1b:1b")]
    inner_dst_mac: String,
    /// tx ring size.
    #[arg(long, default_value_t = 2048)]
    ring: u32,
    /// Frames one copy-mode kick may send (0: the ring size; Linux 6.17+,
    /// older kernels keep their 32).
    #[arg(long, default_value_t = 0)]
    budget: u32,
    /// off | auto | force
    #[arg(long, default_value = "off")]
    zero_copy: String,
    /// Print a line per interval (seconds; 0: only the result).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))
}

fn low32(ip: &IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(*a),
        IpAddr::V6(a) => {
            let o = a.octets();
            u32::from_be_bytes([o[12], o[13], o[14], o[15]])
        }
    }
}

/// `A` or `A-B` -> (A, count).
fn parse_ip_range(s: &str) -> anyhow::Result<(IpAddr, u32)> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let a: IpAddr = a.parse().with_context(|| format!("bad address {a:?}"))?;
    let Some(b) = b else { return Ok((a, 1)) };
    let b: IpAddr = b.parse().with_context(|| format!("bad address {b:?}"))?;
    if a.is_ipv4() != b.is_ipv4() {
        bail!("address range {s:?} mixes IPv4 and IPv6");
    }
    let (la, lb) = (low32(&a), low32(&b));
    if lb < la {
        bail!("address range {s:?} is empty");
    }
    let n = lb - la;
    if n == u32::MAX {
        bail!("address range {s:?} too large");
    }
    Ok((a, n + 1))
}

fn parse_port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let p = |x: &str| x.parse::<u16>().with_context(|| format!("bad port {x:?}"));
    match s.split_once('-') {
        None => Ok((p(s)?, 1)),
        Some((a, b)) => {
            let (a, b) = (p(a)?, p(b)?);
            if b < a {
                bail!("port range {s:?} is empty");
            }
            let n = u32::from(b - a) + 1;
            Ok((
                a,
                u16::try_from(n).context("port range too large (at most 65535 ports)")?,
            ))
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(ns) = &cli.netns {
        netns::enter_named(ns).with_context(|| format!("network namespace {ns:?}"))?;
    }
    let (src_ip, src_ips) = parse_ip_range(&cli.src_ip)?;
    let (sport, sports) = parse_port_range(&cli.sport)?;
    let flows = cli.flows.unwrap_or(u64::from(sports) * u64::from(src_ips));
    let (dev_mac, mtu) = gen::mac_and_mtu(&cli.dev)?;
    let src_mac = match &cli.src_mac {
        Some(m) => parse_mac(m)?,
        None => dev_mac,
    };
    let vxlan = if cli.vxlan {
        Some(VxlanSpec {
            outer_src: cli.outer_src.context("--vxlan needs --outer-src")?,
            outer_dst: cli.outer_dst.context("--vxlan needs --outer-dst")?,
            vni: cli.vni,
            port: cli.vxlan_port,
            inner_src_mac: parse_mac(&cli.inner_src_mac)?,
            inner_dst_mac: parse_mac(&cli.inner_dst_mac)?,
        })
    } else {
        None
    };
    let spec = PacketSpec {
        src_mac,
        dst_mac: parse_mac(&cli.dst_mac)?,
        src_ip,
        dst_ip: cli.dst_ip,
        sport,
        sports,
        src_ips,
        dport: cli.dport,
        size: cli.size,
        flows,
        vxlan,
    };
    let flows = Flows::new(spec).map_err(anyhow::Error::msg)?;
    if flows.len() > mtu as usize + 14 {
        bail!(
            "frames of {} bytes do not fit {}'s MTU {mtu} (+14)",
            flows.len(),
            cli.dev
        );
    }
    let zero_copy = match cli.zero_copy.as_str() {
        "off" => ZeroCopy::Off,
        "auto" => ZeroCopy::Auto,
        "force" => ZeroCopy::Force,
        z => bail!("--zero-copy {z:?}: off, auto or force"),
    };
    let duration = match (cli.duration, cli.count) {
        (Some(d), _) if d > 0.0 && d.is_finite() => Some(Duration::from_secs_f64(d)),
        (Some(d), _) => bail!("--duration {d} must be positive"),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let count = cli.count.unwrap_or(u64::MAX);
    let budget = if cli.budget == 0 {
        cli.ring
    } else {
        cli.budget
    };
    let cfg = TxConfig {
        ring_size: cli.ring,
        zero_copy,
        tx_budget: budget,
    };
    let mut g = TxGen::open(&cli.dev, cli.queue, cfg, &flows)?;
    let stop = gen::stop_on_signals();
    eprintln!(
        "twill-pktgen: {} queue {}: {:?} mode, {} frames of {} bytes (+FCS) over {} flows, \
         {} UMEM frames{}, kick budget {}",
        cli.dev,
        cli.queue,
        g.mode(),
        if cli.count.is_some() {
            count.to_string()
        } else {
            "unbounded".into()
        },
        flows.len(),
        flows.count(),
        g.frames(),
        if g.rewrites() {
            " (fields rewritten per send)"
        } else {
            ""
        },
        g.budget()
            .map_or("32 (kernel default)".to_string(), |b| b.to_string()),
    );

    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let interval = (cli.interval > 0.0).then(|| Duration::from_secs_f64(cli.interval));
    let mut next_print = interval.map(|i| start + i);
    let mut last = (start, 0u64);
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) || stop.load(Ordering::Relaxed) {
            break;
        }
        let submitted = g.stats().submitted;
        if submitted >= count {
            break;
        }
        let mut max = (count - submitted).min(u64::from(u32::MAX)) as u32;
        if cli.rate > 0 {
            let allowed = (now - start).as_secs_f64() * cli.rate as f64;
            let allowed = (allowed as u64).saturating_sub(submitted);
            if allowed == 0 {
                // Keep completions flowing; sleep if the next slot is far.
                g.reclaim();
                if cli.rate < 100_000 {
                    std::thread::sleep(Duration::from_micros(50));
                }
                continue;
            }
            max = max.min(allowed.min(u64::from(u32::MAX)) as u32);
        }
        g.send(&flows, max);
        if let (Some(i), Some(t)) = (interval, next_print) {
            if now >= t {
                let done = g.stats().completed;
                let dt = (now - last.0).as_secs_f64();
                println!(
                    "{:7.1}s  {:>10.0} pps  {:>14} frames",
                    (now - start).as_secs_f64(),
                    (done - last.1) as f64 / dt,
                    done
                );
                last = (now, done);
                next_print = Some(t + i);
            }
        }
    }
    let end = Instant::now();
    g.drain(end + Duration::from_secs(1));
    let secs = (end - start).as_secs_f64();
    let s = g.stats();
    let k = g.kernel_stats();
    let bits = s.completed as f64 * (flows.len() + 4 + 20) as f64 * 8.0 / secs;
    println!(
        "twill-pktgen: {} frames in {:.3} s: {:.0} packets/s, {:.1} Mbit/s on the wire \
         ({} kicks, {} kick errors, {} rewrites, {} invalid descriptors)",
        s.completed,
        secs,
        s.completed as f64 / secs,
        bits / 1e6,
        s.kicks,
        s.kick_errors,
        s.rewrites,
        k.tx_invalid_descs
    );
    println!(
        "RESULT sent={} secs={:.3} pps={:.0}",
        s.completed,
        secs,
        s.completed as f64 / secs
    );
    if s.completed == 0 {
        bail!("nothing was sent");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line; a cause already spelled out by its parent is skipped.
            let mut line = e.to_string();
            for c in e.chain().skip(1) {
                let c = c.to_string();
                if !line.contains(&c) {
                    line = format!("{line}: {c}");
                }
            }
            eprintln!("twill-pktgen: {line}");
            ExitCode::FAILURE
        }
    }
}
