#!/usr/bin/env python3
"""Turns one perf/run.sh output directory into perf/RESULTS.md (on stdout).

Reads <label>__<server>__r<round>.json (muster-bench --json reports), the .cmd
file next to each, and extra.tsv (machine facts, VmRSS samples, restart times,
instance counts). Every figure is a median over rounds; ratios are ratios of
medians. Standard library only.
"""

import glob
import json
import os
import re
import statistics
import sys

OUT = sys.argv[1]
PCTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999")]


def load_extra():
    # A section re-run into the same directory (OUT_DIR=..., ONLY=...) appends its lines again:
    # the last line of a key wins.
    facts, multi = {}, {}
    with open(os.path.join(OUT, "extra.tsv")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            facts[k] = v
    for k, v in facts.items():
        m = re.match(r"(.*)_r(\d+)$", k)
        if m:
            multi.setdefault(m.group(1), []).append(v.split())
    return facts, multi


FACTS, MULTI = load_extra()


def load_reports():
    reps = {}
    for path in sorted(glob.glob(os.path.join(OUT, "*__*__r*.json"))):
        stem = os.path.basename(path)[:-5]
        label, server, rnd = stem.split("__")
        try:
            with open(path) as f:
                v = json.load(f)
        except (OSError, ValueError):
            continue
        cmd = ""
        if os.path.exists(path[:-5] + ".cmd"):
            with open(path[:-5] + ".cmd") as f:
                cmd = f.read().strip()
        reps.setdefault(label, {}).setdefault(server, []).append((v, cmd))
    return reps


REPS = load_reports()


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def failed_run(label, r):
    """A config run in which the server failed (half or more of the requests, or of the wake-ups,
    were errors: r-nacos sometimes acknowledges publishes in its first seconds that never become
    readable). Left out of the medians; the per-scenario table says how many."""
    return label.startswith("config-") and r.get("error_rate", 0) >= 0.5


def stat(label, server, key="latency_us"):
    """Median throughput, percentiles, error count and run count (failed config runs left out)."""
    runs = [v for v, _ in REPS.get(label, {}).get(server, []) if not failed_run(label, v)]
    if not runs:
        return None
    lat = {
        name: med([(r.get(key) or {}).get(k) for r in runs]) for name, k in PCTS
    }
    return {
        "rps": med([r.get("throughput_rps") for r in runs]),
        "lat": lat,
        "errors": sum(sum(r.get("errors", {}).values()) for r in runs),
        "requests": sum(r.get("requests", 0) for r in runs),
        "runs": len(runs),
        "all_rps": [r.get("throughput_rps") for r in runs],
        "samples": sum(r.get("pushes", 0) for r in runs),
        "datagrams": sum(r.get("datagrams", 0) for r in runs),
        "notes": sorted({n for r in runs for n in r.get("notes", []) if not n.startswith("setup:")}),
    }


def fmt_rps(x):
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_us(x):
    if x is None:
        return "n/a"
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.0f} µs"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}×"


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed**"


CEIL = stat("ceiling", "nginx")
CEIL_RPS = CEIL["rps"] if CEIL else None

rows = []  # (row, target, muster, other, ratio, result)


def rps_row(name, label, other, target_ratio, other_name):
    m, o = stat(label, "muster"), stat(label, other)
    if not m or not o:
        rows.append((name, f"≥{target_ratio:g}× {other_name}", fmt_rps(m and m["rps"]),
                     fmt_rps(o and o["rps"]), "n/a", "not measured (no reports)"))
        return
    r = ratio(m["rps"], o["rps"])
    rows.append((name, f"≥{target_ratio:g}× {other_name}" if target_ratio >= 1 else f"≥{target_ratio:.0%} of {other_name}",
                 f"{fmt_rps(m['rps'])} req/s", f"{fmt_rps(o['rps'])} req/s", fmt_ratio(r),
                 verdict(r is not None and r >= target_ratio)))


rps_row("list, 10 instances", "list-10", "rnacos", 2, "r-nacos")
rps_row("list, 10 instances", "list-10", "nginx", 0.8, "nginx same bytes")
rps_row("list, 100 instances", "list-100", "rnacos", 4, "r-nacos")
rps_row("list, 100 instances", "list-100", "nginx", 0.8, "nginx same bytes")
rps_row("register, ephemeral, 64 conns", "register", "rnacos", 3, "r-nacos")
m = stat("register", "muster")
o = stat("register", "rnacos")
if m:
    rows.append(("register, ephemeral, 64 conns", "p99 ≤ 5 ms", fmt_us(m["lat"]["p99"]),
                 f"r-nacos p99 {fmt_us(o['lat']['p99'])}" if o else "n/a", "—",
                 verdict(m["lat"]["p99"] is not None and m["lat"]["p99"] <= 5000)))
rps_row("beat, light", "beat-light", "rnacos", 2, "r-nacos")
rps_row("beat, full", "beat-full", "rnacos", 2, "r-nacos")


def rss_pair(key):
    v = MULTI.get(key)
    if not v:
        return None
    return med([int(x[0]) for x in v]), med([int(x[1]) for x in v])


bm, br = rss_pair("beatmem_muster"), rss_pair("beatmem_rnacos")
if bm:
    growth = (bm[1] - bm[0]) / bm[0]
    other = f"{br[0] / 1024:.1f} → {br[1] / 1024:.1f} MiB" if br else "n/a"
    rows.append((f"memory flat under sustained beats ({FACTS.get('beat_sustain', '')} after {FACTS.get('beat_warm', '3s')} of warm-up)",
                 "VmRSS growth ≤ 5%", f"{bm[0] / 1024:.1f} → {bm[1] / 1024:.1f} MiB ({growth:+.1%})",
                 f"r-nacos {other}", "—", verdict(growth <= 0.05)))
else:
    rows.append(("memory flat under sustained beats", "VmRSS growth ≤ 5%", "n/a", "n/a", "—", "not measured"))
rps_row("persistent register (Muster fdatasyncs)", "persistent", "rnacos", 2, "r-nacos (non-durable)")

for subs in (1, 100, 1000):
    m = stat(f"push-{subs}", "muster", "push_latency_us")
    f = stat(f"push-{subs}", "muster", "push_from_send_latency_us")
    target = "p99 ≤ 2 ms" if subs == 100 else "(reported)"
    if not m:
        rows.append((f"push latency, {subs} subscriber(s)", target, "n/a", "", "—", "not measured"))
        continue
    rn = stat(f"push-{subs}", "rnacos", "push_latency_us")
    other = "r-nacos: no push"
    if rn is not None:
        other = f"r-nacos: {rn['datagrams']} datagrams in {rn['runs']} run(s)"
    elif subs != 1:
        other = "r-nacos: no push (see 1 subscriber)"
    early = [n for n in m["notes"] if "before the write's ok" in n]
    txt = (f"from ok: p50 {fmt_us(m['lat']['p50'])}, p99 {fmt_us(m['lat']['p99'])}; "
           f"from send: p50 {fmt_us(f['lat']['p50'])}, p99 {fmt_us(f['lat']['p99'])} ({m['samples']} samples; "
           "receipt = kernel receive timestamp)")
    res = "—"
    if subs == 100:
        ok_met = m["lat"]["p99"] is not None and m["lat"]["p99"] <= 2000
        send_met = f["lat"]["p99"] is not None and f["lat"]["p99"] <= 2000
        res = verdict(ok_met)
        if ok_met and send_met:
            res += " (from the write's `ok`, and from the write's send too)"
        if ok_met and not send_met:
            res = ("**met only nominally**: datagrams arrive before the write's `ok` (recorded as 0); "
                   f"from the write's send p99 is {fmt_us(f['lat']['p99'])} — **missed** on that reading")
    elif early and (m["lat"]["p99"] or 0) == 0:
        res = "datagrams arrive before the write's `ok`"
    rows.append((f"push latency, {subs} subscriber(s)", target, txt, other, "—", res))


def mem_per_instance(server):
    v = MULTI.get(f"memory_{server}")
    if not v:
        return None
    n = int(FACTS.get("mem_instances", "100000"))
    # field 4 (when present): memfd arena pages in kB, memory outside VmRSS (Muster's sendfile
    # bodies), counted with the RSS growth
    return med([(int(x[1]) - int(x[0]) + (int(x[3]) if len(x) > 3 else 0)) * 1024 / n for x in v])


mm, mr = mem_per_instance("muster"), mem_per_instance("rnacos")
n_mem = int(FACTS.get("mem_instances", "100000"))
rows.append((f"memory, {n_mem:,} instances / 1000 services (VmRSS growth + memfd list caches)", "≤ 500 B per instance",
             "n/a" if mm is None else f"{mm:,.0f} B/instance",
             "n/a" if mr is None else f"r-nacos {mr:,.0f} B/instance",
             fmt_ratio(ratio(mm, mr)) if mm and mr else "n/a",
             verdict(None if mm is None else mm <= 500)))

for label, desc in (("default", "default config (--snapshot-entries 10000)"),
                    ("snap2m", "--snapshot-entries 2000000")):
    v = MULTI.get(f"restart_{label}")
    w = FACTS.get(f"restart_{label}_written")
    if not v:
        rows.append((f"restart, {desc}", "ready ≤ 2 s", "n/a", "r-nacos not measured", "—", "not measured"))
        continue
    written = int(w.split()[0]) if w else 0
    ms = med([int(x[0]) for x in v])
    full = written >= int(FACTS.get("restart_target", "1000000"))
    if full:
        res = verdict(ms <= 2000)
    elif ms > 2000:
        res = f"**missed** (already over 2 s with {written:,} records; 1M not run in this record)"
    else:
        res = f"not measured at 1M (only {written:,} records written)"
    rows.append((f"restart, {written:,} persistent records, {desc}", "ready ≤ 2 s (1M records)",
                 f"{ms:,.0f} ms (median of {len(v)})", "r-nacos not measured", "—", res))

ob, ol = stat("open-beat", "muster"), stat("open-list", "muster")
obr, olr = stat("open-beat", "rnacos"), stat("open-list", "rnacos")
oc = MULTI.get("open_muster")
ocr = MULTI.get("open_rnacos")
if ob and ol:
    p99 = max(ob["lat"]["p99"] or 1e12, ol["lat"]["p99"] or 1e12)
    other = "n/a"
    if obr and olr:
        other = f"r-nacos beat p99 {fmt_us(obr['lat']['p99'])}, list p99 {fmt_us(olr['lat']['p99'])}"
    rows.append(("open loop: 20k beats/s + 5k lists/s", "p99 ≤ 5 ms",
                 f"beat p99 {fmt_us(ob['lat']['p99'])}, list p99 {fmt_us(ol['lat']['p99'])}",
                 other, "—", verdict(p99 <= 5000)))
if oc:
    healthy = [int(x[1]) for x in oc]
    total = [int(x[0]) for x in oc]
    other = "n/a"
    if ocr:
        other = "r-nacos " + ", ".join(f"{x[0]}/{x[1]}" for x in ocr)
    rows.append(("open loop: no false expiry", "100,000 instances, all healthy, after every round",
                 ", ".join(f"{t}/{h}" for t, h in zip(total, healthy)) + " (total/healthy per round)",
                 other, "—", verdict(all(t == 100000 and h == 100000 for t, h in zip(total, healthy)))))
if not (ob and ol):
    rows.append(("open loop: 20k beats/s + 5k lists/s", "p99 ≤ 5 ms, no false expiry", "n/a", "n/a", "—", "not measured"))

# ------------------------------------------------------------------ config center (issue 13)
def cpu_us_per_req(label, server):
    """Median over rounds of the server's CPU µs per request (run.sh CPU_SAMPLE: ticks over a
    sub-window of the measured one, divided by the requests that round's throughput puts in it)."""
    vals = []
    for k, v in FACTS.items():
        m = re.match(rf"cpu_{re.escape(label)}_{server}_r(\d+)$", k)
        if not m:
            continue
        ticks, secs, hz = (float(x) for x in v.split())
        path = os.path.join(OUT, f"{label}__{server}__r{m.group(1)}.json")
        try:
            with open(path) as f:
                v = json.load(f)
        except (OSError, ValueError):
            continue
        if failed_run(label, v):
            continue
        rps = v.get("throughput_rps") or 0
        if rps > 0 and secs > 0:
            vals.append(ticks / hz * 1e6 / (rps * secs))
    return med(vals)


def fmt_cpu(x):
    return "n/a" if x is None else f"{x:.1f} µs"


cfg_rows = []  # (row, target, muster, r-nacos, ratio, result)
for label, name, target in (("config-get", "config get, 1 KiB, 64 conns", 3),
                            ("config-publish", "config publish, 1 KiB, 1000 configs, 64 conns (Muster fdatasyncs)", None)):
    m, o = stat(label, "muster"), stat(label, "rnacos")
    if not m:
        continue
    cm, co = cpu_us_per_req(label, "muster"), cpu_us_per_req(label, "rnacos")
    r = ratio(m["rps"], o and o["rps"])
    cfg_rows.append((name, f"≥{target}× r-nacos" if target else "(reported)",
                     f"{fmt_rps(m['rps'])} req/s, p99 {fmt_us(m['lat']['p99'])}, server CPU {fmt_cpu(cm)}/req",
                     "n/a" if not o else f"{fmt_rps(o['rps'])} req/s, p99 {fmt_us(o['lat']['p99'])}, server CPU {fmt_cpu(co)}/req",
                     fmt_ratio(r) + ("" if cm is None or co is None else f" (CPU/req {co / cm:.2f}× less)"),
                     verdict(r is not None and r >= target) if target else "—"))
for n in (1000, 10000):
    label = f"config-listen-{n}"
    m = stat(label, "muster", "wake_latency_us")
    if not m:
        continue
    o = stat(label, "rnacos", "wake_latency_us")
    ok_runs = lambda s: [v for v, _ in REPS[label].get(s, []) if not failed_run(label, v)]
    wakes = lambda s: sum(v.get("wakes", 0) for v in ok_runs(s))
    missing = lambda s: sum((v.get("wake_errors") or {}).get("wake_missing", 0) for v in ok_runs(s))

    def txt(st, s):
        f = stat(label, s, "wake_from_send_latency_us")
        return (f"from ok: p50 {fmt_us(st['lat']['p50'])}, p99 {fmt_us(st['lat']['p99'])}; from the publish's send: "
                f"p50 {fmt_us(f['lat']['p50'])}, p99 {fmt_us(f['lat']['p99'])} "
                f"({wakes(s)} wake-ups, {missing(s)} missing)")
    target = "p99 ≤ 5 ms" if n == 10000 else "(reported)"
    cfg_rows.append((f"long-poll wake-up, publish `ok` → the poll on that config answered, {n:,} polls held",
                     target, txt(m, "muster"), "n/a" if not o else "r-nacos " + txt(o, "rnacos"), "—",
                     verdict(m["lat"]["p99"] is not None and m["lat"]["p99"] <= 5000 and missing("muster") == 0)
                     if n == 10000 else "—"))

# ------------------------------------------------------------------ output
p = print
p("# Muster performance record")
p()
p(f"Generated by `perf/run.sh` (run {FACTS.get('started')} → {FACTS.get('finished')}, raw reports in "
  f"`perf/out/{os.path.basename(OUT)}/`, not committed). Every figure is the **median over "
  f"{FACTS.get('rounds')} interleaved rounds** (Muster, r-nacos, nginx, Muster, r-nacos, nginx, …; a fresh "
  "server process with an empty data dir for every run) and every ratio is a ratio of medians. The machine has noisy "
  "neighbours: single runs swing by ±50%, so read ratios, not absolute numbers. Latencies are muster-bench's "
  "hdrhistogram percentiles of closed-loop requests (open-loop rows: from the intended send time).")
p()
p("## Machine, versions, CPU split")
p()
p("| | |")
p("|---|---|")
p(f"| cores | {FACTS.get('cores')} ({FACTS.get('cpu_model')}) |")
p(f"| kernel | `{FACTS.get('kernel')}` (`{FACTS.get('uname')}`) |")
p(f"| memory | {FACTS.get('mem_total')} |")
p(f"| rustc | {FACTS.get('rustc')} |")
# every run into this directory, in order: the commit it built and the sections it ran
RUNS = []
with open(os.path.join(OUT, "extra.tsv")) as f:
    for line in f:
        k, _, v = line.rstrip("\n").partition("\t")
        if k == "muster_sha":
            RUNS.append(f"git {v}")
        elif k.startswith("muster_sha_") and RUNS:
            RUNS[-1] = f"git {v}"
p(f"| Muster | {'; then '.join(RUNS) if RUNS else 'git ?'} "
  "(the first run is all sections unless it says otherwise), `cargo build --release`, `--shards 1` |")
p(f"| r-nacos | {FACTS.get('rnacos')} |")
p(f"| nginx | {FACTS.get('nginx')} |")
p(f"| parameters | `ROUNDS={FACTS.get('rounds')} DURATION={FACTS.get('duration')} WARMUP={FACTS.get('warmup')} "
  f"BEAT_SUSTAIN={FACTS.get('beat_sustain')} OPEN_DURATION={FACTS.get('open_duration')} "
  f"MEM_INSTANCES={FACTS.get('mem_instances')} RESTART_RECORDS={FACTS.get('restart_records')}` "
  "(defaults: see perf/run.sh) |")
p(f"| run | {FACTS.get('rounds')} rounds × {FACTS.get('duration')} measured + {FACTS.get('warmup')} warm-up, "
  f"{FACTS.get('conns')} connections unless stated |")
p()
p(f"**CPU split:** the server under test runs alone on **cpu {FACTS.get('server_cpu')}** "
  f"(`taskset -c {FACTS.get('server_cpu')}`), the load generator `muster-bench` (one thread) on "
  f"**cpu {FACTS.get('bench_cpu')}** (`taskset -c {FACTS.get('bench_cpu')}`). Muster runs one shard, i.e. one "
  "thread pinned to that one core; r-nacos runs with `RNACOS_HTTP_WORKERS=1` but all its threads "
  "(runtime, raft, timers) share the same core; nginx runs `worker_processes 1`. Only one server runs at a time. "
  "All traffic is on 127.0.0.1.")
p()
p("## Targets (issue 6)")
p()
p("| Row | Target | Muster | r-nacos / nginx (same run) | Ratio | Result |")
p("|---|---|---|---|---|---|")
for r in rows:
    p("| " + " | ".join(str(x) for x in r) + " |")
p()
if cfg_rows:
    p("## Targets (issue 13, config center)")
    p()
    p("Server CPU per request: utime+stime of the server process (`/proc/PID/stat`) over a sub-window of the "
      "measured one, divided by the requests answered in it; it holds steadier than throughput on a shared machine. "
      "Wake-up: `muster-bench config-listen` holds N polls (one connection and one config each, "
      f"`Long-Pulling-Timeout: 30000`), then publishes {FACTS.get('listen_rate', '?')}/s, each to a different "
      "config; one sample per answered poll, from the publish's `ok` being read (an answer read first counts as 0).")
    p()
    p("| Row | Target | Muster | r-nacos 0.8.8 (same run) | Ratio | Result |")
    p("|---|---|---|---|---|---|")
    for r in cfg_rows:
        p("| " + " | ".join(str(x) for x in r) + " |")
    p()
if CEIL_RPS:
    p(f"HTTP ceiling (nginx `return 200 'ok'`, {FACTS.get('conns')} connections, same client and pinning): "
      f"**{fmt_rps(CEIL_RPS)} req/s**, p99 {fmt_us(CEIL['lat']['p99'])}. The per-scenario tables give "
      "every server's throughput as a fraction of it.")
    p()

LABELS = [
    ("ceiling", "HTTP ceiling: nginx `return 200 'ok'`", "latency_us"),
    ("list-10", "list, 10 instances (`instance/list?healthyOnly=true`, one service)", "latency_us"),
    ("list-100", "list, 100 instances", "latency_us"),
    ("register", "register, ephemeral, 64 connections (1M-instance pool over 1000 services)", "latency_us"),
    ("beat-light", "beat, light (10,000 instances over 100 services)", "latency_us"),
    ("beat-full", "beat, full (10,000 instances over 100 services)", "latency_us"),
    ("beat-sustained", "sustained mixed beats (the memory-flatness run)", "latency_us"),
    ("persistent", "persistent register (`ephemeral=false`, 127.x addresses)", "latency_us"),
    ("push-1", "push latency, 1 subscriber (write `ok` → UDP datagram)", "push_latency_us"),
    ("push-100", "push latency, 100 subscribers", "push_latency_us"),
    ("push-1000", "push latency, 1000 subscribers", "push_latency_us"),
    ("memory", "memory row's load: register 100k instances, then list all 1000 services for 2 s", "latency_us"),
    ("open-beat", "open loop: beats at 20,000/s (100k instances, every 5 s)", "latency_us"),
    ("open-list", "open loop: lists at 5,000/s, concurrent with the beats", "latency_us"),
    ("config-get", "config get (`GET /nacos/v1/cs/configs`, one 1 KiB config)", "latency_us"),
    ("config-publish", "config publish (`POST /nacos/v1/cs/configs`, 1000 configs, 1 KiB, new content each time)",
     "latency_us"),
    ("config-listen-1000", "config long-poll wake-up, 1,000 held polls", "wake_latency_us"),
    ("config-listen-10000", "config long-poll wake-up, 10,000 held polls", "wake_latency_us"),
]
NAMES = {"muster": "Muster", "rnacos": "r-nacos 0.8.8", "nginx": "nginx"}
p("## Per scenario")
for label, title, key in LABELS:
    if label not in REPS:
        continue
    p()
    p(f"### {title}")
    p()
    if key == "wake_latency_us":
        p("Wake-up latency from the publish's `ok` (the row's metric; an answer read before the `ok` counts as 0), "
          "then from the publish's send time, then the publish's own latency (open loop, from its intended send time).")
        p()
        p("| Server | Runs | Wake-ups (missing) | p50 | p90 | p99 | p99.9 | Publish errors |")
        p("|---|---|---|---|---|---|---|---|")
    elif key == "push_latency_us":
        p("Push latency from the write's `ok` (the row's metric; a datagram that arrives before the `ok` is "
          "read counts as 0), then from the write's send time, then the write's own latency.")
        p()
        p("| Server | Runs | Push samples | p50 | p90 | p99 | p99.9 | Write errors |")
        p("|---|---|---|---|---|---|---|---|")
    else:
        p("| Server | Runs | Median req/s (runs) | p50 | p90 | p99 | p99.9 | Errors | of nginx ceiling |")
        p("|---|---|---|---|---|---|---|---|---|")
    ran = [s for s in ("muster", "rnacos", "nginx") if s in REPS[label]]
    servers = [s for s in ran if stat(label, s, key)]
    stats = {s: stat(label, s, key) for s in servers}
    for s in servers:
        st = stats[s]
        lat = " | ".join(fmt_us(st["lat"][n]) for n, _ in PCTS)
        if key in ("wake_latency_us", "push_latency_us"):
            if key == "wake_latency_us":
                runs_ = [v for v, _ in REPS[label][s] if not failed_run(label, v)]
                woke = sum(v.get("wakes", 0) for v in runs_)
                miss = sum((v.get("wake_errors") or {}).get("wake_missing", 0) for v in runs_)
                count, more = f"{woke} ({miss})", (("wake_from_send_latency_us", "from send"),
                                                   ("latency_us", "publish latency"))
            else:
                count = f"{st['samples']}" + ("" if st["samples"] else f" (no push: {st['datagrams']} datagrams)")
                more = (("push_from_send_latency_us", "from send"), ("latency_us", "write latency"))
            p(f"| {NAMES[s]}, from ok | {st['runs']} | {count} | {lat} | {st['errors']} |")
            for k2, what in more:
                s2 = stat(label, s, k2)
                if s2:
                    lat2 = " | ".join(fmt_us(s2["lat"][n]) for n, _ in PCTS)
                    p(f"| {NAMES[s]}, {what} | {s2['runs']} | | {lat2} | |")
        else:
            runs = ", ".join(fmt_rps(x) for x in st["all_rps"])
            name = NAMES[s] + (" (same reply bytes)" if s == "nginx" and label.startswith("list") else "")
            p(f"| {name} | {st['runs']} | **{fmt_rps(st['rps'])}** ({runs}) | {lat} | {st['errors']} of {st['requests']:,} "
              f"| {fmt_ratio(ratio(st['rps'], CEIL_RPS))} |")
    if key == "latency_us" and "muster" in stats:
        bits = []
        for s in servers:
            if s != "muster":
                bits.append(f"Muster/{NAMES[s]}: **{fmt_ratio(ratio(stats['muster']['rps'], stats[s]['rps']))}**")
        bits.append(f"Muster/nginx ceiling: **{fmt_ratio(ratio(stats['muster']['rps'], CEIL_RPS))}**")
        p()
        p("Ratios (median throughput): " + "; ".join(bits) + ".")
    for s in ran:
        failed = sum(1 for v, _ in REPS[label][s] if failed_run(label, v))
        if failed:
            p()
            p(f"- {NAMES[s]}: {failed} of {len(REPS[label][s])} runs failed (half or more errors) and are left "
              "out of the medians above")
    notes = sorted({n for s in servers for n in stats[s]["notes"]})
    if notes:
        p()
        for n in notes:
            p(f"- bench note: {n}")
    if label.startswith("list") and FACTS.get(f"list_body_bytes_{label[5:]}"):
        p(f"- reply body: {FACTS[f'list_body_bytes_' + label[5:]]} bytes (Muster's list reply, captured and served "
          "by nginx from its open file cache)")

p()
p("## Memory, restart and open-loop facts")
p()
for key in sorted(MULTI):
    if key.startswith(("beatmem", "memory", "restart", "open")):
        p(f"- `{key}`: " + "; ".join(" ".join(x) for x in MULTI[key]))
for key in sorted(FACTS):
    if key.startswith("restart_") and not re.search(r"_r\d+$", key):
        p(f"- `{key}`: {FACTS[key]}")
p()
p("Formats: `beatmem_<server>`: VmRSS kB before / after the sustained beat run; `memory_<server>`: VmRSS kB "
  "before registering / after listing every service, seconds taken, and memfd arena kB (Muster; counted in the per-instance figure); `restart_<cfg>`: ms from process start "
  "to readiness 200, VmRSS kB when ready; `restart_<cfg>_written`: records written, seconds; "
  "`restart_<cfg>_datadir`: data dir bytes; `open_<server>`: instances / healthy instances counted after the run.")
p()
p("## Exact commands")
p()
p("Servers (one at a time; `PORT` is a free loopback port, `$TMP` a fresh temp dir):")
p()
p("```sh")
p(f"taskset -c {FACTS.get('server_cpu')} target/release/muster --listen 127.0.0.1:PORT --data-dir $TMP/muster-data --shards 1 --log warn")
p(f"RNACOS_HTTP_PORT=PORT RNACOS_GRPC_PORT=GPORT RNACOS_HTTP_CONSOLE_PORT=0 RNACOS_DATA_DIR=$TMP/rnacos-data \\\n"
  f"  RNACOS_RAFT_NODE_ADDR=127.0.0.1:GPORT RNACOS_HTTP_WORKERS=1 taskset -c {FACTS.get('server_cpu')} rnacos")
p(f"taskset -c {FACTS.get('server_cpu')} nginx -p $TMP/nginx -c $TMP/nginx/nginx.conf -e stderr   # config: see perf/run.sh start_nginx")
p("```")
p()
p("Load (one line per scenario and server, as run):")
p()
p("```sh")
seen = set()
for label, _, _ in LABELS:
    for s in ("muster", "rnacos", "nginx"):
        for _, cmd in REPS.get(label, {}).get(s, [])[:1]:
            if cmd and cmd not in seen:
                seen.add(cmd)
                p(f"# {label} / {s}")
                p(cmd)
p("```")
