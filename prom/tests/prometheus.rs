//! The client against a real Prometheus (Debian's package, installed by `make setup`) scraping an
//! exporter this test serves, so values, staleness and error answers are Prometheus's own, not a
//! recording. Failure modes Prometheus cannot be made to produce on demand (nothing listening, a
//! silent server, garbage, 5xx) come from small raw-TCP servers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auto_agent_prom::{BearerToken, PromClient, PromError, QueryResult, Sample, scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes run every second, but Prometheus 2.42 applies new targets on a 5 s tick, so the first
/// scrape lands about 5 s after start; the rest is room for a loaded machine.
const SCRAPE_WAIT: Duration = Duration::from_secs(20);

fn client(url: &str) -> PromClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    PromClient::new(url, QUERY_TIMEOUT).unwrap()
}

/// `prometheus` on PATH, as `scripts/setup.sh` checks for it. A missing binary fails the test:
/// skipping would let CI pass without ever talking to a real Prometheus.
fn prometheus_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
        .expect(
            "the `prometheus` binary is not installed: run `make setup` \
             (it installs Debian's prometheus package)",
        )
}

/// A Prometheus server scraping one target every second, killed when dropped.
struct PrometheusServer {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    async fn start(target: SocketAddr) -> Self {
        let binary = prometheus_binary();
        let dir = tempfile::Builder::new()
            .prefix("prom-test-")
            .tempdir()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 - job_name: test\n  static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/-/ready` (503 while starting, 200 once the TSDB is open and the API serves).
    async fn wait_ready(&mut self) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            let ready = http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 server: `respond` gets the request head and returns (status line, body), or
/// `None` to hold the connection open without ever answering. Stops when the handle is aborted.
async fn serve<F>(respond: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(&str) -> Option<(&'static str, String)> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let respond = Arc::new(respond);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(head) = read_request(&mut stream).await else {
                continue;
            };
            match respond(&head) {
                Some((status, body)) => {
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
                None => held.push(stream),
            }
        }
    });
    (addr, task)
}

/// Reads a request head and its body (so closing the socket does not reset the connection
/// under the client's feet); returns the head.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let body_len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while raw.len() < head_end + body_len {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// A `/metrics` endpoint whose exposition text the test sets.
struct TestExporter {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl TestExporter {
    async fn start(body: &str) -> Self {
        let shared = Arc::new(Mutex::new(body.to_owned()));
        let body = shared.clone();
        let (addr, task) = serve(move |head| {
            Some(if head.starts_with("GET /metrics ") {
                ("200 OK", body.lock().unwrap().clone())
            } else {
                ("404 Not Found", String::new())
            })
        })
        .await;
        Self {
            addr,
            body: shared,
            task,
        }
    }

    fn set(&self, body: &str) {
        body.clone_into(&mut self.body.lock().unwrap());
    }
}

impl Drop for TestExporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, failing after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn vector(prom: &PromClient, query: &str) -> Vec<Sample> {
    match prom.instant(query, None).await.unwrap() {
        QueryResult::Vector(samples) => samples,
        other => panic!("`{query}` should be a vector, got {other:?}"),
    }
}

/// Waits until `query` yields exactly `value` (one sample).
async fn wait_for(prom: &PromClient, query: &str, value: f64) -> Sample {
    eventually(&format!("`{query}` == {value}"), SCRAPE_WAIT, || async {
        let samples = vector(prom, query).await;
        (samples.len() == 1 && samples[0].value == value).then(|| samples[0].clone())
    })
    .await
}

fn millis(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[tokio::test]
async fn instant_query_follows_the_exporter() {
    let exporter =
        TestExporter::start("# TYPE queue_depth gauge\nqueue_depth{pod=\"a\"} 42\n").await;
    let server = PrometheusServer::start(exporter.addr).await;
    let prom = client(&server.url);

    let sample = wait_for(&prom, "queue_depth", 42.0).await;
    let labels: BTreeMap<String, String> = [
        ("__name__", "queue_depth".to_owned()),
        ("instance", exporter.addr.to_string()),
        ("job", "test".to_owned()),
        ("pod", "a".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    assert_eq!(sample.metric, labels);
    assert_eq!(
        prom.instant("queue_depth", None)
            .await
            .unwrap()
            .single_value(),
        Some(42.0)
    );

    exporter.set("queue_depth{pod=\"a\"} 17.5\n");
    wait_for(&prom, "queue_depth", 17.5).await;
    assert_eq!(
        prom.instant("sum(queue_depth)", None)
            .await
            .unwrap()
            .single_value(),
        Some(17.5)
    );

    // An explicit evaluation time comes back as the sample's timestamp, to the millisecond.
    let at = SystemTime::now();
    let samples = match prom.instant("queue_depth", Some(at)).await.unwrap() {
        QueryResult::Vector(samples) => samples,
        other => panic!("expected a vector, got {other:?}"),
    };
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].t_ms, millis(at));
    assert_eq!(samples[0].value, 17.5);

    // A scalar() of the gauge is a scalar result, not a one-sample vector.
    match prom.instant("scalar(queue_depth)", None).await.unwrap() {
        QueryResult::Scalar { value, .. } => assert_eq!(value, 17.5),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

#[tokio::test]
async fn range_query_returns_points_in_time_order() {
    let exporter = TestExporter::start("requests_in_flight 1\n").await;
    let server = PrometheusServer::start(exporter.addr).await;
    let prom = client(&server.url);
    wait_for(&prom, "requests_in_flight", 1.0).await;
    let changed = SystemTime::now();
    exporter.set("requests_in_flight 2\n");
    wait_for(&prom, "requests_in_flight", 2.0).await;

    let step = Duration::from_millis(500);
    let start = changed - Duration::from_secs(3);
    let points = eventually("a range with both values", SCRAPE_WAIT, || async {
        let end = SystemTime::now();
        let result = prom
            .range("requests_in_flight", start, end, step)
            .await
            .unwrap();
        let points = result.first_series_points()?.to_vec();
        (points.len() >= 4 && points.last()?.1 == 2.0).then_some(points)
    })
    .await;

    for pair in points.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            500,
            "points are one step apart, in increasing time order: {points:?}"
        );
    }
    assert!(points.iter().all(|(_, v)| *v == 1.0 || *v == 2.0));
    assert!(points.iter().any(|(_, v)| *v == 1.0), "{points:?}");
    let first_two = points.iter().position(|(_, v)| *v == 2.0).unwrap();
    assert!(
        points[first_two..].iter().all(|(_, v)| *v == 2.0),
        "the value changed once: {points:?}"
    );
}

#[tokio::test]
async fn scalars_strings_empty_results_and_special_values() {
    let exporter = TestExporter::start("").await;
    let server = PrometheusServer::start(exporter.addr).await;
    // Prometheus ignores the header; it only has to travel without breaking anything.
    let prom = client(&server.url).with_bearer_token(BearerToken::new("not-a-real-token").unwrap());

    let one = prom.instant("vector(1)", None).await.unwrap();
    assert_eq!(one.single_value(), Some(1.0));
    match &one {
        QueryResult::Vector(samples) => assert!(samples[0].metric.is_empty()),
        other => panic!("expected a vector, got {other:?}"),
    }

    match prom.instant("scalar(vector(3))", None).await.unwrap() {
        QueryResult::Scalar { value, t_ms } => {
            assert_eq!(value, 3.0);
            assert!((millis(SystemTime::now()) - t_ms).abs() < 60_000, "{t_ms}");
        }
        other => panic!("expected a scalar, got {other:?}"),
    }

    match prom.instant("\"hello\"", None).await.unwrap() {
        QueryResult::String { value, .. } => assert_eq!(value, "hello"),
        other => panic!("expected a string, got {other:?}"),
    }

    let absent = prom.instant("absent_metric_xyz", None).await.unwrap();
    assert_eq!(absent, QueryResult::Vector(vec![]));
    assert_eq!(absent.single_value(), None);

    let nan = prom.instant("vector(0)/0", None).await.unwrap();
    assert!(nan.single_value().unwrap().is_nan(), "{nan:?}");
    assert_eq!(
        prom.instant("vector(1)/0", None)
            .await
            .unwrap()
            .single_value(),
        Some(f64::INFINITY)
    );
    assert_eq!(
        prom.instant("-vector(1)/0", None)
            .await
            .unwrap()
            .single_value(),
        Some(f64::NEG_INFINITY)
    );
}

#[tokio::test]
async fn rejected_queries_are_bad_queries() {
    let exporter = TestExporter::start("").await;
    let server = PrometheusServer::start(exporter.addr).await;
    let prom = client(&server.url);

    let err = prom.instant("sum(", None).await.unwrap_err();
    assert_eq!(err.category(), "bad_query");
    match &err {
        PromError::BadQuery {
            query,
            error_type,
            error,
        } => {
            assert_eq!(query, "sum(");
            assert_eq!(error_type, "bad_data");
            assert!(error.contains("parse error"), "{error}");
        }
        other => panic!("expected BadQuery, got {other:?}"),
    }
    assert!(err.to_string().contains("`sum(`"), "{err}");

    // Valid PromQL that cannot be evaluated: HTTP 422, errorType `execution`.
    let many_to_many = "vector(1) + on() group_left() \
        (label_replace(vector(1), \"a\", \"1\", \"\", \"\") \
         or label_replace(vector(1), \"a\", \"2\", \"\", \"\"))";
    match prom.instant(many_to_many, None).await.unwrap_err() {
        PromError::BadQuery { error_type, .. } => assert_eq!(error_type, "execution"),
        other => panic!("expected BadQuery, got {other:?}"),
    }

    let now = SystemTime::now();
    let backwards = prom
        .range(
            "vector(1)",
            now,
            now - Duration::from_secs(60),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(backwards.category(), "bad_query", "{backwards}");
    let zero_step = prom
        .range(
            "vector(1)",
            now - Duration::from_secs(60),
            now,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert_eq!(zero_step.category(), "bad_query", "{zero_step}");
}

#[tokio::test]
async fn scoped_queries_read_only_their_namespace_and_workload() {
    // Two tenants' series, and a workload whose name starts with another's (`api-gateway`).
    let exporter = TestExporter::start(
        "# TYPE cpu gauge\n\
         cpu{namespace=\"prod\",pod=\"api-7d9f8c6b5-x2x4z\"} 1\n\
         cpu{namespace=\"prod\",pod=\"api-7d9f8c6b5-q8w9z\"} 2\n\
         cpu{namespace=\"prod\",pod=\"api-gateway-6c8d7f9b4-k2l4m\"} 10\n\
         cpu{namespace=\"other\",pod=\"api-7d9f8c6b5-x2x4z\"} 100\n",
    )
    .await;
    let server = PrometheusServer::start(exporter.addr).await;
    let prom = client(&server.url);
    wait_for(&prom, "count(cpu)", 4.0).await;

    let sum = |template: &'static str| {
        let prom = prom.clone();
        async move {
            let query = scope::render(template, "prod", "Deployment", "api").unwrap();
            let result = prom.instant(&query, None).await;
            (query.clone(), result.unwrap().single_value())
        }
    };
    // (template, what the policy in `prod` reads for its Deployment `api`)
    for (template, want) in [
        ("sum(cpu{pod=~\"$pods\"})", Some(3.0)),
        ("sum(cpu{pod=~\"$workload-.+\"})", Some(3.0)),
        ("sum(cpu)", Some(13.0)),
        ("sum(cpu{namespace=\"$namespace\"})", Some(13.0)),
        ("sum(cpu{namespace=~\".+\"})", Some(13.0)),
        ("sum(cpu{namespace!=\"prod\"})", None),
        (
            "max(cpu{pod=~\"$pods\"}) / on() group_left() count(cpu)",
            Some(2.0 / 3.0),
        ),
        ("sum(max_over_time(cpu[1m]))", Some(13.0)),
    ] {
        let (query, got) = sum(template).await;
        assert_eq!(got, want, "{template} ran as {query}");
    }
    // The chart's default CPU query runs as scoped (no series here: an empty answer, not an
    // error).
    let cpu_default = "sum(rate(container_cpu_usage_seconds_total{namespace=\"$namespace\",pod=~\"$pods\",container!=\"\",container!=\"POD\"}[2m])) / sum(kube_pod_container_resource_requests{namespace=\"$namespace\",pod=~\"$pods\",resource=\"cpu\"})";
    let (query, got) = sum(cpu_default).await;
    assert_eq!(got, None, "{query}");
    // Another tenant's namespace is refused before any query is sent.
    let err =
        scope::render("sum(cpu{namespace=\"other\"})", "prod", "Deployment", "api").unwrap_err();
    assert!(err.to_string().contains("other"), "{err}");
}

/// Answers every request with `200 OK` and a chunked body that never ends (64 KiB chunks until
/// `max_bytes` or the client hangs up); counts the bytes it got out.
async fn endless_body(max_bytes: usize) -> (SocketAddr, Arc<Mutex<usize>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(0usize));
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Transfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                while *counter.lock().unwrap() < max_bytes {
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    *counter.lock().unwrap() += 64 * 1024;
                }
            });
        }
    });
    (addr, sent, task)
}

#[tokio::test]
async fn huge_answers_are_refused_while_they_stream() {
    const LIMIT: usize = 256 * 1024;
    const SERVER_GIVES_UP: usize = 256 * 1024 * 1024;
    let (addr, sent, server) = endless_body(SERVER_GIVES_UP).await;
    let prom = client(&format!("http://{addr}")).with_max_response_bytes(LIMIT);
    let err = prom.instant("up", None).await.unwrap_err();
    assert!(
        matches!(err, PromError::TooLarge { limit: LIMIT }),
        "{err:?}"
    );
    assert_eq!(err.category(), "too_large");
    assert!(
        !err.to_string().contains("xxxx"),
        "no body in the error: {err}"
    );
    // The client stopped reading near the limit; the server was not drained to its end.
    let sent = *sent.lock().unwrap();
    assert!(
        sent < SERVER_GIVES_UP / 4,
        "the client read on to {sent} bytes"
    );
    server.abort();

    // A declared Content-Length above the limit is refused before the body is read.
    let big = "y".repeat(LIMIT + 1);
    let (addr, server) = serve(move |_| Some(("200 OK", big.clone()))).await;
    let prom = client(&format!("http://{addr}")).with_max_response_bytes(LIMIT);
    let err = prom.instant("up", None).await.unwrap_err();
    assert!(matches!(err, PromError::TooLarge { .. }), "{err:?}");
    // At the limit, the answer is read (and here, being garbage, refused as such).
    let exact = "z".repeat(LIMIT);
    let (addr2, server2) = serve(move |_| Some(("200 OK", exact.clone()))).await;
    let prom = client(&format!("http://{addr2}")).with_max_response_bytes(LIMIT);
    let err = prom.instant("up", None).await.unwrap_err();
    assert_eq!(err.category(), "bad_response", "{err}");
    server.abort();
    server2.abort();
}

#[tokio::test]
async fn nothing_listening_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom = client(&format!("http://127.0.0.1:{port}"));
    let err = prom.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(err, PromError::Unavailable(_)), "{err:?}");
    assert_eq!(err.category(), "unavailable");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/api/v1/query")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connect"), "{message}");
}

#[tokio::test]
async fn no_answer_within_the_timeout_is_unavailable() {
    let (addr, server) = serve(|_| None).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prom = PromClient::new(&format!("http://{addr}"), Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = prom.instant("vector(1)", None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, PromError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("within 300ms"), "{err}");
    server.abort();
}

#[tokio::test]
async fn server_errors_are_unavailable() {
    let (addr, server) = serve(|_| {
        Some((
            "503 Service Unavailable",
            r#"{"status":"error","errorType":"timeout","error":"query timed out"}"#.to_owned(),
        ))
    })
    .await;
    let err = client(&format!("http://{addr}"))
        .instant("vector(1)", None)
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("query timed out"), "{err}");
    server.abort();
}

#[tokio::test]
async fn garbage_is_a_bad_response() {
    let (addr, server) = serve(|head| {
        Some(if head.contains("/prefix/api/v1/query ") {
            ("200 OK", "<html>hello, not json</html>".to_owned())
        } else {
            ("404 Not Found", "404 page not found".to_owned())
        })
    })
    .await;

    let err = client(&format!("http://{addr}/prefix/"))
        .instant("vector(1)", None)
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::BadResponse(_)), "{err:?}");
    assert_eq!(err.category(), "bad_response");
    assert!(
        err.to_string().contains("not a Prometheus API response"),
        "{err}"
    );

    // A wrong base URL: the server is there but has no such API.
    let err = client(&format!("http://{addr}/elsewhere"))
        .range(
            "vector(1)",
            SystemTime::now() - Duration::from_secs(60),
            SystemTime::now(),
            Duration::from_secs(15),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PromError::BadResponse(_)), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
    server.abort();
}

#[tokio::test]
async fn bearer_token_is_sent_but_never_shown() {
    const TOKEN: &str = "s3cr3t-bearer-token";
    // A misbehaving proxy that echoes the request, headers included, in its error page.
    let (addr, server) = serve(|head| Some(("500 Internal Server Error", head.to_owned()))).await;
    let prom =
        client(&format!("http://{addr}")).with_bearer_token(BearerToken::new(TOKEN).unwrap());
    assert!(!format!("{prom:?}").contains(TOKEN));

    let err = prom.instant("vector(1)", None).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(
        shown
            .to_lowercase()
            .contains("authorization: bearer <redacted>"),
        "the token was sent (and scrubbed from the echo): {shown}"
    );
    server.abort();
}

#[test]
fn unusable_configuration_is_refused() {
    for (url, timeout) in [
        ("not a url", QUERY_TIMEOUT),
        ("ftp://prometheus:9090", QUERY_TIMEOUT),
        ("http://prometheus:9090/?x=1", QUERY_TIMEOUT),
        ("http://prometheus:9090", Duration::ZERO),
    ] {
        let err = PromClient::new(url, timeout).unwrap_err();
        assert_eq!(err.category(), "config", "{url}: {err}");
    }
    let err = PromClient::new("http://admin:hunter2@prometheus:9090", QUERY_TIMEOUT).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
