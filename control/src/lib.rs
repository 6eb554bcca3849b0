//! twill-control as a library: the binaries (`twill-control`) are thin
//! wrappers. Today it holds the pod-attachment API of the CNI plugin
//! ([`cni_server`]); sources, model and publish come with the control issue.
#![forbid(unsafe_code)]

pub mod cni_server;
pub mod ctl;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod source;
