//! `twill-dataplane`: the node dataplane process (a thin binary over the library).
//!
//! `run --config FILE` runs the node dataplane (see `twill-dataplane/run.rs`).
//! `bench-pipeline` measures the packet
//! pipeline alone: no I/O, frames synthesized once and restored from
//! templates before every batch, the pipeline call isolated in
//! [`run_batch`] so callgrind can count it alone.
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use dataplane::pipeline::{DropReason, Frame, Pipeline, Verdict};

#[path = "twill-dataplane/synth.rs"]
mod synth;

#[path = "twill-dataplane/apply.rs"]
mod apply;
#[path = "twill-dataplane/run.rs"]
mod run;

use synth::{Bufs, Scenario, Shape, BATCH};

#[derive(Parser)]
#[command(name = "twill-dataplane", about = "twill's node dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const BENCH_HELP: &str = "\
Scenarios:
  service-encap  established pod -> ClusterIP -> remote pod (flows warmed first:
                 conntrack hit, DNAT, VXLAN encap)
  decap-reverse  VXLAN in -> decap -> conntrack hit, reverse NAT -> local pod
                 (flows pre-created)
  new-flow       every packet a new flow to a ClusterIP (Maglev pick + conntrack
                 insert; conntrack sized for --packets)
  pod-to-pod     plain local pod -> pod forwarding

Frames are synthesized once; before each batch of 64 they are restored from
their templates (outside the measured pipeline call). The restore cost is
measured in a separate loop and subtracted from the figures printed.

To count instructions in the pipeline only:
  valgrind --tool=callgrind --toggle-collect='*run_batch*' \\
      target/release/twill-dataplane bench-pipeline --scenario service-encap --packets 100000
  callgrind_annotate callgrind.out.<pid>";

#[derive(Subcommand)]
enum Command {
    /// Run the node dataplane: attach the uplink and the pods named by the
    /// config file, start the pinned workers; stops on SIGINT/SIGTERM,
    /// detaching every XDP program.
    Run {
        /// The node config file (TOML; see configs/node.example.toml).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Keep the workers spinning when idle (benchmarks).
        #[arg(long)]
        busy_poll: bool,
        /// Seconds between counter lines (0: only at exit).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
    /// Measure the packet pipeline on synthetic frames (no I/O).
    #[command(after_help = BENCH_HELP)]
    BenchPipeline {
        /// service-encap | decap-reverse | new-flow | pod-to-pod
        #[arg(long)]
        scenario: String,
        /// Packets to push through the pipeline.
        #[arg(long)]
        packets: u64,
        /// Distinct flows (distinct source ports) the packets cycle over
        /// (new-flow: ignored, every packet is its own flow).
        #[arg(long, default_value_t = 1024)]
        flows: u32,
        /// Services in the tables.
        #[arg(long, default_value_t = 1)]
        services: u32,
        /// Backends per Service (all on remote nodes behind VXLAN).
        #[arg(long, default_value_t = 10)]
        backends: u32,
        /// Pods talk IPv6 (over the same IPv4 underlay) instead of IPv4.
        #[arg(long)]
        ipv6: bool,
    },
}

/// The measured unit: one batch through the pipeline. Not inlined so that
/// `valgrind --tool=callgrind --toggle-collect='*run_batch*'` counts the
/// pipeline's work and nothing else.
#[inline(never)]
fn run_batch(p: &mut Pipeline, frames: &mut [Frame], verdicts: &mut [Verdict], now: u64) {
    p.process(frames, verdicts, now);
}

/// Counts of each verdict seen.
#[derive(Default)]
struct Tally(Vec<(Verdict, u64)>);

impl Tally {
    fn add(&mut self, v: Verdict) {
        match self.0.iter_mut().find(|(w, _)| *w == v) {
            Some((_, n)) => *n += 1,
            None => self.0.push((v, 1)),
        }
    }
}

fn bench_pipeline(scenario: Scenario, shape: Shape) -> anyhow::Result<()> {
    if shape.packets == 0 {
        bail!("--packets must be at least 1");
    }
    if scenario == Scenario::NewFlow && shape.packets > u32::MAX as u64 {
        bail!("new-flow: at most {} packets (one flow each)", u32::MAX);
    }
    let mut out = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut w = synth::workload(scenario, shape);
    writeln!(
        out,
        "setup: {} services x {} backends, {} template frames, {:.1} ms",
        shape.services,
        shape.backends,
        w.templates.len(),
        t0.elapsed().as_secs_f64() * 1e3
    )?;
    let n_templates = w.templates.len();
    let mut bufs = Bufs::new();
    let mut verdicts = [Verdict::Pass; BATCH];
    let mut tally = Tally::default();
    let mut wrong = 0u64;
    let mut first_wrong = None;

    // Restore cost alone: the same template copies and frame setup, no pipeline.
    let t = Instant::now();
    let mut done = 0u64;
    let mut at = 0usize;
    while done < shape.packets {
        let n = (BATCH as u64).min(shape.packets - done) as usize;
        let n = n.min(n_templates - at);
        let batch = &w.templates[at..at + n];
        bufs.load(batch);
        let frames = bufs.frames(batch);
        std::hint::black_box(&frames);
        done += n as u64;
        at = (at + n) % n_templates;
    }
    let restore = t.elapsed();

    let t = Instant::now();
    let mut done = 0u64;
    let mut at = 0usize;
    while done < shape.packets {
        let n = (BATCH as u64).min(shape.packets - done) as usize;
        let n = n.min(n_templates - at);
        let batch = &w.templates[at..at + n];
        bufs.load(batch);
        let mut frames = bufs.frames(batch);
        run_batch(&mut w.pipeline, &mut frames, &mut verdicts[..n], w.now);
        for (i, v) in verdicts[..n].iter().enumerate() {
            tally.add(*v);
            if *v != w.expected[at + i] {
                wrong += 1;
                first_wrong.get_or_insert((at + i, *v, w.expected[at + i]));
            }
        }
        w.now += 1_000;
        done += n as u64;
        at = (at + n) % n_templates;
    }
    let total = t.elapsed();
    let net = total.saturating_sub(restore);
    let ns = net.as_nanos() as f64 / shape.packets as f64;
    writeln!(
        out,
        "scenario {} (IPv{} pods): {} packets over {} flows",
        scenario.name(),
        shape.family,
        shape.packets,
        n_templates
    )?;
    writeln!(
        out,
        "  {:.0} packets/s, {:.1} ns/packet (pipeline only; measured {:.1} ns/packet incl. \
         template restore of {:.1} ns/packet)",
        1e9 / ns,
        ns,
        total.as_nanos() as f64 / shape.packets as f64,
        restore.as_nanos() as f64 / shape.packets as f64
    )?;
    writeln!(out, "  verdicts:")?;
    for (v, n) in &tally.0 {
        writeln!(out, "    {v:?}: {n}")?;
    }
    let c = w.pipeline.counters();
    writeln!(
        out,
        "  counters (warm-up included): rx {} tx {} ct_hits {} ct_new {} dnat {} snat {} \
         encap {} decap {}",
        c.rx, c.tx, c.ct_hits, c.ct_new, c.dnat, c.snat, c.encap, c.decap
    )?;
    for r in DropReason::ALL {
        if c.drop_count(*r) > 0 {
            writeln!(
                out,
                "  dropped {}: {} ({})",
                r.name(),
                c.drop_count(*r),
                r.description()
            )?;
        }
    }
    let ct = w.pipeline.conntrack();
    writeln!(
        out,
        "  conntrack: {} flows live, capacity {} ({:.1} MiB at {} bytes/flow)",
        ct.len(),
        ct.capacity(),
        (ct.capacity() * dataplane::conntrack::BYTES_PER_FLOW) as f64 / (1 << 20) as f64,
        dataplane::conntrack::BYTES_PER_FLOW
    )?;
    if let Some((i, got, want)) = first_wrong {
        bail!("{wrong} frames got an unexpected verdict (first: template {i} got {got:?}, expected {want:?})");
    }
    writeln!(out, "  every frame got its expected verdict")?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            busy_poll,
            stats_interval,
        } => run::run(run::RunArgs {
            config: &config,
            busy_poll,
            stats_interval,
        }),
        Command::BenchPipeline {
            scenario,
            packets,
            flows,
            services,
            backends,
            ipv6,
        } => {
            let sc = Scenario::parse(&scenario).with_context(|| {
                format!("unknown scenario {scenario:?} (service-encap, decap-reverse, new-flow, pod-to-pod)")
            })?;
            if services == 0 || flows == 0 {
                bail!("--services and --flows must be at least 1");
            }
            if backends == 0 && sc != Scenario::PodToPod {
                bail!("--backends must be at least 1 for {scenario}");
            }
            bench_pipeline(
                sc,
                Shape {
                    flows,
                    services,
                    backends,
                    packets,
                    family: if ipv6 { 6 } else { 4 },
                },
            )
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twill-dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}
