//! Frame synthesis shared with `twill-dataplane bench-pipeline`: the same
//! file, included by path, so the criterion benches and the binary measure
//! the same workloads.
#![allow(dead_code)]

#[path = "../../dataplane/src/bin/twill-dataplane/synth.rs"]
mod synth;

pub use synth::*;
