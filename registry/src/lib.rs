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

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use auto_agent_engine::decide::image::ImageRef;
use base64::Engine;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    plain_http: Vec<String>,
    auth_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry answered {0}")]
    Status(u16),
    #[error("the registry could not be reached: {0}")]
    Http(#[from] reqwest::Error),
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
    pub fn new(
        plain_http: Vec<String>,
        auth_file: Option<PathBuf>,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            plain_http,
            auth_file,
        })
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
        Ok(request.send().await?)
    }

    /// Whether `image` exists in its registry.
    pub async fn has_manifest(&self, image: &ImageRef) -> Result<bool, RegistryError> {
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
        let secure =
            url.scheme() == "https" || (url.scheme() == "http" && self.is_plain_http(&host));
        if !secure {
            return Err(failed(format!(
                "its realm {} is neither HTTPS nor a listed plain-HTTP host; no credentials are sent there",
                url.origin().ascii_serialization()
            )));
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
        let response = request.send().await?;
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
        let bytes = response.bytes().await?;
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
        other => Err(RegistryError::Status(other)),
    }
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
        let client = RegistryClient::new(vec!["127.0.0.1:5001".into()], None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let login = Credential {
            username: "u".into(),
            password: "p".into(),
        };
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
            matches!(&err, RegistryError::Token { message, .. } if message.contains("no credentials are sent there")),
            "{err}"
        );
        let err = rt
            .block_on(client.token("r", "not a url", None, "s", None))
            .unwrap_err();
        assert!(err.to_string().contains("realm is not a URL"), "{err}");
    }
}
