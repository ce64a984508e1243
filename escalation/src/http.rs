//! What the Slack and Jira clients share about HTTP: the client, causes without URLs (a webhook
//! URL is a secret), `Retry-After`, and cut error texts.

use std::time::Duration;

/// Characters of a server's error text kept in an error.
pub const MAX_ERROR_TEXT: usize = 300;

/// A reqwest client with a whole-request timeout and the crate's User-Agent. reqwest built with
/// `rustls-no-provider` panics in `build()` when the process has no default provider: ring's is
/// installed unless the binary already chose one (losing a race is fine). The error names no URL.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!(
            env!("CARGO_PKG_NAME"),
            "/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| format!("building the HTTP client: {}", e.without_url()))
}

/// A transport error with its causes, without the URL (which may be a secret).
pub fn cause_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    reason
}

/// `Retry-After` in seconds (what Slack and Jira send with 429 and some 503s).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A server's text cut to `MAX_ERROR_TEXT` characters.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_and_texts_are_cut() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        assert_eq!(cut("abc"), "abc");
        let long = "é".repeat(MAX_ERROR_TEXT + 5);
        assert_eq!(cut(&long).chars().count(), MAX_ERROR_TEXT + 3);
    }
}
