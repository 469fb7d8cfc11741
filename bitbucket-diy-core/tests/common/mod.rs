//! Helpers shared by the client and simulator suites.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use bitbucket_diy_core::client::{DrainOptions, MaintenanceClient, MaintenanceClientBuilder};
use bitbucket_diy_core::simulator::{SimEventKind, Simulator, SimulatorConfig};

/// A simulator that drains quickly.
pub fn fast_config() -> SimulatorConfig {
    SimulatorConfig::default().with_drain_delay(Duration::from_millis(30))
}

pub async fn start(config: SimulatorConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts on 127.0.0.1:0")
}

/// A builder for `url` with short timeouts and near-instant retries (3 attempts).
pub fn fast_builder(url: impl Into<String>) -> MaintenanceClientBuilder {
    MaintenanceClient::builder(url)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(5))
        .retries(3, Duration::from_millis(5))
}

/// A client logged in as the simulator's administrator.
pub fn client_for(sim: &Simulator) -> MaintenanceClient {
    fast_builder(sim.url().as_str()).credentials(sim.user(), sim.password()).build().expect("client builds")
}

/// Poll every 10 ms, give up after `timeout`.
pub fn drain_options(timeout: Duration) -> DrainOptions {
    DrainOptions { poll_interval: Duration::from_millis(10), timeout }
}

/// The requests the simulator answered, as (method, path, status).
pub fn requests(sim: &Simulator) -> Vec<(String, String, u16)> {
    sim.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            SimEventKind::Request { method, path, status } => Some((method, path, status)),
            _ => None,
        })
        .collect()
}

/// How many answered requests went to a path ending with `suffix`.
pub fn count_requests(sim: &Simulator, method: &str, suffix: &str) -> usize {
    requests(sim).iter().filter(|(m, p, _)| m == method && p.ends_with(suffix)).count()
}

/// Wait (up to 5 s) until `condition` holds; false if it never did.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// A plain HTTP client for raw calls (reqwest needs a rustls provider even for http://).
pub fn raw_http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("reqwest client builds")
}
