#!/usr/bin/env bash
# Installs what building and testing auto-agent needs on a fresh Debian machine. Idempotent: each
# step checks first and does nothing when the tool is already there.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

# Debian packages: protoc for tonic-prost-build; jq, openssl and curl for e2e/cluster;
# docker-registry (the CNCF distribution registry) for the image-mirror e2e tests; prometheus for
# the scaling e2e tests and the dashboard check.
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v jq >/dev/null || need+=(jq)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v prometheus >/dev/null || need+=(prometheus)
# The escalation tests' servers (e2e/integrations): npm and node fetch and convert the providers'
# API descriptions; cmake and g++ build llama-cpp-python; python3-venv holds both environments.
command -v npm >/dev/null || need+=(npm)
command -v node >/dev/null || need+=(nodejs)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
else
  log "Debian packages present"
fi

# Rust toolchain components used by `make test`.
command -v cargo >/dev/null || { log "cargo is required (rustup)"; exit 1; }
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
command -v go >/dev/null || { log "go is required to build the local control plane"; exit 1; }
log "toolchains: $(cargo --version), $(go version | cut -d' ' -f3)"

# s3s-fs, the S3 server the evidence tests write to, built from crates.io into the shared cache
# (whole or absent, like the cluster binaries). 0.14.1 is the newest that builds with Rust 1.95.
S3S_FS_VERSION=0.14.1
s3s_root="${AUTO_AGENT_CACHE:-$HOME/.cache/auto-agent}/s3s-fs-$S3S_FS_VERSION"
if [ -x "$s3s_root/bin/s3s-fs" ]; then
  log "s3s-fs $S3S_FS_VERSION cached"
else
  log "building s3s-fs $S3S_FS_VERSION (about 4 minutes)"
  rm -rf "$s3s_root.partial"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --quiet \
    --root "$s3s_root.partial"
  mv "$s3s_root.partial" "$s3s_root"
fi
