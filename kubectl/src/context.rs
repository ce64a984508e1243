//! What every subcommand shares: the client (the user's kubeconfig, so their RBAC applies), the
//! namespace, where the agent runs, and the reads of the agent's state: policies, the ledger, the
//! leader's incidents, the agent's Events and its escalation and GitOps records.

use std::time::Duration;

use anyhow::Context as _;
use auto_agent_controller::platform::incidents::IncidentsReply;
use auto_agent_controller::policies::index::{PolicyEntry, entry};
use auto_agent_engine::decide::{AllowedActions, BudgetLimit, History};
use auto_agent_shared::crd::AutoRemediationPolicy;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::{Api, Client};
use serde::Serialize;

/// Where the agent is installed and how to reach its leader (the chart's names by default).
#[derive(Clone, Debug, clap::Args)]
pub struct AgentFlags {
    /// Namespace the agent is installed in.
    #[arg(
        long,
        global = true,
        env = "AUTO_AGENT_NAMESPACE",
        default_value = "auto-agent"
    )]
    pub agent_namespace: String,
    /// The controller's Service (its admin port serves /incidents).
    #[arg(
        long,
        global = true,
        env = "AUTO_AGENT_CONTROLLER_SERVICE",
        default_value = "auto-agent-controller"
    )]
    pub controller_service: String,
    /// The admin port's name or number on the Service and the pods.
    #[arg(long, global = true, default_value = "metrics")]
    pub admin_port: String,
    /// The controller's leader-election Lease.
    #[arg(
        long,
        global = true,
        env = "AUTO_AGENT_LEASE",
        default_value = "auto-agent-controller"
    )]
    pub lease_name: String,
    /// The ConfigMap that holds the action ledger.
    #[arg(
        long,
        global = true,
        env = "AUTO_AGENT_LEDGER",
        default_value = "auto-agent-ledger"
    )]
    pub ledger_name: String,
    /// Registries the mirror check speaks plain HTTP to (as the controller's --plain-http-registries).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        env = "AUTO_AGENT_PLAIN_HTTP_REGISTRIES"
    )]
    pub plain_http_registries: Vec<String>,
}

#[derive(Clone)]
pub struct Ctx {
    pub client: Client,
    /// The same identity without the client's retries of 503: a replica that does not lead answers
    /// 503 and is tried again here, a few times, instead of for many minutes.
    pub proxy_client: Client,
    /// The namespace asked about (`-n`, else the kubeconfig context's).
    pub namespace: String,
    pub agent: AgentFlags,
    pub now_ms: i64,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The decision settings of the installation: from the leader when it answers, else the chart's
/// defaults (and the output says which).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionConfig {
    pub cluster_budgets: Vec<BudgetLimit>,
    pub allowed_actions: AllowedActions,
    /// `leader <identity>`, or why the chart's defaults are assumed.
    pub source: String,
}

impl Ctx {
    /// The AutoRemediationPolicies of `namespace` (every namespace when `None`) as the controller
    /// indexes them, by namespace and name (the controller uses the first that selects a workload).
    pub async fn policies(&self, namespace: Option<&str>) -> anyhow::Result<Vec<PolicyEntry>> {
        let api: Api<DeserializeGuard<AutoRemediationPolicy>> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut all: Vec<PolicyEntry> = api
            .list(&ListParams::default())
            .await
            .context("listing AutoRemediationPolicies")?
            .items
            .into_iter()
            .map(entry)
            .collect();
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(all)
    }

    /// The action ledger (empty when the agent has not acted yet).
    pub async fn history(&self) -> anyhow::Result<History> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.agent.agent_namespace);
        let cm = api
            .get_opt(&self.agent.ledger_name)
            .await
            .with_context(|| {
                format!(
                    "reading the ledger {}/{}",
                    self.agent.agent_namespace, self.agent.ledger_name
                )
            })?;
        Ok(match cm {
            Some(cm) => auto_agent_controller::reconcile::ledger::history_of(&cm)
                .context("the ledger is not valid JSON")?,
            None => History::default(),
        })
    }

    /// `GET /incidents` from the leader through the apiserver's proxy: to the leader's pod when
    /// the Lease names one, else through the controller's Service (a replica that does not lead
    /// answers 503, and the request is tried again to reach the one that does).
    pub async fn leader(&self) -> anyhow::Result<IncidentsReply> {
        let ns = &self.agent.agent_namespace;
        let port = &self.agent.admin_port;
        let holder = Api::<Lease>::namespaced(self.client.clone(), ns)
            .get_opt(&self.agent.lease_name)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let via_pod = match &holder {
            Some(h) => pods
                .get_opt(h)
                .await
                .ok()
                .flatten()
                .and_then(|pod| Some((h.clone(), port_number(&pod, port)?))),
            None => None,
        };
        let path = match &via_pod {
            Some((pod, number)) => {
                format!("/api/v1/namespaces/{ns}/pods/{pod}:{number}/proxy/incidents")
            }
            None => format!(
                "/api/v1/namespaces/{ns}/services/{}:{port}/proxy/incidents",
                self.agent.controller_service
            ),
        };
        let mut last = String::new();
        for _ in 0..10 {
            let request = http::Request::get(&path).body(Vec::new())?;
            let response = self.proxy_client.send(request.map(Into::into)).await;
            match response {
                Ok(r) => {
                    let status = r.status();
                    let body = r.into_body().collect_bytes().await?;
                    if status.is_success() {
                        return serde_json::from_slice(&body)
                            .context("the controller's /incidents answer");
                    }
                    last = format!(
                        "{status} from {path}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    );
                    // A replica that does not lead: another try may reach the leader.
                    if status != http::StatusCode::SERVICE_UNAVAILABLE {
                        break;
                    }
                }
                Err(e) => {
                    last = format!("{path}: {e}");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the leader could not be reached ({last})")
    }

    /// The installation's decision settings, from the leader or assumed.
    pub async fn decision_config(&self) -> DecisionConfig {
        match self.leader().await {
            Ok(reply) => DecisionConfig {
                cluster_budgets: reply.cluster_budgets,
                allowed_actions: reply.allowed_actions,
                source: format!("leader {}", reply.identity),
            },
            Err(e) => DecisionConfig {
                cluster_budgets: auto_agent_controller::args::cluster_budgets(
                    &auto_agent_controller::args::DEFAULT_CLUSTER_BUDGETS
                        .split(',')
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_default(),
                allowed_actions: AllowedActions::all(),
                source: format!("the chart's defaults, assumed: {e:#}"),
            },
        }
    }

    /// The agent's Events in `namespace` (every namespace when `None`), oldest first.
    pub async fn agent_events(&self, namespace: Option<&str>) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut events: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .context("listing Events")?
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("auto-agent"))
            .collect();
        events.sort_by_key(event_ms);
        Ok(events)
    }

    /// The agent's records of one kind (`escalation`, `gitops`), as JSON.
    pub async fn records(&self, kind: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.agent.agent_namespace);
        let list = api
            .list(&ListParams::default().labels(&format!("autoagent.io/{kind}=record")))
            .await
            .with_context(|| format!("listing the {kind} records"))?;
        Ok(list
            .items
            .iter()
            .filter_map(|cm| cm.data.as_ref()?.get("record.json"))
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }
}

/// The number of the pod's port `port` (a name among its containers' ports, or a number): the
/// apiserver's pod proxy takes numbers only.
pub fn port_number(pod: &Pod, port: &str) -> Option<u16> {
    if let Ok(n) = port.parse() {
        return Some(n);
    }
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(port))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// When an Event happened, in ms (its series' last time, else its own).
pub fn event_ms(e: &Event) -> i64 {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0.as_millisecond())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_millisecond()))
        .or_else(|| {
            e.deprecated_last_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
        .unwrap_or_default()
}
