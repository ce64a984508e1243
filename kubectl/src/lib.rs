//! `kubectl auto-agent`: answers "what did the agent do, why, and what would it do now?" from the
//! cluster, with the controller's own engine and rules. Read-only except `revert`, which writes as
//! the user (their RBAC, not the controller's).
//!
//! ```text
//! cli        the command line (clap), exit codes
//! context    the client, the namespace, and the reads every subcommand shares
//! target     `pod/NAME`, `deploy/NAME`, ... and the workload and pods behind it
//! judge      what the controller would decide now, by the engine's `decide` on live facts
//! explain    explain: policies, what was done, what would be done
//! simulate   simulate -f: a policy's targets and plans before it is applied
//! incidents  incidents: from the leader through the apiserver's proxy, else from Events
//! budgets    budgets: used, remaining and next refill per policy, scope and target
//! revert     revert: undo a mirror swap or memory bump from the annotations the agent kept
//! output     table, JSON and YAML
//! ```

#![forbid(unsafe_code)]

pub mod budgets;
pub mod cli;
pub mod context;
pub mod explain;
pub mod incidents;
pub mod judge;
pub mod output;
pub mod revert;
pub mod simulate;
pub mod target;
