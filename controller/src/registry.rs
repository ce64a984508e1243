//! Checks whether a mirror registry serves an image, with the OCI distribution API: a HEAD on the
//! manifest. Registries listed as plain-HTTP (a local mirror) are spoken to without TLS; everything
//! else over HTTPS with the system's roots. Registry credentials are not supported yet.

use std::time::Duration;

use auto_agent_engine::decide::image::ImageRef;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    plain_http: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the registry answered {0}")]
    Status(u16),
    #[error("the registry could not be reached: {0}")]
    Http(#[from] reqwest::Error),
}

impl RegistryClient {
    pub fn new(plain_http: Vec<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, plain_http })
    }

    /// Whether `image` exists in its registry.
    pub async fn has_manifest(&self, image: &ImageRef) -> Result<bool, RegistryError> {
        let scheme = if self.plain_http.iter().any(|r| r == &image.registry) {
            "http"
        } else {
            "https"
        };
        let reference = image.reference.trim_start_matches([':', '@']);
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{reference}",
            image.registry, image.repository
        );
        let response = self
            .http
            .head(&url)
            .header("Accept", MANIFEST_TYPES)
            .send()
            .await?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            other => Err(RegistryError::Status(other)),
        }
    }
}
