//! `twillctl`: a thin wrapper over [`control::ctl`]. Errors are one line on
//! stderr and exit code 1; a closed stdout (`twillctl stats | head`) ends
//! quietly.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use control::ctl::{run, Cli, CtlError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = run(&cli, &mut out).and_then(|()| out.flush().map_err(CtlError::from));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(CtlError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twillctl: {e}");
            ExitCode::FAILURE
        }
    }
}
