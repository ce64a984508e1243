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
# The real node (e2e/node): Debian's runc under containerd, iptables for kube-proxy, gcc for the
# pause container, busybox-static for the test workloads' image.
command -v runc >/dev/null || need+=(runc)
command -v iptables >/dev/null || need+=(iptables)
command -v gcc >/dev/null || need+=(gcc)
[ -x /bin/busybox ] || need+=(busybox-static)
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

# The chart's third-party audits (e2e/tests/chart_audit.rs), built from the Go module proxy into
# the shared cache, whole or absent: kube-score and kubeconform with `go install`;
# kubectl-who-can inside its module directory (the proxy lists no versions of it, which
# `go install module@version` asks for).
KUBE_SCORE_VERSION=v1.20.0
KUBECONFORM_VERSION=v0.8.0
WHO_CAN_VERSION=v0.4.0
audit_root="${AUTO_AGENT_CACHE:-$HOME/.cache/auto-agent}/audit-kube-score-$KUBE_SCORE_VERSION-kubeconform-$KUBECONFORM_VERSION-who-can-$WHO_CAN_VERSION"
if [ -x "$audit_root/bin/kubectl-who-can" ]; then
  log "audit tools cached"
else
  log "building kube-score $KUBE_SCORE_VERSION, kubeconform $KUBECONFORM_VERSION, kubectl-who-can $WHO_CAN_VERSION (about 3 minutes)"
  rm -rf "$audit_root.partial"
  mkdir -p "$audit_root.partial/bin"
  export GOFLAGS=${GOFLAGS:--buildvcs=false}
  CGO_ENABLED=0 GOBIN="$audit_root.partial/bin" go install -ldflags "-s -w" \
    "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  CGO_ENABLED=0 GOBIN="$audit_root.partial/bin" go install -ldflags "-s -w" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  who_can_src=$(go mod download -json "github.com/aquasecurity/kubectl-who-can@$WHO_CAN_VERSION" | jq -r .Dir)
  work=$(mktemp -d)
  cp -r "$who_can_src/." "$work/"
  chmod -R u+w "$work"
  (cd "$work" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$audit_root.partial/bin/kubectl-who-can" ./cmd/kubectl-who-can)
  rm -rf "$work"
  mv "$audit_root.partial" "$audit_root"
fi
