# Cete: build, test and package over cargo.
#
#   make build     release binaries, copied to ./bin/ (cete, cete-server)
#   make run       run one node with the defaults (ARGS="--id=node2 ..." to pass flags)
#   make test      fmt check, import check, clippy, build, unit + integration tests, the dashboard in a
#                  browser, openapi, API and helm checks, the image test (podman)
#   make dist      dist/cete-<version>-<target triple>.tar.gz
#   make docker-build  the image cete:<version> (DOCKER=podman to use podman)
#   make bench-compare   Cete against etcd 3.4 on this machine, one table of ratios
#                  (benchmarks/compare.py; slow, needs a quiet machine; not in `make test`)
#   make fmt | clippy | clean | bench | help
#
# Variables:
#   CARGO_TARGET_DIR  honoured if set (CI points it at a cache outside the clone)
#   ARGS              extra arguments for `make run` (cete-server flags)
#   CETE_SOAK=1       also run the long soak tests in `make test`
#   BENCH_ADDRESS     node HTTP address for `make bench` (default $CETE_ADDRESS, else
#                     http://127.0.0.1:8000)
#   BENCH_ARGS        extra `cete bench` flags, e.g. "-c 32 -d 30 --read-ratio 0.9"
#   BENCH_COMPARE_ARGS  flags for benchmarks/compare.py, e.g. "--smoke" or "--duration 5"
#   SKIP_SETUP=1      do not run scripts/setup.sh first
#   CETE_TOOLS_VENV   virtual environment of the API tools (scripts/setup-api-tools.sh;
#                     default ~/.cache/cete-tools/venv)
#   SCHEMATHESIS_ARGS extra schemathesis options for `make api-check`, e.g. --max-examples=200

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build
# Phases run in order even under `make -j` (cargo parallelises the builds itself).
.NOTPARALLEL:

CARGO   ?= cargo
PYTHON  ?= python3
DOCKER  ?= docker
ARGS    ?=
BENCH_ADDRESS ?= $(or $(CETE_ADDRESS),http://127.0.0.1:8000)
BENCH_ARGS    ?=
BENCH_COMPARE_ARGS ?=
BINS    := cete cete-server
TOOLS_VENV ?= $(or $(CETE_TOOLS_VENV),$(HOME)/.cache/cete-tools/venv)

# `make build CARGO_TARGET_DIR=...` works like the environment variable.
ifdef CARGO_TARGET_DIR
export CARGO_TARGET_DIR
endif

# The original Go Cete built for other platforms with `make GOOS=darwin build`. This one builds
# with cargo for this machine only: refuse another GOOS/GOARCH rather than ignore it.
ifdef GOOS
ifneq ($(GOOS),$(shell uname -s | tr A-Z a-z))
$(error GOOS=$(GOOS): this Cete builds with cargo for this machine ($(shell uname -s | tr A-Z a-z)) only; run `make build` (or `make dist`) without GOOS, on the machine the binaries are for)
endif
endif
ifdef GOARCH
ifneq ($(GOARCH),$(subst aarch64,arm64,$(subst x86_64,amd64,$(shell uname -m))))
$(error GOARCH=$(GOARCH): this Cete builds with cargo for this machine ($(subst aarch64,arm64,$(subst x86_64,amd64,$(shell uname -m)))) only; run `make build` (or `make dist`) without GOARCH, on the machine the binaries are for)
endif
endif

# The integration tests read CETE_SOAK; pass it through when it is set.
ifdef CETE_SOAK
export CETE_SOAK
endif

# tests/api/test_schemathesis.py reads SCHEMATHESIS_ARGS.
ifdef SCHEMATHESIS_ARGS
export SCHEMATHESIS_ARGS
endif

# Computed only in the recipes that need them (cargo metadata/rustc cost a moment).
# ($(shell) does not see command-line variables in make < 4.4: pass CARGO_TARGET_DIR on.)
target_dir = $(shell $(if $(CARGO_TARGET_DIR),CARGO_TARGET_DIR='$(CARGO_TARGET_DIR)') $(CARGO) metadata --format-version 1 --no-deps | \
	$(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
version = $(shell $(CARGO) metadata --format-version 1 --no-deps | \
	$(PYTHON) -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cete-server"))')
triple = $(shell rustc -vV | sed -n 's/^host: //p')

# Each phase prints its header and notes its start time, so that `make test` can end with a
# table of phase times (a phase lasts until the next one starts).
PHASE_LOG := $(CURDIR)/.make-phases
phase = @printf '\n==> %s\n' $(1); printf '%s\t%s\n' "$$(date +%s.%N)" $(1) >> '$(PHASE_LOG)'

.PHONY: help setup build run test phase-reset fmt fmt-check import-check clippy test-build test-cargo \
	browser-test openapi-check api-check helm-check image-test dist docker-build bench bench-compare clean \
	tools-start tools

help:
	@sed -n '1,/^$$/p' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

setup:
ifndef SKIP_SETUP
	$(call phase,"setup: scripts/setup.sh")
	@scripts/setup.sh
endif

# The phases after the build need more tools (scripts/setup-tools.sh: the API tools, chromium,
# helm, podman). `make test` starts their installs here, in the background while cargo
# builds, and the first phase that needs them waits for them (`tools`). RUN tells this make
# run's installs from an earlier run's.
SETUP_RUN := $(shell date +%s.%N)

tools-start:
ifndef SKIP_SETUP
	@scripts/setup-tools.sh start '$(SETUP_RUN)'
endif

tools:
ifndef SKIP_SETUP
	$(call phase,"tools: scripts/setup-tools.sh wait (the installs tools-start began)")
	@scripts/setup-tools.sh wait '$(SETUP_RUN)'
endif

build: setup
	$(call phase,"build: cargo build --release --workspace --bins")
	$(CARGO) build --release --workspace --bins
	@mkdir -p bin
	@td='$(target_dir)'; for b in $(BINS); do cp -f "$$td/release/$$b" bin/; done
	@echo "binaries: $(addprefix ./bin/,$(BINS))"

run: setup
	$(call phase,"run: cargo run --release -p cete-server -- ARGS (Ctrl-C stops the node)")
	$(CARGO) run --release -p cete-server -- $(ARGS)

test: phase-reset setup tools-start fmt-check import-check clippy test-build test-cargo browser-test openapi-check api-check helm-check image-test
	$(call phase,"test: all checks passed")
	@printf '\n==> phase times\n'
	@awk -F'\t' 'NR > 1 { split(name, n, ":"); printf "  %-10s %8.1f s\n", n[1], $$1 - prev } \
		NR == 1 { first = $$1 } { prev = $$1; name = $$2 } \
		END { printf "  %-10s %8.1f s\n", "total", prev - first }' '$(PHASE_LOG)'

phase-reset:
	@: > '$(PHASE_LOG)'

fmt-check:
	$(call phase,"fmt: cargo fmt --all -- --check")
	$(CARGO) fmt --all -- --check

fmt:
	$(CARGO) fmt --all

# Imports in server/src point down the layers of docs/architecture.md.
import-check:
	$(call phase,"imports: scripts/check-imports.py")
	$(PYTHON) scripts/check-imports.py

clippy:
	$(call phase,"clippy: cargo clippy --workspace --all-targets -- -D warnings")
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The integration tests run the real binaries, which they find beside the test
# executable (<target>/debug/): build them in the same profile first.
test-build:
	$(call phase,"build: cargo build --workspace --bins")
	$(CARGO) build --workspace --bins

test-cargo: test-build
	$(call phase,"test: cargo test --workspace -- --test-threads=2 (CETE_SOAK=$(if $(CETE_SOAK),$(CETE_SOAK),unset))")
	$(CARGO) test --workspace -- --test-threads=2

# The dashboard (/ui/) in headless Chromium on a 3-node cluster of the debug binaries.
browser-test: test-build tools
	$(call phase,"browser: $(PYTHON) tests/browser/test_dashboard.py")
	$(PYTHON) tests/browser/test_dashboard.py --bin-dir '$(target_dir)/debug'

openapi-check:
	$(call phase,"openapi: $(PYTHON) tests/openapi_check.py")
	$(PYTHON) tests/openapi_check.py

# schemathesis, a client generated from openapi.yaml and Python's HTTP clients against a
# live debug node (tests/api, run with the tools' own Python: scripts/setup-api-tools.sh).
api-check: test-build tools
	$(call phase,"api: tests/api (schemathesis, generated client, Python HTTP clients) against a live node")
	CETE_SERVER_BIN='$(target_dir)/debug/cete-server' '$(TOOLS_VENV)/bin/python' -m unittest discover -s tests/api -t tests/api -v

# The real helm and kubernetes-validate, installed by scripts/setup-helm.sh.
helm-check: tools
	$(call phase,"helm: scripts/check-helm.sh (helm lint and template, kubernetes-validate, values.schema.json)")
	scripts/check-helm.sh

# The image built with podman from the Dockerfile's prebuilt target (the debug binaries
# test-build made), the README's Docker commands, and a cluster started the chart's way.
# podman, the base image and hadolint come from scripts/setup-image.sh (root, apt).
image-test: setup test-build tools
	$(call phase,"image: tests/image/test_image.py (hadolint, podman build, README commands, chart-style cluster)")
	$(PYTHON) tests/image/test_image.py --bin-dir '$(target_dir)/debug'

dist: build
	$(call phase,"dist: dist/cete-$(version)-$(triple).tar.gz")
	@name='cete-$(version)-$(triple)'; stage="dist/$$name"; \
	rm -rf "$$stage" "$$stage.tar.gz"; mkdir -p "$$stage"; \
	cp $(addprefix bin/,$(BINS)) README.md openapi.yaml "$$stage/"; \
	tar -C dist -czf "$$stage.tar.gz" "$$name"; rm -rf "$$stage"; \
	echo "wrote $$stage.tar.gz"; tar -tzf "$$stage.tar.gz"

# The image, as the original's `make docker-build` made it (DOCKER=podman works too).
docker-build:
	$(call phase,"docker-build: $(DOCKER) build -t cete:$(version) .")
	$(DOCKER) build -t cete:$(version) .

# Load-tests a running node or cluster (start one with `make run` first).
bench:
	$(call phase,"bench: cete bench against $(BENCH_ADDRESS)")
	$(CARGO) run --release -p cete-cli -- --address '$(BENCH_ADDRESS)' bench $(BENCH_ARGS)

# Installs etcd if missing, builds the release binaries, runs both systems.
bench-compare:
	$(call phase,"bench-compare: benchmarks/compare.py $(BENCH_COMPARE_ARGS)")
	$(PYTHON) benchmarks/compare.py $(BENCH_COMPARE_ARGS)

clean:
	$(CARGO) clean
	rm -rf bin dist
