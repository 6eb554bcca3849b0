//! `twillctl`: what the node is doing, read from its shared-memory file, so
//! it works while twill-control is down (and while the dataplane is down:
//! the file outlives both). The binary (`src/bin/twillctl.rs`) only parses
//! the command line and prints the one-line error; everything else is here,
//! as a library, so tests can drive it without a process.
//!
//! Reads only, except `trace`, which arms the trace region (and disarms it
//! when done). Output is a table for people, or JSON (`--json`) for scripts:
//! one JSON document per command (`trace` included: its records as an
//! array).
//!
//! - [`snap`]: the live snapshot, read without announcing (see there why);
//! - [`filter`]: `ip=… port=… proto=… in_port=…` for `conntrack` and `trace`;
//! - [`table`]: the column-aligned tables;
//! - [`views`]: `status`, `services`, `endpoints`, `routes`, `pods`;
//! - [`stats`] (`stats`, `stats --services`), [`flows`] (`conntrack`),
//!   [`trace`].

pub mod filter;
pub mod flows;
pub mod snap;
pub mod stats;
pub mod table;
pub mod trace;
pub mod views;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dataplane::state::shm::{Shm, ShmError};

/// Why a command failed: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Shm(#[from] ShmError),
    #[error("config {0}")]
    Config(String),
    #[error("nothing published yet in {0} (is twill-control running?)")]
    NothingPublished(PathBuf),
    #[error("shared memory {path}: live snapshot unreadable: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    #[error("bad filter {0}")]
    Filter(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

/// Command line of `twillctl`.
#[derive(Debug, Parser)]
#[command(
    name = "twillctl",
    about = "Shows what the twill node is doing, from its shared-memory file"
)]
pub struct Cli {
    /// The node's shared-memory file (default: the node config's [shm]
    /// path, else /dev/shm/twill/node.shm).
    #[arg(long, global = true)]
    pub shm: Option<PathBuf>,
    /// The node config, for its [shm] path.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The file, its generation, control and dataplane processes, workers,
    /// conntrack occupancy.
    Status,
    /// The Services of the live snapshot (one line per Service port).
    Services,
    /// Each Service port's endpoints with their conditions.
    Endpoints,
    /// Routes derived from the live snapshot: local pods and remote nodes'
    /// pod CIDRs.
    Routes,
    /// The pods attached to this node.
    Pods,
    /// Live conntrack flows, e.g. `conntrack ip=10.0.0.1 port=80 proto=tcp`.
    Conntrack {
        /// Filters: ip=ADDR, port=N, proto=tcp|udp|sctp|icmp|icmpv6|N.
        filter: Vec<String>,
        /// At most this many flows.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Counters per worker and port, drops by reason, summed; or, with
    /// `--services`, per Service port.
    Stats {
        /// Also list drop reasons and ports with zero counts.
        #[arg(long)]
        all: bool,
        /// Per-Service counters (packets, bytes, connections, rejects) from
        /// the Service directory, summed over workers.
        #[arg(long)]
        services: bool,
    },
    /// The verdicts of the next N frames matching a filter.
    Trace {
        /// Frames to trace.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Filters: ip=ADDR, port=N, proto=NAME|N, in_port=N.
        filter: Vec<String>,
    },
}

impl Cli {
    /// The file to open: `--shm`, else the config's `[shm] path`, else the
    /// default.
    pub fn shm_path(&self) -> Result<PathBuf, CtlError> {
        if let Some(p) = &self.shm {
            return Ok(p.clone());
        }
        if let Some(c) = &self.config {
            let f = dataplane::config::NodeFile::load(c)
                .map_err(|e| CtlError::Config(e.to_string()))?;
            if let Some(s) = f.shm {
                return Ok(s.path);
            }
        }
        Ok(dataplane::state::shm::DEFAULT_PATH.into())
    }
}

/// Runs `cli`, writing to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    let path = cli.shm_path()?;
    let shm = Shm::open(&path)?;
    match &cli.command {
        Command::Status => views::status(&shm, cli.json, out),
        Command::Services => views::services(&shm, cli.json, out),
        Command::Endpoints => views::endpoints(&shm, cli.json, out),
        Command::Routes => views::routes(&shm, cli.json, out),
        Command::Pods => views::pods(&shm, cli.json, out),
        Command::Conntrack { filter, limit } => {
            let f = filter::Filter::parse(filter)?;
            flows::conntrack(&shm, &f, *limit, cli.json, out)
        }
        Command::Stats {
            services: true,
            all,
        } => stats::services(&shm, *all, cli.json, out),
        Command::Stats { all, .. } => stats::stats(&shm, *all, cli.json, out),
        Command::Trace {
            count,
            timeout,
            filter,
        } => {
            let f = filter::Filter::parse(filter)?;
            let timeout = std::time::Duration::try_from_secs_f64(*timeout)
                .map_err(|_| CtlError::Filter(format!("--timeout {timeout}: not a duration")))?;
            trace::trace(&shm, &f, *count, timeout, cli.json, out)
        }
    }
}

/// Writes `v` as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut dyn Write, v: &serde_json::Value) -> Result<(), CtlError> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// A duration in nanoseconds for people: `850ms`, `12.3s`, `4m05s`, `3h02m`.
pub fn age(ns: u64) -> String {
    let ms = ns / 1_000_000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

/// An IP protocol number by name.
pub fn proto_name(p: u8) -> String {
    match p {
        dataplane::proto::TCP => "tcp".into(),
        dataplane::proto::UDP => "udp".into(),
        dataplane::proto::SCTP => "sctp".into(),
        dataplane::proto::ICMP => "icmp".into(),
        dataplane::proto::ICMPV6 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// A dataplane port for people (`uplink` for the uplink's port).
pub fn port_name(p: u16) -> String {
    if p == dataplane::config::UPLINK_PORT {
        format!("{p} (uplink)")
    } else {
        p.to_string()
    }
}
