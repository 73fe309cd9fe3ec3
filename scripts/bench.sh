#!/usr/bin/env bash
# End-to-end performance run, one command: `make bench` or scripts/bench.sh.
#   1. the floor: bare ONNX Runtime Session::run for each pool shape, and the physical limit
#      (the floor plus the image work a request cannot avoid) (benches/limit.rs);
#   2. the release server on 127.0.0.1 with default settings: start-to-ready time, then
#      `hey` (a real load generator, from Debian) posting bus.jpg at concurrency 1 2 4 8 16 32;
#   3. a table of requests/s, p50/p90/p99, statuses, peak RSS, and each ratio beside its
#      target (against the best bare configuration, whatever its shape) and its limit;
#   4. the photo-size sweep over HTTP, 0.1 to 31 MP (examples/size_sweep.rs);
#   5. the cost curve over photo size and object count, in process (benches/sweep.rs).
# BASELINE=/path/to/an/older/segserve runs steps 2 and 4 for it too, in the same run, and
# compares (build one with `git worktree add /tmp/base <commit>` and `cargo build --release`).
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
cargo build --release --locked --bins --benches --examples 2>&1 | tail -1

echo "== bare ONNX Runtime (the floor)"
SEGSERVE_BENCH_SECONDS="${LIMIT_SECONDS:-8}" cargo bench --locked --bench limit 2>/dev/null | tee "$OUT/limit.txt" | grep -v '_JSON '

# One server binary under hey at each level: $OUT/<label>/c<level>.csv, plus rss and ready time.
load_levels() {
  local label=$1 bin=$2 dir="$OUT/$1"
  mkdir -p "$dir"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local start_ns
  start_ns=$(date +%s%N)
  "$bin" serve --host 127.0.0.1 --port "$port" --shutdown-drain-ms 0 "${SERVER_ARGS[@]}" >"$dir/server.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$dir/server.log"; exit 1; }
    sleep 0.01
  done
  echo $(( ($(date +%s%N) - start_ns) / 1000000 )) >"$dir/ready_ms"
  echo "== $label: $bin ready in $(cat "$dir/ready_ms") ms ($(grep -o 'sessions=[0-9]* threads=[0-9]*' "$dir/server.log" | head -1))"
  grep -o 'sessions=[0-9]* threads=[0-9]*' "$dir/server.log" | head -1 >"$dir/cfg" || true
  awk '/VmRSS/{print $2}' /proc/$pid/status >"$dir/rss_idle"
  for c in $LEVELS; do
    hey -z "${DURATION}s" -c "$c" -m POST -T image/jpeg -D "$PHOTO" -o csv "http://127.0.0.1:$port$ROUTE?masks=rle" >"$dir/c$c.csv" 2>"$dir/c$c.err" || true
    echo "  concurrency $c done"
  done
  awk '/VmHWM/{print $2}' /proc/$pid/status >"$dir/rss_peak"
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
}
SERVER_ARGS=("$@")
trap 'kill $pid 2>/dev/null || true' EXIT
load_levels today ./target/release/segserve
if [ -n "${BASELINE:-}" ]; then load_levels baseline "$BASELINE"; fi

python3 - "$OUT" "$DURATION" "$LEVELS" "${BASELINE:+baseline}" <<'PY'
import csv, json, re, sys
out, duration, levels, baseline = sys.argv[1:5]
duration = float(duration); levels = [int(x) for x in levels.split()]
text = open(f"{out}/limit.txt").read()
limit = json.loads(re.search(r"LIMIT_JSON (.*)", text).group(1))
physical = json.loads(re.search(r"PHYSICAL_JSON (.*)", text).group(1))

def table(label):
    d = f"{out}/{label}"
    rows = {}
    print(f"\n{label}:\n\n| concurrency | req/s | p50 ms | p90 ms | p99 ms | statuses | errors |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        lat, status = [], {}
        with open(f"{d}/c{c}.csv") as f:
            for r in csv.DictReader(f):
                lat.append(float(r["response-time"]) * 1000)
                status[r["status-code"]] = status.get(r["status-code"], 0) + 1
        errs = open(f"{d}/c{c}.err").read().strip()
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] if lat else float("nan")
        ok = status.get("200", 0)
        rows[c] = dict(rps=ok / duration, p50=p(0.5), p90=p(0.9), p99=p(0.99), status=status)
        st = " ".join(f"{k}:{v}" for k, v in sorted(status.items()))
        print(f"| {c} | {ok/duration:.1f} | {p(0.5):.1f} | {p(0.9):.1f} | {p(0.99):.1f} | {st} | {errs[:60] or 0} |")
    rd = lambda f: open(f"{d}/{f}").read().strip()
    idle, peak = int(rd("rss_idle")) / 1024, int(rd("rss_peak")) / 1024
    print(f"\nserver: {rd('cfg')}; start to ready {rd('ready_ms')} ms; RSS idle {idle:.0f} MB, peak {peak:.0f} MB")
    return rows, peak, int(rd("ready_ms"))

rows, peak, ready_ms = table("today")
base = table(baseline) if baseline else None
fastest = min(limit, key=lambda l: l["p50_ms"])
best = max(limit, key=lambda l: l["ips"])
checks = []
if 1 in rows:
    r = rows[1]["p50"] / fastest["p50_ms"]
    checks.append((f"p50 at c=1 / best bare p50 ({fastest['sessions']}x{fastest['threads']}, {fastest['p50_ms']:.1f} ms)", r, f"<= 1.32 (physical limit {physical['c1_ratio']:.2f})", r <= 1.32))
if 8 in rows:
    r = rows[8]["rps"] / best["ips"]
    checks.append((f"req/s at c=8 / best bare images/s ({best['sessions']}x{best['threads']}, {best['ips']:.1f})", r, f">= 0.80 (physical limit {physical['ips_ratio']:.2f})", r >= 0.80))
if 32 in rows:
    r = rows[32]["p99"] / rows[32]["p50"]; checks.append(("p99 / p50 at c=32", r, "<= 2", r <= 2))
    bad = {k: v for k, v in rows[32]["status"].items() if k != "200"}
    checks.append(("errors (non-200) at c=32", sum(bad.values()), "== 0", not bad))
if base:
    checks.append((f"peak RSS under load, MB (baseline {base[1]:.0f})", peak, f"<= {base[1]:.0f}", peak <= base[1]))
    for c in (1, 8):
        if c in rows and c in base[0]:
            checks.append((f"req/s at c={c}, against the baseline ({base[0][c]['rps']:.1f})", rows[c]["rps"] / base[0][c]["rps"], "ratio", True))
checks.append(("start to ready, s", ready_ms / 1000, "<= 0.5", ready_ms / 1000 <= 0.5))
print("\n| target | measured | goal | met |\n|---|---|---|---|")
for name, v, goal, okay in checks:
    print(f"| {name} | {v:.2f} | {goal} | {'yes' if okay else 'NO'} |")
PY

echo
echo "== photo-size sweep over HTTP (examples/size_sweep.rs)"
./target/release/examples/size_sweep ${BASELINE:+--bin "baseline=$BASELINE"} --bin "today=target/release/segserve" --fast \
  --runs "${SWEEP_RUNS:-9}" | tee "$OUT/size_sweep.txt"

echo
echo "== cost curve (benches/sweep.rs)"
cargo bench --locked --bench sweep 2>/dev/null | tee "$OUT/sweep.txt"
