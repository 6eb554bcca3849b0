//! healthCheckNodePort servers, answering as kube-proxy does.
//!
//! A Service with externalTrafficPolicy Local gets a healthCheckNodePort: the
//! cloud load balancer probes it on every node and sends traffic only to nodes
//! answering 200, i.e. nodes with a ready local endpoint. The answer is
//! kube-proxy's (pkg/proxy/healthcheck/service_health.go): JSON naming the
//! Service with `localEndpoints` and `serviceProxyHealthy`, the header
//! `X-Load-Balancing-Endpoint-Weight`, 200 when there are local endpoints and
//! the proxy is healthy, else 503. Here "the proxy" is the dataplane: healthy
//! while its heartbeat in shared memory is fresh.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

use crate::model::HealthCheck;

/// What one port answers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    namespace: String,
    name: String,
    local_endpoints: u32,
}

#[derive(Clone)]
struct Shared {
    entry: Arc<RwLock<Entry>>,
    proxy_healthy: Arc<AtomicBool>,
}

/// The running health-check servers, one per healthCheckNodePort.
pub struct HealthServers {
    bind: IpAddr,
    proxy_healthy: Arc<AtomicBool>,
    servers: BTreeMap<u16, (Arc<RwLock<Entry>>, JoinHandle<()>)>,
    /// Ports that could not be bound, with the reason (reported, retried on
    /// the next reconcile).
    pub failures: Vec<(u16, String)>,
}

impl HealthServers {
    /// Servers listening on `bind` (the node's address, or 0.0.0.0).
    pub fn new(bind: IpAddr, proxy_healthy: Arc<AtomicBool>) -> HealthServers {
        HealthServers {
            bind,
            proxy_healthy,
            servers: BTreeMap::new(),
            failures: Vec::new(),
        }
    }

    /// Ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Serves exactly `checks`: new ports are bound, gone ones closed,
    /// counts updated in place. Must run inside a tokio runtime.
    pub async fn reconcile(&mut self, checks: &[HealthCheck]) {
        self.failures.clear();
        let want: BTreeMap<u16, &HealthCheck> = checks.iter().map(|c| (c.port, c)).collect();
        let gone: Vec<u16> = self
            .servers
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            if let Some((_, task)) = self.servers.remove(&p) {
                task.abort();
            }
        }
        for (port, hc) in want {
            let (namespace, name) = hc
                .service
                .split_once('/')
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .unwrap_or_else(|| (String::new(), hc.service.clone()));
            let entry = Entry {
                namespace,
                name,
                local_endpoints: hc.local_endpoints,
            };
            if let Some((cur, _)) = self.servers.get(&port) {
                if let Ok(mut e) = cur.write() {
                    *e = entry;
                }
                continue;
            }
            let addr = SocketAddr::new(self.bind, port);
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => {
                    let entry = Arc::new(RwLock::new(entry));
                    let shared = Shared {
                        entry: Arc::clone(&entry),
                        proxy_healthy: Arc::clone(&self.proxy_healthy),
                    };
                    let app = axum::Router::new().fallback(answer).with_state(shared);
                    let task = tokio::spawn(async move {
                        let _ = axum::serve(listener, app).await;
                    });
                    self.servers.insert(port, (entry, task));
                }
                Err(e) => self
                    .failures
                    .push((port, format!("cannot listen on {addr}: {e}"))),
            }
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.servers) {
            task.abort();
        }
    }
}

async fn answer(State(s): State<Shared>) -> Response {
    let e = match s.entry.read() {
        Ok(e) => e.clone(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let healthy = s.proxy_healthy.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "service": { "namespace": e.namespace, "name": e.name },
        "localEndpoints": e.local_endpoints,
        "serviceProxyHealthy": healthy,
    });
    let status = if e.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "X-Load-Balancing-Endpoint-Weight",
        HeaderValue::from(e.local_endpoints),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn a_port_answers_200_with_local_endpoints_and_503_without() {
        let healthy = Arc::new(AtomicBool::new(true));
        let mut hs = HealthServers::new("127.0.0.1".parse().unwrap(), Arc::clone(&healthy));
        let port = free_port();
        let mut hc = HealthCheck {
            port,
            service: "web/shop".into(),
            local_endpoints: 2,
        };
        hs.reconcile(std::slice::from_ref(&hc)).await;
        assert!(hs.failures.is_empty(), "{:?}", hs.failures);
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("\"localEndpoints\":2"), "{r}");
        assert!(r.contains("\"namespace\":\"web\""), "{r}");
        assert!(r.contains("\"name\":\"shop\""), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("x-load-balancing-endpoint-weight: 2"),
            "{r}"
        );

        hc.local_endpoints = 0;
        hs.reconcile(std::slice::from_ref(&hc)).await;
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");

        hc.local_endpoints = 1;
        hs.reconcile(std::slice::from_ref(&hc)).await;
        healthy.store(false, Ordering::Relaxed);
        let r = get(port).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("\"serviceProxyHealthy\":false"), "{r}");

        hs.reconcile(&[]).await;
        assert!(hs.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
    }
}
