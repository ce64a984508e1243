#!/usr/bin/env bash
# The sensor and controller images without a container engine (`make images`, `make push`).
#
#   scripts/images.sh build              release binaries -> OCI image layouts in target/images/
#   scripts/images.sh push REGISTRY [TAG] push them as REGISTRY/auto-agent-{sensor,controller}:TAG
#   scripts/images.sh busybox REGISTRY   a workload image from Debian's busybox-static (e2e tests)
#   scripts/images.sh static REF BIN     an image of one static binary as its entrypoint (the pause
#                                        container of e2e/node)
#   scripts/images.sh copy FROM TO       copy an image between registries (plain HTTP allowed)
#
# Each image is what the Dockerfiles build, assembled from the same release binary: a runtime
# layer equal in content to distroless cc-debian12:nonroot's part the binary uses (this machine's
# Debian 12 glibc and libgcc, CA certificates, passwd/group naming 65532 nonroot), then the binary
# in /usr/local/bin, run as 65532:65532. Layers are reproducible (sorted, fixed times, gzip -n).
# crane (go-containerregistry) pushes them; it is built once from the Go module proxy and cached.
set -euo pipefail

CRANE_VERSION=${CRANE_VERSION:-v0.21.9}
CACHE=${AUTO_AGENT_CACHE:-$HOME/.cache/auto-agent}
CRANE=$CACHE/crane-$CRANE_VERSION/crane
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/images
VERSION=$(awk -F'"' '/^appVersion:/ {print $2}' "$ROOT/charts/auto-agent/Chart.yaml")
EPOCH=${SOURCE_DATE_EPOCH:-0}

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

crane_() {
  if [ ! -x "$CRANE" ]; then
    log "building crane $CRANE_VERSION (Go module proxy; cached)"
    local tmp
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/.crane.XXXXXX")
    GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$tmp" \
      go install -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
    rm -rf "$CACHE/crane-$CRANE_VERSION"
    mv "$tmp" "$CACHE/crane-$CRANE_VERSION"
  fi
  "$CRANE" "$@"
}

# A reproducible gzipped tar of a directory; prints its sha256 digest and its diff id.
layer() {
  local dir=$1 out=$2
  tar -C "$dir" --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner -cf "$out.tar" .
  gzip -n -9 -c "$out.tar" > "$out"
  echo "$(sha256sum < "$out" | cut -d' ' -f1) $(sha256sum < "$out.tar" | cut -d' ' -f1)"
  rm -f "$out.tar"
}

# The runtime layer: the shared libraries the binary links (from this machine's Debian), CA
# certificates and the nonroot user, as distroless cc provides them.
runtime_root() {
  local bin=$1 root=$2 lib
  mkdir -p "$root"/{etc/ssl/certs,tmp,home/nonroot}
  chmod 1777 "$root/tmp"
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
}

# An OCI image layout in $OUT/$name from layer directories; entrypoint, user and ports as given.
oci_layout() {
  local name=$1 entrypoint=$2 user=$3 ports=$4; shift 4
  local dir=$OUT/$name blobs digests=() diffids=() sizes=() d
  rm -rf "$dir"; mkdir -p "$dir/blobs/sha256"
  blobs=$dir/blobs/sha256
  for d in "$@"; do
    local tmp digest diffid
    tmp=$(mktemp "$dir/layer.XXXXXX")
    read -r digest diffid < <(layer "$d" "$tmp")
    mv "$tmp" "$blobs/$digest"
    digests+=("$digest"); diffids+=("sha256:$diffid"); sizes+=("$(stat -c %s "$blobs/$digest")")
  done
  local config cdigest manifest mdigest
  config=$(jq -cn --arg ep "$entrypoint" --arg user "$user" --arg ports "$ports" --arg name "$name" \
    --arg version "$VERSION" --args '{
      architecture: "amd64", os: "linux",
      config: {
        Entrypoint: [$ep], User: $user, WorkingDir: "/",
        Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        ExposedPorts: ($ports | split(" ") | map(select(. != "") | {key: (. + "/tcp"), value: {}}) | from_entries),
        Labels: {"org.opencontainers.image.title": $name, "org.opencontainers.image.version": $version,
                 "org.opencontainers.image.source": "https://github.com/auto-agent/auto-agent",
                 "org.opencontainers.image.licenses": "Apache-2.0"}
      },
      rootfs: {type: "layers", diff_ids: $ARGS.positional},
      history: [$ARGS.positional[] | {created_by: "scripts/images.sh"}]
    }' "${diffids[@]}")
  printf '%s' "$config" > "$dir/config.json"
  cdigest=$(sha256sum < "$dir/config.json" | cut -d' ' -f1)
  mv "$dir/config.json" "$blobs/$cdigest"
  local layers="[]" i
  for i in "${!digests[@]}"; do
    layers=$(jq -c --arg d "sha256:${digests[$i]}" --argjson s "${sizes[$i]}" \
      '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<< "$layers")
  done
  manifest=$(jq -cn --arg cd "sha256:$cdigest" --argjson cs "$(stat -c %s "$blobs/$cdigest")" --argjson layers "$layers" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs}, layers: $layers}')
  printf '%s' "$manifest" > "$dir/manifest.json"
  mdigest=$(sha256sum < "$dir/manifest.json" | cut -d' ' -f1)
  local msize
  msize=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$blobs/$mdigest"
  printf '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  jq -cn --arg d "sha256:$mdigest" --argjson s "$msize" --arg v "$VERSION" \
    '{schemaVersion: 2, manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
      platform: {architecture: "amd64", os: "linux"}, annotations: {"org.opencontainers.image.ref.name": $v}}]}' > "$dir/index.json"
  log "$name: $(du -sb "$blobs" | cut -f1) bytes in $(ls "$blobs" | wc -l) blobs, manifest sha256:$mdigest"
}

# Run from a test or a build script, cargo's variables for that process (CARGO_MANIFEST_DIR,
# CARGO_PKG_*, ...) would change what the release build fingerprints and rebuild it from scratch.
clean_cargo_env() {
  local v
  for v in $(compgen -e); do
    case $v in
      CARGO_HOME|CARGO_TARGET_DIR) ;;
      CARGO|CARGO_*|RUSTC|RUSTC_*|RUSTDOC|OUT_DIR|TARGET|HOST|NUM_JOBS|OPT_LEVEL|PROFILE|DEBUG) unset "$v" ;;
    esac
  done
}

cmd_build() {
  command -v jq >/dev/null || die "jq is required (make setup installs it)"
  local name bin work
  clean_cargo_env
  for name in sensor controller; do
    (cd "$ROOT" && cargo build --release --locked -p "auto-agent-$name" --quiet)
  done
  mkdir -p "$OUT"
  for name in sensor controller; do
    bin=$TARGET/release/auto-agent-$name
    work=$(mktemp -d)
    runtime_root "$bin" "$work/runtime"
    mkdir -p "$work/app/usr/local/bin"
    install -m 0755 "$bin" "$work/app/usr/local/bin/auto-agent-$name"
    local ports="8080"
    [ "$name" = controller ] && ports="9443 8080"
    oci_layout "auto-agent-$name" "/usr/local/bin/auto-agent-$name" 65532:65532 "$ports" "$work/runtime" "$work/app"
    rm -rf "$work"
  done
}

cmd_push() {
  local registry=${1:-} tag=${2:-$VERSION} name
  [ -n "$registry" ] || die "usage: scripts/images.sh push REGISTRY [TAG]"
  for name in auto-agent-sensor auto-agent-controller; do
    [ -f "$OUT/$name/index.json" ] || die "$OUT/$name is missing: run 'make images' first"
    local insecure=()
    case $registry in localhost:*|127.0.0.1:*) insecure=(--insecure) ;; esac
    crane_ push "${insecure[@]}" "$OUT/$name" "$registry/$name:$tag" >/dev/null
    log "pushed $registry/$name:$tag"
  done
}

# A workload image for the real-node tests: Debian's busybox-static with its applets linked.
cmd_busybox() {
  local registry=${1:-} work applet
  [ -n "$registry" ] || die "usage: scripts/images.sh busybox REGISTRY"
  [ -x /bin/busybox ] || die "busybox-static is not installed (make setup installs it)"
  work=$(mktemp -d)
  mkdir -p "$work/root/bin" "$work/root/tmp"
  chmod 1777 "$work/root/tmp"
  cp /bin/busybox "$work/root/bin/busybox"
  for applet in sh sleep echo cat ls head tail dd wget nslookup true false yes env; do
    ln -s busybox "$work/root/bin/$applet"
  done
  OUT=$work/out oci_layout busybox /bin/sh 0:0 "" "$work/root"
  crane_ push --insecure "$work/out/busybox" "$registry/busybox:1.35" >/dev/null
  rm -rf "$work"
  log "pushed $registry/busybox:1.35"
}

cmd_static() {
  local ref=${1:-} bin=${2:-} work name
  [ -n "$ref" ] && [ -x "$bin" ] || die "usage: scripts/images.sh static REF BINARY"
  name=$(basename "$bin")
  work=$(mktemp -d)
  mkdir -p "$work/root"
  install -m 0755 "$bin" "$work/root/$name"
  OUT=$work/out oci_layout "$name" "/$name" 0:0 "" "$work/root"
  crane_ push --insecure "$work/out/$name" "$ref" >/dev/null
  rm -rf "$work"
}

case "${1:-}" in
  copy) shift; [ $# -eq 2 ] || die "usage: scripts/images.sh copy FROM TO"; crane_ copy --insecure "$1" "$2" >/dev/null ;;
  build) cmd_build ;;
  static) shift; cmd_static "$@" ;;
  push) shift; cmd_push "$@" ;;
  busybox) shift; cmd_busybox "$@" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
