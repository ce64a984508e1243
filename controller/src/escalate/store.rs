//! Escalation records in the cluster: one ConfigMap per incident key in the controller's
//! namespace (`auto-agent-escalation-<hash>`, label `autoagent.io/escalation=record`), written
//! with optimistic concurrency and fenced by the lease. A new leader lists them and carries on:
//! the same Slack thread and ticket, and every delivery the old leader still owed.

use std::collections::BTreeMap;

use auto_agent_escalation::record::Record;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::platform::leader::Leadership;

const DATA_KEY: &str = "record.json";
pub const LABEL: &str = "autoagent.io/escalation";

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
pub struct Stored {
    pub record: Record,
    pub version: Option<String>,
}

#[derive(Clone)]
pub struct Store {
    api: Api<ConfigMap>,
    leadership: Leadership,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The ConfigMap name of an incident key: stable, DNS-safe, whatever the key holds.
pub fn name_of(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("auto-agent-escalation-{hex}")
}

impl Store {
    pub fn new(client: Client, namespace: &str, leadership: Leadership) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            leadership,
        }
    }

    /// Every stored record; one that cannot be decoded is skipped and logged (never fatal).
    pub async fn load_all(&self) -> Result<BTreeMap<String, Stored>, StoreError> {
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{LABEL}=record")))
            .await?;
        let mut out = BTreeMap::new();
        for cm in list.items {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let Some(json) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
                continue;
            };
            match serde_json::from_str::<Record>(json) {
                Ok(record) => {
                    out.insert(
                        record.key.clone(),
                        Stored {
                            record,
                            version: cm.metadata.resource_version.clone(),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(configmap = %name, error = %e, "Skipping an escalation record that cannot be read")
                }
            }
        }
        Ok(out)
    }

    /// The stored copy of one record (after a conflict), through the labelled list: the role
    /// may list and update ConfigMaps of its namespace but not get them.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let list = self
            .api
            .list(
                &ListParams::default()
                    .labels(&format!("{LABEL}=record"))
                    .fields(&format!("metadata.name={}", name_of(key))),
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
    pub async fn save(&self, stored: &Stored) -> Result<String, StoreError> {
        let name = name_of(&stored.record.key);
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
                        (LABEL.to_owned(), "record".to_owned()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some([(DATA_KEY.to_owned(), serde_json::to_string(&stored.record)?)].into()),
            ..ConfigMap::default()
        };
        self.leadership
            .fence("escalation")
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
            .fence("escalation")
            .map_err(|_| StoreError::Fenced)?;
        match self
            .api
            .delete(&name_of(key), &DeleteParams::default())
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
        let a = name_of("pod/shop/Deployment/api/CrashLoopBackOff");
        assert_eq!(a, name_of("pod/shop/Deployment/api/CrashLoopBackOff"));
        assert_ne!(a, name_of("pod/shop/Deployment/api/OOMKilled"));
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
