//! Project chores. `cargo xtask crdgen` regenerates the CRD YAML from the Rust types;
//! `cargo xtask crdgen --check` fails when a committed copy is stale.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write crds/*.yaml and charts/auto-agent/crds/*.yaml from the Rust types.
    Crdgen {
        /// Only compare; exit non-zero if a file differs.
        #[arg(long)]
        check: bool,
    },
}

fn repo_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen { check } => crdgen(&repo_root(), check),
    }
}

fn crdgen(root: &Path, check: bool) -> anyhow::Result<()> {
    let files = auto_agent_shared::crd::rendered().context("rendering the CRDs")?;
    let mut stale = Vec::new();
    for dir in auto_agent_shared::crd::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, yaml) in &files {
            let path = dir.join(name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == *yaml {
                continue;
            }
            if check {
                stale.push(path);
            } else {
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale CRD files (run `cargo xtask crdgen`): {}",
            stale
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
