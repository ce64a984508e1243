#!/usr/bin/env bash
# Installs what building and testing auto-agent needs on a fresh Debian machine. Idempotent: each
# step checks first and does nothing when the tool is already there.
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

# Debian packages: protoc for tonic-prost-build; jq, openssl and curl for e2e/cluster;
# docker-registry (the CNCF distribution registry) for the image-mirror e2e tests.
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v jq >/dev/null || need+=(jq)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v docker-registry >/dev/null || need+=(docker-registry)
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
