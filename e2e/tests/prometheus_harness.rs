//! The Prometheus harness the scaling tests stand on, checked on its own (no cluster): a value set
//! on the exporter becomes queryable, a stopped Prometheus is `Unavailable` to the client, and a
//! restarted one serves the old samples and scrapes new ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use auto_agent_e2e::exporter::Exporter;
use auto_agent_e2e::prometheus::{Prometheus, ScrapeTarget};
use auto_agent_e2e::wait::poll_until;
use auto_agent_prom::{PromError, QueryResult};

const TIMEOUT: Duration = Duration::from_secs(30);
const QUERY: &str = "queue_depth{queue=\"orders\"}";

#[tokio::test]
async fn exporter_values_survive_a_prometheus_outage() {
    let exporter = Exporter::start().await.unwrap();
    exporter.set("queue_depth", &[("queue", "orders")], 7.0);
    let mut prometheus = Prometheus::start(&[ScrapeTarget::http("app", exporter.addr())])
        .await
        .unwrap();
    poll_until("the app target to be up", TIMEOUT, || {
        prometheus.targets_up("app")
    })
    .await
    .unwrap();
    assert!(!prometheus.targets_up("no-such-job").await.unwrap());

    let value = prometheus
        .wait_for_value(QUERY, |v| v == 7.0, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(value, 7.0);
    exporter.set("queue_depth", &[("queue", "orders")], 9.5);
    prometheus
        .wait_for_value(QUERY, |v| v == 9.5, TIMEOUT)
        .await
        .unwrap();
    let before_outage = SystemTime::now();

    let client = prometheus.client().unwrap();
    prometheus.stop();
    let err = client.instant(QUERY, None).await.unwrap_err();
    assert!(matches!(err, PromError::Unavailable(_)), "{err:?}");
    assert_eq!(err.category(), "unavailable");

    prometheus.start_again().await.unwrap();
    // Same TSDB: the sample scraped before the outage is still there.
    let old = client.instant(QUERY, Some(before_outage)).await.unwrap();
    assert_eq!(old.single_value(), Some(9.5), "{}", prometheus.output());
    // And scraping resumed.
    exporter.set("queue_depth", &[("queue", "orders")], 12.0);
    prometheus
        .wait_for_value(QUERY, |v| v == 12.0, TIMEOUT)
        .await
        .unwrap();

    // A series the exporter stops serving is marked stale at the next scrape.
    exporter.remove("queue_depth", &[("queue", "orders")]);
    poll_until("the removed series to go stale", TIMEOUT, || async {
        Ok(client.instant(QUERY, None).await? == QueryResult::Vector(vec![]))
    })
    .await
    .unwrap();
}
