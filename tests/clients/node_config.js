#!/usr/bin/env node
/*
 * Drive a running Muster server's config center with the stock Nacos Node client (npm `nacos`,
 * pinned below; its `NacosConfigClient`, as an application uses it).
 *
 * Usage: node_config.js --server 127.0.0.1:PORT --cache-dir DIR
 *
 * Steps: publishSingle, getConfig, getConfig of a missing config (null), subscribe (the client's
 * own long poll, `Long-Pulling-Timeout: 30000`: held 29.5 s by the server) woken by a publish
 * well inside the hold, and remove (then getConfig is null). The client's snapshot cache goes to
 * --cache-dir, so no earlier run can answer for the server.
 *
 * Every wait is bounded. Prints `node_config: N passed, N failed` and leaves with process.exit
 * (the client's long poll would keep Node alive). Exit status: 0 all passed, 1 a check failed,
 * 2 bad usage, 3 `nacos` not installed or not the pinned version, 4 watchdog fired.
 */
'use strict';

const PINNED_VERSION = '2.6.3';
const WATCHDOG_MS = 60000;
/** A subscribe callback after a publish must come well inside the server's 29.5 s hold. */
const WAKE_MS = 10000;

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const a = process.argv[i];
  if (a !== '--server' && a !== '--cache-dir') {
    process.stderr.write('node_config: unknown argument ' + a + '\n');
    process.exit(2);
  }
  args[a.slice(2)] = process.argv[i + 1];
}
if (!args.server || !args['cache-dir']) {
  process.stderr.write('usage: node_config.js --server HOST:PORT --cache-dir DIR\n');
  process.exit(2);
}

let NacosConfigClient;
let version;
try {
  version = require('nacos/package.json').version;
  NacosConfigClient = require('nacos').NacosConfigClient;
} catch (e) {
  process.stderr.write('node_config: cannot load the npm package `nacos`: ' + e.message.split('\n')[0] + '\n');
  process.exit(3);
}
if (version !== PINNED_VERSION || typeof NacosConfigClient !== 'function') {
  process.stderr.write('node_config: found nacos@' + version + ', need nacos@' + PINNED_VERSION + '\n');
  process.exit(3);
}

class CheckFailed extends Error {}
function eq(got, want, what) {
  if (got !== want) throw new CheckFailed(what + ': expected ' + JSON.stringify(want) + ', got ' + JSON.stringify(got));
}
function sleep(ms) {
  return new Promise(r => setTimeout(r, ms));
}

const run = (Date.now() & 0xffffff).toString(16);
const GROUP = 'DEFAULT_GROUP';
const DATA_ID = 'node-app-' + run + '.yaml';
const WATCHED = 'node-watch-' + run;
const CONTENT = 'a: 1\nurl: http://x/?p=1&q=2+3%20\nutf8: héllo 中文\n';

const client = new NacosConfigClient({ serverAddr: args.server, cacheDir: args['cache-dir'], requestTimeout: 6000 });
const problems = [];
client.on('error', err => problems.push(String((err && err.message) || err)));

const seen = [];
const steps = [
  ['publish', async () => {
    eq(await client.publishSingle(DATA_ID, GROUP, CONTENT), true, 'publishSingle');
  }],
  ['get', async () => {
    eq(await client.getConfig(DATA_ID, GROUP), CONTENT, 'getConfig');
  }],
  ['get missing', async () => {
    eq(await client.getConfig('node-missing-' + run, GROUP), null, 'getConfig of a missing config');
  }],
  ['subscribe long poll', async () => {
    eq(await client.publishSingle(WATCHED, GROUP, 'w1'), true, 'publishSingle of the watched config');
    client.subscribe({ dataId: WATCHED, group: GROUP }, content => seen.push(content));
    // The first callback is the current content (the client's own first getConfig).
    for (let i = 0; i < 100 && !seen.includes('w1'); i++) await sleep(50);
    eq(seen.includes('w1'), true, 'first subscribe callback with the current content (seen ' + JSON.stringify(seen) + ')');
    // Let the client's long poll reach the server and be held.
    await sleep(1000);
    const at = Date.now();
    eq(await client.publishSingle(WATCHED, GROUP, 'w2 & more'), true, 'publishSingle while subscribed');
    while (!seen.includes('w2 & more') && Date.now() - at < WAKE_MS) await sleep(20);
    eq(seen.includes('w2 & more'), true, 'subscribe callback with the new content within ' + WAKE_MS + ' ms (seen ' +
       JSON.stringify(seen) + ')');
  }],
  ['remove', async () => {
    for (const d of [DATA_ID, WATCHED]) {
      eq(await client.remove(d, GROUP), true, 'remove ' + d);
      eq(await client.getConfig(d, GROUP), null, 'getConfig after remove ' + d);
    }
  }],
];

async function main() {
  const watchdog = setTimeout(() => {
    process.stdout.write('node_config: watchdog fired after ' + WATCHDOG_MS + ' ms\n');
    process.exit(4);
  }, WATCHDOG_MS);
  process.stdout.write('node_config: nacos@' + version + ', server ' + args.server + '\n');
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of steps) {
    try {
      await fn();
      passed++;
      process.stdout.write('PASS ' + name + '\n');
    } catch (e) {
      failed++;
      process.stdout.write('FAIL ' + name + ': ' + (e instanceof CheckFailed ? e.message : (e && e.stack) || e) + '\n');
      if (problems.length) process.stdout.write('client errors:\n  ' + problems.slice(-10).join('\n  ') + '\n');
      break;
    }
  }
  clearTimeout(watchdog);
  const skipped = steps.length - passed - failed;
  process.stdout.write('node_config: ' + passed + ' passed, ' + (failed + skipped) + ' failed\n');
  process.exit(failed + skipped ? 1 : 0);
}

main().catch(e => {
  process.stdout.write('node_config: internal error: ' + ((e && e.stack) || e) + '\nnode_config: 0 passed, 1 failed\n');
  process.exit(1);
});
