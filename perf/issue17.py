#!/usr/bin/env python3
"""Issue 17 measurements against a release `muster` (perf/ANALYSIS.md records the figures).

    cargo build --release --bin muster
    python3 perf/issue17.py attack   # list latency while two clients loop 80k-key registers
    SERVER_CPU=1 taskset -c 0 python3 perf/issue17.py attack   # server and clients on separate CPUs
    python3 perf/issue17.py memory   # VmRSS around 200k services created and removed, 2 rounds

Each run starts its own server on 127.0.0.1 (port 0) with a temp data dir, and kills it at
the end. Every loop is bounded in count and time.
"""
import http.client
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("MUSTER") or os.environ.get("MUSTER_BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release", "muster"))


def start(*args):
    d = tempfile.mkdtemp(prefix="muster-i17-")
    pin = ["taskset", "-c", os.environ["SERVER_CPU"]] if os.environ.get("SERVER_CPU") else []
    p = subprocess.Popen([*pin, BIN, "--listen", "127.0.0.1:0", "--data-dir", d, *args],
                         stdout=subprocess.PIPE, text=True,
                         stderr=open(os.environ["STDERR"], "w") if os.environ.get("STDERR") else subprocess.DEVNULL,
                         env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.time() + 20
    while time.time() < deadline:
        line = p.stdout.readline()
        m = re.match(r"muster listening on (\S+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            addr = (host, int(port))
            while time.time() < deadline:  # the naming API opens once recovery is done
                if req(conn(addr), "GET", "/nacos/v1/console/health/readiness")[0] == 200:
                    return p, d, addr
                time.sleep(0.02)
    p.kill()
    raise SystemExit("muster did not start")


def stop(p, d):
    p.kill()
    p.wait()
    shutil.rmtree(d, ignore_errors=True)


def conn(addr):
    return http.client.HTTPConnection(addr[0], addr[1], timeout=30)


def req(c, method, path, body=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    return r.status, r.read()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wide_metadata(keys):
    return "{" + ",".join(f'"{i:x}":0' for i in range(keys)) + "}"


def attacker(addr, seconds, out, control=False):
    body = "serviceName=a&ip=1.1.1.1&port=1&metadata=" + wide_metadata(80_000)
    if control:
        # The same bytes with no metadata to parse: what receiving such a request costs at all.
        # (A bad port makes it a 400 too, after the whole form is parsed.)
        body = "serviceName=a&ip=1.1.1.1&port=x&x=" + "a" * (len(body) - 34)
    c = conn(addr)
    n, end = 0, time.time() + seconds
    while time.time() < end and n < 100_000:
        st, _ = req(c, "POST", "/nacos/v1/ns/instance", body)
        assert st == 400, st
        n += 1
    out.put(n)


def lists(addr, seconds):
    c = conn(addr)
    lat, end = [], time.time() + seconds
    while time.time() < end and len(lat) < 1_000_000:
        t = time.perf_counter()
        st, _ = req(c, "GET", "/nacos/v1/ns/instance/list?serviceName=victim")
        lat.append((time.perf_counter() - t) * 1000)
        assert st == 200
    lat.sort()
    pct = lambda q: lat[min(int(len(lat) * q), len(lat) - 1)]
    return len(lat), pct(0.5), pct(0.99), lat[-1]


def attack():
    p, d, addr = start("--shards", "1", "--pin", "false")
    try:
        c = conn(addr)
        for i in range(10):
            assert req(c, "POST", f"/nacos/v1/ns/instance?serviceName=victim&ip=10.0.0.{i}&port=80")[0] == 200
        n, p50, p99, mx = lists(addr, 5)
        print(f"baseline: {n} lists in 5 s, p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {mx:.3f} ms")
        for control in (False, True):
            q = mp.Queue()
            procs = [mp.Process(target=attacker, args=(addr, 10, q, control)) for _ in range(2)]
            for a in procs:
                a.start()
            time.sleep(0.5)  # let both attackers reach full speed before measuring
            n, p50, p99, mx = lists(addr, 8)
            for a in procs:
                a.join(30)
            sent = sum(q.get(timeout=5) for _ in procs)
            what = "same-size junk parameter (control)" if control else "80k-key metadata"
            print(f"under attack, {what}: {n} lists in 8 s, p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {mx:.3f} ms;"
                  f" {sent} attacker requests ({len(wide_metadata(80_000)) / 1e6:.2f} MB each) answered 400 in 10 s")
    finally:
        stop(p, d)


def churn(addr, lo, hi, method):
    c = conn(addr)
    for i in range(lo, hi):
        st, _ = req(c, method, f"/nacos/v1/ns/instance?serviceName=m{i}&ip=10.0.0.1&port=1")
        assert st == 200, st


def metrics(addr):
    import json
    st, b = req(conn(addr), "GET", "/nacos/v1/ns/operator/metrics")
    return json.loads(b)


def memory(services=200_000, workers=4, rounds=int(os.environ.get("ROUNDS", "2"))):
    p, d, addr = start("--shards", "2", "--pin", "false", "--empty-service-ttl-ms", "1000",
                       # Long enough that nothing expires while the (slow, Python) client registers;
                       # each lease still holds its instance until it fires (HB_MS after its
                       # last renewal), so memory is read again after that.
                       "--heartbeat-timeout-ms", os.environ.get("HB_MS", "90000"),
                       "--ip-delete-timeout-ms", str(2 * int(os.environ.get("HB_MS", "90000"))),
                       "--max-services", str(services + 1000), "--max-services-per-namespace", str(services + 1000))
    try:
        time.sleep(1)
        print(f"idle: VmRSS {rss_mb(p.pid):.1f} MB")
        step = services // workers
        for r in range(1, rounds + 1):
            for method in ("POST", "DELETE"):
                ps = [mp.Process(target=churn, args=(addr, k * step, (k + 1) * step, method)) for k in range(workers)]
                for x in ps:
                    x.start()
                for x in ps:
                    x.join(600)
                m = metrics(addr)
                print(f"round {r}: after {method} of {services} instances (one per service): "
                      f"services {m['serviceCount']}, instances {m['instanceCount']}, VmRSS {rss_mb(p.pid):.1f} MB")
            end = time.time() + 120
            while time.time() < end and metrics(addr)["serviceCount"] > 0:
                time.sleep(0.5)
            m = metrics(addr)
            print(f"round {r}: empty services removed: services {m['serviceCount']}, VmRSS {rss_mb(p.pid):.1f} MB")
            settle = int(os.environ.get("HB_MS", "90000")) / 1000 + 5
            time.sleep(settle)  # every lease of a removed instance has fired by now
            print(f"round {r}: {settle:.0f} s later (leases fired): VmRSS {rss_mb(p.pid):.1f} MB")
            if os.environ.get("PAUSE"):  # hold the server for outside inspection (gdb, pmap)
                print(f"pid {p.pid}; waiting for {os.environ['PAUSE']} to exist", flush=True)
                end = time.time() + 300
                while time.time() < end and not os.path.exists(os.environ["PAUSE"]):
                    time.sleep(0.5)
                print(f"round {r}: after the pause: VmRSS {rss_mb(p.pid):.1f} MB")
    finally:
        stop(p, d)


if __name__ == "__main__":
    {"attack": attack, "memory": memory}[sys.argv[1] if len(sys.argv) > 1 else "attack"]()
