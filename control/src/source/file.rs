//! The `file:DIR` source (file helper).
