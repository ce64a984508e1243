//! A Prometheus exporter whose metrics the test sets: the scaling tests drive the controller's
//! Prometheus gates through it (set a value, Prometheus scrapes it within a second, the controller
//! reads it) instead of generating real load on a workload.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Series by metric name, then by their labels (sorted by name).
type Families = BTreeMap<String, BTreeMap<Vec<(String, String)>, f64>>;

/// Largest request head read before the connection is dropped (Prometheus sends well under 1 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// Serves `/metrics` in the Prometheus text format on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    families: Arc<Mutex<Families>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    /// Starts serving on a free port, with no metrics yet. Needs a tokio runtime.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let families = Arc::new(Mutex::new(Families::new()));
        let served = families.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let families = served.clone();
                tokio::spawn(async move {
                    let _ = answer(stream, &families).await;
                });
            }
        });
        Ok(Self {
            addr,
            families,
            task,
        })
    }

    /// The `host:port` to scrape.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the series `name{labels}` to `value` from the next scrape on (NaN and the infinities
    /// included). Panics on a metric or label name Prometheus would reject, since one bad line
    /// fails the whole scrape.
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels = series_labels(name, labels);
        self.lock()
            .entry(name.to_owned())
            .or_default()
            .insert(labels, value);
    }

    /// Stops serving the series `name{labels}`; Prometheus marks it stale at the next scrape, so
    /// queries return nothing for it from then on.
    pub fn remove(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = series_labels(name, labels);
        let mut families = self.lock();
        if let Some(series) = families.get_mut(name) {
            series.remove(&labels);
            if series.is_empty() {
                families.remove(name);
            }
        }
    }

    /// The exposition text the next scrape gets.
    pub fn render(&self) -> String {
        render(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one HTTP/1.x request and closes the connection.
async fn answer(mut stream: TcpStream, families: &Mutex<Families>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let request_line = String::from_utf8_lossy(&head);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, body) = if method == Some("GET") && path == "/metrics" {
        let families = families.lock().unwrap_or_else(|e| e.into_inner());
        ("200 OK", render(&families))
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn render(families: &Families) -> String {
    let mut out = String::new();
    for (name, series) in families {
        let _ = writeln!(out, "# TYPE {name} untyped");
        for (labels, value) in series {
            out.push_str(name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = writeln!(out, " {}", format_value(*value));
        }
    }
    out
}

/// Go's spelling, which the text format expects (Rust prints `inf`).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Checks names the way Prometheus parses them and sorts the labels into a series key.
fn series_labels(name: &str, labels: &[(&str, &str)]) -> Vec<(String, String)> {
    assert!(
        is_name(name, true),
        "`{name}` is not a valid Prometheus metric name"
    );
    let mut sorted: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| {
            assert!(is_name(k, false), "`{k}` is not a valid label name");
            ((*k).to_owned(), (*v).to_owned())
        })
        .collect();
    sorted.sort();
    assert!(
        sorted.windows(2).all(|w| w[0].0 != w[1].0),
        "duplicate label names in {labels:?}"
    );
    sorted
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names; label names do not allow `:`.
fn is_name(name: &str, colon_allowed: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon_allowed && c == ':');
    name.chars()
        .next()
        .is_some_and(|c| ok(c) && !c.is_ascii_digit())
        && name.chars().all(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut families = Families::new();
        families.entry("b_total".into()).or_default().insert(
            series_labels("b_total", &[("z", "1"), ("a", "say \"hi\"\n\\")]),
            3.0,
        );
        let a = families.entry("a".into()).or_default();
        a.insert(vec![], f64::NAN);
        a.insert(series_labels("a", &[("x", "1")]), f64::NEG_INFINITY);
        assert_eq!(
            render(&families),
            "# TYPE a untyped\na NaN\na{x=\"1\"} -Inf\n\
             # TYPE b_total untyped\nb_total{a=\"say \\\"hi\\\"\\n\\\\\",z=\"1\"} 3\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(is_name("job:requests:rate5m", true));
        assert!(!is_name("job:requests", false));
        assert!(!is_name("1abc", true));
        assert!(!is_name("", true));
        assert!(!is_name("a-b", true));
    }
}
