use super::*;

const HELM: &str = include_str!("../../tests/fixtures/helm-values.yaml");
const ANCHORS: &str = include_str!("../../tests/fixtures/anchors-values.yaml");
const MANIFESTS: &str = include_str!("../../tests/fixtures/manifests.yaml");
const PATCH: &str = include_str!("../../tests/fixtures/kustomize-patch.yaml");
const KUSTOMIZATION: &str = include_str!("../../tests/fixtures/kustomization.yaml");
const CRLF: &str = include_str!("../../tests/fixtures/crlf-values.yaml");

fn path(p: &str) -> KeyPath {
    p.parse().unwrap()
}

fn resource(kind: &str, name: &str) -> Document {
    Document::Resource {
        kind: kind.into(),
        name: name.into(),
    }
}

/// Every line but `line` (1-based) is byte-identical; that one reads `want`.
fn only_line_changed(before: &str, after: &str, line: usize, want: &str) {
    let b: Vec<&str> = before.split('\n').collect();
    let a: Vec<&str> = after.split('\n').collect();
    assert_eq!(a.len(), b.len(), "line count");
    for (i, (x, y)) in b.iter().zip(&a).enumerate() {
        if i + 1 == line {
            assert_eq!(y.trim_end_matches('\r'), want, "line {line}");
            assert_ne!(x, y, "line {line} changed");
        } else {
            assert_eq!(x, y, "line {} must not change", i + 1);
        }
    }
}

#[test]
fn table_of_real_world_files_changes_exactly_one_value() {
    // (file, document, path, new value, old value, line, the line after)
    let cases: Vec<(&str, Document, &str, &str, &str, usize, &str)> = vec![
        // Helm values: a plain quantity with a trailing comment; the comment stays.
        (
            HELM,
            Document::Only,
            "resources.limits.memory",
            "384Mi",
            "256Mi",
            22,
            "    memory: 384Mi # raised by hand in 2025, see OPS-12",
        ),
        // A single-quoted quantity stays single-quoted.
        (
            HELM,
            Document::Only,
            "resources.requests.memory",
            "192Mi",
            "128Mi",
            25,
            "    memory: '192Mi'",
        ),
        // A double-quoted one stays double-quoted, in a nested section of the same name.
        (
            HELM,
            Document::Only,
            "worker.resources.limits.memory",
            "2Gi",
            "1Gi",
            30,
            "      memory: \"2Gi\"",
        ),
        // An integer stays an integer; the comment after the spaces stays.
        (
            HELM,
            Document::Only,
            "replicaCount",
            "4",
            "2",
            11,
            "replicaCount: 4   # two for the PDB",
        ),
        // A quoted tag that looks like a number stays a string.
        (
            HELM,
            Document::Only,
            "image.tag",
            "1.5.0",
            "1.4.2",
            15,
            "  tag: \"1.5.0\"",
        ),
        // An image swap to a mirror (a plain string with slashes).
        (
            HELM,
            Document::Only,
            "image.repository",
            "registry.internal/mirror/acme/api",
            "docker.io/acme/api",
            14,
            "  repository: registry.internal/mirror/acme/api   # the public image",
        ),
        // A key with dots and slashes, after a non-ASCII comment on the same line.
        (
            HELM,
            Document::Only,
            "podAnnotations[\"example.com/team\"]",
            "checkout",
            "payments",
            35,
            "  example.com/team: \"checkout\"   # déjà vu: non-ASCII comment before the value",
        ),
        // Anchors elsewhere in the file are kept; an unshared value next to them changes.
        (
            ANCHORS,
            Document::Only,
            "cron.sidecar.memory",
            "96Mi",
            "64Mi",
            20,
            "    memory: 96Mi",
        ),
        (
            ANCHORS,
            Document::Only,
            "api.replicas",
            "5",
            "3",
            7,
            "  replicas: 5",
        ),
        // An anchor nobody aliases is just a value; the anchor stays.
        (
            ANCHORS,
            Document::Only,
            "cron.resources.limits.memory",
            "128Mi",
            "64Mi",
            18,
            "      memory: &cron-mem 128Mi",
        ),
        // Several documents: the Deployment named api, the container named app (not the first).
        (
            MANIFESTS,
            resource("Deployment", "api"),
            "spec.template.spec.containers[name=app].resources.limits.memory",
            "384Mi",
            "268435456",
            36,
            "              memory: 384Mi   # bytes, from a generator",
        ),
        // A flow mapping inside a block sequence.
        (
            MANIFESTS,
            resource("Deployment", "api"),
            "spec.template.spec.containers[name=log-shipper].resources.limits.memory",
            "96Mi",
            "64Mi",
            31,
            "            limits: {memory: 96Mi}",
        ),
        (
            MANIFESTS,
            resource("Deployment", "api"),
            "spec.replicas",
            "5",
            "3",
            18,
            "  replicas: 5",
        ),
        // The same container name in another Deployment; a quoted image.
        (
            MANIFESTS,
            resource("Deployment", "worker"),
            "spec.template.spec.containers[name=app].image",
            "registry.internal/mirror/acme/worker:2.0",
            "docker.io/acme/worker:2.0",
            50,
            "        image: \"registry.internal/mirror/acme/worker:2.0\"",
        ),
        // A flow mapping of labels is a value like any other.
        (
            MANIFESTS,
            resource("Deployment", "api"),
            "metadata.labels.tier",
            "edge",
            "backend",
            16,
            "  labels: {app: api, tier: edge}",
        ),
        // A kustomize strategic-merge patch (a partial manifest).
        (
            PATCH,
            Document::Only,
            "spec.template.spec.containers[name=app].resources.limits.memory",
            "450Mi",
            "300Mi",
            13,
            "            memory: 450Mi",
        ),
        // kustomization.yaml: images and replicas transformers.
        (
            KUSTOMIZATION,
            Document::Only,
            "images[name=docker.io/acme/api].newTag",
            "1.4.3",
            "1.4.2",
            8,
            "    newTag: 1.4.3",
        ),
        (
            KUSTOMIZATION,
            Document::Only,
            "images[name=redis].newTag",
            "7.4",
            "7.2",
            10,
            "    newTag: \"7.4\"",
        ),
        (
            KUSTOMIZATION,
            Document::Only,
            "replicas[0].count",
            "6",
            "3",
            13,
            "  count: 6",
        ),
        // CRLF line endings are kept.
        (
            CRLF,
            Document::Only,
            "resources.limits.memory",
            "320Mi",
            "256Mi",
            3,
            "    memory: 320Mi",
        ),
    ];
    for (file, document, p, value, old, line, want) in cases {
        let p = path(p);
        let found = read(file, &document, &p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(found.value, old, "{p}");
        assert_eq!(found.line, line, "{p}");
        let edited = set(file, &document, &p, value).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(edited.changed());
        assert_eq!(
            (edited.before.as_str(), edited.after.as_str()),
            (old, value)
        );
        assert_eq!(edited.line, line, "{p}");
        assert_eq!(edited.new_line, want, "{p}");
        only_line_changed(file, &edited.text, line, want);
        // What was written reads back as the new value.
        assert_eq!(read(&edited.text, &document, &p).unwrap().value, value);
    }
}

#[test]
fn the_same_value_changes_nothing() {
    let p = path("resources.limits.memory");
    let e = set(HELM, &Document::Only, &p, "256Mi").unwrap();
    assert!(!e.changed());
    assert_eq!(e.text, HELM);
    assert_eq!(e.diff("values.yaml"), "");
}

#[test]
fn the_diff_is_the_one_line() {
    let p = path("resources.limits.memory");
    let e = set(HELM, &Document::Only, &p, "384Mi").unwrap();
    assert_eq!(
        e.diff("charts/api/values.yaml"),
        "--- a/charts/api/values.yaml\n+++ b/charts/api/values.yaml\n@@ -22,1 +22,1 @@\n\
         -    memory: 256Mi # raised by hand in 2025, see OPS-12\n\
         +    memory: 384Mi # raised by hand in 2025, see OPS-12\n"
    );
}

#[test]
fn a_value_that_would_change_type_is_quoted() {
    // The tag is a string: a plain 2 would become an integer.
    let f = "image:\n  tag: v1\n  debug: false\n  replicas: 1\n";
    let cases = [
        ("image.tag", "2", "  tag: \"2\""),
        ("image.tag", "true", "  tag: \"true\""),
        ("image.tag", "1.5", "  tag: \"1.5\""),
        ("image.tag", "null", "  tag: \"null\""),
        ("image.tag", "v2", "  tag: v2"),
        ("image.tag", "a: b", "  tag: \"a: b\""),
        ("image.tag", "#x", "  tag: \"#x\""),
        ("image.debug", "true", "  debug: true"),
        ("image.replicas", "3", "  replicas: 3"),
        ("image.replicas", "1e3", "  replicas: \"1e3\""),
    ];
    for (p, value, want) in cases {
        let e = set(f, &Document::Only, &path(p), value).unwrap();
        assert_eq!(e.new_line, want, "{p} = {value}");
        assert_eq!(
            read(&e.text, &Document::Only, &path(p)).unwrap().value,
            value
        );
    }
}

#[test]
fn what_cannot_be_changed_safely_is_refused_with_the_path() {
    type Check = fn(&EditError) -> bool;
    let cases: Vec<(&str, Document, &str, Check)> = vec![
        // Reached through an alias: shared with batch.
        (
            ANCHORS,
            Document::Only,
            "batch.resources.limits.memory",
            |e| matches!(e, EditError::Alias { .. }),
        ),
        // The anchored mapping is aliased by batch: changing worker's would change batch's.
        (
            ANCHORS,
            Document::Only,
            "worker.resources.limits.memory",
            |e| matches!(e, EditError::Shared { uses: 1, .. }),
        ),
        // From a merge key: api's resources are defaults'.
        (
            ANCHORS,
            Document::Only,
            "api.resources.limits.memory",
            |e| matches!(e, EditError::Merged { path } if path == "api.resources"),
        ),
        // defaults is anchored and merged into api.
        (
            ANCHORS,
            Document::Only,
            "defaults.resources.limits.memory",
            |e| matches!(e, EditError::Shared { .. }),
        ),
        (
            HELM,
            Document::Only,
            "resources.limits.ephemeral-storage",
            |e| matches!(e, EditError::Missing { found, .. } if found == "resources.limits"),
        ),
        (HELM, Document::Only, "resources.limits", |e| {
            matches!(
                e,
                EditError::WrongShape {
                    kind: "mapping",
                    ..
                }
            )
        }),
        (HELM, Document::Only, "replicaCount.value", |e| {
            matches!(
                e,
                EditError::WrongShape {
                    kind: "single value",
                    ..
                }
            )
        }),
        (MANIFESTS, Document::Only, "spec.replicas", |e| {
            matches!(e, EditError::ManyDocuments { count: 3 })
        }),
        (
            MANIFESTS,
            resource("StatefulSet", "api"),
            "spec.replicas",
            |e| matches!(e, EditError::NoDocument { .. }),
        ),
        (
            MANIFESTS,
            resource("Deployment", "api"),
            "spec.template.spec.containers[name=sidecar].image",
            |e| matches!(e, EditError::Missing { .. }),
        ),
        (
            "items:\n  - name: a\n    v: 1\n  - name: a\n    v: 2\n",
            Document::Only,
            "items[name=a].v",
            |e| matches!(e, EditError::AmbiguousItem { count: 2, .. }),
        ),
        ("a: 1\nb: 2\na: 3\n", Document::Only, "a", |e| {
            matches!(e, EditError::DuplicateKey { count: 2, .. })
        }),
        ("script: |\n  echo 1\n", Document::Only, "script", |e| {
            matches!(e, EditError::Block { .. })
        }),
        (
            "note: a long\n  plain value\n",
            Document::Only,
            "note",
            |e| matches!(e, EditError::MultiLine { .. }),
        ),
        ("a: [1, 2\n", Document::Only, "a", |e| {
            matches!(e, EditError::Parse { .. })
        }),
        ("# only a comment\n", Document::Only, "a", |e| {
            matches!(e, EditError::Empty)
        }),
    ];
    for (file, document, p, check) in cases {
        let err = set(file, &document, &path(p), "1Gi").unwrap_err();
        assert!(check(&err), "{p}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn new_values_are_one_line() {
    for bad in ["1Gi\nmemory: 2Gi", " 1Gi", "1Gi ", "a\tb", ""] {
        let err = set(HELM, &Document::Only, &path("resources.limits.memory"), bad).unwrap_err();
        assert!(
            matches!(err, EditError::BadValue { .. }),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn a_trailing_document_marker_is_not_a_second_document() {
    let f = "replicas: 1\n---\n";
    let e = set(f, &Document::Only, &path("replicas"), "2").unwrap();
    assert_eq!(e.text, "replicas: 2\n---\n");
}

#[test]
fn quoted_values_with_escapes_and_comments_are_replaced_whole() {
    let f = "a: \"x\\\"y\" # \"c\"\nb: 'it''s' # 'c'\n";
    let e = set(f, &Document::Only, &path("a"), "z").unwrap();
    assert_eq!(e.text, "a: \"z\" # \"c\"\nb: 'it''s' # 'c'\n");
    let e = set(f, &Document::Only, &path("b"), "don't").unwrap();
    assert_eq!(e.text, "a: \"x\\\"y\" # \"c\"\nb: 'don''t' # 'c'\n");
}

#[test]
fn anchors_and_tags_before_a_value_are_kept() {
    let f = "a: &m 64Mi\nb: !!str 5\nc: &n !!str \"x\" # c\n";
    let cases = [
        ("a", "96Mi", "a: &m 96Mi"),
        ("b", "6", "b: !!str 6"),
        ("c", "y", "c: &n !!str \"y\" # c"),
    ];
    for (p, value, want) in cases {
        let e = set(f, &Document::Only, &path(p), value).unwrap();
        assert_eq!(e.new_line, want);
    }
}
