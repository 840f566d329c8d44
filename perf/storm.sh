#!/usr/bin/env bash
# Row L2 of RELIABILITY.md at scale: 100k registrations in 60 s while 10k UDP subscribers listen.
# What must hold: queues bounded (overload answers 503 + Retry-After, never a hang), no OOM
# (RSS sampled every second), pushes merged per service (datagrams per subscriber well under one
# per write). tests/overload.rs checks the 503 + Retry-After rule itself on a small scale; this
# is the heavy version, too slow for `cargo test`.
#
# One release server (fresh data dir), then two muster-bench processes at once:
#   register:  --rate RATE for DURATION over --instances INSTANCES (--services SERVICES)
#   subscribe: SUBSCRIBERS UDP sockets on one service, WRITE_RATE writes/s to it, same duration
# Prints both reports' figures, the server's peak RSS, and its push counters.
#
# Knobs (environment):
#   RATE         registrations/s          [1700]  (100k in 60 s)
#   INSTANCES    registration pool        [100000]
#   SERVICES     services of the pool     [1000]
#   SUBSCRIBERS  UDP subscribers          [10000]
#   WRITE_RATE   writes/s to their service [20]
#   DURATION     measured window          [60s]
#   SHARDS       server --shards          [1]
#   OUT_DIR      where the JSON goes      [mktemp -d]
set -euo pipefail
cd "$(dirname "$0")/.."

RATE="${RATE:-1700}"
INSTANCES="${INSTANCES:-100000}"
SERVICES="${SERVICES:-1000}"
SUBSCRIBERS="${SUBSCRIBERS:-10000}"
WRITE_RATE="${WRITE_RATE:-20}"
DURATION="${DURATION:-60s}"
SHARDS="${SHARDS:-1}"
OUT_DIR="${OUT_DIR:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"

cargo build --release --quiet -p muster -p muster-bench
ulimit -n 20000  # 10k subscriber sockets and 64 connections fit

data="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/release/muster --listen "127.0.0.1:$port" --data-dir "$data" --shards "$SHARDS" --pin false \
    --log warn >"$OUT_DIR/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/nacos/v1/console/health/readiness" >/dev/null && break
    sleep 0.1
done
url="http://127.0.0.1:$port"
echo "commit $(git rev-parse --short HEAD), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "register ${RATE}/s over ${INSTANCES} instances in ${SERVICES} services; ${SUBSCRIBERS} subscribers, ${WRITE_RATE} writes/s; ${DURATION}"

target/release/muster-bench subscribe --url "$url" --subscribers "$SUBSCRIBERS" --rate "$WRITE_RATE" \
    -d "$DURATION" --json --no-progress --max-error-rate 1 >"$OUT_DIR/subscribe.json" 2>"$OUT_DIR/subscribe.err" &
sub_pid=$!
target/release/muster-bench register --url "$url" --rate "$RATE" --instances "$INSTANCES" \
    --services "$SERVICES" -c 64 -d "$DURATION" -w 0s --json --no-progress --max-error-rate 1 \
    >"$OUT_DIR/register.json" 2>"$OUT_DIR/register.err" &
reg_pid=$!
peak=0
secs=$(( ${DURATION%s} + 120 ))
# Bounded: at most DURATION + 120 samples, one a second, while either bench runs.
for _ in $(seq 1 "$secs"); do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    kill -0 "$sub_pid" 2>/dev/null || kill -0 "$reg_pid" 2>/dev/null || break
    sleep 1
done
wait "$sub_pid" || true
wait "$reg_pid" || true
curl -s "$url/metrics" | grep -E '^muster_push_(sent|acked|resent|failed|send_errors|junk|dropped)_total|^muster_push_targets' \
    | awk '{s[$1]+=$2} END {for (k in s) printf "%s=%d ", k, s[k]; print ""}' | sed 's/{[^}]*}//g' >"$OUT_DIR/push.txt"
python3 - "$OUT_DIR" "$peak" <<'EOF'
import json, sys
out, peak = sys.argv[1], sys.argv[2]
def load(n):
    try:
        return json.load(open(f"{out}/{n}.json"))
    except Exception as e:
        return {"error": str(e)}
r, s = load("register"), load("subscribe")
ms = lambda v: "?" if v is None else f"{v/1000:.1f} ms"
print(f"register: {r.get('requests')} requests, ok {r.get('ok')}, errors {r.get('errors')}, "
      f"{r.get('throughput_rps')}/s, p50 {ms(r.get('latency_us', {}).get('p50'))}, p99 {ms(r.get('latency_us', {}).get('p99'))}")
print(f"subscribe: writes ok {s.get('ok')}, errors {s.get('errors')}, datagrams {s.get('datagrams')}, "
      f"pushes {s.get('pushes')}, push p50 {ms(s.get('push_latency_us', {}).get('p50'))}, p99 {ms(s.get('push_latency_us', {}).get('p99'))}; notes {s.get('notes')}")
print(f"server peak RSS {int(peak)//1024} MiB")
print("push counters:", open(f"{out}/push.txt").read().strip())
EOF
echo "reports in $OUT_DIR"
