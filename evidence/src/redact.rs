//! Redaction: nothing that looks like a secret leaves the process inside a bundle. Applied to the
//! pod (env values, annotations, args, probes, lifecycle hooks, volumes), Event messages and log
//! lines before a bundle is built, so there is no code path that serialises an unredacted bundle.
//!
//! What is removed:
//! - env values of variables named like secrets (`*PASSWORD*`, `*TOKEN*`, `*_KEY`, ...); values
//!   sourced from Secrets are references only in a pod spec and stay as such;
//! - in probes and lifecycle hooks: every `httpGet` header value; `exec.command` is redacted like
//!   a container's args;
//! - every volume source's details: a volume keeps its name and type, and for `secret`,
//!   `configMap` and `persistentVolumeClaim` the name of the object it refers to;
//! - `kubectl.kubernetes.io/last-applied-configuration` (it repeats the whole manifest, env
//!   literals included) and annotations named like secrets;
//! - in any text: bearer tokens, JWTs, AWS access key ids and secret keys, GitHub and Slack tokens,
//!   Slack webhook URLs, passwords in URLs, `password=...`-style pairs, private key blocks.
//!
//! It is a filter over patterns, so it errs on the side of removing too much.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";
/// What replaces a private key block.
pub const REDACTED_KEY: &str = "[REDACTED PRIVATE KEY]";
/// The annotation kubectl writes with the whole applied manifest.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Words that make a variable or annotation name secret-like, matched per name segment.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "private",
    "dsn",
    "passphrase",
    "cookie",
    "session",
];

/// True when a variable or annotation name looks like it holds a secret. Names are split on `_`,
/// `-`, `.` and `/` and on case changes, so `DB_PASSWORD`, `apiKey` and `x-auth-token` match but
/// `KEYBOARD_LAYOUT` does not; a trailing `KEY` segment (`STRIPE_KEY`, `ACCESS_KEY`) matches.
pub fn is_secret_name(name: &str) -> bool {
    let segments = split_name(name);
    let last = segments.last().map(String::as_str);
    if matches!(last, Some("key" | "keys" | "pass" | "pw")) && segments.len() > 1 {
        return true;
    }
    let joined = segments.concat();
    if joined.contains("apikey") || joined.contains("accesskey") || joined.contains("secretkey") {
        return true;
    }
    segments.iter().any(|s| SECRET_WORDS.contains(&s.as_str()))
}

fn split_name(name: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if matches!(c, '_' | '-' | '.' | '/' | ' ') {
            if !current.is_empty() {
                segments.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            segments.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        segments.push(current);
    }
    segments
}

struct Pattern {
    re: Regex,
    replacement: &'static str,
}

// The patterns are constant literals compiled on first use; every one is exercised by the unit
// tests, so a pattern that does not compile fails the tests, never a running controller.
#[allow(clippy::expect_used)]
fn pattern(re: &str, replacement: &'static str) -> Pattern {
    Pattern {
        re: Regex::new(re).expect("redaction patterns are valid literals"),
        replacement,
    }
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    vec![
        // A private key inside one string (logs sometimes carry it with escaped newlines).
        pattern(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
            REDACTED_KEY,
        ),
        pattern(
            r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9\-._~+/]{8,}=*",
            "$1$2[REDACTED]",
        ),
        pattern(
            r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            REDACTED,
        ),
        pattern(
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[A-Z0-9]{16}\b",
            REDACTED,
        ),
        pattern(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", REDACTED),
        pattern(r"\bgithub_pat_[A-Za-z0-9_]{30,}\b", REDACTED),
        pattern(r"\bglpat-[A-Za-z0-9_-]{20,}\b", REDACTED),
        pattern(r"\bxox[abposr]-[A-Za-z0-9-]{10,}", REDACTED),
        pattern(r"https://hooks\.slack\.com/[A-Za-z0-9/_-]+", REDACTED),
        // user:password@ in URLs.
        pattern(r"(://[^/\s:@]+:)[^@\s/]+@", "$1[REDACTED]@"),
        // key=value and "key": "value" pairs whose key is secret-like.
        pattern(
            r#"(?i)\b([A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?secret|credentials?|auth)[A-Za-z0-9_.-]*)(["']?\s*[=:]\s*["']?)([^\s"'&,;}]{1,})"#,
            "$1$2[REDACTED]",
        ),
    ]
});

/// Redacts secret-looking substrings of one string and escapes control characters other than
/// tab and newline (so a bundle viewed in a terminal cannot move the cursor or change colours).
pub fn redact_text(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    for p in PATTERNS.iter() {
        if let Cow::Owned(replaced) = p.re.replace_all(&out, p.replacement) {
            out = Cow::Owned(replaced);
        }
    }
    if out
        .chars()
        .any(|c| c.is_control() && c != '\t' && c != '\n')
    {
        out = Cow::Owned(
            out.chars()
                .map(|c| {
                    if c.is_control() && c != '\t' && c != '\n' {
                        c.escape_unicode().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        );
    }
    out
}

/// Redacts log lines, including private key blocks that span several lines: every line from a
/// `BEGIN ... PRIVATE KEY` to its `END` collapses into one marker. Returns the count of lines
/// changed.
pub fn redact_lines(lines: &[String]) -> (Vec<String>, usize) {
    let mut out = Vec::with_capacity(lines.len());
    let mut changed = 0;
    let mut in_key = false;
    for line in lines {
        if in_key {
            changed += 1;
            if line.contains("PRIVATE KEY-----") && line.contains("-----END") {
                in_key = false;
            }
            continue;
        }
        if line.contains("-----BEGIN") && line.contains("PRIVATE KEY-----") {
            let closes = line.contains("-----END");
            if !closes {
                in_key = true;
                // Keep what came before the block on the line.
                let before = line.split("-----BEGIN").next().unwrap_or_default();
                out.push(format!("{}{REDACTED_KEY}", redact_text(before)));
                changed += 1;
                continue;
            }
        }
        let red = redact_text(line);
        if let Cow::Owned(red) = red {
            changed += 1;
            out.push(red);
        } else {
            out.push(line.clone());
        }
    }
    (out, changed)
}

/// Redacts a Pod object (as JSON) in place; returns how many values were replaced.
/// `metadata.managedFields` is dropped (it repeats the spec and says nothing about the failure).
pub fn redact_pod(pod: &mut Value) -> usize {
    let mut count = 0;
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        for field in ["annotations", "labels"] {
            if let Some(map) = meta.get_mut(field).and_then(Value::as_object_mut) {
                for (k, v) in map.iter_mut() {
                    count += redact_named_value(k, v, field == "annotations");
                }
            }
        }
    }
    if let Some(spec) = pod.get_mut("spec") {
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in containers {
                count += redact_container(c);
            }
        }
        if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
            for v in volumes {
                count += redact_volume(v);
            }
        }
    }
    if let Some(status) = pod.get_mut("status") {
        count += redact_strings(status);
    }
    count
}

fn redact_named_value(name: &str, value: &mut Value, annotation: bool) -> usize {
    if (annotation && name == LAST_APPLIED) || is_secret_name(name) {
        *value = Value::String(REDACTED.to_owned());
        return 1;
    }
    redact_strings(value)
}

fn redact_container(c: &mut Value) -> usize {
    let mut count = 0;
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for var in env {
            let name = var
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(v) = var.get_mut("value") {
                count += redact_named_value(&name, v, false);
            }
        }
    }
    for field in ["args", "command"] {
        if let Some(v) = c.get_mut(field) {
            count += redact_args(v);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            count += redact_handler(p);
        }
    }
    if let Some(lifecycle) = c.get_mut("lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lifecycle.get_mut(hook) {
                count += redact_handler(h);
            }
        }
    }
    count
}

/// A probe or a lifecycle hook: `exec.command` like a container's args; every `httpGet` header
/// value (a header named `X-Probe` may carry a token as well as `Authorization` does); the text
/// patterns over the rest of `httpGet` (a token in the path's query).
fn redact_handler(h: &mut Value) -> usize {
    let mut count = 0;
    if let Some(command) = h.get_mut("exec").and_then(|e| e.get_mut("command")) {
        count += redact_args(command);
    }
    if let Some(get) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        if let Some(headers) = get.get_mut("httpHeaders").and_then(Value::as_array_mut) {
            for header in headers {
                if let Some(v) = header.get_mut("value") {
                    *v = Value::String(REDACTED.to_owned());
                    count += 1;
                }
            }
        }
        for (k, v) in get.iter_mut().filter(|(k, _)| *k != "httpHeaders") {
            count += redact_named_value(k, v, false);
        }
    }
    count
}

/// What a volume keeps of its source, by type: the name of the object it refers to. Every other
/// detail of every source (`csi.volumeAttributes`, `flexVolume.options`, `iscsi` and `rbd`
/// settings, `azureFile`, `projected` items, a `hostPath`, ...) is dropped, so the bundle shows
/// which volumes the pod has and of what type, never what a source carries inline.
const VOLUME_REFERENCES: &[(&str, &str)] = &[
    ("secret", "secretName"),
    ("configMap", "name"),
    ("persistentVolumeClaim", "claimName"),
];

/// Keeps a volume's name and type (and the referenced object's name, see
/// [`VOLUME_REFERENCES`]); returns 1 when anything was dropped.
fn redact_volume(v: &mut Value) -> usize {
    let Some(map) = v.as_object_mut() else {
        return 0;
    };
    let mut dropped = false;
    for (kind, source) in map.iter_mut().filter(|(k, _)| *k != "name") {
        let keep = VOLUME_REFERENCES
            .iter()
            .find(|(t, _)| *t == kind.as_str())
            .map(|(_, field)| *field);
        let kept: serde_json::Map<String, Value> = match source.as_object() {
            Some(fields) => fields
                .iter()
                .filter(|(f, _)| Some(f.as_str()) == keep)
                .map(|(f, v)| (f.clone(), v.clone()))
                .collect(),
            None => serde_json::Map::new(),
        };
        if source.as_object().map(serde_json::Map::len) != Some(kept.len()) {
            dropped = true;
        }
        *source = Value::Object(kept);
    }
    usize::from(dropped)
}

/// `--password hunter2` hides the value in the next argument; `--password=hunter2` is caught by
/// the text patterns.
fn redact_args(args: &mut Value) -> usize {
    let Some(list) = args.as_array_mut() else {
        return 0;
    };
    let mut count = 0;
    let mut hide_next = false;
    for arg in list {
        let Some(s) = arg.as_str() else { continue };
        if hide_next {
            *arg = Value::String(REDACTED.to_owned());
            count += 1;
            hide_next = false;
            continue;
        }
        let flag = s.trim_start_matches('-');
        if s.starts_with('-') && !s.contains('=') && is_secret_name(flag) {
            hide_next = true;
        }
        if let Cow::Owned(red) = redact_text(s) {
            *arg = Value::String(red);
            count += 1;
        }
    }
    count
}

/// Redacts every string inside a JSON value; returns how many changed.
pub fn redact_strings(v: &mut Value) -> usize {
    match v {
        Value::String(s) => {
            if let Cow::Owned(red) = redact_text(s) {
                *s = red;
                1
            } else {
                0
            }
        }
        Value::Array(items) => items.iter_mut().map(redact_strings).sum(),
        Value::Object(map) => map
            .iter_mut()
            .map(|(k, v)| {
                if is_secret_name(k) && v.is_string() {
                    *v = Value::String(REDACTED.to_owned());
                    1
                } else {
                    redact_strings(v)
                }
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_names() {
        let table = [
            ("DB_PASSWORD", true),
            ("password", true),
            ("apiKey", true),
            ("API_KEY", true),
            ("STRIPE_KEY", true),
            ("AWS_SECRET_ACCESS_KEY", true),
            ("AWS_ACCESS_KEY_ID", true),
            ("x-auth-token", true),
            ("GITHUB_TOKEN", true),
            ("SENTRY_DSN", true),
            ("clientSecret", true),
            ("KEYBOARD_LAYOUT", false),
            ("LOG_LEVEL", false),
            ("PORT", false),
            ("monkey", false),
            ("app.kubernetes.io/name", false),
        ];
        for (name, want) in table {
            assert_eq!(is_secret_name(name), want, "{name}");
        }
    }

    #[test]
    fn text_patterns() {
        let table = [
            (
                "GET /x Authorization: Bearer abcdefghijklmnop.qrs",
                "Authorization: [REDACTED]",
                "abcdefghijklmnop",
            ),
            (
                "retrying with Bearer abcdefghijklmnop.qrs",
                "with Bearer [REDACTED]",
                "abcdefghijklmnop",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE used",
                "key [REDACTED] used",
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key=[REDACTED]",
                "wJalrXUtnFEMI",
            ),
            (
                "connecting to postgres://app:s3cr3t@db:5432/app",
                "postgres://app:[REDACTED]@db",
                "s3cr3t",
            ),
            (
                r#"{"password": "hunter22", "user": "bob"}"#,
                r#""password": "[REDACTED]""#,
                "hunter22",
            ),
            (
                "token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "[REDACTED]",
                "ghp_abc",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here",
                "jwt [REDACTED] here",
                "eyJzdWIi",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\\nMIIEabc\\n-----END RSA PRIVATE KEY----- tail",
                "[REDACTED PRIVATE KEY] tail",
                "MIIEabc",
            ),
            (
                "hook https://hooks.slack.com/services/T000/B000/XXXX done",
                "hook [REDACTED] done",
                "T000/B000",
            ),
        ];
        for (input, contains, gone) in table {
            let out = redact_text(input);
            assert!(out.contains(contains), "{input} -> {out}");
            assert!(!out.contains(gone), "{input} -> {out}");
        }
        assert!(matches!(
            redact_text("plain line 42 ok"),
            Cow::Borrowed("plain line 42 ok")
        ));
        assert_eq!(redact_text("a\u{1b}[31mred"), "a\\u{1b}[31mred");
    }

    #[test]
    fn private_key_blocks_across_lines() {
        let lines: Vec<String> = [
            "starting",
            "loaded -----BEGIN PRIVATE KEY-----",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
            "-----END PRIVATE KEY-----",
            "ready",
        ]
        .map(String::from)
        .to_vec();
        let (out, changed) = redact_lines(&lines);
        assert_eq!(
            out,
            vec!["starting", "loaded [REDACTED PRIVATE KEY]", "ready"]
        );
        assert_eq!(changed, 3);
    }

    #[test]
    fn pods() {
        let mut pod = json!({
            "metadata": {
                "name": "api-1",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {
                    LAST_APPLIED: "{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"pw-in-annotation\"}]}",
                    "example.com/api-token": "tok-in-annotation",
                    "example.com/owner": "team-a"
                }
            },
            "spec": {"containers": [{
                "name": "app",
                "args": ["--db-password", "pw-in-args", "--token=tok-in-args", "--port", "80"],
                "env": [
                    {"name": "DB_PASSWORD", "value": "pw-in-env"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "DSN", "value": "postgres://u:pw-in-url@db/x"},
                    {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
                ]
            }]},
            "status": {"containerStatuses": [{"state": {"waiting": {"message": "Bearer tok-in-status-12345"}}}]}
        });
        let n = redact_pod(&mut pod);
        let text = pod.to_string();
        for secret in [
            "pw-in-annotation",
            "tok-in-annotation",
            "pw-in-args",
            "tok-in-args",
            "pw-in-env",
            "pw-in-url",
            "tok-in-status",
            "managedFields",
        ] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        for kept in ["team-a", "debug", "--port", "secretKeyRef", "api-1"] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
        assert_eq!(n, 7);
    }
}
