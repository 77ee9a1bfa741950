# gracegate — the two commands that matter: `make run` and `make test`.

SHELL   := /bin/bash
CARGO   ?= cargo
CERTS   ?= certs
LISTEN  ?= 127.0.0.1:8443
ADMIN   ?= 127.0.0.1:8080
VENV    ?= .venv
MOTO_VERSION ?= 5.2.5

.PHONY: run test test-rules certs build release bench lint fmt clean review install install-bin image image-push dev-bin fuzz fuzz-smoke waiter waiter-path

# Where cargo puts its output (CARGO_TARGET_DIR, else target/).
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
DEV_BIN := $(TARGET_DIR)/debug/gracegate

## run: serve the webhook on https://$(LISTEN)/mutate (admin on http://$(ADMIN)) with
## dev certificates and the example objects; no cluster needed.
run: dev-bin $(CERTS)/tls.crt
	$(DEV_BIN) webhook --listen $(LISTEN) --admin-listen $(ADMIN) \
	  --tls-cert $(CERTS)/tls.crt --tls-key $(CERTS)/tls.key \
	  --objects examples/objects --shutdown-delay-seconds 0

## dev-bin: the debug binary, built with the same dependency features as `make test` (the
## example target pulls in the dev-dependencies' features, tokio's test-util among them), so
## `make run` after `make test` compiles nothing, and the other way round. A plain
## `cargo run` resolves features without them and recompiles ~40 crates.
dev-bin:
	$(CARGO) build --locked --bin gracegate --example floor

## test: install what the tests need, then run every test: unit, integration, and the
## criterion bench once as a smoke test (the other benches are measurements: `make bench`).
## A plain `cargo test` runs the same tests except the ELBv2 conformance test against moto
## (a Python ELBv2 emulator), which it reports as ignored; here it runs from $(VENV), in
## the same build, and the Prometheus rules are checked and unit-tested with promtool.
## Then the waiter's own tests (`-p gracegate-wait`: the root's `cargo test` only tests the
## root package), and its static-binary tests, which a plain `cargo test` reports as ignored,
## on the binary `make waiter` built, and the drain wait end to end with that waiter against
## a real gracegate listener and watcher (tests/watcher/real_waiter.rs). The last line sums
## every test binary's result (each ignored-then-run test counted once, where it ran).
test: $(VENV)/bin/moto_server test-rules waiter
	@mkdir -p target
	set -o pipefail; { $(CARGO) test --locked --lib --bins --tests --examples --bench inject && \
	  MOTO_SERVER=$(abspath $(VENV))/bin/moto_server $(CARGO) test --locked --test aws \
	    -- --ignored moto_conformance && \
	  $(CARGO) test --locked -p gracegate-wait && \
	  $(WAITER_STATIC_TESTS) && \
	  GRACEGATE_WAIT_BIN=$(abspath $(WAITER_BIN)) $(CARGO) test --locked --test watcher \
	    -- --ignored real_waiter; } 2>&1 | tee target/test.log
	$(MAKE) --no-print-directory fuzz-smoke
	@awk '/^test result:/ { passed += $$4; failed += $$6; ignored += $$8 } /^SKIPPED / { print } END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test.log

## waiter: the drain-wait waiter `gracegate-wait` (waiter/) as the image ships it: static
## (musl), for this machine's architecture, in the size-tuned `waiter` profile, at
## $(WAITER_BIN) (`make -s waiter-path` prints it). Adds the Rust musl target when
## rustup lacks it. ring compiles a few C and assembly files; the machine's gcc does (they
## need no musl headers), so no musl-gcc is needed: WAITER_CC=musl-gcc to use it anyway.
WAITER_TARGET ?= $(shell uname -m)-unknown-linux-musl
WAITER_CC     ?= gcc
WAITER_BIN    := $(TARGET_DIR)/$(WAITER_TARGET)/waiter/gracegate-wait

waiter:
	@if command -v rustup >/dev/null; then \
	  rustup target list --installed | grep -qx '$(WAITER_TARGET)' || rustup target add $(WAITER_TARGET); \
	else echo "no rustup: the Rust standard library for $(WAITER_TARGET) must already be installed"; fi
	CC_$(subst -,_,$(WAITER_TARGET))=$(WAITER_CC) $(CARGO) build --locked -p gracegate-wait \
	  --profile waiter --target $(WAITER_TARGET)
	@echo "$(WAITER_BIN): $$(stat -c %s $(WAITER_BIN)) bytes"

waiter-path:
	@echo $(abspath $(WAITER_BIN))

# The static-binary tests (size, no loader, the empty root). The empty-root test needs root
# (a network namespace, chroot): where `unshare --net true` fails it is skipped, and the log
# and the summary say so (it stays reported as ignored, not passed).
WAITER_STATIC_TESTS = ( \
  if unshare --net true 2>/dev/null; then skip=; else \
    echo "SKIPPED the_static_waiter_works_in_an_empty_root: \`unshare --net true\` is not permitted here (it needs root)"; \
    skip="--skip the_static_waiter_works_in_an_empty_root"; fi; \
  GRACEGATE_WAIT_BIN=$(abspath $(WAITER_BIN)) $(CARGO) test --locked -p gracegate-wait \
    --test static_binary -- --ignored $$skip )

## test-rules: `promtool check rules` and `promtool test rules` on the PrometheusRule in
## manifests/monitoring/ (its `spec`, which is a plain Prometheus rule file).
TOOLS    ?= .tools
PROMTOOL ?= $(or $(shell command -v promtool 2>/dev/null),$(TOOLS)/bin/promtool)
RULES_OUT = target/monitoring
test-rules: $(PROMTOOL)
	@mkdir -p $(RULES_OUT)
	sed -n '/^spec:$$/,$$p' manifests/monitoring/prometheusrule.yaml | tail -n +2 | sed 's/^  //' \
	  > $(RULES_OUT)/gracegate.rules.yaml
	cp manifests/monitoring/rules_test.yaml $(RULES_OUT)/
	$(PROMTOOL) check rules $(RULES_OUT)/gracegate.rules.yaml
	$(PROMTOOL) test rules $(RULES_OUT)/rules_test.yaml

# promtool from Debian's `prometheus` package: only that binary is unpacked into $(TOOLS)
# (no daemon, service or web assets installed). `apt-get update` first when the package lists
# do not know the package yet (a fresh machine; needs root).
$(TOOLS)/bin/promtool:
	@rm -rf $(TOOLS)/deb && mkdir -p $(TOOLS)/deb $(TOOLS)/bin
	cd $(TOOLS)/deb && { apt-get download prometheus 2>/dev/null || \
	  { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/deb/root
	install -m 0755 $(TOOLS)/deb/root/usr/bin/promtool $@
	rm -rf $(TOOLS)/deb
	$@ --version

$(VENV)/bin/moto_server:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==$(MOTO_VERSION)' boto3

## certs: a CA and a serving certificate in $(CERTS)/ (see certs/README.md).
## A CA already in $(CERTS)/ is kept (see certs/README.md for rotating it).
certs $(CERTS)/tls.crt: dev-bin
	$(DEV_BIN) certs --service gracegate --namespace gracegate-system --out $(CERTS)

## review: post a recorded AdmissionReview to a running `make run` and print the decoded patch.
review:
	@curl -s -o /dev/null --cacert $(CERTS)/ca.crt https://$(LISTEN)/mutate || \
	  { echo "no webhook answers on https://$(LISTEN) with $(CERTS)/ca.crt: is \`make run\` running?" >&2; exit 1; }
	@curl -sS --cacert $(CERTS)/ca.crt -H 'Content-Type: application/json' \
	  --data-binary @tests/fixtures/admission/create-deployment-pod.json \
	  https://$(LISTEN)/mutate | python3 -c 'import base64,json,sys; r=json.load(sys.stdin)["response"]; print(json.dumps({k: v for k, v in r.items() if k != "patch"}, indent=2)); print(json.dumps(json.loads(base64.b64decode(r.get("patch", "W10="))), indent=2))'

## image: the Dockerfile's image for this machine's platform, with docker or podman.
## image-push: every platform in PLATFORMS as one multi-arch manifest, pushed to IMAGE.
VERSION          ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE            ?= ghcr.io/gracegate/gracegate:$(VERSION)
PLATFORMS        ?= linux/amd64,linux/arm64
CONTAINER_ENGINE ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)

image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image needs docker or podman" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -t $(IMAGE) .

image-push:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image-push needs docker or podman" >&2; exit 1; }
	@case "$$(basename $(CONTAINER_ENGINE))" in \
	  docker) set -x; $(CONTAINER_ENGINE) buildx build --platform $(PLATFORMS) -t $(IMAGE) --push . ;; \
	  *) set -x; $(CONTAINER_ENGINE) build --platform $(PLATFORMS) --manifest $(IMAGE) . && \
	     $(CONTAINER_ENGINE) manifest push --all $(IMAGE) docker://$(IMAGE) ;; \
	esac

build:
	$(CARGO) build --locked

## install: build the release binary and put it in $(PREFIX)/bin as `gracegate` and as the
## kubectl plugin `kubectl-gracegate` (so `kubectl gracegate audit` works with $(PREFIX)/bin
## on PATH). `install-bin BIN=path` installs an already built binary.
PREFIX ?= $(HOME)/.local
BIN    ?= $(or $(CARGO_TARGET_DIR),target)/release/gracegate
install: release
	$(MAKE) --no-print-directory install-bin BIN=$(BIN) PREFIX=$(PREFIX)

install-bin:
	install -d $(PREFIX)/bin
	install -m 0755 $(BIN) $(PREFIX)/bin/gracegate
	ln -sf gracegate $(PREFIX)/bin/kubectl-gracegate

release:
	$(CARGO) build --release --locked

## bench: every benchmark (see BENCHMARKS.md); installs the load generator oha first. With
## valgrind on PATH, benches/review_instructions.sh counts the instructions per review of
## gracegate and the floor (exact, unlike the wall-clock runs). The last,
## benches/webhook_ab.sh, prints gracegate's same-run ratio to the floor server for the
## 4 KB and 26 KB reviews (wrk when it is on PATH, else oha; BASE=binary and
## KUBE_EXAMPLE=binary add a baseline and the kube-rs admission example to the same run).
BENCH_TOOLS ?= .bench-tools
OHA_VERSION ?= 1.16.0
bench: $(BENCH_TOOLS)/bin/oha
	$(CARGO) bench --locked --bench inject
	$(CARGO) bench --locked --bench watcher_memory
	$(CARGO) bench --locked --bench watcher_latency
	$(CARGO) bench --locked --bench watcher_records
	$(CARGO) bench --locked --bench first_review
	$(CARGO) bench --locked --bench drain_waits
	OHA=$(abspath $(BENCH_TOOLS))/bin/oha benches/webhook_load.sh
	@if command -v valgrind >/dev/null; then benches/review_instructions.sh; \
	  else echo "valgrind is not on PATH: no instructions per review"; fi
	OHA=$(abspath $(BENCH_TOOLS))/bin/oha BUILD=0 benches/webhook_ab.sh

$(BENCH_TOOLS)/bin/oha:
	$(CARGO) install oha --locked --version $(OHA_VERSION) --root $(BENCH_TOOLS)

## lint: rustfmt, and clippy over every target of the workspace (gracegate and the waiter)
## with the test build's features. CI runs it after `make test`; clippy checks the
## dependencies in check mode (metadata only, not the test build's artifacts): ~3
## CPU-minutes on a cold target directory, seconds once cached.
## fuzz: every fuzz target (fuzz/, cargo-fuzz + libFuzzer) for FUZZ_SECONDS each, seeded from
## tests/fixtures; findings land in fuzz/artifacts/. Results in BENCHMARKS.md ("Fuzzing").
## fuzz-smoke: the same for FUZZ_SMOKE_SECONDS each, run by `make test`.
## cargo-fuzz is installed into $(FUZZ_TOOLS); it passes nightly-only flags to rustc, which
## RUSTC_BOOTSTRAP=1 lets the stable toolchain take. The fuzz build has its own target dir.
FUZZ_TOOLS ?= .fuzz-tools
CARGO_FUZZ_VERSION ?= 0.13.2
FUZZ_SECONDS ?= 120
FUZZ_SMOKE_SECONDS ?= 3
FUZZ_RUN = env -u CARGO_TARGET_DIR RUSTC_BOOTSTRAP=1 \
  CARGO_FUZZ=$(abspath $(FUZZ_TOOLS))/bin/cargo-fuzz fuzz/run.sh

fuzz: $(FUZZ_TOOLS)/bin/cargo-fuzz
	$(FUZZ_RUN) $(FUZZ_SECONDS)

fuzz-smoke: $(FUZZ_TOOLS)/bin/cargo-fuzz
	$(FUZZ_RUN) $(FUZZ_SMOKE_SECONDS)

$(FUZZ_TOOLS)/bin/cargo-fuzz:
	$(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION) --root $(FUZZ_TOOLS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
