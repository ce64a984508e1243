# auto-agent: the two commands a newcomer needs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup test lint unit crdgen clean

## setup: install what the build needs (Debian packages, cargo components); idempotent
setup:
	scripts/setup.sh

## test: what CI runs: formatting, clippy, and every test
test: setup lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

## crdgen: regenerate crds/ and charts/auto-agent/crds/ from the Rust types
crdgen:
	$(CARGO) xtask crdgen

clean:
	$(CARGO) clean
