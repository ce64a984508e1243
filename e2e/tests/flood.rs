//! An unauthenticated flood against the leader's gRPC ingest: 2,000 concurrent streams with tokens
//! that must be refused (garbage, well-formed but expired, a real token for another audience, and
//! a few forged ones with the right audience that only the apiserver can refuse), all from the
//! same address as the real sensor. While it runs, the sensor restarts with a new token and must be
//! welcomed (its TokenReview competing with the flood) and its finding acknowledged, the leader
//! must keep its lease, and the TokenReviews the flood causes must stay far below its number of
//! streams. Timings are printed (docs/BENCHMARKS.md), not
//! asserted beyond generous functional deadlines.
//!
//!     cargo test -p auto-agent-e2e --test flood -- --nocapture

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auto_agent_e2e::agents::{CONTROLLER_TLS_NAME, Sensor, SensorOptions};
use auto_agent_e2e::bench::sample_while;
use auto_agent_e2e::process::{http_get, metric_sum};
use auto_agent_e2e::wait::poll_until;
use auto_agent_e2e::{Setup, Workload, scenario};
use auto_agent_shared::proto::v1::sensor_ingest_client::SensorIngestClient;
use auto_agent_shared::proto::v1::{self as pb, sensor_message};
use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// The agents' node (held for the test by `Setup`).
const NODE: &str = "kwok-node-2";
const STREAMS: usize = 2_000;
/// The flood's streams share this many connections (40 streams each, under HTTP/2's limit).
const CONNECTIONS: usize = 50;
/// How long the flood runs at least.
const FLOOD_FOR: Duration = Duration::from_secs(30);
/// Functional deadlines, not performance targets.
const DEADLINE: Duration = Duration::from_secs(30);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT-shaped token with these claims and a signature nobody made.
fn forged(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","kid":"flood"}"#),
        b64(claims.to_string().as_bytes()),
        b64(b"not a signature")
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The flood's tokens, one per stream: a quarter each of garbage, expired, another audience
/// (a real token of the sensor's ServiceAccount, validly signed) and forged for our audience
/// (four distinct ones, so the refusal cache has something to remember).
fn flood_tokens(other_audience: &str) -> Vec<(&'static str, String)> {
    let aud = auto_agent_shared::keys::SENSOR_TOKEN_AUDIENCE;
    (0..STREAMS)
        .map(|i| match i % 4 {
            0 => ("garbage", format!("garbage{i:05}xyz")),
            1 => (
                "expired",
                forged(&serde_json::json!({"aud": [aud], "exp": unix_now() - 60, "jti": i})),
            ),
            2 => ("other_audience", other_audience.to_owned()),
            _ => (
                "forged",
                forged(&serde_json::json!({"aud": [aud], "exp": unix_now() + 3600, "jti": i % 16})),
            ),
        })
        .collect()
}

/// Stops the flood when dropped, also when the test fails half-way.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the flood saw, by gRPC status code.
#[derive(Default)]
struct Tally {
    by_code: Mutex<BTreeMap<String, usize>>,
    attempts: AtomicUsize,
    /// Streams that completed at least one attempt.
    started: AtomicUsize,
    accepted: AtomicUsize,
}

async fn channel(addr: SocketAddr, ca: &[u8]) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(CONTROLLER_TLS_NAME);
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Runs `STREAMS` concurrent streams against `addr`, each reopening as soon as it is refused,
/// until `stop`.
async fn flood(
    addr: SocketAddr,
    ca: Vec<u8>,
    tokens: Vec<(&'static str, String)>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(channel(addr, &ca).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, token)) in tokens.into_iter().enumerate() {
        let mut client = SensorIngestClient::new(channels[i % CONNECTIONS].clone());
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut first = true;
            while !stop.load(Ordering::Relaxed) {
                let hello = pb::SensorMessage {
                    message: Some(sensor_message::Message::Hello(pb::Hello {
                        node_name: NODE.into(),
                        instance_id: format!("flood-{i}"),
                        version: "flood".into(),
                    })),
                };
                let mut request = tonic::Request::new(tokio_stream::iter(vec![hello]));
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                let code = match client.stream(request).await {
                    Ok(_) => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                        "accepted".to_owned()
                    }
                    Err(status) => {
                        if status.code() == tonic::Code::Unavailable {
                            // The controller is gone (the test failed): no busy loop.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        format!("{:?}", status.code())
                    }
                };
                *tally.by_code.lock().unwrap().entry(code).or_default() += 1;
                tally.attempts.fetch_add(1, Ordering::Relaxed);
                if first {
                    first = false;
                    tally.started.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A metric of the process whose admin server listens on `admin`.
async fn metric(admin: SocketAddr, name: &str) -> anyhow::Result<f64> {
    Ok(metric_sum(&http_get(admin, "/metrics").await?.1, name))
}

/// (holder, transitions, renew time) of the controllers' Lease.
async fn lease(api: &Api<Lease>, name: &str) -> (String, i32, String) {
    let spec = api.get(name).await.unwrap().spec.unwrap_or_default();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
        spec.renew_time
            .map(|t| format!("{:?}", t.0))
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tokens_locks_out_no_sensor_and_spares_the_apiserver() {
    let mut t = Setup::new("flood", NODE).await;
    let cluster = t.cluster.clone();
    t.start_agents(1, Vec::new()).await;
    let pod = t.running_pod(Workload::new("victim")).await;
    let leader = &t.stack().controllers[0];
    let (leader_admin, leader_grpc, leader_pid) = (leader.admin, leader.grpc, leader.process.pid());
    let leader_name = leader.name.clone();
    poll_until("the sensor's stream", DEADLINE, || async move {
        Ok(metric(leader_admin, "auto_agent_streams_open").await? == 1.0)
    })
    .await
    .unwrap();
    let before = http_get(leader_admin, "/metrics").await.unwrap().1;
    assert!(
        before.contains("auto_agent_token_reviews_total{outcome=\"authenticated\"}"),
        "a controller built from this tree (it counts TokenReviews)"
    );
    let reviews_before = metric_sum(&before, "auto_agent_token_reviews_total");
    let leases: Api<Lease> = Api::namespaced(t.admin.clone(), &t.stack().controller_id.namespace);
    let lease_name = t.stack().controller_id.lease_name.clone();
    let (holder, transitions, renewed_before) = lease(&leases, &lease_name).await;
    assert_eq!(holder, leader_name);

    // The flood, straight at the leader.
    let other_audience = cluster
        .service_account_token(
            &t.stack().sensor_id.namespace,
            &t.stack().sensor_id.service_account,
            &[],
            600,
        )
        .await
        .unwrap();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let flood_started = Instant::now();
    let flooding = tokio::spawn(flood(
        leader_grpc,
        std::fs::read(&t.stack().pki.ca_file).unwrap(),
        flood_tokens(&other_audience),
        tally.clone(),
        stop.clone(),
    ));
    poll_until(
        "every flood stream refused once",
        Duration::from_secs(120),
        || {
            let n = tally.started.load(Ordering::Relaxed);
            async move { Ok(n == STREAMS) }
        },
    )
    .await
    .unwrap();
    let all_refused_once = flood_started.elapsed();

    // While it runs: the leader keeps saying it leads, and the sensor restarts.
    let not_leading = Arc::new(AtomicUsize::new(0));
    let leading_samples = Arc::new(AtomicUsize::new(0));
    let (watch_stop, nl, ls) = (stop.clone(), not_leading.clone(), leading_samples.clone());
    let leadership_watch = tokio::spawn(async move {
        while !watch_stop.load(Ordering::Relaxed) {
            let leading = metric(leader_admin, "auto_agent_leader")
                .await
                .is_ok_and(|v| v == 1.0);
            ls.fetch_add(1, Ordering::Relaxed);
            if !leading {
                nl.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });

    let (admin, ns) = (t.admin.clone(), t.ns().to_owned());
    let cluster = t.cluster.clone();
    let stack = t.stack_mut();
    stack.sensor.process.kill();
    poll_until("the old sensor's stream closed", DEADLINE, || async move {
        Ok(metric(leader_admin, "auto_agent_streams_open").await? == 0.0)
    })
    .await
    .unwrap();
    let options = SensorOptions {
        node: NODE.into(),
        controller: format!("https://{}", stack.service.addr),
        ca_file: Some(stack.pki.ca_file.clone()),
        tls_server_name: Some(CONTROLLER_TLS_NAME.into()),
        ..SensorOptions::default()
    };
    // A new token, as the kubelet rotates it: its stream needs a TokenReview during the flood.
    stack.sensor_id.refresh_agent_token().await.unwrap();
    let mut phases = Vec::new();
    let samples = sample_while(leader_pid, FLOOD_FOR, Duration::from_millis(500), async {
        let started = Instant::now();
        stack.sensor = Sensor::start(&cluster, &stack.sensor_id, &options)
            .await
            .unwrap();
        phases.push((
            "sensor started -> ready (watches synced)",
            started.elapsed(),
        ));
        poll_until("the restarted sensor welcomed", DEADLINE, || async move {
            Ok(metric(leader_admin, "auto_agent_streams_open").await? == 1.0)
        })
        .await
        .unwrap();
        phases.push((
            "sensor started -> welcomed by the leader",
            started.elapsed(),
        ));
        let crashed = Instant::now();
        scenario::crash_loop(&admin, &ns, &pod, None, 1, 1)
            .await
            .unwrap();
        let sensor_admin = stack.sensor.admin;
        poll_until("the finding acknowledged", DEADLINE, || async move {
            Ok(metric(sensor_admin, "auto_agent_sensor_acked_total").await? >= 1.0)
        })
        .await
        .unwrap();
        phases.push(("crash loop set -> its finding acked", crashed.elapsed()));
    })
    .await;
    let attempts_during = tally.attempts.load(Ordering::Relaxed);
    let flood_secs = flood_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    flooding.await.unwrap();
    leadership_watch.await.unwrap();

    let after = http_get(leader_admin, "/metrics").await.unwrap().1;
    let reviews = metric_sum(&after, "auto_agent_token_reviews_total") - reviews_before;
    let (holder_after, transitions_after, renewed_after) = lease(&leases, &lease_name).await;

    println!(
        "\n| flood: {STREAMS} streams over {CONNECTIONS} connections, {flood_secs:.0} s | figure |"
    );
    println!("| --- | --- |");
    println!(
        "| attempts refused | {attempts_during} ({:.0}/s) |",
        attempts_during as f64 / flood_secs
    );
    println!(
        "| every flood stream refused once after | {:.2} s |",
        all_refused_once.as_secs_f64()
    );
    for (phase, took) in phases {
        println!("| {phase} | {:.2} s |", took.as_secs_f64());
    }
    println!("| TokenReviews during the flood | {reviews} |");
    println!(
        "| controller CPU (% of one core) / max RSS | {:.0} % / {:.1} MiB |",
        samples.cpu_percent,
        samples.max_rss_mib()
    );
    println!(
        "| leader metric samples not leading | {} of {} |",
        not_leading.load(Ordering::Relaxed),
        leading_samples.load(Ordering::Relaxed)
    );
    println!(
        "\nclient-side status codes: {:?}",
        tally.by_code.lock().unwrap()
    );
    println!(
        "refusals by cause: {}",
        after
            .lines()
            .filter(|l| l.starts_with("auto_agent_streams_refused_total{") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "TokenReviews by outcome: {}",
        after
            .lines()
            .filter(|l| l.starts_with("auto_agent_token_reviews_total{"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    assert_eq!(
        tally.accepted.load(Ordering::Relaxed),
        0,
        "no flood stream got in"
    );
    assert!(
        reviews <= 40.0,
        "{reviews} TokenReviews for {attempts_during} flood attempts"
    );
    assert_eq!(
        (holder_after.as_str(), transitions_after),
        (holder.as_str(), transitions),
        "the leader kept its lease"
    );
    assert_ne!(
        renewed_after, renewed_before,
        "and renewed it during the flood"
    );
    assert_eq!(not_leading.load(Ordering::Relaxed), 0, "it led throughout");
    t.finish().await;
}
