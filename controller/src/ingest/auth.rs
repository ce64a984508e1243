//! Sensor authentication: the bearer token of each stream is checked with TokenReview for the
//! agent's audience, must belong to the sensor ServiceAccount, and binds the stream to a node: the
//! token's node claim (`authentication.kubernetes.io/node-name`, Kubernetes 1.30+) or else the
//! node of the pod the token is bound to.
//!
//! A TokenReview is a write to the apiserver, so it is spent only on tokens that could pass:
//! - the token's shape, audience and expiry are read locally first (the payload decoded without
//!   verifying the signature: verifying is the TokenReview's job), so garbage, expired tokens and
//!   tokens for another audience cost no request;
//! - verdicts are cached by SHA-256 digest (the cache never holds a token): acceptances until the
//!   token expires (at most `max_cache`), refusals for `refusal_ttl`; both caches are bounded;
//! - at most `max_reviews` TokenReviews run at once; a stream that cannot get a slot within
//!   `review_wait` is refused as busy (the sensor retries with backoff).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use prometheus::IntCounterVec;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Tokens longer than this are not looked at (a projected ServiceAccount token is about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who is on the other end of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorIdentity {
    pub username: String,
    pub node: String,
}

/// An accepted token: who it belongs to and when it stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    pub identity: SensorIdentity,
    /// The token's `exp` claim.
    pub expires: SystemTime,
}

/// Why a token was not accepted. Never contains the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token")]
    MissingToken,
    #[error("the token is not a well-formed JWT with an expiry")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token was not accepted: {0}")]
    Invalid(String),
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("{0} is not the sensor ServiceAccount")]
    WrongServiceAccount(String),
    #[error("the token is bound to no node (no node claim and no bound pod)")]
    NoNode,
}

impl Refusal {
    /// Metric label (`auto_agent_streams_refused_total{cause}`).
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed_token",
            Self::Expired => "expired_token",
            Self::Invalid(_) => "invalid_token",
            Self::WrongAudience => "wrong_audience",
            Self::WrongServiceAccount(_) => "wrong_service_account",
            Self::NoNode => "no_node_binding",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("too many TokenReviews in flight")]
    Busy,
    #[error("TokenReview failed: {0}")]
    Api(#[from] kube::Error),
}

impl AuthError {
    /// Metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.category(),
            Self::Busy => "tokenreview_busy",
            Self::Api(_) => "tokenreview_error",
        }
    }
}

/// Bounds on what authentication may cost.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// TokenReviews in flight at once.
    pub max_reviews: usize,
    /// How long a stream waits for a TokenReview slot before it is refused as busy.
    pub review_wait: Duration,
    /// How long an accepted token is trusted without another review, at most (also bounded by
    /// its expiry).
    pub max_cache: Duration,
    /// How long a refused token is refused without another review.
    pub refusal_ttl: Duration,
    /// Entries in each cache, at most.
    pub max_cached: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            max_reviews: 8,
            review_wait: Duration::from_secs(5),
            max_cache: Duration::from_secs(600),
            refusal_ttl: Duration::from_secs(60),
            max_cached: 10_000,
        }
    }
}

/// A map from token digests to verdicts that expire, bounded in size: when full, expired entries
/// go first, then the ones expiring soonest.
#[derive(Debug)]
struct VerdictCache<V> {
    max: usize,
    entries: HashMap<[u8; 32], (V, Instant)>,
}

impl<V: Clone> VerdictCache<V> {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            entries: HashMap::new(),
        }
    }

    fn get(&self, digest: &[u8; 32], now: Instant) -> Option<V> {
        self.entries
            .get(digest)
            .filter(|(_, until)| *until > now)
            .map(|(v, _)| v.clone())
    }

    fn insert(&mut self, digest: [u8; 32], value: V, until: Instant, now: Instant) {
        if self.entries.len() >= self.max && !self.entries.contains_key(&digest) {
            self.entries.retain(|_, (_, u)| *u > now);
            if self.entries.len() >= self.max {
                // Still full of live entries: forget the tenth that expires first.
                let mut order: Vec<([u8; 32], Instant)> =
                    self.entries.iter().map(|(k, (_, u))| (*k, *u)).collect();
                order.sort_by_key(|(_, u)| *u);
                for (k, _) in order.into_iter().take(self.max / 10 + 1) {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(digest, (value, until));
    }

    fn remove(&mut self, digest: &[u8; 32]) {
        self.entries.remove(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

pub struct Authenticator {
    client: Client,
    audience: String,
    /// `system:serviceaccount:<namespace>:<name>`
    sensor_user: String,
    limits: AuthLimits,
    accepted: Mutex<VerdictCache<Authenticated>>,
    refused: Mutex<VerdictCache<Refusal>>,
    reviews: Semaphore,
    /// `auto_agent_token_reviews_total{outcome}`
    review_count: IntCounterVec,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("audience", &self.audience)
            .field("sensor_user", &self.sensor_user)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One base64url segment of a JWT, decoded.
fn segment(part: &str) -> Option<serde_json::Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// Reads what the token says about itself without verifying its signature: it must be a JWT
/// (header with an algorithm other than `none`, a payload, a signature) for `audience`, with an
/// `exp` after `now`. Returns the expiry. Only ever used to refuse early and to know when a
/// stream's token runs out; acceptance is the TokenReview's.
pub fn precheck(token: &str, audience: &str, now: SystemTime) -> Result<SystemTime, Refusal> {
    if token.is_empty() {
        return Err(Refusal::MissingToken);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let header = segment(header).ok_or(Refusal::Malformed)?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
    if alg.eq_ignore_ascii_case("none") || signature.is_empty() {
        return Err(Refusal::Malformed);
    }
    let claims = segment(payload).ok_or(Refusal::Malformed)?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .ok_or(Refusal::Malformed)?;
    let expires = UNIX_EPOCH + Duration::from_secs(exp);
    if expires <= now {
        return Err(Refusal::Expired);
    }
    let for_us = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == audience,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !for_us {
        return Err(Refusal::WrongAudience);
    }
    Ok(expires)
}

impl Authenticator {
    pub fn new(
        client: Client,
        audience: String,
        sensor_user: String,
        limits: AuthLimits,
        review_count: IntCounterVec,
    ) -> Self {
        Self {
            client,
            audience,
            sensor_user,
            accepted: Mutex::new(VerdictCache::new(limits.max_cached)),
            refused: Mutex::new(VerdictCache::new(limits.max_cached)),
            reviews: Semaphore::new(limits.max_reviews.max(1)),
            limits,
            review_count,
        }
    }

    /// Authenticates a new stream's token, from the caches when they know it.
    pub async fn authenticate(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.check(token, true).await
    }

    /// Reviews the token of an open stream again, ignoring an earlier acceptance (a revoked token
    /// must be noticed); a cached refusal still counts.
    pub async fn recheck(&self, token: &str) -> Result<Authenticated, AuthError> {
        self.check(token, false).await
    }

    fn cached(
        &self,
        digest: &[u8; 32],
        accepted_ok: bool,
    ) -> Option<Result<Authenticated, Refusal>> {
        let now = Instant::now();
        if let Some(refusal) = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest, now)
        {
            return Some(Err(refusal));
        }
        if !accepted_ok {
            return None;
        }
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest, now)
            .map(Ok)
    }

    async fn check(&self, token: &str, use_accepted: bool) -> Result<Authenticated, AuthError> {
        let expires = precheck(token, &self.audience, SystemTime::now())?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(verdict) = self.cached(&digest, use_accepted) {
            return Ok(verdict?);
        }
        let Ok(_slot) = tokio::time::timeout(self.limits.review_wait, self.reviews.acquire()).await
        else {
            return Err(AuthError::Busy);
        };
        // Another stream with the same token may have been reviewed while this one waited.
        if let Some(verdict) = self.cached(&digest, use_accepted) {
            return Ok(verdict?);
        }
        let verdict = self.review(token, expires).await;
        let outcome = match &verdict {
            Ok(_) => "authenticated",
            Err(AuthError::Refused(_)) => "refused",
            Err(_) => "error",
        };
        self.review_count.with_label_values(&[outcome]).inc();
        let now = Instant::now();
        match &verdict {
            Ok(accepted) => {
                let left = expires
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(self.limits.max_cache);
                self.accepted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(digest, accepted.clone(), now + left, now);
            }
            Err(AuthError::Refused(refusal)) => {
                self.accepted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&digest);
                self.refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(digest, refusal.clone(), now + self.limits.refusal_ttl, now);
            }
            // An apiserver error says nothing about the token: not cached.
            Err(_) => {}
        }
        verdict
    }

    /// One TokenReview (and, without a node claim, one GET of the bound pod).
    async fn review(&self, token: &str, expires: SystemTime) -> Result<Authenticated, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let error = status.error.unwrap_or_default();
            if error.contains("audience") {
                return Err(Refusal::WrongAudience.into());
            }
            return Err(Refusal::Invalid(error).into());
        }
        if !status
            .audiences
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(Refusal::WrongAudience.into());
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username != self.sensor_user {
            return Err(Refusal::WrongServiceAccount(username).into());
        }
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| {
            extra
                .get(key)
                .and_then(|v| v.first())
                .filter(|s| !s.is_empty())
                .cloned()
        };
        let node = match first(NODE_NAME_EXTRA) {
            Some(node) => node,
            None => {
                let pod_name = first(POD_NAME_EXTRA).ok_or(Refusal::NoNode)?;
                let namespace = username.split(':').nth(2).unwrap_or_default();
                let pod = Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .get(&pod_name)
                    .await?;
                pod.spec.and_then(|s| s.node_name).ok_or(Refusal::NoNode)?
            }
        };
        Ok(Authenticated {
            identity: SensorIdentity { username, node },
            expires,
        })
    }
}

/// JWT-shaped tokens and TokenReview answers for tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// A token with this payload (unsigned: only the apiserver could tell).
    pub fn token_with(payload: &serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(br#"{"alg":"RS256","kid":"k"}"#),
            b64(payload.to_string().as_bytes())
        )
    }

    /// A token for `audience` that expires `secs` from now.
    pub fn token(audience: &str, secs: i64, nonce: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        token_with(&serde_json::json!({"aud": [audience], "exp": now + secs, "jti": nonce}))
    }

    /// The apiserver's answer accepting a sensor token bound to `node`.
    pub fn accepted(user: &str, audience: &str, node: &str) -> (u16, serde_json::Value) {
        (
            201,
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {}, "status": {"authenticated": true, "audiences": [audience],
                "user": {"username": user, "extra": {NODE_NAME_EXTRA: [node]}}}}),
        )
    }

    /// The apiserver's answer refusing a token.
    pub fn refused() -> (u16, serde_json::Value) {
        (
            201,
            serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {}, "status": {"authenticated": false,
                "error": "[invalid bearer token, token has been invalidated]"}}),
        )
    }

    pub const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::testing::FakeApi;

    const AUD: &str = "auto-agent";
    const USER: &str = "system:serviceaccount:auto-agent:sensor";

    fn authenticator(api: &FakeApi, limits: AuthLimits) -> Authenticator {
        Authenticator::new(
            api.client(),
            AUD.into(),
            USER.into(),
            limits,
            crate::testing::metrics().token_reviews,
        )
    }

    fn reviews(api: &FakeApi) -> usize {
        api.seen_with("POST", "tokenreviews").len()
    }

    #[test]
    fn precheck_table() {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let payload = |p: serde_json::Value| {
            format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(&p.to_string()))
        };
        let future = secs + 600;
        let table: Vec<(String, Result<(), Refusal>)> = vec![
            (String::new(), Err(Refusal::MissingToken)),
            ("garbage".into(), Err(Refusal::Malformed)),
            ("a.b".into(), Err(Refusal::Malformed)),
            ("a.b.c.d".into(), Err(Refusal::Malformed)),
            ("!!!.!!!.!!!".into(), Err(Refusal::Malformed)),
            ("x".repeat(MAX_TOKEN_BYTES + 1), Err(Refusal::Malformed)),
            // unsigned ("alg": "none") or without a signature
            (
                format!(
                    "{}.{}.c2ln",
                    b64(r#"{"alg":"none"}"#),
                    b64(&serde_json::json!({"aud": AUD, "exp": future}).to_string())
                ),
                Err(Refusal::Malformed),
            ),
            (
                format!(
                    "{}.{}.",
                    b64(r#"{"alg":"RS256"}"#),
                    b64(&serde_json::json!({"aud": AUD, "exp": future}).to_string())
                ),
                Err(Refusal::Malformed),
            ),
            (
                payload(serde_json::json!({"aud": AUD})),
                Err(Refusal::Malformed),
            ), // no exp
            (
                payload(serde_json::json!({"aud": AUD, "exp": "soon"})),
                Err(Refusal::Malformed),
            ),
            (
                payload(serde_json::json!({"aud": AUD, "exp": secs - 1})),
                Err(Refusal::Expired),
            ),
            (
                payload(serde_json::json!({"aud": "other", "exp": future})),
                Err(Refusal::WrongAudience),
            ),
            (
                payload(serde_json::json!({"aud": ["api", "other"], "exp": future})),
                Err(Refusal::WrongAudience),
            ),
            (
                payload(serde_json::json!({"exp": future})),
                Err(Refusal::WrongAudience),
            ),
            (
                payload(serde_json::json!({"aud": AUD, "exp": future})),
                Ok(()),
            ),
            (
                payload(serde_json::json!({"aud": ["api", AUD], "exp": future})),
                Ok(()),
            ),
        ];
        for (token, want) in table {
            let got = precheck(&token, AUD, now).map(|_| ());
            assert_eq!(got, want, "{}", &token[..token.len().min(80)]);
        }
        let left = precheck(&token(AUD, 60, "n"), AUD, now)
            .unwrap()
            .duration_since(now)
            .unwrap();
        assert!(
            left.as_secs().abs_diff(60) <= 1,
            "the expiry is the exp claim: {left:?}"
        );
    }

    #[test]
    fn error_categories_are_stable_metric_labels() {
        let table: Vec<(AuthError, &str)> = vec![
            (Refusal::MissingToken.into(), "missing_token"),
            (Refusal::Malformed.into(), "malformed_token"),
            (Refusal::Expired.into(), "expired_token"),
            (Refusal::WrongAudience.into(), "wrong_audience"),
            (Refusal::NoNode.into(), "no_node_binding"),
            (Refusal::Invalid("x".into()).into(), "invalid_token"),
            (
                Refusal::WrongServiceAccount("u".into()).into(),
                "wrong_service_account",
            ),
            (AuthError::Busy, "tokenreview_busy"),
        ];
        let metrics = crate::testing::metrics();
        let known: Vec<String> = prometheus::core::Collector::collect(&metrics.streams_refused)
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|m| m.get_label())
            .map(|l| l.value().to_owned())
            .collect();
        for (error, label) in table {
            assert_eq!(error.category(), label);
            // Every cause is a known label of the refusal metric, created at 0.
            assert!(
                known.iter().any(|k| k == label),
                "{label} is not pre-registered"
            );
        }
    }

    /// Garbage, expired tokens and other audiences never reach the apiserver.
    #[tokio::test]
    async fn local_refusals_cost_no_review() {
        let api = FakeApi::default();
        api.on("POST", REVIEWS, vec![accepted(USER, AUD, "node-a")]);
        let auth = authenticator(&api, AuthLimits::default());
        for (token, want) in [
            ("not-a-jwt".to_owned(), "malformed_token"),
            (token(AUD, -10, "old"), "expired_token"),
            (token("kubernetes", 600, "api"), "wrong_audience"),
        ] {
            let err = auth.authenticate(&token).await.unwrap_err();
            assert_eq!(err.category(), want);
        }
        assert_eq!(reviews(&api), 0);
        let ok = auth.authenticate(&token(AUD, 600, "good")).await.unwrap();
        assert_eq!(ok.identity.node, "node-a");
        assert_eq!(reviews(&api), 1);
    }

    /// A refused token is refused from the cache until `refusal_ttl` passed; an accepted one is
    /// served from the cache, except for a recheck.
    #[tokio::test]
    async fn verdicts_are_cached_refusals_briefly() {
        let api = FakeApi::default();
        api.on("POST", REVIEWS, vec![refused()]);
        let auth = authenticator(
            &api,
            AuthLimits {
                refusal_ttl: Duration::from_millis(300),
                ..AuthLimits::default()
            },
        );
        let forged = token(AUD, 3600, "forged");
        for _ in 0..5 {
            let err = auth.authenticate(&forged).await.unwrap_err();
            assert_eq!(err.category(), "invalid_token");
        }
        assert_eq!(reviews(&api), 1, "one review for five attempts");
        tokio::time::sleep(Duration::from_millis(350)).await;
        auth.authenticate(&forged).await.unwrap_err();
        assert_eq!(reviews(&api), 2, "reviewed again after the refusal expired");

        let api = FakeApi::default();
        api.on("POST", REVIEWS, vec![accepted(USER, AUD, "node-a")]);
        let auth = authenticator(&api, AuthLimits::default());
        let good = token(AUD, 3600, "good");
        auth.authenticate(&good).await.unwrap();
        auth.authenticate(&good).await.unwrap();
        assert_eq!(reviews(&api), 1);
        auth.recheck(&good).await.unwrap();
        assert_eq!(reviews(&api), 2, "a recheck asks the apiserver");
    }

    /// When every review slot is taken a new token waits at most `review_wait` and is refused as
    /// busy; a token already accepted needs no slot.
    #[tokio::test]
    async fn reviews_in_flight_are_bounded() {
        let api = FakeApi::default();
        api.on("POST", REVIEWS, vec![accepted(USER, AUD, "node-a")]);
        let auth = authenticator(
            &api,
            AuthLimits {
                max_reviews: 2,
                review_wait: Duration::from_millis(300),
                ..AuthLimits::default()
            },
        );
        let known = token(AUD, 3600, "known");
        auth.authenticate(&known).await.unwrap();
        let _taken = auth.reviews.acquire_many(2).await.unwrap();
        let started = Instant::now();
        let err = auth
            .authenticate(&token(AUD, 3600, "new"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Busy), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
        auth.authenticate(&known).await.unwrap();
        assert_eq!(reviews(&api), 1);
    }

    #[test]
    fn caches_are_bounded() {
        let mut cache = VerdictCache::new(10);
        let now = Instant::now();
        for i in 0..100u8 {
            let mut digest = [0u8; 32];
            digest[0] = i;
            cache.insert(digest, i, now + Duration::from_secs(u64::from(i) + 1), now);
            assert!(cache.len() <= 10);
        }
        let mut newest = [0u8; 32];
        newest[0] = 99;
        assert_eq!(
            cache.get(&newest, now),
            Some(99),
            "the newest entry is kept"
        );
        assert_eq!(
            cache.get(&newest, now + Duration::from_secs(101)),
            None,
            "entries expire"
        );
    }
}
