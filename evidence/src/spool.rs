//! The local spool: bundles whose store was unreachable wait here, on the controller's own volume,
//! until the delivery loop gets them to their store. Bounded by entries and bytes; entries are
//! written atomically and survive a restart of the process (they are read back on start).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::key::{KeyError, validate_bundle_id, validate_key};
use crate::store::Destination;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpoolEntry {
    pub destination: Destination,
    pub key: String,
    pub bundle_id: String,
    /// The bundle document as written (already redacted).
    pub document: serde_json::Value,
}

impl SpoolEntry {
    /// The checks a freshly built bundle's key, id and destination pass, for an entry read back
    /// from disk or from a hand-off ConfigMap.
    pub fn validate(&self) -> Result<(), KeyError> {
        validate_key(&self.key)?;
        validate_bundle_id(&self.bundle_id)?;
        self.destination.validate()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({entries} bundles, {bytes} bytes)")]
    Full { entries: usize, bytes: u64 },
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spool entry {path} is refused: {source}")]
    Invalid { path: PathBuf, source: KeyError },
    #[error("spool entry {path} is not a bundle: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Spool {
    dir: PathBuf,
    max_entries: usize,
    max_bytes: u64,
}

/// A spooled entry's file and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    pub path: PathBuf,
    pub bytes: u64,
}

impl Spool {
    pub fn new(dir: impl Into<PathBuf>, max_entries: usize, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_entries,
            max_bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
        move |source| SpoolError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Entries in delivery order (oldest first: names start with a zero-padded sequence).
    pub fn list(&self) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Self::io(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or_default();
                out.push(Spooled { path, bytes });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Entries and bytes waiting.
    pub fn usage(&self) -> Result<(usize, u64), SpoolError> {
        let list = self.list()?;
        Ok((list.len(), list.iter().map(|s| s.bytes).sum()))
    }

    /// Adds an entry unless the spool is full. A bundle already spooled (same id and key) is not
    /// added twice.
    pub fn push(&self, entry: &SpoolEntry) -> Result<Spooled, SpoolError> {
        entry.validate().map_err(|source| SpoolError::Invalid {
            path: self.dir.clone(),
            source,
        })?;
        let body = serde_json::to_vec(entry).map_err(|e| SpoolError::Corrupt {
            path: self.dir.clone(),
            source: e,
        })?;
        let list = self.list()?;
        let suffix = format!("-{}.json", entry_name(entry));
        if let Some(existing) = list
            .iter()
            .find(|s| s.path.to_string_lossy().ends_with(&suffix))
        {
            return Ok(existing.clone());
        }
        let bytes: u64 = list.iter().map(|s| s.bytes).sum();
        if list.len() >= self.max_entries || bytes + body.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                entries: list.len(),
                bytes,
            });
        }
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let seq = now_nanos();
        let path = self.dir.join(format!("{seq:020}{suffix}"));
        let tmp = self.dir.join(format!(".{seq:020}.tmp"));
        write_synced(&tmp, &body).map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        Ok(Spooled {
            path,
            bytes: body.len() as u64,
        })
    }

    pub fn read(&self, spooled: &Spooled) -> Result<SpoolEntry, SpoolError> {
        let bytes = std::fs::read(&spooled.path).map_err(Self::io(&spooled.path))?;
        let entry: SpoolEntry =
            serde_json::from_slice(&bytes).map_err(|source| SpoolError::Corrupt {
                path: spooled.path.clone(),
                source,
            })?;
        entry.validate().map_err(|source| SpoolError::Invalid {
            path: spooled.path.clone(),
            source,
        })?;
        Ok(entry)
    }

    pub fn remove(&self, spooled: &Spooled) -> Result<(), SpoolError> {
        match std::fs::remove_file(&spooled.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&spooled.path)(e)),
        }
    }
}

/// A file-name-safe identity of an entry: the bundle id and a digest of store and key.
fn entry_name(entry: &SpoolEntry) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&entry.destination).unwrap_or_default());
    h.update([0]);
    h.update(entry.key.as_bytes());
    let d = h.finalize();
    let short: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
    let id: String = entry
        .bundle_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    format!("{id}-{short}")
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn write_synced(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(body)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str) -> SpoolEntry {
        SpoolEntry {
            destination: Destination::S3 {
                bucket: "evidence".into(),
                prefix: "p".into(),
                sse: None,
            },
            key: format!("p/ns/{id}.json"),
            bundle_id: id.into(),
            document: json!({"bundleId": id, "pad": "x".repeat(100)}),
        }
    }

    #[test]
    fn bounded_ordered_deduplicated_and_persistent() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::new(&dir, 3, 10_000);
        let a = spool.push(&entry("a")).unwrap();
        spool.push(&entry("b")).unwrap();
        assert_eq!(spool.push(&entry("a")).unwrap(), a, "no second copy");
        spool.push(&entry("c")).unwrap();
        assert!(matches!(
            spool.push(&entry("d")),
            Err(SpoolError::Full { entries: 3, .. })
        ));
        // A new Spool over the same directory (a restarted process) sees the same entries in order.
        let reopened = Spool::new(&dir, 3, 10_000);
        let ids: Vec<String> = reopened
            .list()
            .unwrap()
            .iter()
            .map(|s| reopened.read(s).unwrap().bundle_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        reopened.remove(&a).unwrap();
        reopened.remove(&a).unwrap();
        assert_eq!(reopened.usage().unwrap().0, 2);
        let tiny = Spool::new(&dir, 100, 10);
        assert!(matches!(
            tiny.push(&entry("e")),
            Err(SpoolError::Full { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hostile_entries_read_back_are_refused() {
        let dir = std::env::temp_dir().join(format!("spool-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let spool = Spool::new(&dir, 100, 1 << 20);
        let mut table: Vec<(SpoolEntry, KeyError)> = crate::key::HOSTILE_KEYS
            .iter()
            .map(|(key, want)| {
                let mut e = entry("a");
                e.key = (*key).to_owned();
                (e, want.clone())
            })
            .collect();
        let long = format!("{}.json", "a/".repeat(600));
        let mut e = entry("a");
        e.key = long.clone();
        table.push((e, KeyError::TooLong(long.len())));
        for id in ["/../../x", "a.b", ""] {
            let mut e = entry("a");
            e.bundle_id = id.into();
            table.push((e, KeyError::BundleId));
        }
        for bucket in ["../x", "a/b", "", "a b", "a..b", "b?x=1"] {
            let mut e = entry("a");
            e.destination = Destination::S3 {
                bucket: bucket.into(),
                prefix: String::new(),
                sse: None,
            };
            table.push((e, KeyError::Bucket));
        }
        for root in ["relative", "/var/lib/../../etc", ""] {
            let mut e = entry("a");
            e.destination = Destination::Filesystem { root: root.into() };
            table.push((e, KeyError::Root));
        }
        for (i, (hostile, want)) in table.iter().enumerate() {
            // As a file left in the spool directory (by an older version, or by hand).
            let path = dir.join(format!("{i:020}-x.json"));
            std::fs::write(&path, serde_json::to_vec(hostile).unwrap()).unwrap();
            let spooled = Spooled { path, bytes: 0 };
            match spool.read(&spooled) {
                Err(SpoolError::Invalid { source, .. }) => {
                    assert_eq!(&source, want, "{:?}", hostile.key)
                }
                other => panic!("{:?} {:?}: {other:?}", hostile.key, hostile.bundle_id),
            }
            spool.remove(&spooled).unwrap();
            // And never taken in.
            assert!(
                matches!(spool.push(hostile), Err(SpoolError::Invalid { .. })),
                "{:?}",
                hostile.key
            );
        }
        assert_eq!(spool.usage().unwrap().0, 0);
        // A sound entry still goes in and comes back.
        let ok = spool.push(&entry("ok")).unwrap();
        assert_eq!(spool.read(&ok).unwrap(), entry("ok"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
