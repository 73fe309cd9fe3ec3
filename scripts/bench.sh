#!/usr/bin/env bash
# End-to-end performance run, one command: `make bench` or scripts/bench.sh.
#   1. the floor: bare ONNX Runtime Session::run for each pool shape (benches/limit.rs);
#   2. the release server on 127.0.0.1 with default settings: start-to-ready time, then
#      `hey` (a real load generator, from Debian) posting bus.jpg at concurrency 1 2 4 8 16 32;
#   3. a table of requests/s, p50/p90/p99, statuses, peak RSS, and each ratio beside its
#      target (against the best bare configuration, whatever its shape);
#   4. the cost curve over photo size and object count (benches/sweep.rs).
# Loopback only; every step is bounded in time (DURATION per level, default 10 s).
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DISABLE_TELEMETRY=1
DURATION="${DURATION:-10}"
LEVELS="${LEVELS:-1 2 4 8 16 32}"
PHOTO="${PHOTO:-../shared/testdata/bus.jpg}"
ROUTE="${ROUTE:-/v1/segment}"
OUT="${OUT:-target/bench}"
mkdir -p "$OUT"

command -v hey >/dev/null || { apt-get update -qq && apt-get install -y -qq hey >/dev/null; }
scripts/setup.sh >/dev/null
cargo build --release --locked --bins --benches 2>&1 | tail -1

echo "== bare ONNX Runtime (the floor)"
SEGSERVE_BENCH_SECONDS="${LIMIT_SECONDS:-8}" cargo bench --locked --bench limit 2>/dev/null | tee "$OUT/limit.txt" | grep -v LIMIT_JSON

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_ns=$(date +%s%N)
./target/release/segserve serve --host 127.0.0.1 --port "$port" --shutdown-drain-ms 0 "$@" >"$OUT/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
  sleep 0.01
done
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
echo "== server ready in ${ready_ms} ms (pid $pid; $(grep -o 'sessions=[0-9]* threads=[0-9]*' "$OUT/server.log" | head -1))"
rss_idle=$(awk '/VmRSS/{print $2}' /proc/$pid/status)

for c in $LEVELS; do
  hey -z "${DURATION}s" -c "$c" -m POST -T image/jpeg -D "$PHOTO" -o csv "http://127.0.0.1:$port$ROUTE?masks=rle" >"$OUT/c$c.csv" 2>"$OUT/c$c.err" || true
  echo "  concurrency $c done"
done
rss_peak=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
server_cfg=$(grep -o 'sessions=[0-9]* threads=[0-9]*' "$OUT/server.log" | head -1)

python3 - "$OUT" "$DURATION" "$ready_ms" "$rss_idle" "$rss_peak" "$server_cfg" "$LEVELS" <<'PY'
import csv, json, re, sys
out, duration, ready_ms, rss_idle, rss_peak, cfg, levels = sys.argv[1:8]
duration = float(duration); levels = [int(x) for x in levels.split()]
limit = json.loads(re.search(r"LIMIT_JSON (.*)", open(f"{out}/limit.txt").read()).group(1))
rows = {}
print(f"\n| concurrency | req/s | p50 ms | p90 ms | p99 ms | statuses | errors |")
print("|---|---|---|---|---|---|---|")
for c in levels:
    lat, status = [], {}
    with open(f"{out}/c{c}.csv") as f:
        for r in csv.DictReader(f):
            lat.append(float(r["response-time"]) * 1000)
            status[r["status-code"]] = status.get(r["status-code"], 0) + 1
    errs = open(f"{out}/c{c}.err").read().strip()
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
    ok = status.get("200", 0)
    rows[c] = dict(rps=ok / duration, p50=p(0.5), p90=p(0.9), p99=p(0.99), status=status)
    st = " ".join(f"{k}:{v}" for k, v in sorted(status.items()))
    print(f"| {c} | {ok/duration:.1f} | {p(0.5):.1f} | {p(0.9):.1f} | {p(0.99):.1f} | {st} | {errs[:60] or 0} |")
print(f"\nserver: {cfg}; start to ready {ready_ms} ms; RSS idle {int(rss_idle)/1024:.0f} MB, peak {int(rss_peak)/1024:.0f} MB")
fastest = min(limit, key=lambda l: l["p50_ms"])
best = max(limit, key=lambda l: l["ips"])
checks = []
if 1 in rows:
    r = rows[1]["p50"] / fastest["p50_ms"]
    checks.append((f"p50 at c=1 / best bare p50 ({fastest['sessions']}x{fastest['threads']}, {fastest['p50_ms']:.1f} ms)", r, "<= 1.15", r <= 1.15))
if 8 in rows:
    r = rows[8]["rps"] / best["ips"]
    checks.append((f"req/s at c=8 / best bare images/s ({best['sessions']}x{best['threads']}, {best['ips']:.1f})", r, ">= 0.9", r >= 0.9))
if 32 in rows:
    r = rows[32]["p99"] / rows[32]["p50"]; checks.append(("p99 / p50 at c=32", r, "<= 2", r <= 2))
    bad = {k: v for k, v in rows[32]["status"].items() if k != "200"}
    checks.append(("errors (non-200) at c=32", sum(bad.values()), "== 0", not bad))
checks.append(("peak RSS under load, MB", int(rss_peak) / 1024, "<= 136", int(rss_peak) / 1024 <= 136))
checks.append(("start to ready, s", int(ready_ms) / 1000, "<= 0.5", int(ready_ms) / 1000 <= 0.5))
print("\n| target | measured | goal | met |\n|---|---|---|---|")
for name, v, goal, okay in checks:
    print(f"| {name} | {v:.2f} | {goal} | {'yes' if okay else 'NO'} |")
PY

kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
echo
echo "== cost curve (benches/sweep.rs)"
cargo bench --locked --bench sweep 2>/dev/null | tee "$OUT/sweep.txt"
