//! Checks whether a mirror registry serves an image, with the OCI distribution API: a HEAD on the
//! manifest. Registries listed as plain-HTTP (a local mirror) are spoken to without TLS; everything
//! else over HTTPS with the system's roots.
//!
//! A registry that answers 401 is asked again the way `docker pull` would: with HTTP Basic
//! credentials (`WWW-Authenticate: Basic`), or with a bearer token from the registry's token
//! service (`WWW-Authenticate: Bearer realm=..,service=..,scope=..`; anonymous when no credentials
//! are configured, as public registries allow). Credentials come from a Docker config file
//! (`--registry-auth-file`, the `.dockerconfigjson` of a Secret mounted by the chart), read on each
//! check so a rotated Secret is used without a restart. They are sent to a token service only over
//! HTTPS, or over plain HTTP when its host is listed as a plain-HTTP registry.
//!
//! The mirror comes from a namespace's policy, so the controller's traffic is kept where the
//! operator allows it:
//! - a mirror is contacted only when it is on the [`MirrorAllowlist`], and a token service only
//!   on the mirror's own host or a host of the allowlist;
//! - redirects are followed only within the same scheme, host and port (at most
//!   [`MAX_REDIRECTS`]); a redirect elsewhere is an answer ("the mirror answered 307 ..."), never
//!   a request to the place it names;
//! - answers are read up to [`MAX_BODY_BYTES`];
//! - errors name a generic cause (the status, "connection failed", "no answer in time"), never a
//!   response body or an address the mirror sent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use auto_agent_engine::decide::image::ImageRef;
use base64::Engine;

mod allowlist;

pub use allowlist::{AllowlistError, MirrorAllowlist};

/// Redirects followed within one origin (scheme, host and port) before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// The largest answer body read (a token response is a few kilobytes; a HEAD has none).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    plain_http: Vec<String>,
    auth_file: Option<PathBuf>,
    allowed: MirrorAllowlist,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the mirror registry {registry} is not on this installation's allowlist of mirrors (--allowed-mirror-registries, chart value security.allowedMirrorRegistries); it was not contacted"
    )]
    NotAllowed { registry: String },
    #[error(
        "{0} is not a valid image repository with a tag or digest; the mirror was not contacted"
    )]
    InvalidReference(String),
    #[error("the mirror answered {0}")]
    Status(u16),
    #[error("the mirror answered {0}, a redirect to another host, which is not followed")]
    Redirected(u16),
    #[error("the mirror could not be reached ({0})")]
    Unreachable(&'static str),
    #[error("the answer of {registry} or its token service exceeds {limit} bytes")]
    TooLarge { registry: String, limit: usize },
    #[error(
        "{registry} requires credentials and none are configured for it (--registry-auth-file)"
    )]
    NoCredentials { registry: String },
    #[error("{registry} refused the configured credentials ({status})")]
    CredentialsRefused { registry: String, status: u16 },
    #[error("the token service of {registry} failed: {message}")]
    Token { registry: String, message: String },
    #[error("the registry credentials file {path} is unusable: {message}")]
    AuthFile { path: String, message: String },
}

/// A registry login. Debug never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The host (and port) a Docker config `auths` key names: `https://host/v1/` -> `host`.
fn auth_key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// The logins of a Docker config file, by registry host. Entries carry `auth`
/// (base64 of `user:password`) or `username` and `password`; an entry with neither is an error
/// naming its key (never its content).
pub fn parse_docker_config(json: &str) -> Result<HashMap<String, Credential>, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(default)]
        auths: HashMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let config: Config = serde_json::from_str(json).map_err(|e| {
        format!(
            "not a Docker config JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let mut out = HashMap::new();
    for (key, entry) in config.auths {
        let credential = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| format!("auths[{key}].auth is not base64 of user:password"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths[{key}].auth is not base64 of user:password"))?;
                Credential {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            }
            (_, Some(username), Some(password)) => Credential { username, password },
            _ => {
                return Err(format!(
                    "auths[{key}] has neither auth nor username and password"
                ));
            }
        };
        out.insert(auth_key_host(&key).to_owned(), credential);
    }
    Ok(out)
}

/// How a registry asks to be authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header: a scheme, then `key="value"` (or bare `key=value`) pairs
/// separated by commas; quoted values may contain commas (`scope="repository:a:pull,push"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params: HashMap<String, String> = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.insert(key, value);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: params.remove("realm").filter(|r| !r.is_empty())?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        })
    } else {
        None
    }
}

impl RegistryClient {
    /// A client that contacts no mirror until [`allowing`](Self::allowing) names some.
    pub fn new(
        plain_http: Vec<String>,
        auth_file: Option<PathBuf>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::custom(same_origin_only))
            .build()?;
        Ok(Self {
            http,
            plain_http,
            auth_file,
            allowed: MirrorAllowlist::default(),
        })
    }

    /// The mirrors (and token service hosts) this client may contact.
    pub fn allowing(mut self, allowed: MirrorAllowlist) -> Self {
        self.allowed = allowed;
        self
    }

    /// Refuses, before any connection, an image whose mirror is not on the allowlist or whose
    /// repository or reference is not well-formed (a `..` segment would leave an allowed path
    /// prefix once the URL is normalised).
    pub fn check_allowed(&self, image: &ImageRef) -> Result<(), RegistryError> {
        if !valid_repository(&image.repository) || !valid_reference(&image.reference) {
            return Err(RegistryError::InvalidReference(format!(
                "{}{}",
                image.repository, image.reference
            )));
        }
        if !self.allowed.allows(&image.registry, &image.repository) {
            return Err(RegistryError::NotAllowed {
                registry: image.registry.clone(),
            });
        }
        Ok(())
    }

    fn is_plain_http(&self, host: &str) -> bool {
        self.plain_http.iter().any(|r| r == host)
    }

    fn credential_for(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        let Some(path) = &self.auth_file else {
            return Ok(None);
        };
        let unusable = |message: String| RegistryError::AuthFile {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unusable(e.kind().to_string()))?;
        Ok(parse_docker_config(&text)
            .map_err(unusable)?
            .remove(registry))
    }

    async fn head(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.http.head(url).header("Accept", MANIFEST_TYPES);
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        request.send().await.map_err(|e| unreachable(&e))
    }

    /// Whether `image` exists in its registry. Refused without contacting anything unless
    /// [`check_allowed`](Self::check_allowed) passes.
    pub async fn has_manifest(&self, image: &ImageRef) -> Result<bool, RegistryError> {
        self.check_allowed(image)?;
        let scheme = if self.is_plain_http(&image.registry) {
            "http"
        } else {
            "https"
        };
        let reference = image.reference.trim_start_matches([':', '@']);
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{reference}",
            image.registry, image.repository
        );
        let response = self.head(&url, None).await?;
        let status = response.status().as_u16();
        if status != 401 {
            return found(status);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .and_then(parse_challenge)
            .ok_or(RegistryError::Status(401))?;
        let credential = self.credential_for(&image.registry)?;
        let anonymous = credential.is_none();
        let authorization = match challenge {
            Challenge::Basic => credential
                .ok_or_else(|| RegistryError::NoCredentials {
                    registry: image.registry.clone(),
                })?
                .basic(),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", image.repository));
                let token = self
                    .token(
                        &image.registry,
                        &realm,
                        service.as_deref(),
                        &scope,
                        credential.as_ref(),
                    )
                    .await?;
                format!("Bearer {token}")
            }
        };
        let status = self
            .head(&url, Some(&authorization))
            .await?
            .status()
            .as_u16();
        match status {
            // An anonymous token without pull rights: the registry wants a login.
            401 | 403 if anonymous => Err(RegistryError::NoCredentials {
                registry: image.registry.clone(),
            }),
            401 | 403 => Err(RegistryError::CredentialsRefused {
                registry: image.registry.clone(),
                status,
            }),
            other => found(other),
        }
    }

    /// A pull token from the registry's token service (the Docker token authentication flow).
    async fn token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: Option<&Credential>,
    ) -> Result<String, RegistryError> {
        let failed = |message: String| RegistryError::Token {
            registry: registry.to_owned(),
            message,
        };
        let url =
            reqwest::Url::parse(realm).map_err(|_| failed("its realm is not a URL".into()))?;
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        // The realm is an address the registry sent: it is not repeated in the error.
        if !host.eq_ignore_ascii_case(registry) && !self.allowed.allows_host(&host) {
            return Err(failed(
                "its realm is on another host, which is not on the allowlist of mirrors; it was not contacted".into(),
            ));
        }
        let secure =
            url.scheme() == "https" || (url.scheme() == "http" && self.is_plain_http(&host));
        if !secure {
            return Err(failed(
                "its realm is neither HTTPS nor a listed plain-HTTP host; no credentials are sent there".into(),
            ));
        }
        let mut url = url;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", scope);
            if let Some(service) = service {
                query.append_pair("service", service);
            }
        }
        let mut request = self.http.get(url);
        if let Some(c) = credential {
            request = request.header("Authorization", c.basic());
        }
        let response = request.send().await.map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        if (status == 401 || status == 403) && credential.is_none() {
            return Err(RegistryError::NoCredentials {
                registry: registry.to_owned(),
            });
        }
        if status == 401 || status == 403 {
            return Err(RegistryError::CredentialsRefused {
                registry: registry.to_owned(),
                status,
            });
        }
        if status != 200 {
            return Err(failed(format!("it answered {status}")));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = read_capped(response, MAX_BODY_BYTES)
            .await?
            .ok_or_else(|| RegistryError::TooLarge {
                registry: registry.to_owned(),
                limit: MAX_BODY_BYTES,
            })?;
        let body: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|_| failed("its answer is not a token response".into()))?;
        body.token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("its answer carries no token".into()))
    }
}

fn found(status: u16) -> Result<bool, RegistryError> {
    match status {
        200 => Ok(true),
        404 => Ok(false),
        300..=399 => Err(RegistryError::Redirected(status)),
        other => Err(RegistryError::Status(other)),
    }
}

/// Follows a redirect only to the origin (scheme, host, port) of the first request, at most
/// [`MAX_REDIRECTS`] times; anything else is handed back as the 3xx answer it is.
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let same = attempt
        .previous()
        .first()
        .is_some_and(|first| first.origin() == attempt.url().origin());
    if !same {
        attempt.stop()
    } else if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error("too many redirects")
    } else {
        attempt.follow()
    }
}

/// The generic cause of a failed request; the details (which may carry an address the mirror
/// named) go to the debug log only.
fn unreachable(e: &reqwest::Error) -> RegistryError {
    let why = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    tracing::debug!(error = %e, cause = why, "A mirror registry request failed");
    RegistryError::Unreachable(why)
}

/// The body, read chunk by chunk up to `limit` bytes; `None` once it passes them (a declared
/// Content-Length above the limit is refused before reading).
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let declared = response.content_length().unwrap_or(0);
    if usize::try_from(declared).map_or(true, |n| n > limit) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// An OCI repository name: lowercase segments of letters and digits, joined by `.`, `_`, `-`
/// (no empty, `.` or `..` segment).
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|segment| {
            let bytes = segment.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
        })
}

/// `:tag` (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) or `@algorithm:hex`.
fn valid_reference(reference: &str) -> bool {
    if let Some(tag) = reference.strip_prefix(':') {
        let bytes = tag.as_bytes();
        return !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b));
    }
    if let Some(digest) = reference.strip_prefix('@') {
        return digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && !hex.is_empty()
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
        });
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_like_the_registries_send_them() {
        let bearer = |realm: &str, service: Option<&str>, scope: Option<&str>| {
            Some(Challenge::Bearer {
                realm: realm.into(),
                service: service.map(Into::into),
                scope: scope.map(Into::into),
            })
        };
        let table: &[(&str, Option<Challenge>)] = &[
            ("Basic realm=\"Registry Realm\"", Some(Challenge::Basic)),
            ("basic realm=\"x\"", Some(Challenge::Basic)),
            (
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/nginx:pull\"",
                bearer(
                    "https://auth.docker.io/token",
                    Some("registry.docker.io"),
                    Some("repository:library/nginx:pull"),
                ),
            ),
            (
                "Bearer realm=\"https://ghcr.io/token\", service=\"ghcr.io\", scope=\"repository:a/b:pull,push\"",
                bearer(
                    "https://ghcr.io/token",
                    Some("ghcr.io"),
                    Some("repository:a/b:pull,push"),
                ),
            ),
            (
                "Bearer realm=https://h/token,service=h",
                bearer("https://h/token", Some("h"), None),
            ),
            (
                "Bearer realm=\"https://h/t\\\"x\"",
                bearer("https://h/t\"x", None, None),
            ),
            ("Bearer service=\"h\"", None),
            ("Bearer realm=\"\"", None),
            ("Negotiate abc", None),
            ("", None),
        ];
        for (header, want) in table {
            assert_eq!(&parse_challenge(header), want, "{header}");
        }
    }

    #[test]
    fn docker_config_logins_by_host() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpass")},
            "mirror.example.com": {"username": "u", "password": "p:with:colons"},
            "http://127.0.0.1:5000": {"auth": b64("local:pw:x")},
        }})
        .to_string();
        let logins = parse_docker_config(&json).unwrap();
        let login = |u: &str, p: &str| Credential {
            username: u.into(),
            password: p.into(),
        };
        assert_eq!(logins["index.docker.io"], login("hub", "hubpass"));
        assert_eq!(logins["mirror.example.com"], login("u", "p:with:colons"));
        assert_eq!(logins["127.0.0.1:5000"], login("local", "pw:x"));
        assert_eq!(logins.len(), 3);

        let errors: &[(&str, &str)] = &[
            ("not json", "not a Docker config JSON"),
            (r#"{"auths": {"h": {}}}"#, "auths[h] has neither"),
            (
                r#"{"auths": {"h": {"auth": "***"}}}"#,
                "auths[h].auth is not base64",
            ),
            (
                r#"{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}"#,
                "auths[h].auth is not base64",
            ),
        ];
        for (input, want) in errors {
            let e = parse_docker_config(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
        // No password ever in an error or in Debug.
        let e = parse_docker_config(r#"{"auths": {"h": {"username": "u"}, "x": 1}}"#).unwrap_err();
        assert!(!e.contains("u\""), "{e}");
        let debug = format!("{:?}", login("user", "s3cret"));
        assert!(
            !debug.contains("s3cret") && debug.contains("user"),
            "{debug}"
        );
    }

    #[test]
    fn credentials_go_to_https_or_listed_plain_http_realms_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = RegistryClient::new(vec!["127.0.0.1:5001".into()], None)
            .unwrap()
            .allowing(MirrorAllowlist::parse(&["127.0.0.1:5001", "mirror.example"]).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let login = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        // A realm on a host off the allowlist: not contacted, and not named in the error.
        let err = rt
            .block_on(client.token(
                "127.0.0.1:5001",
                "http://attacker.example/token",
                None,
                "repository:a:pull",
                Some(&login),
            ))
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::Token { message, .. } if message.contains("not on the allowlist")),
            "{err}"
        );
        assert!(!err.to_string().contains("attacker"), "{err}");
        // On the registry's own host, but plain HTTP where it is not listed as such.
        let err = rt
            .block_on(client.token(
                "mirror.example",
                "http://mirror.example/token",
                None,
                "repository:a:pull",
                Some(&login),
            ))
            .unwrap_err();
        assert!(
            matches!(&err, RegistryError::Token { message, .. } if message.contains("no credentials are sent there")),
            "{err}"
        );
        let err = rt
            .block_on(client.token("r", "not a url", None, "s", None))
            .unwrap_err();
        assert!(err.to_string().contains("realm is not a URL"), "{err}");
    }

    #[test]
    fn repositories_and_references_are_checked_before_any_request() {
        for (repository, ok) in [
            ("team/app", true),
            ("library/nginx", true),
            ("a/b_c/d.e-f", true),
            ("team/../admin", false),
            ("team/./app", false),
            ("team//app", false),
            ("Team/app", false),
            ("team/app/", false),
            ("team/app?x=1", false),
            ("team/app#x", false),
            ("", false),
        ] {
            assert_eq!(valid_repository(repository), ok, "{repository}");
        }
        for (reference, ok) in [
            (":1", true),
            (":v1.2.3-rc_1", true),
            ("@sha256:0123abcdef", true),
            (":", false),
            (":../x", false),
            (":a/b", false),
            ("@sha256:", false),
            ("@sha256", false),
            ("1", false),
        ] {
            assert_eq!(valid_reference(reference), ok, "{reference}");
        }
    }
}
