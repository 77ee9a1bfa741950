"""Summarise benches/webhook_ab.sh: reviews/s per server (median of rounds, range, spread),
latency, and the paired ratios, each round's gracegate against the other servers in that
same round: throughput ratios (x as many reviews/s) and cost ratios (CPU time per review
on the pinned core, the inverse)."""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
fixtures = {"create-deployment-pod": "4 KB", "create-deployment-pod-large": "26 KB"}
order = ["gracegate", "base", "floor", "floor-json", "kube-example"]
servers = [s for s in order if any(r["server"] == s for r in rows)]
servers += sorted({r["server"] for r in rows} - set(servers))


def rps(r):
    return r["requests"] / r["seconds"] if r["seconds"] else 0.0


def by_round(server, fixture):
    return {r["round"]: r for r in rows if r["server"] == server and r["fixture"] == fixture}


print("| review | server | reviews/s (median) | range over rounds | spread | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|---|---|")
for fixture, label in fixtures.items():
    for server in servers:
        runs = list(by_round(server, fixture).values())
        if not runs:
            continue
        xs = [rps(r) for r in runs]
        m = statistics.median(xs) or float("nan")
        print(f"| {label} | {server} | {m:,.0f} | {min(xs):,.0f}–{max(xs):,.0f} | "
              f"{(max(xs) - min(xs)) / m * 100:.0f} % | "
              f"{statistics.median(r['p50_us'] for r in runs) / 1e3:.2f} | "
              f"{statistics.median(r['p99_us'] for r in runs) / 1e3:.2f} | "
              f"{sum(r['errors'] for r in runs)} |")

print()
print("| review | gracegate against | throughput ratio, median of rounds | range | cost ratio (gracegate's time per review / theirs) |")
print("|---|---|---|---|---|")
for fixture, label in fixtures.items():
    ours = by_round("gracegate", fixture)
    for server in servers:
        if server == "gracegate":
            continue
        theirs = by_round(server, fixture)
        ratios = [rps(ours[k]) / rps(theirs[k]) for k in sorted(ours.keys() & theirs.keys())
                  if rps(theirs[k]) > 0]
        if not ratios:
            continue
        m = statistics.median(ratios)
        print(f"| {label} | {server} | {m:.2f}x | {min(ratios):.2f}x–{max(ratios):.2f}x | {1 / m:.2f}x |")

loads = [r["load1"] for r in rows]
print()
print(f"rounds: {len({r['round'] for r in rows})}; load average (1 min) during the runs: "
      f"{min(loads):.2f}–{max(loads):.2f}, median {statistics.median(loads):.2f}")
