//! Sensor authentication: the bearer token of each stream is checked with TokenReview for the
//! agent's audience, must belong to the sensor ServiceAccount, and binds the stream to a node: the
//! token's node claim (`authentication.kubernetes.io/node-name`, Kubernetes 1.30+) or else the
//! node of the pod the token is bound to. Results are cached until the token expires (at most
//! `max_cache`), keyed by a digest so the cache never holds a token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Who is on the other end of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorIdentity {
    pub username: String,
    pub node: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    MissingToken,
    #[error("the token was not accepted: {0}")]
    Invalid(String),
    #[error("the token is not for this audience")]
    WrongAudience,
    #[error("{0} is not the sensor ServiceAccount")]
    WrongServiceAccount(String),
    #[error("the token is bound to no node (no node claim and no bound pod)")]
    NoNode,
    #[error("TokenReview failed: {0}")]
    Api(#[from] kube::Error),
}

impl AuthError {
    /// Metric label.
    pub fn category(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Invalid(_) => "invalid_token",
            Self::WrongAudience => "wrong_audience",
            Self::WrongServiceAccount(_) => "wrong_service_account",
            Self::NoNode => "no_node_binding",
            Self::Api(_) => "tokenreview_error",
        }
    }
}

pub struct Authenticator {
    client: Client,
    audience: String,
    /// `system:serviceaccount:<namespace>:<name>`
    sensor_user: String,
    max_cache: Duration,
    cache: Mutex<HashMap<[u8; 32], (SensorIdentity, Instant)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("audience", &self.audience)
            .field("sensor_user", &self.sensor_user)
            .finish()
    }
}

/// The `exp` claim of a JWT, read without verification: only used to bound how long the
/// apiserver's verdict is cached.
fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(claims.get("exp")?.as_u64()?))
}

impl Authenticator {
    pub fn new(client: Client, audience: String, sensor_user: String) -> Self {
        Self {
            client,
            audience,
            sensor_user,
            max_cache: Duration::from_secs(600),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<SensorIdentity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if let Some((identity, _)) = cache.get(&digest) {
                return Ok(identity.clone());
            }
        }
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
                return Err(AuthError::WrongAudience);
            }
            return Err(AuthError::Invalid(error));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .contains(&self.audience)
        {
            return Err(AuthError::WrongAudience);
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username != self.sensor_user {
            return Err(AuthError::WrongServiceAccount(username));
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
                let pod_name = first(POD_NAME_EXTRA).ok_or(AuthError::NoNode)?;
                let namespace = username.split(':').nth(2).unwrap_or_default();
                let pod = Api::<Pod>::namespaced(self.client.clone(), namespace)
                    .get(&pod_name)
                    .await?;
                pod.spec
                    .and_then(|s| s.node_name)
                    .ok_or(AuthError::NoNode)?
            }
        };
        let identity = SensorIdentity { username, node };
        let ttl = expiry(token)
            .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
            .map_or(Duration::from_secs(60), |left| left.min(self.max_cache));
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest, (identity.clone(), Instant::now() + ttl));
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expiry_claim_without_verifying() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"exp":1893456000,"sub":"x"}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        assert_eq!(
            expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry("a.!!!.c"), None);
    }

    #[test]
    fn error_categories_are_stable_metric_labels() {
        assert_eq!(AuthError::MissingToken.category(), "missing_token");
        assert_eq!(AuthError::WrongAudience.category(), "wrong_audience");
        assert_eq!(AuthError::NoNode.category(), "no_node_binding");
        assert_eq!(
            AuthError::WrongServiceAccount("u".into()).category(),
            "wrong_service_account"
        );
    }
}
