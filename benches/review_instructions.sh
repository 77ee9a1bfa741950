#!/usr/bin/env bash
# Instructions per review, user space, exact and repeatable where wall-clock figures on a
# shared machine are not: each server runs under `valgrind --tool=callgrind` and answers
# N+1 reviews over one keep-alive TLS 1.3 connection, then 1 review in a second run; the
# difference over N is one review's cost, start-up and the handshake cancelled out. The
# kernel's share (TCP, the TLS records' syscalls) is not in it. Servers: gracegate and the
# bare floor (benches/floor.rs), the compact recorded reviews (4 KB and 26 KB); for
# gracegate also the review path's steps (inclusive counts of their functions).
#
#   benches/review_instructions.sh [N]      N = 200; needs valgrind and python3
#
# Environment: GRACEGATE, FLOOR (binaries; default the release builds), BUILD=0 to skip
# building them, OUT (target/bench/instructions), PORT (19443); GRACEGATE_LOG_FORMAT=json
# (gracegate's own variable) for the JSON log line.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
GRACEGATE=${GRACEGATE:-$TARGET_DIR/release/gracegate}
FLOOR=${FLOOR:-$TARGET_DIR/release/examples/floor}
OUT=${OUT:-target/bench/instructions}
PORT=${PORT:-19443}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ "${BUILD:-1}" = 1 ]; then
  cargo build --release --locked --bin gracegate --example floor
fi
mkdir -p "$OUT"
"$GRACEGATE" certs --out "$OUT/certs" >/dev/null
for f in create-deployment-pod create-deployment-pod-large; do
  python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1])), open(sys.argv[2], "w"), separators=(",", ":"))' \
    "tests/fixtures/admission/$f.json" "$OUT/$f.compact.json"
done

# The client: N reviews, one connection, each answer read whole before the next is sent.
cat >"$OUT/client.py" <<'PY'
import socket, ssl, sys, time
n, body, port = int(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3])
deadline = time.monotonic() + 120  # valgrind starts a server slowly
while True:
    try:
        raw = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"nothing listens on {port}")
        time.sleep(0.2)
ctx = ssl.create_default_context()
ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
s = ctx.wrap_socket(raw, server_hostname="localhost")
request = (b"POST /mutate?timeout=10s HTTP/1.1\r\nHost: localhost\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
f = s.makefile("rb")
for _ in range(n):
    s.sendall(request)
    status = f.readline()
    if b" 200 " not in status:
        sys.exit(f"answered {status!r}")
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)
PY

run() { # NAME REVIEWS BODY COMMAND...: one profiled server answering REVIEWS reviews
  local name=$1 n=$2 body=$3
  shift 3
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.$n.callgrind" "$@" \
    >"$OUT/$name.$n.log" 2>&1 &
  local pid=$!
  local answered=0
  python3 "$OUT/client.py" "$n" "$body" "$PORT" || answered=$?
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  if [ "$answered" != 0 ]; then
    echo "$name did not answer $n reviews: see $OUT/$name.$n.log" >&2
    exit 1
  fi
}

export RUST_LOG=${RUST_LOG:-info}
for review in create-deployment-pod create-deployment-pod-large; do
  body="$OUT/$review.compact.json"
  for n in 1 $((N + 1)); do
    run "gracegate-$review" "$n" "$body" "$GRACEGATE" webhook --listen "127.0.0.1:$PORT" \
      --admin-listen 127.0.0.1:0 --tls-cert "$OUT/certs/tls.crt" --tls-key "$OUT/certs/tls.key" \
      --objects tests/fixtures/cluster --shutdown-delay-seconds 0
    run "floor-$review" "$n" "$body" "$FLOOR" "127.0.0.1:$PORT" "$OUT/certs/tls.crt" \
      "$OUT/certs/tls.key" bare
  done
done

python3 - "$OUT" "$N" <<'PY'
import re, subprocess, sys
out, n = sys.argv[1], int(sys.argv[2])
STEPS = {  # gracegate's review path, by function (inclusive)
    "parse the review": "gracegate::webhook::review::parse",
    "plan": "gracegate::inject::plan",
    "JSONPatch written": "gracegate::inject::patch::Plan::write_patch",
    "answer written": "gracegate::webhook::review::ResponseReview::to_json",
    "log line": "gracegate::webhook::log_review",
    "handler (/mutate, all of the above)": "gracegate::webhook::mutate::{{closure}}",
}
def counts(path):
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                          capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    steps = {}
    for name, function in STEPS.items():
        # The calls to the function as the annotated sources list them (`=> file:function
        # (Nx)`, inclusive): a function's own entries are split by the files its inlined
        # code came from, and spelled with two paths, so they do not add up.
        steps[name] = sum(int(m.group(1).replace(",", "")) for m in re.finditer(
            r"^\s*([\d,]+) \([^)]*\)\s+=> [^\n]*:" + re.escape(function) + r" \([\d,]+x\)",
            text, re.M))
    return total, steps
print("| review | server | instructions per review |")
print("|---|---|---|")
for review, label in [("create-deployment-pod", "4 KB"), ("create-deployment-pod-large", "26 KB")]:
    for server in ["gracegate", "floor"]:
        t1, s1 = counts(f"{out}/{server}-{review}.1.callgrind")
        tn, sn = counts(f"{out}/{server}-{review}.{n + 1}.callgrind")
        print(f"| {label} | {server} | {(tn - t1) / n:,.0f} |")
        if server == "gracegate":
            for name in STEPS:
                print(f"| {label} | gracegate: {name} | {(sn[name] - s1[name]) / n:,.0f} |")
PY
