//! Spooled bundles outlive the pod: the spool is on the pod's own volume (an emptyDir unless the
//! chart is given a claim), so a controller pod deleted while its store is unreachable would take
//! the evidence with it. On a graceful stop, each bundle still spooled is handed to the cluster as a
//! labelled ConfigMap in the controller's namespace (bundles are redacted before they are spooled);
//! every replica takes such ConfigMaps back into its own spool when it starts, and the delivery
//! loop sends them on. Delivery is idempotent per bundle id, so a bundle taken over twice (two
//! replicas starting at once) is still stored once.

use std::collections::BTreeMap;

use auto_agent_evidence::spool::{Spool, SpoolEntry};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use prometheus::IntCounterVec;

/// The label that marks a handed-off bundle.
pub const LABEL: &str = "autoagent.io/spooled-bundle";
const DATA_KEY: &str = "entry.json";
/// The apiserver refuses ConfigMaps over 1 MiB; leave room for metadata.
const MAX_ENTRY_BYTES: usize = 1_000_000;

/// The ConfigMap name of an entry: stable, so handing the same bundle off twice is one object.
pub fn name_for(prefix: &str, entry: &SpoolEntry) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{}", entry.bundle_id, entry.key).as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let prefix: String = prefix.chars().take(200).collect();
    format!("{prefix}-spooled-{hex}")
}

/// Hands every bundle still in `spool` to ConfigMaps; removes each local copy once its ConfigMap
/// exists. Returns how many were handed off.
pub async fn hand_off(
    client: Client,
    namespace: &str,
    prefix: &str,
    spool: &Spool,
    counter: &IntCounterVec,
) -> usize {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let list = match spool.list() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Reading the spool for the hand-off failed");
            return 0;
        }
    };
    let mut handed = 0;
    for spooled in list {
        let outcome = match hand_off_one(&api, prefix, spool, &spooled).await {
            Ok(()) => {
                handed += 1;
                "handed_off"
            }
            Err(outcome) => outcome,
        };
        counter.with_label_values(&[outcome]).inc();
    }
    if handed > 0 {
        tracing::info!(
            bundles = handed,
            "Handed spooled bundles to ConfigMaps for the next replica"
        );
    }
    handed
}

async fn hand_off_one(
    api: &Api<ConfigMap>,
    prefix: &str,
    spool: &Spool,
    spooled: &auto_agent_evidence::spool::Spooled,
) -> Result<(), &'static str> {
    let entry = spool.read(spooled).map_err(|e| {
        tracing::error!(error = %e, "A spooled bundle cannot be read; left on the volume");
        "unreadable"
    })?;
    let body = serde_json::to_string(&entry).map_err(|_| "unreadable")?;
    if body.len() > MAX_ENTRY_BYTES {
        tracing::error!(bundle = %entry.bundle_id, bytes = body.len(), "A spooled bundle is too large for a ConfigMap; left on the volume");
        return Err("too_large");
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name_for(prefix, &entry)),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.to_owned(), body)])),
        ..ConfigMap::default()
    };
    match api.create(&PostParams::default(), &cm).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {} // handed off before
        Err(e) => {
            tracing::error!(bundle = %entry.bundle_id, error = %e, "Handing a spooled bundle off failed; left on the volume");
            return Err("failed");
        }
    }
    if let Err(e) = spool.remove(spooled) {
        tracing::warn!(error = %e, "Removing a handed-off bundle from the spool failed");
    }
    Ok(())
}

/// The entry a hand-off ConfigMap holds, checked like a freshly built one (key, bundle id and
/// destination: [`SpoolEntry::validate`]), so a ConfigMap written by anyone else in the namespace
/// cannot make a store write outside its root. Errors are the outcome label: `unreadable` or
/// `invalid`.
pub fn entry_of(cm: &ConfigMap) -> Result<SpoolEntry, &'static str> {
    let entry = cm
        .data
        .as_ref()
        .and_then(|d| d.get(DATA_KEY))
        .and_then(|body| serde_json::from_str::<SpoolEntry>(body).ok())
        .ok_or("unreadable")?;
    entry.validate().map_err(|e| {
        tracing::error!(error = %e, "A handed-off bundle is refused");
        "invalid"
    })?;
    Ok(entry)
}

/// Takes handed-off bundles into `spool` and deletes their ConfigMaps. Returns how many.
pub async fn take_over(
    client: Client,
    namespace: &str,
    spool: &Spool,
    counter: &IntCounterVec,
) -> usize {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let list = match api.list(&ListParams::default().labels(LABEL)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Listing handed-off bundles failed");
            return 0;
        }
    };
    let mut taken = 0;
    for cm in list.items {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let entry = match entry_of(&cm) {
            Ok(entry) => entry,
            Err(outcome) => {
                // Kept for a human: never deleted unread, never taken in.
                tracing::error!(configmap = %name, outcome, "A handed-off bundle cannot be taken over; leaving it");
                counter.with_label_values(&[outcome]).inc();
                continue;
            }
        };
        if let Err(e) = spool.push(&entry) {
            tracing::error!(configmap = %name, error = %e, "Taking a handed-off bundle into the spool failed; leaving it");
            counter.with_label_values(&["failed"]).inc();
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {} // another replica took it too
            Err(e) => {
                tracing::warn!(configmap = %name, error = %e, "Deleting a taken-over bundle's ConfigMap failed")
            }
        }
        taken += 1;
        counter.with_label_values(&["taken_over"]).inc();
    }
    if taken > 0 {
        tracing::info!(
            bundles = taken,
            "Took over spooled bundles handed off by a stopped replica"
        );
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use auto_agent_evidence::Destination;

    fn entry(id: &str, key: &str) -> SpoolEntry {
        SpoolEntry {
            destination: Destination::Filesystem { root: "/b".into() },
            key: key.into(),
            bundle_id: id.into(),
            document: serde_json::json!({"bundleId": id}),
        }
    }

    #[test]
    fn names_are_stable_valid_and_distinct() {
        let a = name_for("auto-agent-controller", &entry("b-1", "ns/w/r/d/p-1.json"));
        assert_eq!(
            a,
            name_for("auto-agent-controller", &entry("b-1", "ns/w/r/d/p-1.json"))
        );
        assert_ne!(
            a,
            name_for("auto-agent-controller", &entry("b-2", "ns/w/r/d/p-1.json"))
        );
        assert_ne!(
            a,
            name_for("auto-agent-controller", &entry("b-1", "ns/w/r/d/p-2.json"))
        );
        assert!(a.starts_with("auto-agent-controller-spooled-"), "{a}");
        assert!(a.len() <= 253);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{a}"
        );
        let long = name_for(&"x".repeat(300), &entry("b", "k"));
        assert!(long.len() <= 253, "{}", long.len());
    }

    fn config_map(body: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(DATA_KEY.to_owned(), body.to_owned())])),
            ..ConfigMap::default()
        }
    }

    fn handed(entry: &SpoolEntry) -> ConfigMap {
        config_map(&serde_json::to_string(entry).unwrap())
    }

    #[test]
    fn hostile_hand_offs_are_refused() {
        let long = format!("{}.json", "a/".repeat(600));
        let mut table: Vec<(SpoolEntry, &str)> = [
            "../../etc/passwd.json",
            "../../etc/passwd",
            "/abs.json",
            "a//b.json",
            "a/./b.json",
            "a/\0/b.json",
            "a\\..\\b.json",
            "a/\u{2024}\u{2024}/b.json",
            "a\u{ff0f}b.json",
            "",
            long.as_str(),
        ]
        .iter()
        .map(|k| (entry("b-1", k), "invalid"))
        .collect();
        table.push((entry("/../../x", "ns/w/r/d/p-1.json"), "invalid"));
        let mut elsewhere = entry("b-1", "ns/w/r/d/p-1.json");
        elsewhere.destination = Destination::Filesystem {
            root: "/b/../../etc".into(),
        };
        table.push((elsewhere, "invalid"));
        for (hostile, want) in &table {
            assert_eq!(
                entry_of(&handed(hostile)).unwrap_err(),
                *want,
                "{:?}",
                hostile.key
            );
        }
        assert_eq!(
            entry_of(&config_map("{not json")).unwrap_err(),
            "unreadable"
        );
        assert_eq!(entry_of(&ConfigMap::default()).unwrap_err(), "unreadable");
        let sound = entry("b-1", "ns/w/r/d/p-1.json");
        assert_eq!(entry_of(&handed(&sound)).unwrap(), sound);
    }

    #[tokio::test]
    async fn take_over_takes_sound_entries_and_leaves_hostile_ones() {
        let api = crate::testing::FakeApi::default();
        let named = |name: &str, mut cm: ConfigMap| {
            cm.metadata.name = Some(name.to_owned());
            serde_json::to_value(cm).unwrap()
        };
        let sound = entry("b-1", "ns/w/r/d/p-1.json");
        let path = "/api/v1/namespaces/auto-agent/configmaps";
        api.on(
            "GET",
            path,
            vec![(
                200,
                serde_json::json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {},
                "items": [
                    named("escape", handed(&entry("b-2", "../../etc/passwd.json"))),
                    named("absolute", handed(&entry("b-3", "/abs.json"))),
                    named("sound", handed(&sound)),
                ]}),
            )],
        );
        api.on(
            "DELETE",
            &format!("{path}/*"),
            vec![(200, serde_json::json!({}))],
        );
        let dir = crate::testing::temp_dir("take-over");
        let spool = Spool::new(dir.join("spool"), 10, 1 << 20);
        let metrics = crate::testing::metrics();
        let counter = &metrics.bundle_handoffs;
        let taken = take_over(api.client(), "auto-agent", &spool, counter).await;
        assert_eq!(taken, 1);
        let kept: Vec<SpoolEntry> = spool
            .list()
            .unwrap()
            .iter()
            .map(|s| spool.read(s).unwrap())
            .collect();
        assert_eq!(kept, vec![sound]);
        assert_eq!(counter.with_label_values(&["invalid"]).get(), 2);
        assert_eq!(counter.with_label_values(&["taken_over"]).get(), 1);
        let deleted: Vec<String> = api
            .seen_with("DELETE", path)
            .into_iter()
            .map(|s| s.uri.split('?').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert!(deleted[0].ends_with("/sound"), "{deleted:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
