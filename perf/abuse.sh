#!/usr/bin/env bash
# List latency of well-behaved clients while the server is abused (rows H1 and H5 of
# RELIABILITY.md: an endless chunked body, CL+TE, 10k headers, 10k idle connections, slowloris).
# The row asks for list p99 <= 10 ms throughout each abuse; tests never assert speed, so it is
# measured here and recorded in perf/ABUSE.md.
#
# For each KIND (a baseline with no abuse first): a fresh release server, then `muster-bench list`
# at a fixed open-loop rate from 127.0.0.1 while perf/abuse.py KIND runs from 127.0.0.2 over the
# whole measured window. Prints one line per kind: the bench's p50/p99/p99.9/max and errors, and
# the abuser's counts. Raw JSON reports go to $OUT_DIR (default: a temp dir, printed).
#
# Knobs (environment):
#   KINDS     kinds to run            [none chunked clte headers idle slowloris]
#   RATE      bench requests/s        [1000]
#   CONNS     bench connections       [16]
#   DURATION  measured window         [20s]   (the abuse runs WARMUP + DURATION + 3 s)
#   WARMUP    bench warm-up           [3s]
#   SHARDS    server --shards         [1]
#   NICE      nice level of everything [0]
#   OUT_DIR   where the JSON goes     [mktemp -d]
set -euo pipefail
cd "$(dirname "$0")/.."

KINDS="${KINDS:-none chunked clte headers idle slowloris}"
RATE="${RATE:-1000}"
CONNS="${CONNS:-16}"
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-3s}"
SHARDS="${SHARDS:-1}"
NICE="${NICE:-0}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"

cargo build --release --quiet -p muster -p muster-bench
ulimit -n 20000

secs() { local v="$1"; v="${v%s}"; echo "$v"; }
ABUSE_SECONDS=$(( $(secs "$WARMUP") + $(secs "$DURATION") + 3 ))

server_pid=""
data=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    if [ -n "$data" ]; then rm -rf "$data"; fi
}
trap cleanup EXIT

echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), rate ${RATE}/s, ${CONNS} connections, ${DURATION} measured"
for kind in $KINDS; do
    data="$(mktemp -d)"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    nice -n "$NICE" target/release/muster --listen "127.0.0.1:$port" --data-dir "$data" --shards "$SHARDS" \
        --pin false --log info >"$OUT_DIR/server-$kind.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/nacos/v1/console/health/readiness" >/dev/null && break
        sleep 0.1
    done
    abuse_out=""
    if [ "$kind" != none ]; then
        # Started with the bench: the abuse covers the whole warm-up and measured window.
        nice -n "$NICE" python3 perf/abuse.py "$kind" 127.0.0.1 "$port" "$ABUSE_SECONDS" \
            >"$OUT_DIR/abuse-$kind.txt" 2>&1 &
        abuse_pid=$!
    fi
    nice -n "$NICE" target/release/muster-bench list --url "http://127.0.0.1:$port" --instances 10 \
        --rate "$RATE" -c "$CONNS" -d "$DURATION" -w "$WARMUP" --json --no-progress \
        >"$OUT_DIR/bench-$kind.json" 2>"$OUT_DIR/bench-$kind.err" || true
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    if [ "$kind" != none ]; then
        wait "$abuse_pid" || true
        abuse_out="$(tail -n 1 "$OUT_DIR/abuse-$kind.txt")"
    fi
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    rm -rf "$data"; data=""
    python3 - "$OUT_DIR/bench-$kind.json" "$kind" "$rss" "$abuse_out" <<'EOF'
import json, sys
path, kind, rss, abuse = sys.argv[1:5]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{kind}: no bench report ({e})"); sys.exit()
t = r
lat = r["latency_us"]
def p(k):
    v = lat.get(k)
    return "?" if v is None else f"{v/1000:.2f} ms"
print(f"{kind:10} ok={t.get('ok')} errors={t.get('errors')} p50={p('p50')} p99={p('p99')} "
      f"p99.9={p('p999')} max={p('max')} server_rss={rss} KiB  {abuse}")
EOF
done
echo "reports in $OUT_DIR"
