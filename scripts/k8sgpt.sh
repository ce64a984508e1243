#!/usr/bin/env bash
# k8sgpt, the comparison analyzer, built from its Go module into the shared cache (whole or absent,
# like the other cached tools in scripts/setup.sh). It is built inside its module directory, as
# kubectl-who-can is: the module's go.mod carries replace directives, which `go install
# module@version` refuses.
#
#   scripts/k8sgpt.sh build   build it unless cached (idempotent)
#   scripts/k8sgpt.sh path    print the binary's path, building it first when absent
set -euo pipefail

log() { printf '[k8sgpt] %s\n' "$*" >&2; }

K8SGPT_VERSION=v0.4.36
# A newer Go toolchain (from the Go module proxy), used only when the module's go.mod asks for a
# newer Go than the machine's.
NEWER_GO=go1.27.3
cache="${AUTO_AGENT_CACHE:-$HOME/.cache/auto-agent}"
root="$cache/k8sgpt-$K8SGPT_VERSION"
bin="$root/bin/k8sgpt"

# True when Go version $1 (e.g. 1.26.3) is newer than $2.
go_newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n1)" = "$1" ]; }

build() {
  if [ -x "$bin" ]; then
    log "k8sgpt $K8SGPT_VERSION cached"
    return
  fi
  command -v go >/dev/null || { log "go is required to build k8sgpt"; exit 1; }
  command -v jq >/dev/null || { log "jq is required (scripts/setup.sh installs it)"; exit 1; }
  log "building k8sgpt $K8SGPT_VERSION (about 4 minutes on 2 cores)"
  export GOFLAGS=${GOFLAGS:--buildvcs=false}
  src=$(go mod download -json "github.com/k8sgpt-ai/k8sgpt@$K8SGPT_VERSION" | jq -r .Dir)
  have=$(go env GOVERSION | sed 's/^go//')
  want=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$src/go.mod")
  if go_newer "$want" "$have"; then
    log "go.mod needs Go $want, this machine has $have: using GOTOOLCHAIN=$NEWER_GO"
    export GOTOOLCHAIN=$NEWER_GO
  fi
  rm -rf "$root.partial"
  mkdir -p "$root.partial/bin"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/"
  chmod -R u+w "$work"
  # The main package is the module root (main.go); main.version feeds `k8sgpt version`.
  (cd "$work" && CGO_ENABLED=0 go build \
    -ldflags "-s -w -X main.version=${K8SGPT_VERSION#v} -X main.commit=$K8SGPT_VERSION" \
    -o "$root.partial/bin/k8sgpt" .)
  rm -rf "$work"
  trap - EXIT
  mv "$root.partial" "$root"
  log "k8sgpt $K8SGPT_VERSION built: $bin"
}

case "${1:-}" in
  build) build ;;
  path)
    [ -x "$bin" ] || build
    printf '%s\n' "$bin"
    ;;
  *)
    log "usage: $0 build|path"
    exit 2
    ;;
esac
