//! What control serves over HTTP: the healthCheckNodePort servers
//! ([`health`]) and the Prometheus endpoint.

pub mod health;
