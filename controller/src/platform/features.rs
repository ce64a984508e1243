//! Which remediation features this installation allows (`--features`, set by the chart from
//! `features.*`). The chart grants RBAC per feature; the controller refuses a disabled feature's
//! actions up front (`FeatureDisabled`) instead of spending a budget reservation on a write that
//! would be denied with 403.

use auto_agent_engine::decide::{ActionKind, AllowedActions};

/// Feature names as the chart's `features.*` keys spell them.
pub const ALL: &[&str] = &[
    "restart",
    "memoryBump",
    "mirrorImage",
    "nodeRemediation",
    "scaling",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    enabled: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown feature {0:?}; known: {known}", known = ALL.join(", "))]
pub struct UnknownFeature(String);

impl Features {
    /// Empty names are skipped (the chart renders "" when every feature is off).
    pub fn parse(names: &[String]) -> Result<Self, UnknownFeature> {
        let names: Vec<String> = names.iter().filter(|n| !n.is_empty()).cloned().collect();
        for n in &names {
            if !ALL.contains(&n.as_str()) {
                return Err(UnknownFeature(n.clone()));
            }
        }
        Ok(Self { enabled: names })
    }

    pub fn enabled(&self, feature: &str) -> bool {
        self.enabled.iter().any(|f| f == feature)
    }

    pub fn allows(&self, action: ActionKind) -> bool {
        self.enabled(action.feature())
    }

    /// The actions these features allow, for the engine's `feature` rule.
    pub fn allowed_actions(&self) -> AllowedActions {
        AllowedActions::from_kinds(ActionKind::ALL.iter().copied().filter(|a| self.allows(*a)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_maps_actions() {
        let f = Features::parse(&["restart".into(), "scaling".into()]).unwrap();
        assert!(f.allows(ActionKind::RestartPod));
        assert!(f.allows(ActionKind::ScaleDown));
        assert!(!f.allows(ActionKind::BumpMemory));
        assert!(!f.allows(ActionKind::CordonNode));
        assert!(Features::parse(&["restarts".into()]).is_err());
        let none = Features::parse(&[String::new()]).unwrap();
        assert!(!none.allows(ActionKind::RestartPod));
        let all =
            Features::parse(&ALL.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        for kind in ActionKind::ALL {
            assert!(all.allows(kind), "{kind:?}");
            assert!(all.allowed_actions().allows(kind), "{kind:?}");
        }
        let some = f.allowed_actions();
        assert!(some.allows(ActionKind::RestartPod) && some.allows(ActionKind::ScaleUp));
        assert!(!some.allows(ActionKind::BumpMemory) && !some.allows(ActionKind::EvictPod));
    }
}
