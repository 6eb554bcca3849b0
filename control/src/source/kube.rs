//! The `kube` source (kube helper).
