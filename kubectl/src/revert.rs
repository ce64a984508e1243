//! `revert deploy/NAME`: undoes the agent's mirror swaps and memory bumps on a workload from what it
//! recorded on it (`autoagent.io/original-image-<container>`, `autoagent.io/original-memory-<container>`),
//! as the user: their RBAC, not the controller's. One JSON patch, guarded by tests (the object
//! read, each container at its index, each current image), so a change made in between fails the
//! revert instead of being overwritten; the annotations go with it.

use auto_agent_shared::keys::{ORIGINAL_IMAGE_PREFIX, ORIGINAL_MEMORY_PREFIX};
use serde::Serialize;
use serde_json::{Value, json};

use crate::output::{Render, table};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub container: String,
    /// `image`, `memory limit` or `memory request`.
    pub field: String,
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevertPlan {
    pub target: String,
    pub changes: Vec<Change>,
    /// Annotations of containers the template no longer has, or that cannot be read: left alone.
    pub skipped: Vec<String>,
    /// Whether it was carried out.
    pub applied: bool,
    #[serde(skip)]
    pub ops: Vec<Value>,
}

/// `~` and `/` escaped for a JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str)
        .map_or_else(|| "(none)".to_owned(), str::to_owned)
}

/// The operations setting `resources.<section>.memory` to `want` (`None`: removing it).
fn memory_ops(path: &str, container: &Value, section: &str, want: Option<&str>) -> Vec<Value> {
    let current = container.pointer(&format!("/resources/{section}/memory"));
    match (want, current) {
        (None, None) => vec![],
        (None, Some(_)) => {
            vec![json!({"op": "remove", "path": format!("{path}/resources/{section}/memory")})]
        }
        (Some(v), _)
            if container
                .pointer(&format!("/resources/{section}"))
                .is_some() =>
        {
            vec![
                json!({"op": "add", "path": format!("{path}/resources/{section}/memory"), "value": v}),
            ]
        }
        (Some(v), _) if container.get("resources").is_some() => {
            vec![
                json!({"op": "add", "path": format!("{path}/resources/{section}"), "value": {"memory": v}}),
            ]
        }
        (Some(v), _) => vec![
            json!({"op": "add", "path": format!("{path}/resources"), "value": {section: {"memory": v}}}),
        ],
    }
}

/// The revert of `obj` (a Deployment, StatefulSet or DaemonSet as JSON), for every container or
/// only `only`.
pub fn plan(target: &str, obj: &Value, only: Option<&str>) -> RevertPlan {
    let mut out = RevertPlan {
        target: target.to_owned(),
        changes: Vec::new(),
        skipped: Vec::new(),
        applied: false,
        ops: Vec::new(),
    };
    let annotations = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let containers = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut guards = vec![json!({"op": "test", "path": "/metadata/resourceVersion",
                                "value": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)})];
    let mut ops = Vec::new();
    for (key, value) in annotations.into_iter().flatten() {
        let (kind, name) = if let Some(c) = key.strip_prefix(ORIGINAL_IMAGE_PREFIX) {
            ("image", c)
        } else if let Some(c) = key.strip_prefix(ORIGINAL_MEMORY_PREFIX) {
            ("memory", c)
        } else {
            continue;
        };
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some((index, container)) = containers
            .iter()
            .enumerate()
            .find(|(_, c)| c.get("name").and_then(Value::as_str) == Some(name))
        else {
            out.skipped.push(format!(
                "{key}: the template has no container {name} any more"
            ));
            continue;
        };
        let path = format!("/spec/template/spec/containers/{index}");
        let original = value.as_str().unwrap_or_default();
        let mut container_ops = Vec::new();
        match kind {
            "image" => {
                let current = container.get("image").cloned().unwrap_or(Value::Null);
                if current.as_str() != Some(original) {
                    out.changes.push(Change {
                        container: name.to_owned(),
                        field: "image".into(),
                        from: text(Some(&current)),
                        to: original.to_owned(),
                    });
                    container_ops.push(
                        json!({"op": "test", "path": format!("{path}/image"), "value": current}),
                    );
                    container_ops.push(json!({"op": "replace", "path": format!("{path}/image"), "value": original}));
                }
            }
            _ => {
                let Ok(kept) = serde_json::from_str::<Value>(original) else {
                    out.skipped
                        .push(format!("{key}: not the agent's record ({original:?})"));
                    continue;
                };
                for (section, field) in [("limits", "limit"), ("requests", "request")] {
                    let want = kept.get(field).and_then(Value::as_str);
                    let current = container.pointer(&format!("/resources/{section}/memory"));
                    if current.and_then(Value::as_str) == want {
                        continue;
                    }
                    out.changes.push(Change {
                        container: name.to_owned(),
                        field: format!("memory {field}"),
                        from: text(current),
                        to: want.unwrap_or("(none)").to_owned(),
                    });
                    container_ops.extend(memory_ops(&path, container, section, want));
                }
            }
        }
        if !container_ops.is_empty() {
            guards.push(json!({"op": "test", "path": format!("{path}/name"), "value": name}));
        }
        ops.extend(container_ops);
        ops.push(json!({"op": "remove", "path": format!("/metadata/annotations/{}", escape(key))}));
    }
    if !ops.is_empty() {
        guards.dedup();
        out.ops = guards.into_iter().chain(ops).collect();
    }
    out
}

impl Render for RevertPlan {
    fn table(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str(&format!(
                "{}: nothing of the agent's to revert\n",
                self.target
            ));
        } else {
            let rows: Vec<Vec<String>> = self
                .changes
                .iter()
                .map(|c| {
                    vec![
                        c.container.clone(),
                        c.field.clone(),
                        c.from.clone(),
                        c.to.clone(),
                    ]
                })
                .collect();
            out.push_str(&format!("{}:\n", self.target));
            out.push_str(&table(&["CONTAINER", "FIELD", "NOW", "REVERTED TO"], &rows));
            out.push_str(if self.applied {
                "reverted\n"
            } else {
                "not applied\n"
            });
        }
        for s in &self.skipped {
            out.push_str(&format!("skipped: {s}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(annotations: Value, containers: Value) -> Value {
        json!({"metadata": {"name": "api", "resourceVersion": "7", "annotations": annotations},
               "spec": {"template": {"spec": {"containers": containers}}}})
    }

    fn apply(obj: &Value, ops: &[Value]) -> Value {
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        let mut doc = obj.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc
    }

    #[test]
    fn image_and_memory_go_back_to_what_the_agent_recorded() {
        let obj = deployment(
            json!({"team": "shop",
                   "autoagent.io/original-image-app": "registry.example.com/app:1",
                   "autoagent.io/original-memory-app": "{\"limit\":\"256Mi\",\"request\":null}"}),
            json!([{"name": "proxy", "image": "proxy:1"},
                   {"name": "app", "image": "mirror.local/app:1",
                    "resources": {"limits": {"memory": "400Mi", "cpu": "1"}, "requests": {"memory": "328Mi"}}}]),
        );
        let p = plan("Deployment/shop/api", &obj, None);
        let fields: Vec<(&str, &str, &str)> = p
            .changes
            .iter()
            .map(|c| (c.field.as_str(), c.from.as_str(), c.to.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("image", "mirror.local/app:1", "registry.example.com/app:1"),
                ("memory limit", "400Mi", "256Mi"),
                ("memory request", "328Mi", "(none)"),
            ]
        );
        let after = apply(&obj, &p.ops);
        let app = &after["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(app["image"], "registry.example.com/app:1");
        assert_eq!(
            app["resources"],
            json!({"limits": {"memory": "256Mi", "cpu": "1"}, "requests": {}})
        );
        assert_eq!(
            after["metadata"]["annotations"],
            json!({"team": "shop"}),
            "the records go too"
        );
        assert_eq!(
            after["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "proxy", "image": "proxy:1"})
        );
    }

    /// The patch tests what was read: an image changed in between fails it instead of being
    /// overwritten.
    #[test]
    fn a_change_in_between_fails_the_revert() {
        let obj = deployment(
            json!({"autoagent.io/original-image-app": "registry.example.com/app:1"}),
            json!([{"name": "app", "image": "mirror.local/app:1"}]),
        );
        let p = plan("Deployment/shop/api", &obj, None);
        let mut moved = obj.clone();
        moved["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("registry.example.com/app:2");
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(p.ops.clone())).unwrap();
        assert!(json_patch::patch(&mut moved, &patch).is_err());
    }

    #[test]
    fn nothing_recorded_or_a_container_gone_changes_nothing() {
        let none = plan(
            "Deployment/shop/api",
            &deployment(json!({"team": "shop"}), json!([{"name": "app"}])),
            None,
        );
        assert!(none.changes.is_empty() && none.ops.is_empty());
        let gone = plan(
            "Deployment/shop/api",
            &deployment(
                json!({"autoagent.io/original-image-old": "x:1"}),
                json!([{"name": "app", "image": "y:1"}]),
            ),
            None,
        );
        assert!(gone.changes.is_empty() && gone.ops.is_empty());
        assert_eq!(gone.skipped.len(), 1);
        let other = plan(
            "Deployment/shop/api",
            &deployment(
                json!({"autoagent.io/original-image-app": "x:1"}),
                json!([{"name": "app", "image": "y:1"}]),
            ),
            Some("sidecar"),
        );
        assert!(other.changes.is_empty(), "only the container asked for");
    }
}
