#!/usr/bin/env python3
"""HTTP abuse for perf/abuse.sh (rows H1 and H5 of RELIABILITY.md), one kind for a bounded time.

usage: abuse.py KIND HOST PORT SECONDS [SOURCE_IP]

KIND is one of:
  chunked    8 connections, each POSTing an endless chunked body (8 KiB chunks) until the server
             closes it (413), then again
  clte       8 connections in a loop: a request with both Content-Length and Transfer-Encoding
             and a second request smuggled behind it
  headers    8 connections in a loop: a request with 10,000 header lines (431)
  idle       10,000 connections opened and left idle (those closed are reopened)
  slowloris  2,000 connections sending a request head one byte per second each

Connections come from SOURCE_IP (default 127.0.0.2), so the server's per-address share applies to
the attacker and not to the bench on 127.0.0.1. Every loop stops at SECONDS; at the end one line
of counts goes to stdout. Bounded: at most 10,000 sockets open at once.
"""

import socket
import sys
import threading
import time

KIND, HOST, PORT, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
SRC = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.2"
END = time.monotonic() + SECONDS
counts = {"connects": 0, "refused": 0, "answers": 0, "closed_by_server": 0}
lock = threading.Lock()


def count(key, n=1):
    with lock:
        counts[key] += n


def connect(timeout=2.0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((SRC, 0))
        s.connect((HOST, PORT))
        count("connects")
        return s
    except OSError:
        count("refused")
        s.close()
        return None


def loop(body):
    while time.monotonic() < END:
        s = connect()
        if s is None:
            time.sleep(0.05)
            continue
        try:
            body(s)
        except OSError:
            count("closed_by_server")
        finally:
            s.close()


def chunked(s):
    s.sendall(b"POST /nacos/v1/ns/instance?serviceName=abuse&ip=10.0.0.1&port=1 HTTP/1.1\r\n"
              b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"2000\r\n" + b"a" * 0x2000 + b"\r\n"
    while time.monotonic() < END:
        s.sendall(chunk)


def clte(s):
    smuggled = b"DELETE /nacos/v1/ns/instance?serviceName=bench-0&ip=10.0.0.1&port=8080 HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    s.sendall(b"POST /nacos/v1/ns/instance?serviceName=abuse&ip=10.0.0.2&port=1 HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body)
    if s.recv(4096):
        count("answers")


def headers(s):
    head = b"GET /nacos/v1/ns/instance/list?serviceName=abuse HTTP/1.1\r\nHost: x\r\n"
    head += b"".join(b"X-%d: y\r\n" % i for i in range(10000)) + b"\r\n"
    try:
        s.sendall(head)
    except OSError:
        pass  # the server answers 431 and closes before reading it all
    if s.recv(4096):
        count("answers")


def idle():
    socks = []
    while time.monotonic() < END:
        socks = [s for s in socks if alive(s)]
        while len(socks) < 10000 and time.monotonic() < END:
            s = connect()
            if s is None:
                break
            socks.append(s)
        time.sleep(0.5)
    for s in socks:
        s.close()


def alive(s):
    s.setblocking(False)
    try:
        gone = s.recv(1) == b""
    except BlockingIOError:
        return True
    except OSError:
        gone = True
    if gone:
        count("closed_by_server")
        s.close()
    return not gone


def slowloris():
    head = b"GET /nacos/v1/ns/instance/list?serviceName=abuse HTTP/1.1\r\nHost: x\r\nX-a: " + b"b" * 10000
    socks = {}
    while time.monotonic() < END:
        while len(socks) < 2000 and time.monotonic() < END:
            s = connect()
            if s is None:
                break
            socks[s] = 0
        for s in list(socks):
            try:
                s.send(head[socks[s] % len(head):][:1])
                socks[s] += 1
            except OSError:
                count("closed_by_server")
                s.close()
                del socks[s]
        time.sleep(1.0)
    for s in socks:
        s.close()


if KIND in ("chunked", "clte", "headers"):
    fn = {"chunked": chunked, "clte": clte, "headers": headers}[KIND]
    threads = [threading.Thread(target=loop, args=(fn,)) for _ in range(8)]
elif KIND == "idle":
    threads = [threading.Thread(target=idle)]
elif KIND == "slowloris":
    threads = [threading.Thread(target=slowloris)]
else:
    sys.exit(f"unknown kind {KIND}")
for t in threads:
    t.start()
for t in threads:
    t.join(SECONDS + 30)
print(KIND, " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
