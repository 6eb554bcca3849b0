//! `twill-control`: watches the Kubernetes API (or a directory of manifests) and
//! publishes the node's tables to the dataplane. Built in its own issue; for now
//! it only reports that it is not implemented, so nobody mistakes it for working.
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    anyhow::bail!("twill-control is not implemented yet (see the control-process issue)")
}
