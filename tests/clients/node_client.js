#!/usr/bin/env node
/*
 * Drive a running Muster server with the stock Nacos Node client (npm `nacos`, pinned below),
 * and check that subscribers learn about changes through UDP push, or through pull when every
 * push datagram is lost.
 *
 * Usage: node_client.js --server 127.0.0.1:PORT --mode push|loss [--writer 127.0.0.2:PORT]
 *
 * With --writer (a cluster), a second client whose server list is the writer makes the changes,
 * while the subscriber's client, and every check, talks to --server: the subscriber learns of a
 * registration made through another member (Distro replication, then a push from its own).
 *
 * Only `NacosNamingClient` is used, as an application would use it: `registerInstance`,
 * `deregisterInstance`, `subscribe`. Its requests are the real ones: v1 HTTP API,
 * User-Agent `Nacos-Java-Client:v1.0.0`, `instance/list?...&udpPort=<push receiver port>&clientIP=<host ip>`,
 * and a `{"type":"push-ack","lastRefTime":<number>,"data":""}` answer to each `dom` push.
 *
 * What the client itself tells us (no private fields are read):
 *  - the listener gets `(hosts, serviceInfo)`; `serviceInfo.cacheMillis` is the server-reported
 *    interval the client schedules its next `instance/list` poll with (host_reactor.js
 *    `_doUpdate`: `setTimeout(..., serviceInfo.cacheMillis)`, first run 1 s after subscribe);
 *  - the logger we hand it sees `[PushReceiver] received push data` (logged just before the push
 *    is applied, in the same tick as the listener call), and `[HostReactor] updateServiceNow()` /
 *    `refreshOnly` for each poll. The logger is otherwise silent.
 *
 * Modes:
 *  push  Each change (register X, then deregister X) must reach the listener in under a quarter
 *        of the client's own poll interval, inside the push receiver's handler; the server must
 *        count the push sent and receive the client's push-ack (see ACK_MUST_MATCH for whether
 *        it must also match it). Changes are made at least half a poll interval
 *        before the next poll is due, so only a push can explain a fast listener call.
 *  loss  The server runs with `--push-drop-percent 100`. Each change is made right after a poll,
 *        so only the next poll can deliver it: the listener must fire within 1.5 x the poll
 *        interval, no push may arrive, `muster_push_acked_total` and `muster_push_junk_total`
 *        must stay 0 (nothing answered), and
 *        `muster_push_send_errors_total` (dropped datagrams) must grow.
 *
 * The Node client ignores a service list with no hosts (service_info.js `isValid`), so the
 * subscribed service always keeps one "anchor" instance; X comes and goes next to it.
 *
 * Every wait is bounded. Prints `node_client: N passed, N failed` and leaves with process.exit
 * (the client's timers would keep Node alive). Exit status: 0 all passed, 1 a check failed,
 * 2 bad usage, 3 `nacos` not installed or not the pinned version, 4 watchdog fired.
 */
'use strict';

const http = require('http');

const PINNED_VERSION = '2.6.3';
const INSTALL_HINT =
  'run .ci/run (it installs nacos@' + PINNED_VERSION + ' into $MUSTER_NODE_DIR, default target/ci-node) ' +
  'or `npm install --prefix target/ci-node nacos@' + PINNED_VERSION + '` and set NODE_PATH=target/ci-node/node_modules';
const WATCHDOG_MS = 80000;
const HTTP_TIMEOUT_MS = 5000;
/** How long the initial subscribe may take to deliver the anchor (one list query). */
const FIRST_LIST_MS = 5000;
/** How long the server may take to count an ack in /metrics (it publishes stats every 100 ms). */
const METRICS_SETTLE_MS = 3000;
/**
 * Whether the client's push-ack must be matched (muster_push_acked_total grows) in push mode.
 * The server matches an ack by the target's port and `lastRefTime` even when it arrives from
 * another local address than the `clientIP` the client reported.
 */
const ACK_MUST_MATCH = true;

// ---------------------------------------------------------------------------------------------
// Arguments

function usage(msg) {
  process.stderr.write('node_client: ' + msg + '\nusage: node_client.js --server HOST:PORT --mode push|loss [--writer HOST:PORT]\n');
  process.exit(2);
}

const args = {};
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--server' || a === '--mode' || a === '--writer') {
      if (i + 1 >= argv.length) usage('missing value for ' + a);
      args[a.slice(2)] = argv[++i];
    } else {
      usage('unknown argument ' + JSON.stringify(a));
    }
  }
}
if (!args.server || !/^[^:]+:\d+$/.test(args.server)) usage('--server HOST:PORT is required');
if (args.mode !== 'push' && args.mode !== 'loss') usage('--mode must be push or loss');
if (args.writer !== undefined && !/^[^:]+:\d+$/.test(args.writer)) usage('--writer must be HOST:PORT');
/** Where changes are made: the writer member, or the subscriber's own server. */
const WRITER = args.writer || args.server;
const MODE = args.mode;
const [HOST, PORT] = [args.server.split(':')[0], Number(args.server.split(':')[1])];

// ---------------------------------------------------------------------------------------------
// The pinned client

let NacosNamingClient;
let nacosVersion;
let namingVersion;
try {
  // Tests send no traffic off loopback. The client reports `clientIP` from npm `address`
  // (the first non-internal IPv4), which would make the server push to the host's NIC address;
  // pin it to 127.0.0.1 before the client module reads it. The client itself is unchanged.
  require('address').ip = () => '127.0.0.1';
  nacosVersion = require('nacos/package.json').version;
  namingVersion = require('nacos-naming/package.json').version;
  NacosNamingClient = require('nacos').NacosNamingClient;
} catch (e) {
  process.stderr.write('node_client: cannot load the npm package `nacos` (' + e.message.split('\n')[0] + '): ' + INSTALL_HINT + '\n');
  process.exit(3);
}
if (nacosVersion !== PINNED_VERSION || typeof NacosNamingClient !== 'function') {
  process.stderr.write('node_client: found nacos@' + nacosVersion + ', need nacos@' + PINNED_VERSION + ': ' + INSTALL_HINT + '\n');
  process.exit(3);
}

// ---------------------------------------------------------------------------------------------
// Helpers

class CheckFailed extends Error {}

function check(cond, msg) {
  if (!cond) throw new CheckFailed(msg);
}

const t0 = Date.now();
function now() {
  return Date.now();
}
function stamp() {
  return ((now() - t0) / 1000).toFixed(3) + 's';
}
function note(msg) {
  process.stdout.write('  [' + stamp() + '] ' + msg + '\n');
}

/** Resolves when `pred()` is truthy (re-checked on every `kick()`), rejects after `ms`. */
const waiters = new Set();
function kick() {
  for (const w of Array.from(waiters)) w();
}
function waitFor(desc, pred, ms) {
  return new Promise((resolve, reject) => {
    const first = pred();
    if (first) return resolve(first);
    let timer;
    const w = () => {
      const v = pred();
      if (v) {
        waiters.delete(w);
        clearTimeout(timer);
        resolve(v);
      }
    };
    timer = setTimeout(() => {
      waiters.delete(w);
      reject(new CheckFailed(desc + ': not within ' + ms + ' ms'));
    }, ms);
    waiters.add(w);
  });
}
function sleep(ms) {
  return new Promise(r => setTimeout(r, ms));
}

function httpGet(path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port: PORT, path, method: 'GET', agent: false, timeout: HTTP_TIMEOUT_MS }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', c => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('GET ' + path + ': no answer within ' + HTTP_TIMEOUT_MS + ' ms')));
    req.on('error', reject);
    req.end();
  });
}

/** Sum of a per-shard counter in the server's Prometheus `/metrics`. */
async function metric(name) {
  const res = await httpGet('/metrics');
  check(res.status === 200, 'GET /metrics: status ' + res.status);
  let sum = 0;
  let seen = false;
  for (const line of res.body.split('\n')) {
    if (line.startsWith(name + '{') || line.startsWith(name + ' ')) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      seen = true;
    }
  }
  check(seen, 'GET /metrics has no ' + name);
  return sum;
}

async function pushStats() {
  return {
    sent: await metric('muster_push_sent_total'),
    acked: await metric('muster_push_acked_total'),
    dropped: await metric('muster_push_send_errors_total'),
    junk: await metric('muster_push_junk_total'),
  };
}

function addrs(hosts) {
  return (hosts || []).map(h => h.ip + ':' + h.port).sort();
}

// ---------------------------------------------------------------------------------------------
// What the client reports through its logger

const events = {
  pushes: [], // {at, data}: datagrams the client's push receiver accepted
  polls: [], // {at, kind}: instance/list polls of the update task (and the initial fetch)
  problems: [], // warn/error lines, shown on failure
};
let inPushHandler = false;

function fmt(a) {
  if (a instanceof Error) return a.stack || String(a);
  if (typeof a === 'object') {
    try { return JSON.stringify(a); } catch (_) { return String(a); }
  }
  return String(a);
}

const quietLogger = {
  debug(msg, ...rest) {
    if (typeof msg !== 'string') return;
    if (msg.startsWith('[HostReactor] updateServiceNow()')) {
      events.polls.push({ at: now(), kind: 'update' });
      kick();
    } else if (msg.startsWith('[HostReactor] refreshOnly')) {
      events.polls.push({ at: now(), kind: 'refreshOnly' });
      kick();
    }
  },
  info(msg, ...rest) {
    if (typeof msg === 'string' && msg.startsWith('[PushReceiver] received push data')) {
      // push_receiver.js logs this, then applies the packet synchronously (listener included).
      events.pushes.push({ at: now(), data: rest[0] });
      inPushHandler = true;
      process.nextTick(() => { inPushHandler = false; });
    }
  },
  warn(...a) {
    events.problems.push('WARN ' + a.map(fmt).join(' '));
  },
  error(...a) {
    events.problems.push('ERROR ' + a.map(fmt).join(' '));
  },
};
quietLogger.log = quietLogger.info;

// ---------------------------------------------------------------------------------------------
// The scenario

const SERVICE = 'node-' + MODE + '-' + process.pid;
const ANCHOR = { ip: '198.51.100.1', port: 7001 };
const MOVER = { ip: '198.51.100.2', port: 7002 };

const fires = []; // {at, hosts, serviceInfo, viaPush}
let client;
/** The client that makes the changes: `client` itself unless --writer names another member. */
let writer;
let pollInterval; // ms, from the client's own ServiceInfo
let lastAction; // {what, at, fireIndex}

function listener(hosts, serviceInfo) {
  fires.push({ at: now(), hosts: hosts || [], serviceInfo, viaPush: inPushHandler });
  kick();
}

/** Waits for the first listener call after the last action whose host list satisfies `want`. */
async function fired(desc, want, ms) {
  const from = lastAction.fireIndex;
  return waitFor(desc, () => {
    for (let i = from; i < fires.length; i++) {
      if (want(fires[i].hosts)) return fires[i];
    }
    return null;
  }, ms).catch(e => {
    const seen = fires.slice(from).map(f => '+' + (f.at - lastAction.at) + 'ms ' + JSON.stringify(addrs(f.hosts)) + (f.viaPush ? ' (push)' : ''));
    throw new CheckFailed(e.message + '; listener calls since ' + lastAction.what + ': ' + (seen.length ? seen.join(', ') : 'none'));
  });
}

/**
 * Chooses when to act relative to the client's poll schedule (polls are `pollInterval` apart).
 * push: act only if the next poll is at least half an interval away, else right after it.
 * loss: act right after a poll, so that only the following one can deliver the change.
 */
async function alignToPoll() {
  const last = () => events.polls[events.polls.length - 1];
  const seen = events.polls.length;
  if (MODE === 'push') {
    if (last() && last().at + pollInterval - now() >= pollInterval / 2) return;
  } else if (last() && now() - last().at < pollInterval / 10) {
    return;
  }
  await waitFor('the client\'s next poll', () => events.polls.length > seen, Math.ceil(pollInterval * 1.5));
}

async function act(what, fn) {
  await alignToPoll();
  lastAction = { what, at: now(), fireIndex: fires.length, pushes: events.pushes.length };
  await fn();
  note(what + ' (request took ' + (now() - lastAction.at) + ' ms)');
}

const hasBoth = h => addrs(h).includes(MOVER.ip + ':' + MOVER.port) && addrs(h).includes(ANCHOR.ip + ':' + ANCHOR.port);
const anchorOnly = h => addrs(h).length === 1 && addrs(h)[0] === ANCHOR.ip + ':' + ANCHOR.port;

/** Bound for one change to reach the listener, and what the mode expects of its path. */
function bound() {
  return MODE === 'push' ? pollInterval / 4 : pollInterval * 1.5;
}

async function change(what, fn, want, statsBefore) {
  await act(what, fn);
  const f = await fired('listener call after ' + what, want, Math.ceil(pollInterval * 2));
  const latency = f.at - lastAction.at;
  const newPushes = events.pushes.length - lastAction.pushes;
  note('listener fired ' + latency + ' ms after ' + what + ' with ' + JSON.stringify(addrs(f.hosts)) +
       ' via ' + (f.viaPush ? 'push' : 'poll') + '; poll interval ' + pollInterval + ' ms, bound ' + bound() + ' ms');
  if (MODE === 'push') {
    check(f.viaPush, what + ': the listener was called by a poll, not by the push receiver (' + newPushes + ' pushes received)');
    check(latency < bound(), what + ': listener fired after ' + latency + ' ms, not under pollInterval/4 = ' + bound() + ' ms');
    // The client answers each push with a push-ack to the datagram's source. It reaches the
    // server's push socket either as a matched ack or, if the server cannot match it, as junk.
    const want = statsBefore.acked + statsBefore.junk + 1;
    const deadline = now() + METRICS_SETTLE_MS;
    let after;
    for (;;) {
      after = await pushStats();
      if (after.acked + after.junk >= want || now() >= deadline) break;
      await sleep(100);
    }
    note('server push counters: sent ' + statsBefore.sent + '->' + after.sent + ', acked ' + statsBefore.acked + '->' + after.acked +
         ', junk ' + statsBefore.junk + '->' + after.junk);
    check(after.sent > statsBefore.sent, what + ': muster_push_sent_total stayed ' + after.sent);
    check(after.acked + after.junk >= want, what + ': no push-ack from the client reached the server within ' + METRICS_SETTLE_MS + ' ms');
    if (after.acked <= statsBefore.acked) {
      const msg = what + ': the client\'s push-ack reached the server but was not matched (muster_push_acked_total stayed ' +
        after.acked + ', muster_push_junk_total ' + statsBefore.junk + '->' + after.junk + '); see ACK_MUST_MATCH';
      check(!ACK_MUST_MATCH, msg);
      note('KNOWN SERVER BUG (not failing, ACK_MUST_MATCH=false): ' + msg);
    }
    return after;
  }
  check(!f.viaPush && newPushes === 0, what + ': ' + newPushes + ' push datagram(s) reached the client although the server drops them all');
  check(latency <= bound(), what + ': listener fired after ' + latency + ' ms, over 1.5 x pollInterval = ' + bound() + ' ms');
  const after = await pushStats();
  check(after.acked === 0, what + ': muster_push_acked_total is ' + after.acked + ', want 0 with every datagram dropped');
  check(after.junk === statsBefore.junk, what + ': muster_push_junk_total ' + statsBefore.junk + '->' + after.junk +
        ', so something answered a push that should have been dropped');
  check(after.dropped > statsBefore.dropped, what + ': muster_push_send_errors_total stayed ' + after.dropped +
        ', so the server never tried to push (the test would not exercise loss)');
  note('server push counters: sent ' + after.sent + ', acked ' + after.acked + ', dropped ' + statsBefore.dropped + '->' + after.dropped);
  return after;
}

const steps = [
  ['client ready, anchor registered', async () => {
    client = new NacosNamingClient({ logger: quietLogger, serverList: args.server, namespace: 'public' });
    client.on('error', e => events.problems.push('client error ' + fmt(e)));
    writer = WRITER === args.server ? client : new NacosNamingClient({ logger: quietLogger, serverList: WRITER, namespace: 'public' });
    if (writer !== client) writer.on('error', e => events.problems.push('writer client error ' + fmt(e)));
    for (const c of new Set([client, writer])) {
      await Promise.race([c.ready(), sleep(FIRST_LIST_MS).then(() => { throw new CheckFailed('client.ready() not within ' + FIRST_LIST_MS + ' ms'); })]);
    }
    await writer.registerInstance(SERVICE, { ip: ANCHOR.ip, port: ANCHOR.port, ephemeral: true });
    // Made through another member, the registration reaches this one by replication: poll.
    let res;
    for (let i = 0; i < 30; i++) {
      res = await httpGet('/nacos/v1/ns/instance/list?serviceName=' + encodeURIComponent(SERVICE));
      if (res.status === 200 && JSON.parse(res.body).hosts.length === 1) break;
      await sleep(100);
    }
    check(res.status === 200, 'instance/list after register: status ' + res.status + ' ' + res.body);
    check(JSON.parse(res.body).hosts.length === 1, 'instance/list after register (through ' + WRITER + '): ' + res.body);
  }],
  ['subscribe delivers the anchor and the server-reported poll interval', async () => {
    lastAction = { what: 'subscribe', at: now(), fireIndex: 0, pushes: 0 };
    client.subscribe(SERVICE, listener);
    const f = await fired('first listener call', anchorOnly, FIRST_LIST_MS);
    note('subscribe: listener fired after ' + (f.at - lastAction.at) + ' ms with ' + JSON.stringify(addrs(f.hosts)));
    check(f.serviceInfo && Number.isInteger(f.serviceInfo.cacheMillis) && f.serviceInfo.cacheMillis > 0,
          'the listener\'s serviceInfo has no cacheMillis: ' + fmt(f.serviceInfo));
    pollInterval = f.serviceInfo.cacheMillis;
    note('client poll interval (serviceInfo.cacheMillis from the server): ' + pollInterval + ' ms');
    // The update task's first run is 1 s after subscribe; from then on polls are pollInterval apart.
    await waitFor('the update task\'s first run (1 s after subscribe)', () => events.polls.length >= 2, 3000);
  }],
  ['the server holds the client as a push target', async () => {
    const res = await httpGet('/nacos/v1/ns/service/subscribers?serviceName=' + encodeURIComponent(SERVICE));
    check(res.status === 200, 'service/subscribers: status ' + res.status + ' ' + res.body);
    const subs = JSON.parse(res.body).subscribers || [];
    const node = subs.filter(s => s.agent === 'Nacos-Java-Client:v1.0.0' && s.port > 0);
    check(node.length === 1, 'service/subscribers: want one Nacos-Java-Client:v1.0.0 target, got ' + res.body);
    note('push target ' + node[0].addrStr + ' (the client\'s udpPort and clientIP)');
  }],
];

let stats;
steps.push(['register X: the listener sees it (' + MODE + ')', async () => {
  stats = await pushStats();
  if (MODE === 'loss') check(stats.acked === 0, 'muster_push_acked_total is ' + stats.acked + ' before any change');
  stats = await change('registerInstance(X)' + (writer !== client ? ' through ' + WRITER : ''), () => writer.registerInstance(SERVICE, { ip: MOVER.ip, port: MOVER.port, ephemeral: true }), hasBoth, stats);
}]);
steps.push(['deregister X: the listener sees it go (' + MODE + ')', async () => {
  stats = await change('deregisterInstance(X)' + (writer !== client ? ' through ' + WRITER : ''), () => writer.deregisterInstance(SERVICE, { ip: MOVER.ip, port: MOVER.port, ephemeral: true }), anchorOnly, stats);
}]);

// ---------------------------------------------------------------------------------------------

async function main() {
  const watchdog = setTimeout(() => {
    process.stdout.write('node_client: watchdog fired after ' + WATCHDOG_MS + ' ms\n');
    process.exit(4);
  }, WATCHDOG_MS);
  process.stdout.write('node_client: nacos@' + nacosVersion + ' (nacos-naming@' + namingVersion + '), mode ' + MODE +
                       ', server ' + args.server + ', service ' + SERVICE + '\n');
  let passed = 0;
  let failed = 0;
  for (let i = 0; i < steps.length; i++) {
    const [name, fn] = steps[i];
    try {
      await fn();
      passed++;
      process.stdout.write('PASS ' + name + '\n');
    } catch (e) {
      failed++;
      process.stdout.write('FAIL ' + name + ': ' + (e instanceof CheckFailed ? e.message : (e && e.stack) || e) + '\n');
      const rest = steps.length - i - 1;
      if (rest > 0) {
        failed += rest;
        process.stdout.write('FAIL ' + rest + ' later step(s) not run: they depend on this one\n');
      }
      if (events.problems.length) {
        process.stdout.write('client warnings/errors:\n  ' + events.problems.slice(-20).join('\n  ') + '\n');
      }
      break;
    }
  }
  clearTimeout(watchdog);
  process.stdout.write('node_client: ' + passed + ' passed, ' + failed + ' failed\n');
  process.exit(failed ? 1 : 0);
}

main().catch(e => {
  process.stdout.write('node_client: internal error: ' + ((e && e.stack) || e) + '\nnode_client: 0 passed, 1 failed\n');
  process.exit(1);
});
