# gracegate — the two commands that matter: `make run` and `make test`.

SHELL   := /bin/bash
CARGO   ?= cargo
CERTS   ?= certs
LISTEN  ?= 127.0.0.1:8443
ADMIN   ?= 127.0.0.1:8080
VENV    ?= .venv
MOTO_VERSION ?= 5.2.5

.PHONY: run test test-rules certs build release bench lint fmt clean review install install-bin

## run: serve the webhook on https://$(LISTEN)/mutate (admin on http://$(ADMIN)) with
## dev certificates and the example objects; no cluster needed.
run: $(CERTS)/tls.crt
	$(CARGO) run -- webhook --listen $(LISTEN) --admin-listen $(ADMIN) \
	  --tls-cert $(CERTS)/tls.crt --tls-key $(CERTS)/tls.key \
	  --objects examples/objects --shutdown-delay-seconds 0

## test: install what the tests need, then run every test: unit, integration, doc, and the
## criterion bench once as a smoke test (the other benches are measurements: `make bench`).
## The ELBv2 conformance test runs against moto (a Python ELBv2 emulator) from $(VENV).
## The last line sums every test binary's result.
test: $(VENV)/bin/moto_server test-rules
	@mkdir -p target
	set -o pipefail; { $(CARGO) test --doc --locked && \
	  MOTO_SERVER=$(abspath $(VENV))/bin/moto_server $(CARGO) test --locked \
	    --lib --bins --tests --examples --bench inject; } 2>&1 | tee target/test.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test.log

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
certs $(CERTS)/tls.crt:
	$(CARGO) run -- certs --service gracegate --namespace gracegate-system --out $(CERTS)

## review: post a recorded AdmissionReview to a running `make run` and print the decoded patch.
review:
	@curl -sS --cacert $(CERTS)/ca.crt -H 'Content-Type: application/json' \
	  --data-binary @tests/fixtures/admission/create-deployment-pod.json \
	  https://$(LISTEN)/mutate | python3 -c 'import base64,json,sys; r=json.load(sys.stdin)["response"]; print(json.dumps({k: v for k, v in r.items() if k != "patch"}, indent=2)); print(json.dumps(json.loads(base64.b64decode(r.get("patch", "W10="))), indent=2))'

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

## bench: every benchmark (see BENCHMARKS.md); installs the load generator oha first.
BENCH_TOOLS ?= .bench-tools
OHA_VERSION ?= 1.16.0
bench: $(BENCH_TOOLS)/bin/oha
	$(CARGO) bench --locked --bench inject
	$(CARGO) bench --locked --bench watcher_memory
	$(CARGO) bench --locked --bench watcher_latency
	$(CARGO) bench --locked --bench watcher_records
	OHA=$(abspath $(BENCH_TOOLS))/bin/oha benches/webhook_load.sh

$(BENCH_TOOLS)/bin/oha:
	$(CARGO) install oha --locked --version $(OHA_VERSION) --root $(BENCH_TOOLS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
