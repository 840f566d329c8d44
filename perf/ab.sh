#!/usr/bin/env bash
# A/B of two muster binaries on the naming rows, interleaved (A B A B ...), on one machine in
# one session: throughput and server CPU time per request (utime+stime from /proc/PID/stat
# over the measured window, which holds steadier than throughput when the load generator
# shares the machine). Prints a table of medians and writes the raw rows to OUT.
#
# usage: perf/ab.sh OLD_MUSTER NEW_MUSTER [MUSTER_BENCH]
# env: ROUNDS [3], DURATION [5s], WARMUP [2s], CONNS [64], SERVER_CPU [1], BENCH_CPU [0],
#      ROWS ["register list-10 beat-full beat-light persistent"], OUT [perf/out/ab-<ts>.tsv]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD=$1 NEW=$2
BENCH=${3:-target/release/muster-bench}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5s} WARMUP=${WARMUP:-2s} CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-1} BENCH_CPU=${BENCH_CPU:-0}
ROWS=${ROWS:-"register list-10 beat-full beat-light persistent"}
OUT=${OUT:-perf/out/ab-$(date -u +%Y%m%dT%H%M%SZ).tsv}
PORT=18890
mkdir -p "$(dirname "$OUT")"
HZ=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/muster-ab.XXXXXX)
SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # binary
  rm -rf "$TMP/data"
  taskset -c "$SERVER_CPU" "$1" --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" --shards 1 \
    >/dev/null 2>&1 &
  SPID=$!
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/nacos/v1/console/health/readiness" >/dev/null && return
    sleep 0.05
  done
  echo "server did not start" >&2
  exit 1
}

stop() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""; }

args_of() { # row -> bench args
  case $1 in
    register) echo "register --instances 1000000 --services 1000" ;;
    list-10) echo "list --instances 10 --prefix l10" ;;
    beat-full) echo "beat --kind full --instances 10000 --services 100" ;;
    beat-light) echo "beat --kind light --instances 10000 --services 100" ;;
    persistent) echo "persistent-register --instances 1000000 --services 1000" ;;
  esac
}

printf 'row\tbinary\tround\trps\tcpu_us_per_req\n' >"$OUT"
for row in $ROWS; do
  for r in $(seq "$ROUNDS"); do
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      start "$bin"
      # CPU is read over a sub-window well inside the measured one (it starts after the
      # bench's setup, at most ~0.5 s for the beat and list rows, and its warm-up) and divided
      # by the requests the measured throughput puts in it.
      # shellcheck disable=SC2046
      taskset -c "$BENCH_CPU" "$BENCH" $(args_of "$row") --url "http://127.0.0.1:$PORT" \
        -c "$CONNS" -w "$WARMUP" -d "$DURATION" --json --no-progress >"$TMP/out.json" 2>/dev/null &
      bpid=$!
      sleep "$(python3 -c "print(${WARMUP%s} + 1.0)")"
      t0=$(cpu_ticks "$SPID"); s0=$(date +%s.%N)
      sleep "$(python3 -c "print(${DURATION%s} - 1.5)")"
      t1=$(cpu_ticks "$SPID"); s1=$(date +%s.%N)
      wait "$bpid"
      rps=$(python3 -c "import json;print(json.load(open('$TMP/out.json'))['throughput_rps'])")
      cpu=$(python3 -c "print(round(($t1-$t0)/$HZ*1e6/max($rps*($s1-$s0),1),2))")
      printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$which" "$r" "$rps" "$cpu" | tee -a "$OUT"
      stop
    done
  done
done

python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
print(f"\n{'row':<12} {'old rps':>10} {'new rps':>10} {'ratio':>6} {'old µs/req':>11} {'new µs/req':>11} {'ratio':>6}")
for row in dict.fromkeys(r['row'] for r in rows):
    m = lambda w, k: statistics.median(float(r[k]) for r in rows if r['row'] == row and r['binary'] == w)
    o, n, oc, nc = m('old', 'rps'), m('new', 'rps'), m('old', 'cpu_us_per_req'), m('new', 'cpu_us_per_req')
    print(f"{row:<12} {o:>10.0f} {n:>10.0f} {n/o:>6.2f} {oc:>11.2f} {nc:>11.2f} {nc/oc:>6.2f}")
EOF
