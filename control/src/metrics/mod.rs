//! What control serves over HTTP: the healthCheckNodePort servers
//! ([`health`]) and the Prometheus endpoint ([`prom`]).

pub mod health;
pub mod prom;
