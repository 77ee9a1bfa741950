"""Summarise benches/webhook_load.sh's results: medians over rounds, the spread between
rounds (the machine's noise), and gracegate's figures as ratios to the floor's."""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
runs = [r for r in rows if r["kind"] == "run"]
mem = {(r["kind"], r["server"]): r["rss_kib"] / 1024 for r in rows if r["kind"] != "run"}


def figures(server, fixture, mode):
    out = []
    for r in runs:
        if (r["server"], r["fixture"], r["mode"]) != (server, fixture, mode):
            continue
        o = r["oha"]
        s, p = o["summary"], o["latencyPercentiles"]
        codes = o.get("statusCodeDistribution", {})
        ok = codes.get("200", 0)
        total = sum(codes.values())
        out.append({
            "rps": s["requestsPerSec"],
            "p50": p["p50"] * 1e3,
            "p99": p["p99"] * 1e3,
            "max": s["slowest"] * 1e3,
            "ok": ok == total and total > 0,
            "rss": r["rss_kib"] / 1024,
        })
    return out


def med(xs, key):
    return statistics.median(x[key] for x in xs)


def spread(xs, key):
    vals = [x[key] for x in xs]
    m = statistics.median(vals)
    return (max(vals) - min(vals)) / m * 100 if m else 0.0


print("| fixture | load | server | reviews/s | p50 ms | p99 ms | max ms | RSS after MiB | round-to-round spread of reviews/s |")
print("|---|---|---|---|---|---|---|---|---|")
ratios = []
for fixture in ["create-deployment-pod", "create-deployment-pod-large"]:
    for mode in ["saturated", "fixed"]:
        floor = figures("floor", fixture, mode)
        gate = figures("gracegate", fixture, mode)
        for name, xs in [("floor", floor), ("gracegate", gate)]:
            if not xs:
                continue
            bad = "" if all(x["ok"] for x in xs) else " (non-200 answers!)"
            print(f"| {fixture} | {mode} | {name}{bad} | {med(xs, 'rps'):.0f} | {med(xs, 'p50'):.2f} | "
                  f"{med(xs, 'p99'):.2f} | {med(xs, 'max'):.1f} | {med(xs, 'rss'):.1f} | {spread(xs, 'rps'):.0f}% |")
        if floor and gate and mode == "saturated":
            per_round = [g["rps"] / f["rps"] for f, g in zip(floor, gate)]
            ratios.append((fixture, statistics.median(per_round), min(per_round), max(per_round)))
print()
print("| fixture | saturated throughput, gracegate / floor (median of rounds) | range over rounds |")
print("|---|---|---|")
for fixture, m, lo, hi in ratios:
    print(f"| {fixture} | {m:.2f}x | {lo:.2f}x – {hi:.2f}x |")
print()
print("| server | RSS idle MiB | RSS peak (VmHWM) MiB |")
print("|---|---|---|")
for server in ["floor", "gracegate"]:
    print(f"| {server} | {mem.get(('idle', server), 0):.1f} | {mem.get(('peak', server), 0):.1f} |")
