//! Label selectors, evaluated purely. Built from a policy's `targetSelector` at the edge; invalid
//! operators are refused when the selector is built, so a bad policy is reported, not half-applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

/// `matchLabels` AND every `matchExpressions` requirement. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error(
        "unknown operator {operator:?} for key {key:?} (use In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator { key: String, operator: String },
    #[error("operator {operator} for key {key:?} needs at least one value")]
    MissingValues { key: String, operator: &'static str },
    #[error("operator {operator} for key {key:?} takes no values")]
    UnexpectedValues { key: String, operator: &'static str },
}

impl Selector {
    /// Builds a selector from raw parts (as found in a Kubernetes LabelSelector).
    pub fn new(
        match_labels: BTreeMap<String, String>,
        expressions: &[(String, String, Vec<String>)],
    ) -> Result<Self, SelectorError> {
        let mut requirements = Vec::with_capacity(expressions.len());
        for (key, operator, values) in expressions {
            let op = match operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: key.clone(),
                        operator: other.to_owned(),
                    });
                }
            };
            match (&op, values.is_empty()) {
                (Operator::In, true) => {
                    return Err(SelectorError::MissingValues {
                        key: key.clone(),
                        operator: "In",
                    });
                }
                (Operator::NotIn, true) => {
                    return Err(SelectorError::MissingValues {
                        key: key.clone(),
                        operator: "NotIn",
                    });
                }
                (Operator::Exists, false) => {
                    return Err(SelectorError::UnexpectedValues {
                        key: key.clone(),
                        operator: "Exists",
                    });
                }
                (Operator::DoesNotExist, false) => {
                    return Err(SelectorError::UnexpectedValues {
                        key: key.clone(),
                        operator: "DoesNotExist",
                    });
                }
                _ => {}
            }
            requirements.push(Requirement {
                key: key.clone(),
                operator: op,
                values: values.clone(),
            });
        }
        Ok(Self {
            match_labels,
            requirements,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    Operator::In => value.is_some_and(|v| r.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}
