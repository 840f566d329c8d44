#!/usr/bin/env python3
"""Drive a running Muster server with the stock Nacos Python client (nacos-sdk-python 0.1.17).

Usage: python_client.py --server 127.0.0.1:PORT[,127.0.0.2:PORT...]

With several servers (a cluster) the client gets the whole list, as an application would; it
sends its requests to the first and fails over to the next.

Only `nacos.NacosClient` (and its SubscribeListener) is used, exactly as an application would
use it, so every request on the wire is the one the real client sends (v1 HTTP API, everything in
the query string, `None`/`True`/`False` as literal strings, User-Agent Nacos-Python-Client:v0.1.17).

Every check raises on mismatch with the expected and the observed value. Every wait is bounded.
The process ends with os._exit so that the client's non-daemon timer threads cannot keep it alive.
Exit status: 0 all passed, 1 a check failed, 2 bad usage, 3 nacos not installed, 4 watchdog fired.
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback

PINNED_VERSION = "0.1.17"
INSTALL_HINT = (
    "run .ci/run (it builds a venv and exports MUSTER_TEST_PYTHON) or "
    "`pip install nacos-sdk-python==%s` into the interpreter named by MUSTER_TEST_PYTHON" % PINNED_VERSION
)

NS = "ns-test"  # custom namespace id (a plain string, not a UUID)
GROUP = "g1"
# A write is applied asynchronously in Nacos (Distro notifier); allow it this long to show up.
VISIBLE_TIMEOUT = 3.0
POLL_INTERVAL = 0.2
# Expiry budget: per-instance timeouts are 1 s / 2 s; Nacos checks beats every 5 s.
EXPIRY_TIMEOUT = 10.0
WATCHDOG_SECONDS = 100.0
# Period of the client's own HeartbeatTask (add_naming_instance(heartbeat_interval=...)), seconds.
AUTO_BEAT_INTERVAL = 0.5
# Where add_naming_instance(cluster_name=None), i.e. `clusterName=None` on the wire, lands.
# Nacos 1.4.6: a cluster literally named "None"; Muster: DEFAULT (see step_cluster_none_quirk).
NONE_CLUSTER_STORED_AS = "DEFAULT"


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def eq(got, want, what):
    if got != want:
        raise CheckFailed("%s: expected %r, got %r" % (what, want, got))


def poll(desc, fn, timeout=VISIBLE_TIMEOUT, interval=POLL_INTERVAL):
    """Calls fn() -> (done, observation) every `interval` s until done or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        done, last = fn()
        if done:
            return last
        if time.monotonic() >= deadline:
            raise CheckFailed("%s: not reached within %.1fs; last observation: %r" % (desc, timeout, last))
        time.sleep(interval)


def hosts_of(res, what):
    check(isinstance(res, dict), "%s: response is not a JSON object: %r" % (what, res))
    check(isinstance(res.get("hosts"), list), "%s: response has no 'hosts' list: %r" % (what, res))
    return res["hosts"]


def addrs(hosts):
    return sorted("%s:%s" % (h.get("ip"), h.get("port")) for h in hosts)


def find(hosts, ip, port):
    found = [h for h in hosts if h.get("ip") == ip and h.get("port") == port]
    check(len(found) <= 1, "instance %s:%s listed %d times: %r" % (ip, port, len(found), found))
    return found[0] if found else None


def raises_nacos(fn, what):
    """fn() must raise nacos' NacosException (a 4xx/5xx answer); returns the exception."""
    from nacos.exception import NacosException

    nacos_logger = logging.getLogger("nacos")
    saved = nacos_logger.level
    nacos_logger.setLevel(logging.CRITICAL)  # the client logs the expected error with a traceback
    try:
        try:
            res = fn()
        except NacosException as e:
            return e
        raise CheckFailed("%s: expected the client to raise NacosException (error status), got result %r" % (what, res))
    finally:
        nacos_logger.setLevel(saved)


class Inst(object):
    def __init__(self, ip, port, cluster, weight=1.0, metadata=None, healthy=True):
        self.ip, self.port, self.cluster = ip, port, cluster
        self.weight, self.healthy = weight, healthy
        self.metadata = dict(metadata or {})

    def __repr__(self):
        return "%s:%s@%s" % (self.ip, self.port, self.cluster)


def check_host(h, inst, service, group, healthy=None, what="host"):
    what = "%s %r" % (what, inst)
    check(h is not None, "%s: missing from list" % what)
    eq(h.get("ip"), inst.ip, what + " ip")
    eq(h.get("port"), inst.port, what + " port")
    eq(h.get("clusterName"), inst.cluster, what + " clusterName")
    check(isinstance(h.get("weight"), (int, float)), "%s weight: not a number: %r" % (what, h.get("weight")))
    eq(float(h["weight"]), float(inst.weight), what + " weight")
    eq(h.get("healthy"), inst.healthy if healthy is None else healthy, what + " healthy")
    eq(h.get("enabled"), True, what + " enabled")
    eq(h.get("ephemeral"), True, what + " ephemeral")
    eq(h.get("metadata"), inst.metadata, what + " metadata")
    # The client's subscribe() keys its cache on hosts[].instanceId.
    eq(h.get("instanceId"), "%s#%s#%s#%s@@%s" % (inst.ip, inst.port, inst.cluster, group, service),
       what + " instanceId")
    # Non-Java user agents get the group stripped from hosts[].serviceName (spec §3.2).
    eq(h.get("serviceName"), service, what + " serviceName")


class Suite(object):
    def __init__(self, server):
        from nacos import NacosClient

        self.server = server
        self.logdir = tempfile.mkdtemp(prefix="muster-pyclient-")
        # namespace=NS: every request carries namespaceId=ns-test.
        self.c = NacosClient(server, namespace=NS, logDir=self.logdir)
        # no namespace: no namespaceId parameter at all, i.e. the server's default `public`.
        self.pub = NacosClient(server, logDir=self.logdir)
        run = "%06x" % (int(time.time() * 1000) & 0xFFFFFF)
        self.svc = "py-orders-" + run
        self.sub_svc = "py-sub-" + run
        self.exp_svc = "py-exp-" + run
        self.none_svc = "py-none-" + run
        self.A = Inst("10.1.0.1", 8080, "c1", 1.0, {"role": "a", "zone": "z1"})
        self.B = Inst("10.1.0.2", 8080, "c1", 2.5, {"role": "b"})
        self.C = Inst("10.1.0.3", 9090, "c2", 1.0, {"role": "c"})
        self.D = Inst("10.1.0.4", 9090, "c2", 1.0, {"role": "d"}, healthy=False)
        self.E = Inst("10.1.0.5", 7070, "c2", 1.0, {"via": "beat"})
        self.main = [self.A, self.B, self.C, self.D]

    # ---- helpers -------------------------------------------------------------------------
    def add(self, client, svc, inst, group=GROUP, **kw):
        ok = client.add_naming_instance(
            svc, inst.ip, inst.port, cluster_name=inst.cluster, weight=inst.weight,
            metadata=inst.metadata or None, healthy=inst.healthy, ephemeral=True, group_name=group, **kw)
        eq(ok, True, "add_naming_instance(%s, %r) returned (True means the body was exactly 'ok')" % (svc, inst))

    def remove(self, client, svc, inst, group=GROUP):
        ok = client.remove_naming_instance(svc, inst.ip, inst.port, cluster_name=inst.cluster, ephemeral=True,
                                           group_name=group)
        eq(ok, True, "remove_naming_instance(%s, %r) returned (True means the body was exactly 'ok')" % (svc, inst))

    def remove_auto_beating(self, svc, inst, group=GROUP, cluster_name=""):
        """Deregisters an instance whose client-side beat task runs (add(..., heartbeat_interval)).

        remove_naming_instance only flags the task to stop; a beat already in flight may land after
        the delete and, carrying its beat JSON, re-register the instance. So: remove, outwait the
        task's last beat, remove again.
        """
        cluster = inst.cluster if cluster_name == "" else cluster_name
        for _ in range(2):
            ok = self.c.remove_naming_instance(svc, inst.ip, inst.port, cluster_name=cluster, ephemeral=True,
                                               group_name=group)
            eq(ok, True, "remove_naming_instance(%s, %r) returned" % (svc, inst))
            time.sleep(AUTO_BEAT_INTERVAL + 0.5)

    def list(self, svc=None, client=None, **kw):
        kw.setdefault("group_name", GROUP)
        res = (client or self.c).list_naming_instance(svc or self.svc, **kw)
        return res, hosts_of(res, "list_naming_instance(%s, %r)" % (svc or self.svc, kw))

    def wait_addrs(self, want, svc=None, desc=None, **kw):
        want = sorted("%s:%s" % (i.ip, i.port) for i in want)

        def probe():
            res, hosts = self.list(svc, **kw)
            return addrs(hosts) == want, addrs(hosts)

        poll(desc or "list(%s, %r) == %r" % (svc or self.svc, kw, want), probe)
        return self.list(svc, **kw)

    # ---- main flow -----------------------------------------------------------------------
    def step_register(self):
        for inst in self.main:
            self.add(self.c, self.svc, inst)
        self.wait_addrs(self.main, desc="the 4 registered instances to be listed")

    def step_list_all(self):
        res, hosts = self.list()
        eq(res.get("name"), "%s@@%s" % (GROUP, self.svc), "list: name (always grouped)")
        eq(res.get("clusters"), "", "list: clusters echo (client sent no clusters param)")
        check(isinstance(res.get("cacheMillis"), int), "list: cacheMillis missing or not an int: %r" % res)
        eq(len(hosts), 4, "list: number of hosts")
        for inst in self.main:
            check_host(find(hosts, inst.ip, inst.port), inst, self.svc, GROUP)
        # Healthy instances come first, then the unhealthy ones (spec §3.2 step 6).
        eq("%s:%s" % (hosts[-1]["ip"], hosts[-1]["port"]), "%s:%s" % (self.D.ip, self.D.port),
           "list: the unhealthy instance must be listed last")

    def step_list_healthy_only(self):
        res, hosts = self.list(healthy_only=True)
        eq(addrs(hosts), sorted("%s:%s" % (i.ip, i.port) for i in (self.A, self.B, self.C)),
           "list(healthy_only=True) hosts (D was registered with healthy=False)")
        for h in hosts:
            eq(h.get("healthy"), True, "list(healthy_only=True) host %s healthy" % h.get("ip"))

    def step_list_by_cluster(self):
        res, hosts = self.list(clusters="c1")
        eq(addrs(hosts), sorted("%s:%s" % (i.ip, i.port) for i in (self.A, self.B)), "list(clusters='c1') hosts")
        eq(res.get("clusters"), "c1", "list(clusters='c1'): clusters echo")
        for h in hosts:
            eq(h.get("clusterName"), "c1", "list(clusters='c1') clusterName of %s" % h.get("ip"))
        res, hosts = self.list(clusters="c2")
        eq(addrs(hosts), sorted("%s:%s" % (i.ip, i.port) for i in (self.C, self.D)), "list(clusters='c2') hosts")
        res, hosts = self.list(clusters="c1,c2")
        eq(addrs(hosts), sorted("%s:%s" % (i.ip, i.port) for i in self.main), "list(clusters='c1,c2') hosts")
        res, hosts = self.list(clusters="c2", healthy_only=True)
        eq(addrs(hosts), ["%s:%s" % (self.C.ip, self.C.port)], "list(clusters='c2', healthy_only=True) hosts")
        res, hosts = self.list(clusters="nope")
        eq(hosts, [], "list(clusters='nope') hosts")

    def step_get(self):
        grouped = "%s@@%s" % (GROUP, self.svc)
        # get_naming_instance sends no groupName, so a non-default group must be in the name.
        for inst in (self.A, self.B):
            got = self.c.get_naming_instance(grouped, inst.ip, inst.port, cluster_name=inst.cluster)
            what = "get_naming_instance(%s, %r)" % (grouped, inst)
            check(isinstance(got, dict), "%s: not a JSON object: %r" % (what, got))
            eq(got.get("service"), grouped, what + " service")
            eq(got.get("ip"), inst.ip, what + " ip")
            eq(got.get("port"), inst.port, what + " port")
            eq(got.get("clusterName"), inst.cluster, what + " clusterName")
            eq(float(got.get("weight", -1)), inst.weight, what + " weight")
            eq(got.get("healthy"), True, what + " healthy")
            eq(got.get("metadata"), inst.metadata, what + " metadata")
            eq(got.get("instanceId"), "%s#%s#%s#%s" % (inst.ip, inst.port, inst.cluster, grouped), what + " instanceId")
        # Wrong cluster, and ungrouped name (=> DEFAULT_GROUP, where nothing exists): errors.
        raises_nacos(lambda: self.c.get_naming_instance(grouped, self.A.ip, self.A.port, cluster_name="c2"),
                     "get of %r in the wrong cluster c2" % self.A)
        raises_nacos(lambda: self.c.get_naming_instance(self.svc, self.A.ip, self.A.port, cluster_name="c1"),
                     "get of %r via ungrouped name (DEFAULT_GROUP)" % self.A)

    def step_modify(self):
        grouped = "%s@@%s" % (GROUP, self.svc)
        A = self.A
        A.weight = 7.5
        A.metadata = {"role": "a", "zone": "z2", "v": "2"}
        ok = self.c.modify_naming_instance(self.svc, A.ip, A.port, cluster_name=A.cluster, weight=A.weight,
                                           metadata=A.metadata, group_name=GROUP)
        eq(ok, True, "modify_naming_instance(%r weight=7.5) returned" % A)

        def probe():
            _, hosts = self.list()
            h = find(hosts, A.ip, A.port)
            return (h is not None and h.get("weight") == 7.5 and h.get("metadata") == A.metadata), h

        poll("modified weight/metadata of %r visible in list" % A, probe)
        _, hosts = self.list()
        eq(len(hosts), 4, "list after modify: number of hosts (modify must not duplicate)")
        check_host(find(hosts, A.ip, A.port), A, self.svc, GROUP, what="list after modify")
        got = self.c.get_naming_instance(grouped, A.ip, A.port, cluster_name=A.cluster)
        eq(float(got.get("weight", -1)), 7.5, "get after modify: weight")
        eq(got.get("metadata"), A.metadata, "get after modify: metadata")

        # enable=False: the instance is dropped from instance/list; enable=True brings it back.
        ok = self.c.modify_naming_instance(self.svc, A.ip, A.port, cluster_name=A.cluster, weight=A.weight,
                                           metadata=A.metadata, enable=False, group_name=GROUP)
        eq(ok, True, "modify_naming_instance(%r enable=False) returned" % A)
        self.wait_addrs([self.B, self.C, self.D], desc="disabled %r to drop out of list" % A)
        ok = self.c.modify_naming_instance(self.svc, A.ip, A.port, cluster_name=A.cluster, weight=A.weight,
                                           metadata=A.metadata, enable=True, group_name=GROUP)
        eq(ok, True, "modify_naming_instance(%r enable=True) returned" % A)
        _, hosts = self.wait_addrs(self.main, desc="re-enabled %r back in list" % A)
        check_host(find(hosts, A.ip, A.port), A, self.svc, GROUP, what="list after re-enable")

    def step_heartbeat(self):
        D = self.D
        res = self.c.send_heartbeat(self.svc, D.ip, D.port, cluster_name=D.cluster, weight=D.weight,
                                    metadata=D.metadata, group_name=GROUP)
        what = "send_heartbeat(%r)" % D
        check(isinstance(res, dict), "%s: not a JSON object: %r" % (what, res))
        check(isinstance(res.get("clientBeatInterval"), int) and res["clientBeatInterval"] > 0,
              "%s: clientBeatInterval must be a positive int: %r" % (what, res))
        eq(res.get("code"), 10200, what + " code")
        D.healthy = True  # a beat heals an unhealthy, unmarked ephemeral instance

        def probe():
            _, hosts = self.list(healthy_only=True)
            return find(hosts, D.ip, D.port) is not None, addrs(hosts)

        poll("%r healthy after its beat (list healthy_only)" % D, probe)
        res = self.c.send_heartbeat(self.svc, self.B.ip, self.B.port, cluster_name=self.B.cluster, group_name=GROUP)
        eq(isinstance(res, dict) and res.get("code"), 10200, "send_heartbeat(%r) code" % self.B)

        # A beat (with its beat JSON) for an unknown instance registers it.
        E = self.E
        res = self.c.send_heartbeat(self.svc, E.ip, E.port, cluster_name=E.cluster, weight=E.weight,
                                    metadata=E.metadata, group_name=GROUP)
        check(isinstance(res, dict) and isinstance(res.get("clientBeatInterval"), int),
              "send_heartbeat(unknown %r): expected a beat reply, got %r" % (E, res))
        _, hosts = self.wait_addrs(self.main + [E], desc="beat for unknown %r to register it" % E)
        check_host(find(hosts, E.ip, E.port), E, self.svc, GROUP, what="beat-registered")

    def step_isolation(self):
        _, hosts = self.list(client=self.pub)
        eq(hosts, [], "same service+group in namespace public: hosts")
        _, hosts = self.list(group_name="DEFAULT_GROUP")
        eq(hosts, [], "same service in DEFAULT_GROUP: hosts")
        _, hosts = self.list(namespace_id="ns-other")
        eq(hosts, [], "list(namespace_id='ns-other'): hosts")
        # The same ip:port in public with different metadata is a different instance.
        twin = Inst(self.B.ip, self.B.port, "c1", 3.0, {"ns": "public"})
        self.add(self.pub, self.svc, twin)
        try:
            _, hosts = self.wait_addrs([twin], client=self.pub, desc="instance registered in public visible there")
            check_host(hosts[0], twin, self.svc, GROUP, what="public twin")
            _, hosts = self.list()
            eq(len(hosts), 5, "ns-test host count after registering a twin in public")
            check_host(find(hosts, self.B.ip, self.B.port), self.B, self.svc, GROUP, what="ns-test original of twin")
        finally:
            self.remove(self.pub, self.svc, twin)
        self.wait_addrs([], client=self.pub, desc="public twin removed")

    def step_deregister(self):
        grouped = "%s@@%s" % (GROUP, self.svc)
        A = self.A
        self.remove(self.c, self.svc, A)
        self.wait_addrs([self.B, self.C, self.D, self.E], desc="deregistered %r gone from list" % A)
        raises_nacos(lambda: self.c.get_naming_instance(grouped, A.ip, A.port, cluster_name=A.cluster),
                     "get of deregistered %r" % A)
        for inst in (self.B, self.C, self.D, self.E):
            self.remove(self.c, self.svc, inst)
        res, hosts = self.wait_addrs([], desc="all instances deregistered")
        eq(hosts, [], "list after deregistering everything")
        # Deregistering something that does not exist is still `ok`.
        self.remove(self.c, self.svc, A)
        self.remove(self.c, "py-never-registered", A)

    # ---- independent steps ----------------------------------------------------------------
    def step_cluster_none_quirk(self):
        # add_naming_instance(cluster_name=None) sends the literal `clusterName=None`, while
        # remove/get (cluster_name=None) and the client's own beat task send no cluster at all.
        # Muster reads a literal `None` parameter as absent (src/params.rs), so all of them address
        # the DEFAULT cluster. Nacos 1.4.6 would instead create a cluster named "None", and the
        # auto-beat (no cluster => DEFAULT) would register a second copy of the instance there.
        inst = Inst("10.1.0.6", 6060, NONE_CLUSTER_STORED_AS, 1.0, {"k": "v"})
        grouped = "%s@@%s" % (GROUP, self.none_svc)
        ok = self.c.add_naming_instance(self.none_svc, inst.ip, inst.port, metadata=inst.metadata,
                                        group_name=GROUP, heartbeat_interval=AUTO_BEAT_INTERVAL)
        eq(ok, True, "add_naming_instance(cluster_name=None) returned")
        try:
            _, hosts = self.wait_addrs([inst], svc=self.none_svc, desc="instance added with cluster_name=None listed")
            check_host(hosts[0], inst, self.none_svc, GROUP, what="cluster_name=None instance")
            time.sleep(4 * AUTO_BEAT_INTERVAL)  # several auto-beats without a cluster
            _, hosts = self.list(self.none_svc)
            eq(addrs(hosts), ["%s:%s" % (inst.ip, inst.port)],
               "hosts after auto-beats without a cluster (a beat must not create a second copy)")
            check_host(hosts[0], inst, self.none_svc, GROUP, what="cluster_name=None instance after beats")
            got = self.c.get_naming_instance(grouped, inst.ip, inst.port)
            eq(got.get("clusterName"), NONE_CLUSTER_STORED_AS, "get_naming_instance(cluster_name=None) clusterName")
        finally:
            self.remove_auto_beating(self.none_svc, inst, cluster_name=None)
        self.wait_addrs([], svc=self.none_svc, desc="cluster_name=None instance removed without naming a cluster")

    def step_subscribe(self):
        from nacos.listener import SubscribeListener

        events = []
        lock = threading.Lock()

        def on_event(event, slc):
            with lock:
                events.append((event, dict(slc.instance)))

        X = Inst("10.3.0.1", 8080, "c1", 1.0, {"gen": "1"})
        # The first poll (run synchronously here) sees an empty service and notifies nothing.
        self.c.subscribe(SubscribeListener(on_event, "muster-test"), 0.3, service_name=self.sub_svc, group_name=GROUP)

        def wait_event(kind, pred):
            def probe():
                with lock:
                    hit = [e for e in events if e[0] == kind and pred(e[1])]
                    return bool(hit), list(events)

            return poll("subscribe: %s event" % kind, probe, timeout=5.0)

        try:
            self.add(self.c, self.sub_svc, X)
            wait_event("ADDED", lambda i: i.get("ip") == X.ip and i.get("instanceId"))
            X.metadata = {"gen": "2"}
            ok = self.c.modify_naming_instance(self.sub_svc, X.ip, X.port, cluster_name=X.cluster, weight=X.weight,
                                               metadata=X.metadata, group_name=GROUP)
            eq(ok, True, "modify_naming_instance(%r) returned" % X)
            wait_event("MODIFIED", lambda i: i.get("metadata") == {"gen": "2"})
            self.remove(self.c, self.sub_svc, X)
            wait_event("DELETED", lambda i: i.get("ip") == X.ip)
        finally:
            self.c.stop_subscribe()

    # ---- config center (/nacos/v1/cs) -----------------------------------------------------
    # Content with every character a form or query encoding can get wrong.
    CONFIG_CONTENT = "a=1\nurl=http://x/?p=1&q=2+3%20\npct=100%\nutf8=héllo 中文 ✓\n"

    def config_ids(self):
        run = self.svc.rsplit("-", 1)[1]
        return "py-app-%s.properties" % run, "py-watch-%s" % run

    def step_config_publish_get(self):
        data_id, _ = self.config_ids()
        ok = self.pub.publish_config(data_id, GROUP, self.CONFIG_CONTENT, config_type="properties")
        eq(ok, True, "publish_config returned (True means the body was exactly 'true')")
        eq(self.pub.get_config(data_id, GROUP, no_snapshot=True), self.CONFIG_CONTENT, "get_config content")
        # A republish with other content replaces it.
        ok = self.pub.publish_config(data_id, GROUP, self.CONFIG_CONTENT + "v=2\n")
        eq(ok, True, "second publish_config returned")
        eq(self.pub.get_config(data_id, GROUP, no_snapshot=True), self.CONFIG_CONTENT + "v=2\n", "get_config after republish")

    def step_config_get_missing(self):
        eq(self.pub.get_config("py-missing-" + self.svc, GROUP, no_snapshot=True), None, "get_config of a missing config")

    def step_config_isolation(self):
        data_id, _ = self.config_ids()
        # The same ids in namespace ns-test are another config.
        eq(self.c.get_config(data_id, GROUP, no_snapshot=True), None, "get_config in %s before publishing there" % NS)
        eq(self.c.publish_config(data_id, GROUP, "in-ns"), True, "publish_config in %s" % NS)
        eq(self.c.get_config(data_id, GROUP, no_snapshot=True), "in-ns", "get_config in %s" % NS)
        eq(self.pub.get_config(data_id, GROUP, no_snapshot=True), self.CONFIG_CONTENT + "v=2\n", "public's config is untouched")

    def step_config_search(self):
        data_id, _ = self.config_ids()
        page = self.c.get_configs(group=GROUP, no_snapshot=True)
        check(isinstance(page, dict), "get_configs: not a JSON object: %r" % page)
        items = page.get("pageItems")
        check(isinstance(items, list), "get_configs: no pageItems: %r" % page)
        eq([(i.get("dataId"), i.get("content"), i.get("tenant")) for i in items], [(data_id, "in-ns", NS)],
           "get_configs(accurate) in %s" % NS)
        eq(page.get("totalCount"), 1, "get_configs totalCount")

    def step_config_watch(self):
        _, data_id = self.config_ids()
        eq(self.pub.publish_config(data_id, GROUP, "w1"), True, "publish_config of the watched config")
        seen = []
        lock = threading.Lock()

        def on_change(params):
            with lock:
                seen.append(params.get("content"))

        self.pub.add_config_watcher(data_id, GROUP, on_change)
        # Give the puller's first poll (its md5 is unknown: answered at once) time to settle into
        # a held poll; a change published before that is still seen, by the immediate answer.
        time.sleep(1.0)
        eq(self.pub.publish_config(data_id, GROUP, "w2 & more"), True, "publish_config while watched")

        def probe():
            with lock:
                return "w2 & more" in seen, list(seen)

        # The client's hold is 29.5 s: a callback well within it comes from a woken long poll.
        poll("config watcher called with the new content", probe, timeout=10.0)
        self.pub.remove_config_watcher(data_id, GROUP, on_change, remove_all=True)

    def step_config_remove(self):
        data_id, watched = self.config_ids()
        for client, d in ((self.pub, data_id), (self.c, data_id), (self.pub, watched)):
            eq(client.remove_config(d, GROUP), True, "remove_config(%s) returned" % d)
            eq(client.get_config(d, GROUP, no_snapshot=True), None, "get_config after remove_config(%s)" % d)

    def step_expiry(self):
        svc = self.exp_svc
        # K beats every AUTO_BEAT_INTERVAL s via the client's own HeartbeatTask (heartbeat_interval)
        # and must survive its 3 s / 6 s timeouts; S never beats and must turn unhealthy but stay
        # (10 min delete timeout); X never beats and must be deleted after 2 s.
        K = Inst("10.2.0.1", 8080, "c1", 1.0,
                 {"preserved.heart.beat.timeout": "3000", "preserved.ip.delete.timeout": "6000"})
        S = Inst("10.2.0.2", 8080, "c1", 1.0,
                 {"preserved.heart.beat.timeout": "1000", "preserved.ip.delete.timeout": "600000"})
        X = Inst("10.2.0.3", 8080, "c1", 1.0,
                 {"preserved.heart.beat.timeout": "1000", "preserved.ip.delete.timeout": "2000"})
        t0 = time.monotonic()
        self.add(self.c, svc, K, heartbeat_interval=AUTO_BEAT_INTERVAL)
        try:
            self.add(self.c, svc, S)
            self.add(self.c, svc, X)
            self.wait_addrs([K, S, X], svc=svc, desc="the 3 expiry instances listed")
            seen = {"x_unhealthy": False}

            def probe():
                _, hosts = self.list(svc)
                s, x = find(hosts, S.ip, S.port), find(hosts, X.ip, X.port)
                if x is not None and x.get("healthy") is False:
                    seen["x_unhealthy"] = True
                done = s is not None and s.get("healthy") is False and x is None
                return done, [(h.get("ip"), h.get("healthy")) for h in hosts]

            t1 = time.monotonic()
            poll("S (1 s beat timeout) unhealthy and X (2 s delete timeout) deleted", probe, timeout=EXPIRY_TIMEOUT)
            print("  expiry: reached after %.1fs (X seen unhealthy before removal: %s)"
                  % (time.monotonic() - t1, seen["x_unhealthy"]))
            _, hosts = self.list(svc, healthy_only=True)
            eq(addrs(hosts), ["%s:%s" % (K.ip, K.port)], "expiry: list(healthy_only) hosts")
            # K has been beating; give it longer than its own delete timeout before checking it.
            remaining = 7.0 - (time.monotonic() - t0)
            if remaining > 0:
                time.sleep(remaining)
            _, hosts = self.list(svc)
            k = find(hosts, K.ip, K.port)
            check(k is not None, "expiry: auto-beating %r was removed: %r" % (K, hosts))
            eq(k.get("healthy"), True, "expiry: auto-beating %r healthy" % K)
            # A beat heals S.
            res = self.c.send_heartbeat(svc, S.ip, S.port, cluster_name=S.cluster, group_name=GROUP)
            eq(isinstance(res, dict) and res.get("code"), 10200, "send_heartbeat(%r) code" % S)

            def healed():
                _, hosts = self.list(svc)
                s = find(hosts, S.ip, S.port)
                return s is not None and s.get("healthy") is True, s

            poll("S healthy again after a beat", healed, timeout=1.0, interval=0.05)
        finally:
            self.remove(self.c, svc, S)
            self.remove_auto_beating(svc, K)
        self.wait_addrs([], svc=svc, desc="expiry service emptied")


def run(server):
    suite = Suite(server)
    flows = [
        ["register", "list_all", "list_healthy_only", "list_by_cluster", "get", "modify", "heartbeat",
         "isolation", "deregister"],
        ["cluster_none_quirk"],
        ["subscribe"],
        ["expiry"],
        ["config_publish_get", "config_get_missing", "config_isolation", "config_search", "config_watch",
         "config_remove"],
    ]
    passed = failed = skipped = 0
    for flow in flows:
        broken = None
        for name in flow:
            if broken:
                print("SKIP %s (after %s failed)" % (name, broken))
                skipped += 1
                continue
            start = time.monotonic()
            try:
                getattr(suite, "step_" + name)()
            except CheckFailed as e:
                print("FAIL %s: %s" % (name, e))
                failed += 1
                broken = name
            except Exception as e:  # an unexpected client exception is a failure too
                print("FAIL %s: unexpected %s: %s" % (name, type(e).__name__, e))
                traceback.print_exc(file=sys.stdout)
                failed += 1
                broken = name
            else:
                print("PASS %s (%.2fs)" % (name, time.monotonic() - start))
                passed += 1
            sys.stdout.flush()
    shutil.rmtree(suite.logdir, ignore_errors=True)
    line = "python_client: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return failed == 0 and skipped == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True,
                    help="127.0.0.1:PORT of a running muster, or a comma-separated list of cluster members")
    args = ap.parse_args()
    for server in args.server.split(","):
        host = server.rsplit(":", 1)[0].strip("[]")
        if not (host.startswith("127.") or host in ("localhost", "::1")) or ":" not in server:
            print("--server must be loopback HOST:PORT entries, got %r" % args.server)
            return 2
    try:
        import nacos.client
    except ImportError as e:
        print("python module `nacos` is not importable by %s (%s): %s" % (sys.executable, e, INSTALL_HINT))
        return 3
    version = getattr(nacos.client, "VERSION", None)
    if version != PINNED_VERSION:
        print("nacos-sdk-python %s found, %s required: %s" % (version, PINNED_VERSION, INSTALL_HINT))
        return 3
    # Show the client's own warnings/errors (server failover, etc.) on stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="nacos-client %(levelname)s %(name)s: %(message)s")
    print("nacos-sdk-python %s against %s" % (version, args.server))
    return 0 if run(args.server) else 1


def kill_children():
    """Ends the processes the client forked (the config watcher's multiprocessing Manager): they
    hold our stdout, and would keep the test's pipe open after os._exit."""
    import multiprocessing
    for p in multiprocessing.active_children():
        p.kill()


if __name__ == "__main__":
    watchdog = threading.Timer(WATCHDOG_SECONDS, lambda: (print("watchdog: still running after %ds, aborting"
                                                                % WATCHDOG_SECONDS), sys.stdout.flush(),
                                                          kill_children(), os._exit(4)))
    watchdog.daemon = True
    watchdog.start()
    try:
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 2
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The client's subscribe timers are non-daemon threads: leave without joining them.
    kill_children()
    os._exit(code)
