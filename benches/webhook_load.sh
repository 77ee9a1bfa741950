#!/usr/bin/env bash
# Webhook load benchmark: gracegate against the JSON floor (benches/floor.rs `json`), same
# run, same way. benches/webhook_ab.sh compares against the bare floor and baselines.
# Both serve HTTPS on 127.0.0.1 pinned to CPU 0; oha runs on CPU 1 with keep-alive, posting
# the recorded reviews as compact JSON. Rounds alternate floor/gracegate so drift in the
# machine's load hits both. Results: target/bench/load.jsonl, summarised by load_report.py.
#
#   benches/webhook_load.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-10}
OHA=${OHA:-oha}
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT/load.jsonl"

cargo build --release --locked --bin gracegate --example floor
target/release/gracegate certs --out "$OUT/certs" >/dev/null
for f in create-deployment-pod create-deployment-pod-large; do
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
    "tests/fixtures/admission/$f.json" "$OUT/$f.compact.json"
done

cpu() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
rss() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

PIN0=(); command -v taskset >/dev/null && PIN0=(taskset -c 0)
(RUST_LOG=${RUST_LOG:-info} exec "${PIN0[@]}" target/release/gracegate webhook \
  --listen 127.0.0.1:18443 --admin-listen 127.0.0.1:18080 \
  --tls-cert "$OUT/certs/tls.crt" --tls-key "$OUT/certs/tls.key" \
  --objects tests/fixtures/cluster --shutdown-delay-seconds 0 >"$OUT/gracegate.log" 2>&1) &
GRACEGATE=$!
(exec "${PIN0[@]}" target/release/examples/floor 127.0.0.1:18444 "$OUT/certs/tls.crt" "$OUT/certs/tls.key" json 2>"$OUT/floor.log") &
FLOOR=$!
trap 'kill $GRACEGATE $FLOOR 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:18080/readyz >/dev/null && break
  sleep 0.1
done
sleep 1
for pid in $GRACEGATE $FLOOR; do
  case "$(cat /proc/$pid/comm)" in gracegate|floor) ;; *) echo "PID $pid is not a server" >&2; exit 1 ;; esac
done
echo "{\"kind\":\"idle\",\"server\":\"gracegate\",\"rss_kib\":$(rss $GRACEGATE VmRSS)}" >>"$OUT/load.jsonl"
echo "{\"kind\":\"idle\",\"server\":\"floor\",\"rss_kib\":$(rss $FLOOR VmRSS)}" >>"$OUT/load.jsonl"

run() { # server port fixture mode
  local server=$1 port=$2 fixture=$3 mode=$4 args
  case $mode in
    saturated) args=(-c 32) ;;
    fixed) args=(-c 32 -q 1000 --latency-correction) ;;
  esac
  local json
  json=$(cpu 1 "$OHA" -z "${SECONDS_PER_RUN}s" "${args[@]}" --no-tui --output-format json --insecure \
    -m POST -H 'Content-Type: application/json' -D "$OUT/$fixture.compact.json" \
    "https://127.0.0.1:$port/mutate")
  local pid=$FLOOR
  [ "$server" = gracegate ] && pid=$GRACEGATE
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"kind":"run","server":sys.argv[2],"fixture":sys.argv[3],"mode":sys.argv[4],"round":int(sys.argv[5]),"rss_kib":int(sys.argv[6]),"oha":r}))' \
    "$json" "$server" "$fixture" "$mode" "$round" "$(rss $pid VmRSS)" >>"$OUT/load.jsonl"
  echo "round $round $server $fixture $mode done" >&2
}

for round in $(seq "$ROUNDS"); do
  for fixture in create-deployment-pod create-deployment-pod-large; do
    for mode in saturated fixed; do
      run floor 18444 "$fixture" "$mode"
      run gracegate 18443 "$fixture" "$mode"
    done
  done
done
echo "{\"kind\":\"peak\",\"server\":\"gracegate\",\"rss_kib\":$(rss $GRACEGATE VmHWM)}" >>"$OUT/load.jsonl"
echo "{\"kind\":\"peak\",\"server\":\"floor\",\"rss_kib\":$(rss $FLOOR VmHWM)}" >>"$OUT/load.jsonl"
python3 benches/load_report.py "$OUT/load.jsonl"
