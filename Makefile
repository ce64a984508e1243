# auto-agent: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup demo demo-down test lint unit fuzz bench e2e integrations release images push install-plugin cluster-build cluster-up cluster-down node-build crdgen clean

## setup: install what the build needs (Debian packages, cargo components); idempotent
setup:
	scripts/setup.sh

## demo: the main job: a real local control plane with the agent reporting a crash-looping pod
## (e2e/tests/demo.rs runs this target and checks what it proves, so `make test` covers it)
demo: setup
	$(CARGO) run --quiet -p auto-agent-e2e --bin demo

## demo-down: stop the local control plane the demo started
demo-down: cluster-down

## test: what CI runs: formatting, clippy, unit tests, e2e tests on the real local control plane,
## then the release binaries as the Dockerfiles build them
test: setup lint unit e2e release

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --exclude auto-agent-e2e

## fuzz: the property-based fuzz targets (`fuzz_*`: wire messages, CRI logs, policies, quantities,
## image references, registry challenges, the values editor) with FUZZ_CASES cases each; `make test`
## runs them with proptest's 256 (docs/RELIABILITY.md)
FUZZ_CASES ?= 20000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --workspace --exclude auto-agent-e2e fuzz_

## bench: the scale benchmark (not in CI; about 40 minutes): the agent on a control plane of its own
## with up to 1,000 KWOK nodes and 30,000 pods, beside the naive design and k8sgpt (built and
## cached by scripts/k8sgpt.sh); writes docs/bench/*.csv, *.svg and its section of
## docs/BENCHMARKS.md. BENCH_SIZES=NODESxPODS,... chooses the sizes.
bench: setup cluster-build
	scripts/k8sgpt.sh build
	$(CARGO) run --release --locked -p auto-agent-e2e --bin bench-scale

## e2e: start (or reuse) the local control plane, building its binaries on a cache miss, build (or
## reuse) the real node's binaries and the escalation tests' servers, and run the e2e tests (among
## them `make demo`, through e2e/tests/demo.rs, and the real-node test, e2e/tests/real_node.rs)
e2e: cluster-up node-build integrations
	@# a real node left by an interrupted run would take the chart's DaemonSet pods of other tests
	e2e/node down
	$(CARGO) test -p auto-agent-e2e

## integrations: Gitea, the local model server and the contract servers' environment, cached
## whole-or-absent under ~/.cache/auto-agent (e2e/integrations)
integrations:
	e2e/integrations build

## release: the images' build step run natively (no container engine here): each binary on its own,
## locked, with the workspace's release profile, exactly as Dockerfile.sensor / Dockerfile.controller
release:
	$(CARGO) build --release --locked -p auto-agent-sensor
	$(CARGO) build --release --locked -p auto-agent-controller
	$(CARGO) build --release --locked -p auto-agent-kubectl
	$${CARGO_TARGET_DIR:-target}/release/kubectl-auto_agent --version
	$${CARGO_TARGET_DIR:-target}/release/auto-agent-sensor --version
	$${CARGO_TARGET_DIR:-target}/release/auto-agent-controller --version
	ls -l $${CARGO_TARGET_DIR:-target}/release/auto-agent-sensor $${CARGO_TARGET_DIR:-target}/release/auto-agent-controller

## images: the sensor and controller images without a container engine: the release binaries in
## OCI image layouts under target/images/ (scripts/images.sh; same content as the Dockerfiles')
images:
	scripts/images.sh build

## push: push them as $(REGISTRY)/auto-agent-sensor:$(TAG) and $(REGISTRY)/auto-agent-controller:$(TAG)
TAG ?=
push:
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host[:port][/path] [TAG=...]"; exit 2; }
	scripts/images.sh push $(REGISTRY) $(TAG)

## install-plugin: the kubectl plugin (`kubectl auto-agent`, docs/KUBECTL.md) into $(PREFIX)/bin
PREFIX ?= $(HOME)/.local
install-plugin:
	$(CARGO) build --release --locked -p auto-agent-kubectl
	install -D -m 0755 $${CARGO_TARGET_DIR:-target}/release/kubectl-auto_agent $(PREFIX)/bin/kubectl-auto_agent
	@echo "installed $(PREFIX)/bin/kubectl-auto_agent: try 'kubectl auto-agent --help' (with $(PREFIX)/bin on PATH)"

cluster-build:
	e2e/cluster build

cluster-up:
	e2e/cluster up

cluster-down:
	-e2e/node down
	e2e/cluster down

## node-build: kubelet, kube-proxy, containerd, the CNI plugins, CoreDNS, pause (e2e/node), cached
node-build:
	e2e/node build

## crdgen: regenerate crds/ and charts/auto-agent/crds/ from the Rust types
crdgen:
	$(CARGO) xtask crdgen

clean:
	$(CARGO) clean
