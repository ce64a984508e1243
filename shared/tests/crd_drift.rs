//! The committed CRD YAML (crds/ and the chart's copy) must equal what the Rust types generate.
//! Regenerate with `cargo xtask crdgen`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = auto_agent_shared::crd::rendered().unwrap();
    assert_eq!(files.len(), 2);
    for dir in auto_agent_shared::crd::OUTPUT_DIRS {
        for (name, want) in &files {
            let path = root.join(dir).join(name);
            let have = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask crdgen`", path.display()));
            assert!(
                have == *want,
                "{} is stale or was edited by hand; run `cargo xtask crdgen`",
                path.display()
            );
        }
    }
}
