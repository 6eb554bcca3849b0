//! `twill-control`: watches the Kubernetes API (or a directory of manifests) and
//! publishes the node's tables to the dataplane.
//!
//! PARTIAL: only `serve-attachments` exists so far, the pod-attachment API the
//! `twill` CNI plugin registers pods with. Sources, model and publishing to
//! the dataplane come with the control-process issue; until then the full
//! `twill-control --config FILE` reports that it is not implemented.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use control::cni_server;

#[derive(Parser)]
#[command(
    name = "twill-control",
    about = "twill's node control process (partial)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve only the pod-attachment API of the CNI plugin (partial control:
    /// attachments are persisted, not yet published to the dataplane).
    ServeAttachments {
        /// The unix socket the plugin connects to (created mode 0600).
        #[arg(long, default_value = cni::config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
        /// Where attachments are persisted (recovered on restart).
        #[arg(long, default_value = "/var/lib/twill/attachments.json")]
        state: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Some(Cmd::ServeAttachments { socket, state }) => {
            let store = cni_server::Store::open(&state)?;
            let n = store.snapshot().len();
            let listener = cni_server::bind(&socket)?;
            eprintln!(
                "twill-control: serving pod attachments on {} ({n} recovered from {})",
                socket.display(),
                state.display()
            );
            cni_server::serve(listener, Arc::new(Mutex::new(store)));
            Ok(())
        }
        None => anyhow::bail!(
            "twill-control is not implemented yet beyond `serve-attachments` (see the control-process issue)"
        ),
    }
}
