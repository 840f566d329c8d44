#!/usr/bin/env bash
# Side-by-side cluster run: Muster standalone, Muster 3 members, r-nacos standalone, r-nacos 3
# nodes, interleaved round by round; each run against fresh servers with empty data dirs.
#
#   bash perf/cluster.sh                    # ROUNDS=3 DURATION=10s CONNS=32
#   ROUNDS=5 SCENARIOS="register beat" bash perf/cluster.sh
#   SCENARIOS=persistent-register CONNS=64 bash perf/cluster.sh
#
# The load (muster-bench, one thread) is spread over every node's HTTP address (`--url` with
# the member list: connection i goes to node i mod 3), as clients configured with the whole
# server list spread over it; each node forwards (Muster) or routes (r-nacos) what another is
# responsible for. Setup requests (beat and list) go to the first node. Reported per run: throughput, p50/p99, and the server CPU time
# per request summed over every server process (utime+stime from /proc/PID/stat, measured
# around the whole run with no warm-up, so it covers every request sent); for Muster 3-node
# also the replication lag p50/p99 from the first node's /metrics. Nothing is pinned: all
# servers and the bench share the machine's CPUs, as a 3-node cluster on one host does.
#
# persistent-register (issue 15) registers ephemeral=false instances: on Muster each goes through
# the raft group (every member fdatasyncs its log once per Ready) and is answered by the member
# that took it once the entry is committed and applied there, so its p50/p99 is the commit
# latency. r-nacos 0.8.8 applies a persistent instance on the node responsible for the service,
# answers `ok`, and hands the raft write (no fsync) to a background task, so its latency is not a
# commit latency. After this scenario the CPU window stays open until some node's raft applied
# index reaches the number of answered writes (30 s at most), so the raft work queued behind
# r-nacos's answers is counted; the last column shows each node's raft applied index then, and the
# seconds that took. (Both servers also probe the persistent instances, which nothing answers on
# 127.x:8080; r-nacos writes the health flips through raft, so its index passes the write count.)
# The pool is PINSTANCES (default 1,000,000) instances over 1,000 services, larger than a run
# sends, so every request registers a new instance (a re-register of an unchanged persistent
# instance is no raft write on r-nacos).
# Raw reports go to perf/out/cluster-<timestamp>/; the summary table is printed and written
# to that directory as summary.md, and load.txt notes per run the load average and the CPU ticks
# the rest of the machine (the bench and anything else running) used, to spot disturbed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
SCENARIOS=${SCENARIOS:-register beat list}
PINSTANCES=${PINSTANCES:-1000000}
OUT=${OUT_DIR:-perf/out/cluster-$(date +%Y%m%d-%H%M%S)}
SECRET=perf-cluster-secret-0123456789abcdefgh
mkdir -p "$OUT"
cargo build --release -q -p muster -p muster-bench
BIN=target/release
RNACOS=${RNACOS:-}
if [ -z "$RNACOS" ]; then
  if command -v rnacos >/dev/null && rnacos --version 2>/dev/null | grep -q 0.8.8; then RNACOS=$(command -v rnacos)
  else
    [ -x target/perf-tools/bin/rnacos ] || cargo install --locked --root target/perf-tools rnacos --version 0.8.8
    RNACOS=target/perf-tools/bin/rnacos
  fi
fi
RNACOS=$(readlink -f "$RNACOS")
TMP=$(mktemp -d)
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
trap 'stop; rm -rf "$TMP"' EXIT
ready() { for _ in $(seq 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not ready: $1" >&2; return 1; }
cpu_ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
machine_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
settle() { # server answered -> waits until some node's raft applied index reaches the number of answered
  # writes (30 s at most; r-nacos commits behind its answers); prints the seconds
  local s0=$SECONDS top
  while [ $((SECONDS - s0)) -lt 30 ]; do
    top=$(raft_applied $1 | tr / '\n' | grep -E '^[0-9]+$' | sort -n | tail -1)
    [ "${top:-0}" -ge "$2" ] && break; sleep 0.2; done
  echo $((SECONDS - s0))
}
raft_applied() { # server -> each node's raft applied index, n1/n2/n3
  local out=() u
  for u in ${URL//,/ }; do case $1 in
    muster-*) out+=("$(curl -s -m 2 "$u/nacos/v1/core/cluster/nodes" | python3 -c 'import json,sys; print(max(int(n["extendInfo"]["raft"].get("appliedIndex", 0)) for n in json.load(sys.stdin)["data"]))' 2>/dev/null || echo '?')") ;;
    rnacos-*) out+=("$(curl -s -m 2 "$u/nacos/v1/raft/metrics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_applied"])' 2>/dev/null || echo '?')") ;;
  esac; done
  local IFS=/; echo "${out[*]}"
}

rnacos_formed() { # true once node 1 leads voters 1,2,3 and nodes 2 and 3 follow (10 s at most)
  for _ in $(seq 50); do
    local n=0 u
    for u in ${URL//,/ }; do
      curl -s -m 2 "$u/nacos/v1/raft/metrics" | python3 -c 'import json,sys; m=json.load(sys.stdin); sys.exit(0 if m["state"] in ("Leader","Follower") and sorted(m["membership_config"]["members"])==[1,2,3] else 1)' 2>/dev/null && n=$((n + 1))
    done
    [ $n = 3 ] && return 0; sleep 0.2
  done; return 1
}

muster_formed() { # true once every member sees three voters and a leader (10 s at most)
  for _ in $(seq 50); do
    local n=0 u
    for u in ${URL//,/ }; do
      curl -s -m 2 "$u/nacos/v1/core/cluster/nodes" | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; r=[n["extendInfo"]["raft"] for n in d]; sys.exit(0 if sum(x["voter"] for x in r)==3 and any(x.get("leader") for x in r) else 1)' 2>/dev/null && n=$((n + 1))
    done
    [ $n = 3 ] && return 0; sleep 0.2
  done; return 1
}

start() { # server [try] -> sets PIDS and URL
  rm -rf "$TMP"/*; case $1 in
  muster-1)
    mkdir -p "$TMP/d"; $BIN/muster --listen 127.0.0.1:8848 --data-dir "$TMP/d" --shards 1 >"$TMP/log" 2>&1 & PIDS=($!)
    URL=http://127.0.0.1:8848; ready $URL/nacos/v1/console/health/readiness ;;
  muster-3)
    for i in 1 2 3; do mkdir -p "$TMP/d$i"
      MUSTER_CLUSTER_SECRET=$SECRET $BIN/muster --listen 127.0.0.$i:8848 --data-dir "$TMP/d$i" --shards 1 \
        --members 127.0.0.1:8848,127.0.0.2:8848,127.0.0.3:8848 >"$TMP/log$i" 2>&1 & PIDS+=($!); done
    for i in 1 2 3; do ready http://127.0.0.$i:8848/nacos/v1/console/health/readiness; done
    URL=http://127.0.0.1:8848,http://127.0.0.2:8848,http://127.0.0.3:8848
    muster_formed || { echo "Muster raft group did not form" >&2; return 1; } ;;
  rnacos-1)
    mkdir -p "$TMP/r"; (cd "$TMP/r" && RUST_LOG=warn RNACOS_HTTP_PORT=18848 RNACOS_HTTP_CONSOLE_PORT=0 exec "$RNACOS" >log 2>&1) & PIDS=($!)
    URL=http://127.0.0.1:18848; ready "$URL/nacos/v1/ns/instance/list?serviceName=ready" ;;
  rnacos-3)
    for i in 1 2 3; do p=$((18838 + i * 10)); g=$((p + 1000)); mkdir -p "$TMP/r$i"
      if [ $i = 1 ]; then join=RNACOS_RAFT_AUTO_INIT=true; else join=RNACOS_RAFT_JOIN_ADDR=127.0.0.1:19848; fi
      (cd "$TMP/r$i" && exec env RUST_LOG=warn RNACOS_HTTP_PORT=$p RNACOS_GRPC_PORT=$g RNACOS_HTTP_CONSOLE_PORT=0 \
        RNACOS_RAFT_NODE_ID=$i RNACOS_RAFT_NODE_ADDR=127.0.0.1:$g RNACOS_CONFIG_DB_DIR=db $join "$RNACOS" >log 2>&1) &
      PIDS+=($!); sleep 1; done
    for i in 1 2 3; do ready "http://127.0.0.1:$((18838 + i * 10))/nacos/v1/ns/instance/list?serviceName=ready"; done
    URL=http://127.0.0.1:18848,http://127.0.0.1:18858,http://127.0.0.1:18868
    # Under load the joins sometimes never land (nodes 2 and 3 stay NonVoter and node 1 is a
    # one-voter group): wait for all three voters, or start over (3 tries).
    if ! rnacos_formed; then
      [ "${2:-1}" -ge 3 ] && { echo "r-nacos raft group did not form" >&2; return 1; }
      echo "r-nacos raft group did not form; restarting it" >&2; stop; start rnacos-3 $((${2:-1} + 1)); return
    fi
    sleep 2 ;;
  esac
}

printf '| round | scenario | server | req/s | p50 µs | p99 µs | server CPU µs/req | Muster replication lag p50 / p99 ms; persistent: raft applied index per node, settle s |\n|---|---|---|---|---|---|---|---|\n' | tee "$OUT/summary.md"
for r in $(seq "$ROUNDS"); do
  for sc in $SCENARIOS; do
    for server in muster-1 muster-3 rnacos-1 rnacos-3; do
      start $server
      args=(-u "$URL" -c "$CONNS" -d "$DURATION" -w 0s --json --no-progress --prefix "b$r")
      [ "$sc" = persistent-register ] && args+=(--instances "$PINSTANCES" --services 1000)
      if [ "$sc" = list ] || [ "$sc" = beat ]; then
        # setup (registrations) before the CPU window
        $BIN/muster-bench $sc "${args[@]}" -d 1s >/dev/null 2>&1 || true
        sleep 1
      fi
      m0=$(machine_ticks); w0=$(date +%s.%N)
      t0=$(cpu_ticks)
      echo "$BIN/muster-bench $sc ${args[*]}" > "$OUT/$sc-$server-r$r.cmd"
      $BIN/muster-bench $sc "${args[@]}" >"$OUT/$sc-$server-r$r.json" 2>"$OUT/$sc-$server-r$r.err" || true
      lag="-"
      [ "$sc" = persistent-register ] && waited=$(settle $server "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("ok") or 0)' "$OUT/$sc-$server-r$r.json" 2>/dev/null || echo 0)")
      t1=$(cpu_ticks)
      m1=$(machine_ticks); w1=$(date +%s.%N)
      # disturbance check: CPU the rest of the machine (the bench and anything else) used
      echo "round $r $sc $server: loadavg $(cut -d' ' -f1-3 /proc/loadavg); servers $((t1 - t0)) ticks, rest of the machine $((m1 - m0 - t1 + t0)) ticks over $(echo "$w1 - $w0" | bc) s" >> "$OUT/load.txt"
      [ "$sc" = persistent-register ] && lag="$(raft_applied $server), ${waited} s"
      if [ $server = muster-3 ] && [ "$sc" != persistent-register ]; then
        lag=$(curl -s ${URL%%,*}/metrics | awk -F'[ ]' '/^muster_distro_replication_lag_seconds\{/ {split($1,a,"quantile=\""); q=substr(a[2],1,length(a[2])-2); if (q=="0.5") p50=($2>p50?$2:p50); if (q=="0.99") p99=($2>p99?$2:p99)} END {printf "%.2f / %.2f", p50*1000, p99*1000}')
      fi
      python3 - "$OUT/$sc-$server-r$r.json" $((t1 - t0)) "$r" "$sc" "$server" "$lag" <<'PY' | tee -a "$OUT/summary.md"
import json, sys, os
path, ticks, r, sc, server, lag = sys.argv[1:]
hz = os.sysconf('SC_CLK_TCK')
try:
    d = json.load(open(path))
except Exception as e:
    print("| %s | %s | %s | failed: %s | | | | |" % (r, sc, server, e)); sys.exit()
ok = d.get('ok') or 0
l = d['latency_us']
cpu = int(ticks) * 1e6 / hz / ok if ok else float('nan')
print("| %s | %s | %s | %.0f | %.0f | %.0f | %.1f | %s |" % (r, sc, server, d['throughput_rps'], l['p50'], l['p99'], cpu, lag))
PY
      stop
    done
  done
done
echo "raw reports: $OUT"
