//! The root package of the twill workspace: it holds the cross-crate tests
//! (`tests/`) and benches (`benches/`). The code lives in `dataplane`, `control`
//! and `cni`.
pub use dataplane;
