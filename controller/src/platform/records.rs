//! Records the leader's stages keep in the cluster: one ConfigMap per incident key in the
//! controller's namespace (`auto-agent-<kind>-<hash>`, label `autoagent.io/<kind>=record`),
//! written with optimistic concurrency and fenced by the lease. A new leader lists them and
//! carries on: for escalation the same Slack thread and ticket and every delivery still owed,
//! for GitOps the same branch and pull request and every proposal not yet delivered.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::platform::leader::Leadership;

const DATA_KEY: &str = "record.json";

/// A record kept per incident key.
pub trait Keyed: serde::Serialize + serde::de::DeserializeOwned {
    fn key(&self) -> &str;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not the leader")]
    Fenced,
    #[error("the record changed underneath (another leader wrote it)")]
    Conflict,
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("record encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// A record and the resourceVersion it was read or written at (`None`: not stored yet).
#[derive(Clone, Debug)]
pub struct Stored<R> {
    pub record: R,
    pub version: Option<String>,
}

pub struct Store<R> {
    api: Api<ConfigMap>,
    leadership: Leadership,
    /// `escalation`, `gitops`: in the names, the label and the fence.
    kind: &'static str,
    _record: PhantomData<fn() -> R>,
}

impl<R> Clone for Store<R> {
    fn clone(&self) -> Self {
        Self {
            api: self.api.clone(),
            leadership: self.leadership.clone(),
            kind: self.kind,
            _record: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for Store<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The ConfigMap name of an incident key: stable, DNS-safe, whatever the key holds.
pub fn name_of(kind: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("auto-agent-{kind}-{hex}")
}

/// The label every record of `kind` carries, with the value `record`.
pub fn label(kind: &str) -> String {
    format!("autoagent.io/{kind}")
}

impl<R: Keyed> Store<R> {
    pub fn new(
        client: Client,
        namespace: &str,
        leadership: Leadership,
        kind: &'static str,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            leadership,
            kind,
            _record: PhantomData,
        }
    }

    /// Every stored record; one that cannot be decoded is skipped and logged (never fatal).
    pub async fn load_all(&self) -> Result<BTreeMap<String, Stored<R>>, StoreError> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{}=record", label(self.kind))))
            .await?;
        let mut out = BTreeMap::new();
        for cm in list.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let Some(json) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
                continue;
            };
            match serde_json::from_str::<R>(json) {
                Ok(record) => {
                    out.insert(
                        record.key().to_owned(),
                        Stored {
                            record,
                            version: cm.metadata.resource_version.clone(),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(configmap = %name, kind = self.kind, error = %e, "Skipping a record that cannot be read")
                }
            }
        }
        Ok(out)
    }

    /// The stored copy of one record (after a conflict), through the labelled list: the role
    /// may list and update ConfigMaps of its namespace but not get them.
    pub async fn get(&self, key: &str) -> Result<Option<Stored<R>>, StoreError> {
        let list = self
            .api
            .list(
                &ListParams::default()
                    .labels(&format!("{}=record", label(self.kind)))
                    .fields(&format!("metadata.name={}", name_of(self.kind, key))),
            )
            .await?;
        let Some(cm) = list.items.into_iter().next() else {
            return Ok(None);
        };
        let Some(json) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
            return Ok(None);
        };
        Ok(Some(Stored {
            record: serde_json::from_str(json)?,
            version: cm.metadata.resource_version,
        }))
    }

    /// Writes a record; returns the new resourceVersion.
    pub async fn save(&self, stored: &Stored<R>) -> Result<String, StoreError> {
        let name = name_of(self.kind, stored.record.key());
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: stored.version.clone(),
                labels: Some(
                    [
                        (
                            "app.kubernetes.io/managed-by".to_owned(),
                            "auto-agent".to_owned(),
                        ),
                        (label(self.kind), "record".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([(DATA_KEY.to_owned(), serde_json::to_string(&stored.record)?)].into()),
            ..ConfigMap::default()
        };
        self.leadership
            .fence(self.kind)
            .map_err(|_| StoreError::Fenced)?;
        let result = match &stored.version {
            Some(_) => self.api.replace(&name, &PostParams::default(), &cm).await,
            None => self.api.create(&PostParams::default(), &cm).await,
        };
        match result {
            Ok(cm) => Ok(cm.metadata.resource_version.unwrap_or_default()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(StoreError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.leadership
            .fence(self.kind)
            .map_err(|_| StoreError::Fenced)?;
        match self
            .api
            .delete(&name_of(self.kind, key), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_dns_labels() {
        let a = name_of("escalation", "pod/shop/Deployment/api/CrashLoopBackOff");
        assert_eq!(
            a,
            name_of("escalation", "pod/shop/Deployment/api/CrashLoopBackOff")
        );
        assert_ne!(
            a,
            name_of("escalation", "pod/shop/Deployment/api/OOMKilled")
        );
        assert_ne!(
            a,
            name_of("gitops", "pod/shop/Deployment/api/CrashLoopBackOff")
        );
        assert!(a.starts_with("auto-agent-escalation-"));
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
