"""Stock nacos-sdk-python against Muster: persistent instances survive a server restart.

Usage: python_persistent.py --server 127.0.0.1:PORT --phase write|check

`write` registers persistent instances (ephemeral=False) with metadata, a cluster and a group,
and checks they are listed. `check` (run against the restarted server) checks they are all still
there, healthy flag aside, then deregisters one. Addresses are 127.0.0.x: the server probes
persistent instances, and tests send nothing off loopback. Prints `N passed, N failed`.
"""
import argparse
import os
import sys
import threading

from nacos import NacosClient

SERVICE = "py-db"
GROUP = "infra"
NAMESPACE = "ns-persist"
INSTANCES = [("127.0.0.%d" % i, 3306 + i) for i in range(1, 6)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--phase", choices=["write", "check"], required=True)
    args = ap.parse_args()
    # Watchdog: the client's threads must never hang the test.
    threading.Timer(60, lambda: os._exit(4)).start()
    client = NacosClient(args.server, namespace=NAMESPACE)
    passed, failed = 0, 0

    def check(cond, msg):
        nonlocal passed, failed
        if cond:
            passed += 1
        else:
            failed += 1
            print("FAIL: " + msg, flush=True)

    def listed():
        res = client.list_naming_instance(SERVICE, group_name=GROUP)
        return {(h["ip"], h["port"]): h for h in res["hosts"]}

    if args.phase == "write":
        for ip, port in INSTANCES:
            ok = client.add_naming_instance(
                SERVICE, ip, port, cluster_name="db", metadata={"role": "replica"},
                ephemeral=False, group_name=GROUP)
            check(ok is True, "register %s:%d returned %r" % (ip, port, ok))
        hosts = listed()
        check(len(hosts) == len(INSTANCES), "listed %d of %d" % (len(hosts), len(INSTANCES)))
    else:
        hosts = listed()
        for ip, port in INSTANCES:
            h = hosts.get((ip, port))
            check(h is not None, "%s:%d is gone after the restart" % (ip, port))
            if h is not None:
                check(h["ephemeral"] is False, "%s:%d is not persistent" % (ip, port))
                check(h["clusterName"] == "db", "%s:%d lost its cluster" % (ip, port))
                check(h["metadata"].get("role") == "replica", "%s:%d lost its metadata" % (ip, port))
        ip, port = INSTANCES[0]
        ok = client.remove_naming_instance(SERVICE, ip, port, cluster_name="db", ephemeral=False,
                                           group_name=GROUP)
        check(ok is True, "deregister returned %r" % ok)
        check((ip, port) not in listed(), "deregistered instance still listed")
    print("python_persistent %s: %d passed, %d failed" % (args.phase, passed, failed), flush=True)
    os._exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
