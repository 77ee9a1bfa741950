#!/usr/bin/env bash
# Paired A/B of webhook servers under load, all in one run on one machine: gracegate, the
# floors (benches/floor.rs: `bare`, TLS + HTTP and no work; `json`, the body parsed into a
# serde_json::Value), and optionally a baseline gracegate binary and the kube-rs admission
# example. Every server is pinned to CPU 0, the load generator to CPU 1 (wrk, 1 thread,
# keep-alive, HTTP/1.1 over TLS 1.3), posting the compact recorded reviews (4 KB and 26 KB).
# Rounds alternate the servers, the order rotating each round, so drift in the machine's
# load hits all of them; the report (webhook_ab_report.py) gives medians, ranges and the
# per-round ratios. Results: target/bench/ab.jsonl.
#
#   benches/webhook_ab.sh [ROUNDS] [SECONDS]
#
# Environment: GRACEGATE (default target/release/gracegate), FLOOR (default
# target/release/examples/floor), BASE (a baseline gracegate binary: compared as `base`),
# KUBE_EXAMPLE (the kube-rs admission example's binary; it serves on 127.0.0.1:8443 from a
# directory holding its certificate files), CONNECTIONS (32), LOAD (wrk, else oha; OHA=path),
# HOST (localhost: a name, since wrk sends the host as SNI and the example's rustls refuses
# an IP address there; it must resolve to 127.0.0.1, where the servers listen),
# BUILD=0 to skip building gracegate and the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-6}
CONNECTIONS=${CONNECTIONS:-32}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
GRACEGATE=${GRACEGATE:-$TARGET_DIR/release/gracegate}
FLOOR=${FLOOR:-$TARGET_DIR/release/examples/floor}
OUT=${OUT:-target/bench}
LOAD=${LOAD:-$(command -v wrk >/dev/null && echo wrk || echo oha)}
HOST=${HOST:-localhost}
OHA=${OHA:-oha}
mkdir -p "$OUT"
rm -f "$OUT/ab.jsonl"

if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --locked --bin gracegate --example floor
fi
"$GRACEGATE" certs --out "$OUT/certs" >/dev/null
for f in create-deployment-pod create-deployment-pod-large; do
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
    "tests/fixtures/admission/$f.json" "$OUT/$f.compact.json"
done

PIN0=(); PIN1=()
if command -v taskset >/dev/null; then PIN0=(taskset -c 0); PIN1=(taskset -c 1); fi
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
SERVERS=()   # name:port
start() { # name port command...
  local name=$1 port=$2
  shift 2
  (exec "${PIN0[@]}" "$@" >"$OUT/$name.log" 2>&1) &
  PIDS+=($!)
  SERVERS+=("$name:$port")
}
gracegate_args=(webhook --admin-listen 127.0.0.1:0 --tls-cert "$OUT/certs/tls.crt"
  --tls-key "$OUT/certs/tls.key" --objects tests/fixtures/cluster --shutdown-delay-seconds 0)
export RUST_LOG=${RUST_LOG:-info}
start gracegate 18443 "$GRACEGATE" "${gracegate_args[@]}" --listen 127.0.0.1:18443
start floor 18444 "$FLOOR" 127.0.0.1:18444 "$OUT/certs/tls.crt" "$OUT/certs/tls.key" bare
start floor-json 18445 "$FLOOR" 127.0.0.1:18445 "$OUT/certs/tls.crt" "$OUT/certs/tls.key" json
if [ -n "${BASE:-}" ]; then
  start base 18446 "$BASE" "${gracegate_args[@]}" --listen 127.0.0.1:18446
fi
if [ -n "${KUBE_EXAMPLE:-}" ]; then
  mkdir -p "$OUT/kube-example"
  cp "$OUT/certs/tls.crt" "$OUT/kube-example/admission-controller-tls.crt"
  cp "$OUT/certs/tls.key" "$OUT/kube-example/admission-controller-tls.key"
  KUBE_EXAMPLE=$(realpath "$KUBE_EXAMPLE")
  (cd "$OUT/kube-example" && ADMISSION_PRIVATE_IP=127.0.0.1 exec "${PIN0[@]}" "$KUBE_EXAMPLE" \
    >"../kube-example.log" 2>&1) &
  PIDS+=($!)
  SERVERS+=("kube-example:8443")
fi

cat >"$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout, latency:percentile(50),
    latency:percentile(99), latency.max))
end
LUA

# Every server answers a review with a 200 before the rounds start.
for s in "${SERVERS[@]}"; do
  port=${s#*:}
  for _ in $(seq 100); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
      --data-binary "@$OUT/create-deployment-pod.compact.json" "https://127.0.0.1:$port/mutate" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "${s%%:*} does not answer 200 on $port" >&2; exit 1; }
done

run() { # name port fixture round
  local name=$1 port=$2 fixture=$3 round=$4 line
  local url="https://$HOST:$port/mutate" body="$OUT/$fixture.compact.json"
  if [ "$LOAD" = wrk ]; then
    line=$(BODY=$body "${PIN1[@]}" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" \
      -s "$OUT/post.lua" "$url" | awk '/^RESULT/ { print $2, $3, $4, $5, $6, $7 }')
  else
    line=$("${PIN1[@]}" "$OHA" -z "${SECONDS_PER_RUN}s" -c "$CONNECTIONS" --no-tui \
      --output-format json --insecure -m POST -H 'Content-Type: application/json' -D "$body" "$url" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); s=r["summary"]; p=r["latencyPercentiles"]; c=r.get("statusCodeDistribution",{}); n=sum(c.values()); print(n, int(s["total"]*1e6), n-c.get("200",0), int(p["p50"]*1e6), int(p["p99"]*1e6), int(s["slowest"]*1e6))')
  fi
  read -r requests micros errors p50 p99 max <<<"$line"
  printf '{"server":"%s","fixture":"%s","round":%d,"requests":%d,"seconds":%s,"errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"load1":%s}\n' \
    "$name" "$fixture" "$round" "$requests" "$(awk -v m="$micros" 'BEGIN { print m / 1e6 }')" \
    "$errors" "$p50" "$p99" "$max" "$(cut -d' ' -f1 /proc/loadavg)" >>"$OUT/ab.jsonl"
}

# Warm-up: a second of each, not recorded.
for s in "${SERVERS[@]}"; do SECONDS_PER_RUN=1 run "${s%%:*}" "${s#*:}" create-deployment-pod 0; done
rm -f "$OUT/ab.jsonl"
n=${#SERVERS[@]}
for round in $(seq "$ROUNDS"); do
  for fixture in create-deployment-pod create-deployment-pod-large; do
    for i in $(seq 0 $((n - 1))); do
      s=${SERVERS[$(((i + round) % n))]}
      run "${s%%:*}" "${s#*:}" "$fixture" "$round"
    done
  done
  echo "round $round of $ROUNDS done (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
done
python3 benches/webhook_ab_report.py "$OUT/ab.jsonl"
