//! `PromClient::new` in a process that installed no rustls crypto provider: reqwest (built with
//! `rustls-no-provider`) would panic, so the client installs ring's. Its own test binary, because
//! the provider is process-global and the other tests install it first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use auto_agent_prom::PromClient;
use rustls::crypto::CryptoProvider;

#[test]
fn new_installs_ring_when_no_provider_is_installed() {
    assert!(CryptoProvider::get_default().is_none());
    PromClient::new("https://prometheus.example:9090", Duration::from_secs(1)).unwrap();
    assert!(CryptoProvider::get_default().is_some());
}
