"""Ad hoc (not yet a muster-bench scenario, not in run.sh): hold N config long polls on a
running muster, report its VmRSS growth per held poll, then publish once and report when each
woken poll's answer arrives, measured from the moment the publish request is sent (so the
publish's own fdatasync is included). One single-threaded Python client on loopback: at 10,000
polls the client's own reading of 10,000 sockets is part of the number.

Usage: python3 perf/config_longpoll.py 127.0.0.1:PORT N same|distinct MUSTER_PID
  same      all N polls listen to one config; one publish wakes all N
  distinct  poll i listens to config k<i>; one publish wakes one of the N
Start muster with --max-connections above N (and --config-max-per-namespace above N for
distinct); every wait is bounded (30 s)."""
import hashlib, selectors, socket, subprocess, sys, time, urllib.request, urllib.parse

addr, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]  # mode: same (all on one key) | distinct
host, port = addr.split(":"); port = int(port)
base = "http://%s" % addr

def publish(d, content):
    data = urllib.parse.urlencode({"dataId": d, "group": "G", "content": content}).encode()
    t = time.perf_counter()
    urllib.request.urlopen(base + "/nacos/v1/cs/configs", data=data, timeout=10).read()
    return t

def metric(name):
    for l in urllib.request.urlopen(base + "/metrics", timeout=10).read().decode().splitlines():
        if l.startswith(name + " "):
            return float(l.split()[1])
    return None

def rss(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS"):
            return int(l.split()[1])

pid = int(sys.argv[4])
md5 = hashlib.md5(b"v1").hexdigest()
keys = ["k%d" % i for i in range(n)] if mode == "distinct" else ["k0"]
for k in keys:
    publish(k, "v1")
rss0 = rss(pid)
sel = selectors.DefaultSelector()
socks = []
for i in range(n):
    k = keys[i % len(keys)]
    body = urllib.parse.urlencode({"Listening-Configs": "%s\x02G\x02%s\x01" % (k, md5)})
    req = ("POST /nacos/v1/cs/configs/listener HTTP/1.1\r\nHost: x\r\nLong-Pulling-Timeout: 60000\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s = socket.create_connection((host, port))
    s.sendall(req.encode())
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, i)
    socks.append(s)
for _ in range(600):
    if metric("muster_config_held_polls") == n:
        break
    time.sleep(0.05)
held = metric("muster_config_held_polls")
rss1 = rss(pid)
print("held=%d rss_before=%d KiB rss_held=%d KiB per_poll=%.0f B" % (held, rss0, rss1, (rss1 - rss0) * 1024.0 / n))
# Wake: publish one key; measure arrival of answers.
target = n if mode == "same" else 1
t0 = publish("k0", "v2")
got = []
deadline = time.perf_counter() + 30
while len(got) < target and time.perf_counter() < deadline:
    for key, _ in sel.select(timeout=1):
        data = key.fileobj.recv(4096)
        if data:
            got.append(time.perf_counter() - t0)
        sel.unregister(key.fileobj)
got.sort()
pct = lambda p: got[min(len(got) - 1, int(p * len(got)))] * 1000
print("mode=%s woken=%d/%d p50=%.2f ms p99=%.2f ms max=%.2f ms (from publish sent)" % (mode, len(got), target, pct(0.5), pct(0.99), got[-1] * 1000))
for s in socks:
    s.close()
