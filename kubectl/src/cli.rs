//! The command line and what each subcommand returns to the shell.
//!
//! Exit codes: 0 done; 1 an error (the cluster unreachable, a read refused, a bad policy file);
//! 2 bad usage (clap's); 3 the target does not exist, or there is nothing to revert; 4 a revert
//! not confirmed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, Client};

use crate::context::{AgentFlags, Ctx};
use crate::output::{Format, render};
use crate::target::{TargetRef, resolve};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Error = 1,
    NotFound = 3,
    Declined = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-auto_agent",
    bin_name = "kubectl auto-agent",
    version = auto_agent_shared::VERSION,
    about = "What auto-agent did, why, and what it would do now",
    after_help = "Exit codes: 0 done, 1 error, 2 bad usage, 3 not found or nothing to revert, 4 revert not confirmed."
)]
pub struct Cli {
    /// The namespace asked about (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    /// The kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    #[command(flatten)]
    pub agent: AgentFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which policy selects a workload and why, what the agent did, and what it would do now.
    Explain {
        /// pod/NAME, deploy/NAME, sts/NAME or ds/NAME.
        target: String,
    },
    /// A policy's targets and the plans it would make, before it is applied.
    Simulate {
        /// The AutoRemediationPolicy (YAML or JSON; `-` for standard input).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// The open and recently resolved incidents and their state.
    Incidents {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// For each policy and scope: used, left, and when the next action leaves the window.
    Budgets {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Undo the agent's mirror swap and memory bump on a workload, as you (your RBAC).
    Revert {
        /// deploy/NAME, sts/NAME or ds/NAME.
        target: String,
        /// Only this container.
        #[arg(long)]
        container: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

async fn client(cli: &Cli) -> anyhow::Result<(Client, Client, String)> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None => kube::Config::infer().await?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let mut once = config.clone();
    once.default_retry = false;
    Ok((
        Client::try_from(config)?,
        Client::try_from(once)?,
        namespace,
    ))
}

pub async fn run(cli: Cli) -> anyhow::Result<Exit> {
    if let Command::Completion { shell } = &cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(
            *shell,
            &mut cmd,
            "kubectl-auto_agent",
            &mut std::io::stdout(),
        );
        return Ok(Exit::Ok);
    }
    let (client, proxy_client, namespace) = client(&cli).await?;
    let ctx = Ctx {
        client,
        proxy_client,
        namespace,
        agent: cli.agent.clone(),
        now_ms: auto_agent_shared::clock::now_ms(),
    };
    let print = |text: String| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    };
    match &cli.command {
        Command::Explain { target } => {
            let target = TargetRef::parse(target)?;
            let Some(w) = resolve(&ctx.client, &ctx.namespace, &target).await? else {
                eprintln!(
                    "{}/{} not found in namespace {}",
                    target.kind, target.name, ctx.namespace
                );
                return Ok(Exit::NotFound);
            };
            let e = crate::explain::explain(&ctx, &w).await?;
            print(render(cli.output, &e)?);
        }
        Command::Simulate { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let s = crate::simulate::simulate(&ctx, &text).await?;
            print(render(cli.output, &s)?);
        }
        Command::Incidents { all_namespaces } => {
            let ns = (!all_namespaces).then_some(ctx.namespace.as_str());
            let incidents = match ctx.leader().await {
                Ok(reply) => crate::incidents::Incidents {
                    source: format!("leader {}", reply.identity),
                    incidents: crate::incidents::from_leader(&reply.incidents, ns, ctx.now_ms),
                },
                Err(e) => crate::incidents::Incidents {
                    source: format!("the agent's Events ({e:#})"),
                    incidents: crate::incidents::from_events(
                        &ctx.agent_events(ns).await?,
                        ctx.now_ms,
                    ),
                },
            };
            print(render(cli.output, &incidents)?);
        }
        Command::Budgets { all_namespaces } => {
            let policies = ctx
                .policies((!all_namespaces).then_some(ctx.namespace.as_str()))
                .await?;
            let history = ctx.history().await?;
            let config = ctx.decision_config().await;
            let budgets = crate::budgets::Budgets {
                rows: crate::budgets::rows(
                    &policies,
                    &config.cluster_budgets,
                    &history,
                    ctx.now_ms,
                ),
                cluster_budgets_from: config.source,
            };
            print(render(cli.output, &budgets)?);
        }
        Command::Revert {
            target,
            container,
            yes,
        } => {
            return revert(&ctx, cli.output, target, container.as_deref(), *yes).await;
        }
        Command::Completion { .. } => {}
    }
    Ok(Exit::Ok)
}

async fn revert(
    ctx: &Ctx,
    output: Format,
    target: &str,
    container: Option<&str>,
    yes: bool,
) -> anyhow::Result<Exit> {
    let target = TargetRef::parse(target)?;
    let resource = match target.kind {
        "Deployment" => ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&()),
        "DaemonSet" => ApiResource::erase::<k8s_openapi::api::apps::v1::DaemonSet>(&()),
        _ => anyhow::bail!(
            "revert takes a workload (deploy/, sts/ or ds/): the agent changes templates, not pods"
        ),
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    let Some(obj) = api.get_opt(&target.name).await? else {
        eprintln!(
            "{}/{} not found in namespace {}",
            target.kind, target.name, ctx.namespace
        );
        return Ok(Exit::NotFound);
    };
    let id = format!("{}/{}/{}", target.kind, ctx.namespace, target.name);
    let mut plan = crate::revert::plan(&id, &serde_json::to_value(&obj)?, container);
    if plan.ops.is_empty() {
        print!("{}", render(output, &plan)?);
        return Ok(Exit::NotFound);
    }
    if !yes {
        eprint!("{}", crate::output::Render::table(&plan));
        if !std::io::stdin().is_terminal() {
            eprintln!("not reverted: confirm with --yes when not at a terminal");
            return Ok(Exit::Declined);
        }
        eprint!("Revert these changes with your own credentials? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not reverted");
            return Ok(Exit::Declined);
        }
    }
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(plan.ops.clone()))?;
    api.patch(
        &target.name,
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .context(
        "the revert (the workload changed since it was read, or your RBAC refuses the patch)",
    )?;
    plan.applied = true;
    print!("{}", render(output, &plan)?);
    Ok(Exit::Ok)
}
