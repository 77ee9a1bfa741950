# gracegate — the two commands that matter: `make run` and `make test`.

SHELL   := /bin/bash
CARGO   ?= cargo
CERTS   ?= certs
LISTEN  ?= 127.0.0.1:8443
ADMIN   ?= 127.0.0.1:8080
VENV    ?= .venv
MOTO_VERSION ?= 5.2.5

.PHONY: run test certs build release bench lint fmt clean review fuzz fuzz-smoke

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
test: $(VENV)/bin/moto_server
	@mkdir -p target
	set -o pipefail; { $(CARGO) test --doc --locked && \
	  MOTO_SERVER=$(abspath $(VENV))/bin/moto_server $(CARGO) test --locked \
	    --lib --bins --tests --examples --bench inject; } 2>&1 | tee target/test.log
	$(MAKE) --no-print-directory fuzz-smoke
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' target/test.log

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

release:
	$(CARGO) build --release --locked

## bench: every benchmark (see BENCHMARKS.md); installs the load generator oha first.
BENCH_TOOLS ?= .bench-tools
OHA_VERSION ?= 1.16.0
bench: $(BENCH_TOOLS)/bin/oha
	$(CARGO) bench --locked --bench inject
	$(CARGO) bench --locked --bench watcher_memory
	$(CARGO) bench --locked --bench watcher_latency
	OHA=$(abspath $(BENCH_TOOLS))/bin/oha benches/webhook_load.sh

$(BENCH_TOOLS)/bin/oha:
	$(CARGO) install oha --locked --version $(OHA_VERSION) --root $(BENCH_TOOLS)

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
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
