//! GitOps proposals: a change the agent would make live (a memory bump, an image swap, a scale)
//! written instead into the file a GitOps tool applies, as a pull request a human merges.
//!
//! This crate is pure: `edit` changes exactly one scalar of a YAML file and proves that nothing
//! else changed; `path` names that scalar (`spec.template.spec.containers[name=app].image`);
//! `target` maps a workload's container and a change to the file's document and key path;
//! `proposal` plans the commit on the incident's branch and writes the pull request's texts.
//! The forge clients (branches, commits, pull requests) live in the forge crate.

pub mod edit;
pub mod path;
pub mod proposal;
pub mod target;
