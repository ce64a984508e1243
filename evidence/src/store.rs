//! The two stores. Both are idempotent per bundle id: writing a bundle whose id already sits at
//! its key returns that location instead of a second copy (so a retried delivery never
//! duplicates), and a different bundle at the same key gets the next free alternative key (so
//! nothing is overwritten).

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use serde::{Deserialize, Serialize};

use crate::key::{KeyError, alternative, validate_bundle_id, validate_key};

/// Where a bundle goes. Serialisable: spooled bundles remember their destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "store")]
pub enum Destination {
    S3 {
        bucket: String,
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sse: Option<Sse>,
    },
    Filesystem {
        root: PathBuf,
    },
}

impl Destination {
    pub fn store_name(&self) -> &'static str {
        match self {
            Self::S3 { .. } => "s3",
            Self::Filesystem { .. } => "filesystem",
        }
    }

    /// Checks a destination read back from the spool or a hand-off: an S3 bucket name of
    /// `A-Z a-z 0-9 . - _` without `..`, a filesystem root absolute and without `..` (a write
    /// still needs the root below an allowed one).
    pub fn validate(&self) -> Result<(), KeyError> {
        match self {
            Self::S3 { bucket, .. } => {
                // Wide enough for legacy bucket names (upper case, `_`, up to 255), never a
                // character that could change a request's path.
                let ok = (1..=255).contains(&bucket.len())
                    && !bucket.starts_with('.')
                    && !bucket.contains("..")
                    && bucket
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                if ok { Ok(()) } else { Err(KeyError::Bucket) }
            }
            Self::Filesystem { root } => {
                let ok = root.is_absolute()
                    && !root
                        .components()
                        .any(|c| c == std::path::Component::ParentDir);
                if ok { Ok(()) } else { Err(KeyError::Root) }
            }
        }
    }

    /// The key prefix inside the store (the filesystem store uses its root instead).
    pub fn prefix(&self) -> &str {
        match self {
            Self::S3 { prefix, .. } => prefix,
            Self::Filesystem { .. } => "",
        }
    }
}

/// Server-side encryption requested on every object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sse {
    /// `AES256` or `aws:kms`.
    pub algorithm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// S3 client settings; credentials always come from the SDK's default chain (environment, web
/// identity / IRSA, profile, container and instance metadata).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub region: Option<String>,
    /// For S3-compatible stores (MinIO, s3s-fs, Ceph); unset for AWS.
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("filesystem store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("filesystem path {0} is outside the allowed bundle roots")]
    RootNotAllowed(PathBuf),
    #[error(
        "S3 bucket {0} is not on this installation's allowlist of evidence buckets (--bundle-allowed-buckets, chart value security.allowedBuckets); nothing is sent there"
    )]
    BucketNotAllowed(String),
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },
    #[error("refused to write a bundle: {0}")]
    Invalid(#[from] KeyError),
    #[error("no S3 client is configured")]
    NoS3Client,
    #[error("{store} store: no answer for {key} within {after:?}")]
    Timeout {
        store: &'static str,
        key: String,
        after: std::time::Duration,
    },
}

/// Builds the S3 client the way a user's environment configures it. The HTTPS client uses rustls
/// with ring (the project's one crypto provider).
pub async fn s3_client(settings: &S3Settings) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(settings.force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The metadata key holding the bundle id on S3 objects (`x-amz-meta-bundle-id`).
const META_BUNDLE_ID: &str = "bundle-id";
/// Alternatives tried before giving up on a key (a pod repeating one restart count that often
/// means something else is wrong).
const MAX_ALTERNATIVES: u32 = 100;

#[derive(Clone, Debug)]
pub struct Stores {
    pub s3: Option<aws_sdk_s3::Client>,
    /// Filesystem destinations must lie below one of these (policies cannot write elsewhere in
    /// the controller's filesystem).
    pub allowed_roots: Vec<PathBuf>,
    /// S3 destinations must name one of these buckets (policies cannot send bundles, and the
    /// controller's credentials, to a bucket the operator did not choose). Empty allows none.
    pub allowed_buckets: Vec<String>,
}

impl Stores {
    /// Writes the bundle and returns where it is (`s3://bucket/key` or a file path). The key and
    /// the bundle id are checked first ([`validate_key`]), wherever they came from.
    pub async fn put(
        &self,
        dest: &Destination,
        key: &str,
        bundle_id: &str,
        body: &[u8],
    ) -> Result<String, StoreError> {
        validate_key(key)?;
        validate_bundle_id(bundle_id)?;
        self.check_destination(dest)?;
        match dest {
            Destination::Filesystem { root } => {
                let (root, key, id, body) = (
                    root.clone(),
                    key.to_owned(),
                    bundle_id.to_owned(),
                    body.to_vec(),
                );
                tokio::task::spawn_blocking(move || fs_put(&root, &key, &id, &body))
                    .await
                    .map_err(|e| StoreError::Io {
                        path: PathBuf::new(),
                        source: std::io::Error::other(e),
                    })?
                    .map(|p| p.display().to_string())
            }
            Destination::S3 { bucket, sse, .. } => {
                let client = self.s3.as_ref().ok_or(StoreError::NoS3Client)?;
                s3_put(client, bucket, key, bundle_id, body, sse.as_ref()).await
            }
        }
    }

    /// Refuses a destination the installation does not allow: a filesystem root outside the
    /// allowed roots, an S3 bucket off the allowlist. Nothing is contacted or written.
    pub fn check_destination(&self, dest: &Destination) -> Result<(), StoreError> {
        match dest {
            Destination::Filesystem { root } => self.check_root(root),
            Destination::S3 { bucket, .. } if self.allowed_buckets.contains(bucket) => Ok(()),
            Destination::S3 { bucket, .. } => Err(StoreError::BucketNotAllowed(bucket.clone())),
        }
    }

    fn check_root(&self, root: &Path) -> Result<(), StoreError> {
        let ok = root.is_absolute()
            && !root
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            && self.allowed_roots.iter().any(|a| root.starts_with(a));
        if ok {
            Ok(())
        } else {
            Err(StoreError::RootNotAllowed(root.to_owned()))
        }
    }
}

/// Reads the bundle id of an existing bundle file, if it parses.
fn file_bundle_id(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("bundleId")?.as_str().map(str::to_owned)
}

/// Atomic write: a temporary file in the same directory, fsync, rename, fsync of the directory.
pub fn fs_put(root: &Path, key: &str, bundle_id: &str, body: &[u8]) -> Result<PathBuf, StoreError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    let mut path = root.join(key);
    for n in 2..=MAX_ALTERNATIVES + 1 {
        if !path.exists() || file_bundle_id(&path).as_deref() == Some(bundle_id) {
            break;
        }
        path = root.join(alternative(key, n));
    }
    if path.exists() {
        if file_bundle_id(&path).as_deref() == Some(bundle_id) {
            return Ok(path);
        }
        return Err(StoreError::Io {
            path,
            source: std::io::Error::other("every alternative key is taken"),
        });
    }
    let dir = path.parent().unwrap_or(root).to_owned();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(format!(".{bundle_id}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(body).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Persist the rename; not every filesystem supports fsync on directories.
        let _ = d.sync_all();
    }
    Ok(path)
}

fn s3_error<E: std::error::Error>(op: &'static str, bucket: &str, key: &str, e: &E) -> StoreError {
    // The SDK's Display is terse ("service error"); the source chain says what happened. Neither
    // carries credentials.
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    StoreError::S3 {
        op,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        message,
    }
}

async fn s3_put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bundle_id: &str,
    body: &[u8],
    sse: Option<&Sse>,
) -> Result<String, StoreError> {
    let mut candidate = key.to_owned();
    let mut n = 1;
    loop {
        match client
            .head_object()
            .bucket(bucket)
            .key(&candidate)
            .send()
            .await
        {
            Ok(head) => {
                let existing = head.metadata().and_then(|m| m.get(META_BUNDLE_ID));
                if existing.map(String::as_str) == Some(bundle_id) {
                    return Ok(format!("s3://{bucket}/{candidate}"));
                }
                n += 1;
                if n > MAX_ALTERNATIVES + 1 {
                    return Err(StoreError::S3 {
                        op: "HeadObject",
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        message: "every alternative key is taken".into(),
                    });
                }
                candidate = alternative(key, n);
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => break,
            Err(e) => return Err(s3_error("HeadObject", bucket, &candidate, &e)),
        }
    }
    let mut put = client
        .put_object()
        .bucket(bucket)
        .key(&candidate)
        .content_type("application/json")
        .metadata(META_BUNDLE_ID, bundle_id)
        .body(ByteStream::from(body.to_vec()));
    if let Some(sse) = sse {
        put = put.server_side_encryption(ServerSideEncryption::from(sse.algorithm.as_str()));
        if let Some(kms) = &sse.kms_key_id {
            put = put.ssekms_key_id(kms);
        }
    }
    put.send()
        .await
        .map_err(|e| s3_error("PutObject", bucket, &candidate, &e))?;
    Ok(format!("s3://{bucket}/{candidate}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("evidence-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn s3() -> Destination {
        Destination::S3 {
            bucket: "b".into(),
            prefix: String::new(),
            sse: None,
        }
    }

    fn doc(id: &str) -> Vec<u8> {
        format!("{{\"bundleId\":\"{id}\"}}").into_bytes()
    }

    #[test]
    fn same_bundle_once_different_bundle_beside() {
        let root = tmp("fs");
        let a = fs_put(&root, "ns/w/r/d/p-1.json", "a", &doc("a")).unwrap();
        let again = fs_put(&root, "ns/w/r/d/p-1.json", "a", &doc("a")).unwrap();
        assert_eq!(a, again);
        let b = fs_put(&root, "ns/w/r/d/p-1.json", "b", &doc("b")).unwrap();
        assert_eq!(b, root.join("ns/w/r/d/p-1.2.json"));
        let b_again = fs_put(&root, "ns/w/r/d/p-1.json", "b", &doc("b")).unwrap();
        assert_eq!(b, b_again);
        let files = std::fs::read_dir(root.join("ns/w/r/d")).unwrap().count();
        assert_eq!(files, 2, "no temporary files left");
        assert_eq!(std::fs::read(&a).unwrap(), doc("a"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[tokio::test]
    async fn hostile_keys_and_ids_write_nothing() {
        let base = tmp("hostile");
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        let stores = Stores {
            s3: None,
            allowed_roots: vec![base.clone()],
            allowed_buckets: vec!["b".into()],
        };
        let dest = Destination::Filesystem { root: root.clone() };
        let escape = base.join("escape.json");
        let mut table: Vec<(String, &str, KeyError)> = crate::key::HOSTILE_KEYS
            .iter()
            .map(|(k, e)| ((*k).to_owned(), "id", e.clone()))
            .collect();
        table.push(("../escape.json".into(), "id", KeyError::DotSegment));
        table.push((escape.display().to_string(), "id", KeyError::Absolute));
        // The id names the temporary file: `.<id>.tmp` must not climb out either.
        table.push(("k.json".into(), "/../../escape", KeyError::BundleId));
        for (key, id, want) in table {
            match stores.put(&dest, &key, id, b"{}").await {
                Err(StoreError::Invalid(got)) => assert_eq!(got, want, "{key:?}"),
                other => panic!("{key:?} {id:?}: {other:?}"),
            }
        }
        assert!(!escape.exists());
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "nothing written"
        );
        // The S3 store refuses them as well, before it needs a client.
        assert!(matches!(
            stores.put(&s3(), "../k.json", "id", b"{}").await,
            Err(StoreError::Invalid(KeyError::DotSegment))
        ));
        stores.put(&dest, "a/k.json", "id", b"{}").await.unwrap();
        std::fs::remove_dir_all(base).unwrap();
    }

    #[tokio::test]
    async fn filesystem_roots_are_confined() {
        let stores = Stores {
            s3: None,
            allowed_roots: vec![PathBuf::from("/var/lib/auto-agent")],
            allowed_buckets: vec!["b".into()],
        };
        for root in [
            "/etc",
            "/var/lib/auto-agent/../../etc",
            "relative",
            "/var/lib/auto-agentx",
        ] {
            let dest = Destination::Filesystem { root: root.into() };
            let err = stores.put(&dest, "k.json", "id", b"{}").await.unwrap_err();
            assert!(
                matches!(err, StoreError::RootNotAllowed(_)),
                "{root}: {err}"
            );
        }
        assert!(matches!(
            stores.put(&s3(), "k.json", "id", b"{}").await.unwrap_err(),
            StoreError::NoS3Client
        ));
    }

    #[tokio::test]
    async fn only_allowed_buckets_are_written_to() {
        let s3 = |bucket: &str| Destination::S3 {
            bucket: bucket.into(),
            prefix: String::new(),
            sse: None,
        };
        let stores = Stores {
            s3: None,
            allowed_roots: vec![],
            allowed_buckets: vec!["evidence".into()],
        };
        assert!(stores.check_destination(&s3("evidence")).is_ok());
        for bucket in ["other-tenant", "evidence-x", "Evidence", ""] {
            let err = stores
                .put(&s3(bucket), "k.json", "id", b"{}")
                .await
                .unwrap_err();
            assert!(
                matches!(&err, StoreError::BucketNotAllowed(b) if b == bucket),
                "{bucket}: {err}"
            );
            assert!(err.to_string().contains("allowlist"), "{err}");
        }
        // None listed: none allowed.
        let none = Stores {
            allowed_buckets: vec![],
            ..stores
        };
        assert!(matches!(
            none.check_destination(&s3("evidence")),
            Err(StoreError::BucketNotAllowed(_))
        ));
    }
}
