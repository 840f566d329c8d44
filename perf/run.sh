#!/usr/bin/env bash
# Side-by-side performance record: Muster vs r-nacos 0.8.8 vs nginx (ceiling and
# "same reply bytes from memory"), on loopback, server pinned to one core and the
# load generator to the other. Writes perf/out/<timestamp>/*.json, perf/RESULTS.md
# and perf/latency.svg. See perf/README.md.
#
# Environment overrides (defaults in brackets):
#   ROUNDS [3]             interleaved rounds per scenario (A B A B ...), medians reported
#   DURATION [5s]          measured window per bench run
#   WARMUP [2s]            unrecorded warm-up per bench run
#   CONNS [64]             keep-alive connections for closed-loop runs
#   SUB_RATE [10]          writes/s in the push-latency runs
#   BEAT_SUSTAIN [30s]     measured part of the sustained-beat memory run (whole seconds, `Ns`)
#   BEAT_WARM [20s]        its warm-up on the same connections, before the first VmRSS sample
#   OPEN_DURATION [30s]    measured window of the open-loop run
#   OPEN_ROUNDS [ROUNDS]   rounds of the open-loop run
#   MEM_INSTANCES [100000] instances in the memory row (over 1000 services)
#   RESTART_RECORDS [1000000] persistent registers written before the restart test
#   RESTART_BIG_SNAPSHOT [1]  also run the restart test with --snapshot-entries 2000000
#   LISTEN_RATE [20]       publishes/s in the config long-poll wake-up runs
#   LISTEN_WARM [8s]       their warm-up, in which the 1,000 / 10,000 polls connect and are held
#   ONLY [all]             comma list of sections: ceiling,list,register,beat,beatmem,
#                          persistent,push,memory,open,restart,config-get,config-publish,
#                          config-listen. With a list and no OUT_DIR, the summary goes to
#                          $OUT/RESULTS.md instead of replacing perf/RESULTS.md
#   SERVER_CPU [1] BENCH_CPU [0]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
SUB_RATE=${SUB_RATE:-10}
BEAT_SUSTAIN=${BEAT_SUSTAIN:-30s}
BEAT_WARM=${BEAT_WARM:-20s}
OPEN_DURATION=${OPEN_DURATION:-30s}
OPEN_ROUNDS=${OPEN_ROUNDS:-$ROUNDS}
MEM_INSTANCES=${MEM_INSTANCES:-100000}
RESTART_RECORDS=${RESTART_RECORDS:-1000000}
RESTART_BIG_SNAPSHOT=${RESTART_BIG_SNAPSHOT:-1}
LISTEN_RATE=${LISTEN_RATE:-20}
LISTEN_WARM=${LISTEN_WARM:-8s}
ONLY=${ONLY:-all}
SERVER_CPU=${SERVER_CPU:-1}
BENCH_CPU=${BENCH_CPU:-0}
RNACOS_VERSION=0.8.8

TS=$(date -u +%Y%m%dT%H%M%SZ)
# OUT_DIR=perf/out/<ts> re-runs sections (ONLY=...) into an earlier run's directory
OUT=${OUT_DIR:-$ROOT/perf/out/$TS}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
TMP=$(mktemp -d /tmp/muster-perf.XXXXXX)
chmod 755 "$TMP" # nginx workers (user nobody) read the captured bodies
SPID="" # the one server running now
SNAME=""
BG_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

cleanup() {
  local rc=$?
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_server || true
  rm -rf "$TMP"
  [[ $rc -eq 0 ]] || log "run.sh failed (exit $rc); partial results in $OUT"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() { [[ $ONLY == all || ",$ONLY," == *",$1,"* ]]; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- build + tools
log "building muster and muster-bench (release, target/)"
cargo build --release -p muster -p muster-bench 2>&1 | tail -n 3 >&2
MUSTER=$ROOT/target/release/muster
BENCH=$ROOT/target/release/muster-bench

RNACOS=""
for c in "$(command -v rnacos || true)" "$ROOT/target/perf-tools/bin/rnacos"; do
  if [[ -n $c && -x $c ]] && "$c" --version 2>/dev/null | grep -q "$RNACOS_VERSION"; then
    RNACOS=$c
    break
  fi
done
if [[ -z $RNACOS ]]; then
  log "installing rnacos $RNACOS_VERSION into target/perf-tools"
  cargo install rnacos --version "$RNACOS_VERSION" --locked --root "$ROOT/target/perf-tools" >&2
  RNACOS=$ROOT/target/perf-tools/bin/rnacos
fi

NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
# only the ceiling and list sections run nginx
if [[ -z $NGINX ]] && (want ceiling || want list); then
  log "installing nginx (apt-get)"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >&2
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

# ---------------------------------------------------------------- servers
PORT=""

wait_http() { # url [timeout_s] -> 0 when it answers 200
  local url=$1 deadline=$((SECONDS + ${2:-60}))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "$url" || true) == 200 ]]; do
    ((SECONDS < deadline)) || { log "timeout waiting for $url"; return 1; }
    kill -0 "$SPID" 2>/dev/null || { log "$SNAME exited early"; return 1; }
    sleep 0.05
  done
}

start_muster() { # [extra muster flags...]; data dir $MDATA (fresh unless REUSE_DATA=1)
  PORT=$(free_port)
  if [[ ${REUSE_DATA:-0} != 1 ]]; then
    MDATA=$TMP/muster-data
    rm -rf "$MDATA"
  fi
  taskset -c "$SERVER_CPU" "$MUSTER" --listen "127.0.0.1:$PORT" --data-dir "$MDATA" \
    --shards 1 --log warn "$@" >>"$OUT/muster.log" 2>&1 &
  SPID=$! SNAME=muster
  wait_http "http://127.0.0.1:$PORT/nacos/v1/console/health/readiness" 120
}

start_rnacos() {
  PORT=$(free_port)
  local grpc
  grpc=$(free_port)
  rm -rf "$TMP/rnacos-data"
  mkdir -p "$TMP/rnacos-data"
  (
    cd "$TMP"
    RNACOS_HTTP_PORT=$PORT RNACOS_GRPC_PORT=$grpc RNACOS_HTTP_CONSOLE_PORT=0 \
      RNACOS_DATA_DIR=$TMP/rnacos-data RNACOS_RAFT_NODE_ADDR=127.0.0.1:$grpc \
      RNACOS_HTTP_WORKERS=1 RUST_LOG=warn \
      exec taskset -c "$SERVER_CPU" "$RNACOS"
  ) >>"$OUT/rnacos.log" 2>&1 &
  SPID=$! SNAME=rnacos
  wait_http "http://127.0.0.1:$PORT/nacos/v1/ns/service/list?pageNo=1&pageSize=1" 60
}

start_nginx() {
  PORT=$(free_port)
  local d=$TMP/nginx
  mkdir -p "$d/logs" "$d/bodies"
  chmod -R a+rX "$d"
  cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  open_file_cache max=64 inactive=600s;
  open_file_cache_valid 600s;
  client_body_temp_path $d/tmp-body;
  proxy_temp_path $d/tmp-proxy;
  fastcgi_temp_path $d/tmp-fcgi;
  uwsgi_temp_path $d/tmp-uwsgi;
  scgi_temp_path $d/tmp-scgi;
  server {
    listen 127.0.0.1:$PORT;
    # the HTTP ceiling
    location = /ok { default_type text/plain; return 200 'ok'; }
    # the bench's setup registrations (so the list scenario runs unchanged)
    location = /nacos/v1/ns/instance { default_type text/plain; return 200 'ok'; }
    # Muster's captured list reply for that service, byte for byte, from the open file cache
    location = /nacos/v1/ns/instance/list {
      default_type application/json;
      root $d/bodies;
      rewrite ^ /\$arg_serviceName.json break;
    }
  }
}
EOF
  taskset -c "$SERVER_CPU" "$NGINX" -p "$d" -c "$d/nginx.conf" -e stderr >>"$OUT/nginx.log" 2>&1 &
  SPID=$! SNAME=nginx
  wait_http "http://127.0.0.1:$PORT/ok" 30
}

stop_server() {
  [[ -n $SPID ]] || return 0
  kill -TERM "$SPID" 2>/dev/null || true
  local i
  for i in $(seq 200); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
}

start() { # muster|rnacos|nginx [flags]
  local s=$1
  shift
  "start_$s" "$@"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SPID/status"; }
# Muster's cached list bodies of >= 16 KiB live in memfd pages (for sendfile), outside VmRSS;
# its /metrics reports them. 0 for the other servers.
arena_kb() {
  if [[ $SNAME == muster ]]; then
    curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^muster_arena_bytes / {printf "%d", $2 / 1024}'
  else
    echo 0
  fi
}

extra() { # key value: one line of facts for summarize.py
  printf '%s\t%s\n' "$1" "$2" >>"$OUT/extra.tsv"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SPID/stat"; } # the server's utime+stime
HZ=$(getconf CLK_TCK)

# bench LABEL SERVER ROUND scenario args...: one --json report. With CPU_SAMPLE=1 it also
# records the server's CPU time (utime+stime from /proc/PID/stat) over a sub-window inside the
# measured one (from 1 s after the warm-up to 0.5 s before the end; the scenario's setup must
# be short), as extra "cpu_LABEL_SERVER_rROUND" = "ticks seconds CLK_TCK".
bench() {
  local label=$1 server=$2 round=$3
  shift 3
  local f=$OUT/${label}__${server}__r${round}
  local cmd=(taskset -c "$BENCH_CPU" "$BENCH" "$@" --url "http://127.0.0.1:$PORT" --json --no-progress)
  echo "${cmd[*]}" | sed "s#$ROOT/##; s#127.0.0.1:$PORT#127.0.0.1:PORT#" >"$f.cmd"
  local rc=0
  if [[ ${CPU_SAMPLE:-0} == 1 ]]; then
    "${cmd[@]}" >"$f.json" 2>"$f.err" &
    local bpid=$! c0 c1 s0 s1
    sleep "$(awk -v w="${WARMUP%s}" 'BEGIN {print w + 1}')"
    c0=$(cpu_ticks) s0=$(date +%s.%N)
    sleep "$(awk -v d="${DURATION%s}" 'BEGIN {print d - 1.5}')"
    c1=$(cpu_ticks) s1=$(date +%s.%N)
    wait "$bpid" || rc=$?
    extra "cpu_${label}_${server}_r$round" "$((c1 - c0)) $(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.3f", b - a}') $HZ"
  else
    "${cmd[@]}" >"$f.json" 2>"$f.err" || rc=$?
  fi
  if [[ $rc -ne 0 ]]; then
    log "  $label $server r$round: muster-bench exit $rc ($(head -c 300 "$f.err" | tr '\n' ' '))"
    [[ -s $f.json ]] || rm -f "$f.json"
  fi
  if [[ -s $f.json ]]; then
    log "  $label $server r$round: $(jq -r '"\(.throughput_rps) req/s p50 \(.latency_us.p50)us p99 \(.latency_us.p99)us errors \(.errors|tostring)"' "$f.json")"
  fi
  return 0
}

# one round of one scenario against one fresh server
run_one() { # label server round bench-args...
  local label=$1 server=$2 round=$3
  shift 3
  start "$server"
  bench "$label" "$server" "$round" "$@"
  stop_server
}

D=(-d "$DURATION" -w "$WARMUP")

# ---------------------------------------------------------------- machine facts
{
  echo "cores	$(nproc)"
  echo "cpu_model	$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "kernel	$(uname -r)"
  echo "uname	$(uname -srvm)"
  echo "mem_total	$(awk '/MemTotal/ {print $2" kB"}' /proc/meminfo)"
  echo "rustc	$(rustc --version)"
  echo "muster_sha	$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src storage Cargo.toml Cargo.lock || echo '-dirty')"
  echo "muster_sha_$(date +%s)	$(git rev-parse --short HEAD) sections=$ONLY"
  echo "rnacos	$("$RNACOS" --version 2>&1 | head -n1) ($RNACOS)"
  [[ -z $NGINX ]] || echo "nginx	$("$NGINX" -v 2>&1 | head -n1)"
  echo "server_cpu	$SERVER_CPU"
  echo "bench_cpu	$BENCH_CPU"
  echo "rounds	$ROUNDS"
  echo "duration	$DURATION"
  echo "warmup	$WARMUP"
  echo "conns	$CONNS"
  echo "beat_sustain	$BEAT_SUSTAIN"
  echo "beat_warm	$BEAT_WARM"
  echo "mem_instances	$MEM_INSTANCES"
  echo "restart_target	1000000"
  echo "restart_records	$RESTART_RECORDS"
  echo "open_duration	$OPEN_DURATION"
  echo "listen_rate	$LISTEN_RATE"
  echo "listen_warm	$LISTEN_WARM"
  echo "started	$(basename "$OUT")"
} >>"$OUT/extra.tsv"
log "results in $OUT"

# ---------------------------------------------------------------- scenarios
if want ceiling; then
  log "HTTP ceiling: nginx return 200 'ok'"
  for r in $(seq "$ROUNDS"); do
    run_one ceiling nginx "$r" get --path /ok -c "$CONNS" "${D[@]}"
  done
fi

if want list; then
  for n in 10 100; do
    log "list, $n instances: capture Muster's reply bytes for nginx"
    start muster
    taskset -c "$BENCH_CPU" "$BENCH" list --instances "$n" --prefix "l$n" -c 1 -d 0.2s -w 0s \
      --url "http://127.0.0.1:$PORT" --json --no-progress >/dev/null
    mkdir -p "$TMP/nginx/bodies"
    curl -s -A 'Nacos-Java-Client:v1.4.6' \
      "http://127.0.0.1:$PORT/nacos/v1/ns/instance/list?serviceName=l$n-0&healthyOnly=true" \
      >"$TMP/nginx/bodies/l$n-0.json"
    cp "$TMP/nginx/bodies/l$n-0.json" "$OUT/list-$n-body.json"
    extra "list_body_bytes_$n" "$(stat -c %s "$TMP/nginx/bodies/l$n-0.json")"
    stop_server
    log "list, $n instances (-c $CONNS): muster / rnacos / nginx-same-bytes interleaved"
    for r in $(seq "$ROUNDS"); do
      for s in muster rnacos nginx; do
        run_one "list-$n" "$s" "$r" list --instances "$n" --prefix "l$n" -c "$CONNS" "${D[@]}"
      done
    done
  done
fi

if want register; then
  log "register, ephemeral, $CONNS connections"
  for r in $(seq "$ROUNDS"); do
    for s in muster rnacos; do
      run_one register "$s" "$r" register --instances 1000000 --services 1000 -c "$CONNS" "${D[@]}"
    done
  done
fi

if want beat; then
  for k in light full; do
    log "beat $k: 10000 instances over 100 services"
    for r in $(seq "$ROUNDS"); do
      for s in muster rnacos; do
        run_one "beat-$k" "$s" "$r" beat --kind "$k" --instances 10000 --services 100 -c "$CONNS" "${D[@]}"
      done
    done
  done
fi

if want beatmem; then
  log "memory under sustained beat load: one run of mixed beats on the same 64 connections, VmRSS after $BEAT_WARM of warm-up and at the end of $BEAT_SUSTAIN more (10000 instances)"
  sustain_ns=$((${BEAT_SUSTAIN%s} * 1000000000))
  for r in $(seq "$ROUNDS"); do
    for s in muster rnacos; do
      start "$s"
      samples=$OUT/beatmem-rss__${s}__r$r.tsv
      (while kill -0 "$SPID" 2>/dev/null; do
        printf '%s\t%s\n' "$(date +%s%N)" "$(rss_kb)"
        sleep 0.5
      done) >"$samples" 2>/dev/null &
      sampler=$!
      bench beat-sustained "$s" "$r" beat --kind mixed --instances 10000 --services 100 -c "$CONNS" -d "$BEAT_SUSTAIN" -w "$BEAT_WARM"
      end=$(date +%s%N)
      kill "$sampler" 2>/dev/null || true
      wait "$sampler" 2>/dev/null || true
      # the last samples at the start of the measured window and at its end
      before=$(awk -v t=$((end - sustain_ns)) '$1 <= t {v = $2} END {print v}' "$samples")
      after=$(awk -v t="$end" '$1 <= t {v = $2} END {print v}' "$samples")
      extra "beatmem_${s}_r$r" "$before $after"
      log "  beat memory $s r$r: VmRSS $before kB -> $after kB"
      stop_server
    done
  done
fi

if want persistent; then
  log "persistent register (ephemeral=false, 127.x addresses), $CONNS connections"
  for r in $(seq "$ROUNDS"); do
    for s in muster rnacos; do
      run_one persistent "$s" "$r" persistent-register --instances 1000000 --services 1000 -c "$CONNS" "${D[@]}"
    done
  done
fi

if want push; then
  for m in 1 100 1000; do
    log "push latency, $m subscriber(s), $SUB_RATE writes/s (Muster; r-nacos checked once)"
    for r in $(seq "$ROUNDS"); do
      run_one "push-$m" muster "$r" subscribe -m "$m" --rate "$SUB_RATE" "${D[@]}"
    done
  done
  # r-nacos: one run to show whether it pushes at all
  start rnacos
  bench push-1 rnacos 1 subscribe -m 1 --rate "$SUB_RATE" "${D[@]}" --max-error-rate 1
  stop_server
fi

if want memory; then
  svcs=1000
  per=$((MEM_INSTANCES / svcs))
  log "memory: $MEM_INSTANCES ephemeral instances over $svcs services, after listing every service"
  for r in $(seq "$ROUNDS"); do
    for s in muster rnacos; do
      start "$s"
      sleep 1
      before=$(rss_kb)
      t0=$(date +%s.%N)
      # setup registers per*svcs instances; the 2 s closed-loop run then lists every service
      bench memory "$s" "$r" list --instances "$per" --services "$svcs" --prefix mem -c 16 -d 2s -w 0s
      after=$(rss_kb)
      arena=$(arena_kb)
      t1=$(date +%s.%N)
      extra "memory_${s}_r$r" "$before $after $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') $arena"
      log "  memory $s r$r: VmRSS $before kB -> $after kB, + arena pages $arena kB"
      stop_server
    done
  done
fi

count_instances() { # prefix services -> "all healthy"
  python3 - "$PORT" "$1" "$2" <<'EOF'
import http.client, json, sys
port, prefix, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
tot = healthy = 0
for i in range(n):
    c.request("GET", f"/nacos/v1/ns/instance/list?serviceName={prefix}-{i}")
    hosts = json.loads(c.getresponse().read()).get("hosts", [])
    tot += len(hosts)
    healthy += sum(1 for h in hosts if h.get("healthy"))
print(tot, healthy)
EOF
}

if want open; then
  log "open loop: 100000 instances beating every 5 s (20000 beats/s) + 5000 lists/s, $OPEN_DURATION"
  for r in $(seq "$OPEN_ROUNDS"); do
    for s in muster rnacos; do
      start "$s"
      # Two bench processes, both on cpu $BENCH_CPU: muster-bench mixed has no per-op rate.
      fb=$OUT/open-beat__${s}__r$r
      cmd=(taskset -c "$BENCH_CPU" "$BENCH" beat --kind mixed --instances 100000 --services 1000 --prefix ol
        --rate 20000 -c 64 -w 5s -d "$OPEN_DURATION" --url "http://127.0.0.1:$PORT" --json --no-progress)
      echo "${cmd[*]}" | sed "s#$ROOT/##; s#127.0.0.1:$PORT#127.0.0.1:PORT#" >"$fb.cmd"
      "${cmd[@]}" >"$fb.json" 2>"$fb.err" &
      bpid=$!
      BG_PIDS+=("$bpid")
      # the beat bench's setup is done once the last service holds its 100 instances
      deadline=$((SECONDS + 300))
      until [[ $(curl -s "http://127.0.0.1:$PORT/nacos/v1/ns/instance/list?serviceName=ol-999" | jq '.hosts|length' 2>/dev/null || echo 0) -ge 100 ]]; do
        ((SECONDS < deadline)) || break
        sleep 0.2
      done
      # the list bench's setup re-registers instances 0..999, which the beat pool already holds
      # (instance i of the pool lives in service i % 1000), so it lists those 1000 services
      bench open-list "$s" "$r" list --instances 1 --services 1000 --prefix ol --rate 5000 -c 16 \
        -w 3s -d "$OPEN_DURATION"
      wait "$bpid" || log "  open-beat $s r$r: muster-bench exit $? ($(head -c 300 "$fb.err" | tr '\n' ' '))"
      [[ -s $fb.json ]] && log "  open-beat $s r$r: $(jq -r '"\(.throughput_rps) req/s p99 \(.latency_us.p99)us errors \(.errors|tostring)"' "$fb.json")"
      counts=$(count_instances ol 1000)
      extra "open_${s}_r$r" "$counts"
      log "  open loop $s r$r: instances (all healthy) after the run: $counts of 100000"
      stop_server
    done
  done
fi

restart_test() { # label [muster flags...]
  local label=$1
  shift
  log "restart ($label): writing $RESTART_RECORDS persistent registers"
  MDATA=$TMP/muster-restart
  rm -rf "$MDATA"
  REUSE_DATA=1 start muster "$@"
  local written=0 chunk=0 t0=$SECONDS secs=10
  while ((written < RESTART_RECORDS)); do
    local left=$((RESTART_RECORDS - written))
    local f=$OUT/restart-fill-$label-$chunk
    # muster-bench runs for a duration, so write in chunks sized from the last chunk's rate;
    # each chunk has its own prefix and a pool of exactly what is left, so records are distinct
    # instances (only a last chunk that overshoots re-registers some, i.e. writes extra records)
    taskset -c "$BENCH_CPU" "$BENCH" persistent-register --instances "$left" --services 1000 \
      --prefix "rs$chunk" -c 64 -w 0s -d "${secs}s" --url "http://127.0.0.1:$PORT" --json --no-progress \
      --max-error-rate 1 >"$f.json" 2>"$f.err" || true
    local ok rate
    ok=$(jq -r '.ok // 0' "$f.json" 2>/dev/null || echo 0)
    rate=$((ok / secs + 1))
    ok=$((ok < left ? ok : left))
    ((ok > 0)) || { log "  no progress writing records"; break; }
    written=$((written + ok))
    chunk=$((chunk + 1))
    left=$((RESTART_RECORDS - written))
    secs=$((left * 11 / 10 / rate + 1))
    ((secs <= 60)) || secs=60
    log "  $written records written ($((SECONDS - t0)) s, ~$rate/s)"
  done
  extra "restart_${label}_written" "$written $((SECONDS - t0))"
  stop_server
  extra "restart_${label}_datadir" "$(du -sb "$MDATA" | cut -f1)"
  for r in $(seq "$ROUNDS"); do
    PORT=$(free_port)
    local t_start t_ready
    t_start=$(date +%s%N)
    taskset -c "$SERVER_CPU" "$MUSTER" --listen "127.0.0.1:$PORT" --data-dir "$MDATA" \
      --shards 1 --log warn "$@" >>"$OUT/muster.log" 2>&1 &
    SPID=$! SNAME=muster
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nacos/v1/console/health/readiness" || true) == 200 ]]; do
      kill -0 "$SPID" 2>/dev/null || { log "  muster exited during recovery"; break; }
      sleep 0.01
    done
    t_ready=$(date +%s%N)
    local ms=$(((t_ready - t_start) / 1000000))
    local rss
    rss=$(rss_kb)
    extra "restart_${label}_r$r" "$ms $rss"
    log "  restart $label r$r: ready in $ms ms, VmRSS $rss kB"
    stop_server
  done
}

if want restart; then
  restart_test default
  if [[ $RESTART_BIG_SNAPSHOT == 1 ]]; then
    restart_test snap2m --snapshot-entries 2000000
  fi
fi

# ---------------------------------------------------------------- config center (issue 13)
# r-nacos answers config publishes `true` before its raft group is up, and in some starts
# such configs never appear (a whole get round of 404s, a whole wake-up round of missing
# answers): wait until a published probe config (group perf) reads back, at most 15 s; 1 if
# it never does.
wait_config() {
  local base=http://127.0.0.1:$PORT/nacos/v1/cs/configs deadline=$((SECONDS + 15))
  until curl -s -o /dev/null -X POST -d 'dataId=perf-ready&group=perf&content=ready' "$base" &&
    [[ $(curl -s -o /dev/null -w '%{http_code}' "$base?dataId=perf-ready&group=perf") == 200 ]]; do
    ((SECONDS < deadline)) || { log "$SNAME: a published config never read back"; return 1; }
    sleep 0.2
  done
}

start_config() { # server [flags]: start it, restarting (at most 3 starts) until configs read back
  local i
  for i in 1 2 3; do
    start "$@"
    wait_config && return 0
    stop_server
  done
  start "$@"
  log "$SNAME: config path still not ready after 3 restarts; this round will show it"
}

config_closed() { # section log-line bench-args...: Muster / r-nacos interleaved, CPU sampled
  local section=$1 what=$2
  shift 2
  want "$section" || return 0
  log "$what, $CONNS connections (server CPU sampled)"
  for r in $(seq "$ROUNDS"); do
    for s in muster rnacos; do
      start_config "$s"
      CPU_SAMPLE=1 bench "$section" "$s" "$r" "$section" "$@" -c "$CONNS" "${D[@]}"
      stop_server
    done
  done
}
config_closed config-get "config get: one 1 KiB config" --configs 1 --size 1024
config_closed config-publish "config publish: 1000 configs of 1 KiB, a new content every publish" \
  --configs 1000 --size 1024

if want config-listen; then
  for n in 1000 10000; do
    log "config long-poll wake-up: $n held polls (one per config), $LISTEN_RATE publishes/s"
    for r in $(seq "$ROUNDS"); do
      for s in muster rnacos; do
        # Muster admits 10,000 connections by default; the polls need n + 1
        if [[ $s == muster ]]; then start_config muster --max-connections 20000; else start_config "$s"; fi
        bench "config-listen-$n" "$s" "$r" config-listen --listeners "$n" --rate "$LISTEN_RATE" \
          -w "$LISTEN_WARM" -d "$DURATION"
        stop_server
      done
    done
  done
fi

# ---------------------------------------------------------------- report
extra "finished" "$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS=$ROOT/perf/RESULTS.md CHART=$ROOT/perf/latency.svg
if [[ $ONLY != all && -z ${OUT_DIR:-} ]]; then
  # some sections into a fresh directory: don't replace the full record with them
  RESULTS=$OUT/RESULTS.md CHART=$OUT/latency.svg
fi
log "writing $RESULTS and $CHART"
python3 "$ROOT/perf/summarize.py" "$OUT" >"$RESULTS"
charts=()
for f in "$OUT"/*__r*.json; do
  [[ -e $f ]] || continue
  case $(basename "$f") in beatmem-warm__* | memory__*) ;; *) charts+=("$f") ;; esac
done
if ((${#charts[@]})); then
  "$BENCH" chart "${charts[@]}" -o "$CHART" \
    --title "Latency percentiles, median over rounds (server cpu $SERVER_CPU, bench cpu $BENCH_CPU)"
fi
log "done: $RESULTS, $CHART, $OUT"
