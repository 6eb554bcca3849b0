//! `twill`, the CNI plugin: wires a pod into the node (a veth pair, the pod's
//! addresses and routes, host routes), delegates IPAM to a standard IPAM
//! plugin (host-local by default) and registers the attachment with
//! twill-control over its unix socket ([`proto`]).
//!
//! [`run`] is the whole plugin as a function of the environment and stdin,
//! returning what to print on stdout and the exit code; `main` only reads the
//! process's environment and stdin.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod error;
pub mod ethtool;
pub mod ipam;
pub mod net;
pub mod proto;
pub mod types;

use config::{Command, Env, LATEST};
use error::Error;

/// One call of the plugin: `(stdout, exit code)`.
pub fn run(get: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> (String, i32) {
    let fail = |e: Error, v: &str| (e.to_json(v), 1);
    let command = match Command::parse(&get("CNI_COMMAND").unwrap_or_default()) {
        Ok(c) => c,
        Err(e) => return fail(e, LATEST),
    };
    if command == Command::Version {
        return (cmd::version(stdin), 0);
    }
    let env = Env::read(get);
    let cfg = match config::parse(stdin) {
        Ok(c) => c,
        Err(e) => return fail(e, LATEST),
    };
    let v = cfg.version().to_string();
    let r = match command {
        Command::Add => cmd::add(&cfg, &env).map(|r| serde_json::to_string(&r).unwrap_or_default()),
        Command::Del => cmd::del(&cfg, &env).map(|_| String::new()),
        Command::Check => cmd::check(&cfg, &env).map(|_| String::new()),
        Command::Status => cmd::status(&cfg, &env).map(|_| String::new()),
        Command::Gc => cmd::gc(&cfg, &env).map(|_| String::new()),
        Command::Version => Ok(cmd::version(stdin)),
    };
    match r {
        Ok(out) => (out, 0),
        Err(e) => fail(e, &v),
    }
}
