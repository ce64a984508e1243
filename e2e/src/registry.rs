//! A real OCI registry for the mirror tests: Debian's `docker-registry` (the CNCF distribution
//! registry) on loopback, open, behind htpasswd (HTTP Basic), or behind token authentication with
//! a token service the test runs ([`TokenService`]: the Docker token authentication flow, JWTs
//! signed with ES256 and verified by the registry against the service's certificate).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::process::{Process, free_port};
use crate::wait::poll_until;

/// How the registry authenticates.
#[derive(Clone, Debug)]
pub enum RegistryAuth {
    Open,
    /// One htpasswd user (bcrypt, as the registry requires).
    Htpasswd {
        user: String,
        password: String,
    },
    /// Tokens from `service`.
    Token(TokenConfig),
}

/// What a token-authenticated registry trusts.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:<port>`
    pub host: String,
    _process: Process,
}

impl Registry {
    pub async fn start(dir: &Path, auth: &RegistryAuth) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let host = format!("127.0.0.1:{}", free_port()?);
        let auth_yaml = match auth {
            RegistryAuth::Open => String::new(),
            RegistryAuth::Htpasswd { user, password } => {
                let hash = bcrypt::hash(password, 5)?;
                std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n"))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: e2e\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            RegistryAuth::Token(t) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.root_cert_bundle.display()
            ),
        };
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n{auth_yaml}",
                dir.join("data").display()
            ),
        )?;
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(dir.join("config.yml"));
        let process = Process::spawn(cmd, dir.join("registry.log"))?;
        let addr: SocketAddr = host.parse()?;
        // Any HTTP answer on /v2/ (200 open, 401 with auth) means it is serving.
        poll_until("registry up", Duration::from_secs(30), || async move {
            Ok(crate::process::http_get(addr, "/v2/").await.is_ok())
        })
        .await?;
        Ok(Self {
            host,
            _process: process,
        })
    }

    /// Pushes a minimal OCI image (one config blob, one layer blob) as `repo:tag`, sending
    /// `authorization` with every request.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        authorization: Option<&str>,
    ) -> anyhow::Result<()> {
        let base = format!("http://{}", self.host);
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let layer = b"not really a tarball".to_vec();
        let mut descriptors = Vec::new();
        for bytes in [config, layer] {
            let (status, headers, _) = request(
                &base,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                authorization,
                &[],
                &[],
            )
            .await?;
            if status != 202 {
                bail!("starting an upload: {status}");
            }
            let location = headers.get("location").context("no upload location")?;
            let path = location.strip_prefix(&base).unwrap_or(location);
            let sep = if path.contains('?') { '&' } else { '?' };
            let digest = sha256_digest(&bytes);
            let (status, _, body) = request(
                &base,
                "PUT",
                &format!("{path}{sep}digest={digest}"),
                authorization,
                &[("Content-Type", "application/octet-stream")],
                &bytes,
            )
            .await?;
            if status != 201 {
                bail!("uploading a blob: {status} {body}");
            }
            descriptors.push((digest, bytes.len()));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": descriptors[0].0, "size": descriptors[0].1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": descriptors[1].0, "size": descriptors[1].1}],
        })
        .to_string();
        let (status, _, body) = request(
            &base,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            authorization,
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        )
        .await?;
        if status != 201 {
            bail!("putting the manifest: {status} {body}");
        }
        Ok(())
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// One HTTP/1.1 request over a fresh connection; returns status, lower-cased headers and body.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, BTreeMap<String, String>, String)> {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = authorization {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, body.to_owned()))
}

/// A grant the token service made: who asked (None: anonymous) for which scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub user: Option<String>,
    pub scope: String,
    pub actions: Vec<String>,
}

/// The Docker token authentication flow's token service: `GET /token?service=..&scope=..`, with
/// HTTP Basic for a known user or anonymous; answers `{"token": <JWT>}` granting the scope's
/// actions the user may have (anonymous: none). Wrong passwords get 401.
#[derive(Debug)]
pub struct TokenService {
    pub addr: SocketAddr,
    pub config: TokenConfig,
    grants: Arc<Mutex<Vec<Grant>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    service: String,
    issuer: String,
    /// user -> (password, actions granted)
    users: BTreeMap<String, (String, Vec<String>)>,
}

impl TokenService {
    /// Starts on a free port; `users` are (name, password, actions such as "pull" or "push").
    pub async fn start(dir: &Path, users: &[(&str, &str, &[&str])]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec!["e2e-token-issuer".to_owned()])?;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key)?;
        let bundle = dir.join("token-ca.pem");
        std::fs::write(&bundle, cert.pem())?;
        let signing = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = TokenConfig {
            realm: format!("http://{addr}/token"),
            service: "e2e-registry".into(),
            issuer: "e2e-token-issuer".into(),
            root_cert_bundle: bundle,
        };
        let issuer = Arc::new(Issuer {
            key: signing,
            cert_der: cert.der().to_vec(),
            service: config.service.clone(),
            issuer: config.issuer.clone(),
            users: users
                .iter()
                .map(|(u, p, a)| {
                    (
                        (*u).to_owned(),
                        ((*p).to_owned(), a.iter().map(|s| (*s).to_owned()).collect()),
                    )
                })
                .collect(),
        });
        let grants = Arc::new(Mutex::new(Vec::new()));
        let served = grants.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (issuer, grants) = (issuer.clone(), served.clone());
                tokio::spawn(async move {
                    let _ = answer(stream, &issuer, &grants).await;
                });
            }
        });
        Ok(Self {
            addr,
            config,
            grants,
            task,
        })
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A token for `user` over `scope`, as a client would fetch it (for pushing test images).
    pub async fn token(&self, user: &str, password: &str, scope: &str) -> anyhow::Result<String> {
        let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let path = format!(
            "/token?service={}&scope={}",
            self.config.service,
            scope.replace(',', "%2C")
        );
        let (status, _, body) = request(
            &format!("http://{}", self.addr),
            "GET",
            &path,
            Some(&basic),
            &[],
            &[],
        )
        .await?;
        if status != 200 {
            bail!("token service answered {status}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["token"].as_str().context("no token")?.to_owned())
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    mut stream: TcpStream,
    issuer: &Issuer,
    grants: &Mutex<Vec<Grant>>,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 || len + n == buf.len() {
            return Ok(());
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    let mut lines = head.lines();
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let (status, body) = if path != "/token" {
        (404, String::new())
    } else if params.get("service") != Some(&issuer.service) {
        (
            400,
            r#"{"errors":[{"code":"UNSUPPORTED","message":"unknown service"}]}"#.to_owned(),
        )
    } else {
        match login(issuer, authorization.as_deref()) {
            Err(()) => (401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#.to_owned()),
            Ok(user) => {
                let scope = params.get("scope").cloned().unwrap_or_default();
                let (access, granted) = access_for(issuer, user.as_deref(), &scope);
                grants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Grant {
                        user: user.clone(),
                        scope: scope.clone(),
                        actions: granted,
                    });
                let token = sign(issuer, user.as_deref().unwrap_or(""), access)?;
                (
                    200,
                    serde_json::json!({"token": token, "expires_in": 300}).to_string(),
                )
            }
        }
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    Ok(())
}

/// The user a Basic header names, None when anonymous; Err on a wrong login.
fn login(issuer: &Issuer, authorization: Option<&str>) -> Result<Option<String>, ()> {
    let Some(a) = authorization else {
        return Ok(None);
    };
    let encoded = a.strip_prefix("Basic ").ok_or(())?;
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(())?;
    let (user, password) = decoded.split_once(':').ok_or(())?;
    match issuer.users.get(user) {
        Some((p, _)) if p == password => Ok(Some(user.to_owned())),
        _ => Err(()),
    }
}

/// The JWT `access` claim for a `repository:<name>:<actions>` scope and the actions granted.
fn access_for(
    issuer: &Issuer,
    user: Option<&str>,
    scope: &str,
) -> (serde_json::Value, Vec<String>) {
    let mut parts = scope.splitn(3, ':');
    let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
        return (serde_json::json!([]), Vec::new());
    };
    let allowed = user
        .and_then(|u| issuer.users.get(u))
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    let granted: Vec<String> = actions
        .split(',')
        .filter(|a| allowed.iter().any(|x| x == a))
        .map(str::to_owned)
        .collect();
    (
        serde_json::json!([{"type": kind, "name": name, "actions": granted}]),
        granted,
    )
}

fn sign(issuer: &Issuer, subject: &str, access: serde_json::Value) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&issuer.cert_der)]});
    let claims = serde_json::json!({
        "iss": issuer.issuer, "sub": subject, "aud": issuer.service,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{subject}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = issuer
        .key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    ))
}
