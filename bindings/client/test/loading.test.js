'use strict';
// How the file is loaded and configured: as a classic <script> in a bare global scope (nothing
// but the language), from the page config the plugin renders, and with a WordPress token endpoint.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { test, setup, flush, query, form, batch, ev, FakeClock, FakeFetch, jsonResponse, lib } = require('./helpers.js');

const SOURCE = fs.readFileSync(path.join(__dirname, '..', 'lms-realtime-client.js'), 'utf8');

test('as a classic script it attaches to the global object and touches nothing at load', () => {
  // A context with no module/exports, window, document, fetch, timers or BroadcastChannel:
  // any access to them at load time would throw a ReferenceError here.
  const sandbox = vm.createContext({});
  vm.runInContext(SOURCE, sandbox, { filename: 'lms-realtime-client.js' });
  const g = vm.runInContext('globalThis', sandbox);
  for (const name of ['LMSUnifiedLongPoll', 'LMSConnectionPool', 'LMSEventRouter', 'LMSFallbackManager', 'LMSCircuitBreaker', 'LMSABTesting', 'LMSPerformanceMonitor']) {
    assert.equal(typeof g[name], 'function', name);
    assert.equal(g.LMSRealtime[name], g[name]);
  }
  assert.equal(g.LMSRealtime.VERSION, lib.VERSION);
  assert.equal(typeof g.window, 'undefined');
  // The pure classes work there too.
  const ok = vm.runInContext('new LMSEventRouter().dispatch([{id: 1, priority: 1, event_type: "x"}]).length', sandbox);
  assert.equal(ok, 1);
});

test('fromConfig builds a client from the page config; the legacy cohort never reaches the daemon', async () => {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const pool = new lib.LMSConnectionPool({ broadcastChannel: null, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now });
  const env = { fetch: fetch.fn, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, random: () => 0, pool };
  const page = {
    daemon_url: 'http://daemon.test',
    token_url: 'http://wp.test/wp-admin/admin-ajax.php',
    token_action: 'lms_realtime_token',
    ajax_url: 'http://wp.test/wp-admin/admin-ajax.php',
    nonce: 'abc',
    channel_id: 4,
    thread_id: 0,
    cursor: 'v1.00000001.9.9.9.9',
    ab: { cohort: 'unified', rollout_percent: 5 },
  };
  const unified = lib.LMSUnifiedLongPoll.fromConfig(page, env);
  unified.start();
  await flush();
  // First the token, from the WordPress endpoint.
  assert.deepEqual(form(fetch.last), { action: 'lms_realtime_token', nonce: 'abc' });
  fetch.respond(200, { success: true, data: { token: 'T', expires_at: Math.floor(clock.now() / 1000) + 600 } });
  await flush();
  // The stream first (on unless the page says `stream: false`), resuming from the rendered cursor.
  assert.equal(new URL(fetch.last.url).pathname, '/v1/stream');
  assert.deepEqual(query(fetch.last), { channels: '4' });
  assert.equal(fetch.last.init.headers['Last-Event-ID'], 'v1.00000001.9.9.9.9');
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer T');
  await unified.stop();

  const polling = lib.LMSUnifiedLongPoll.fromConfig(Object.assign({}, page, { stream: false }), env);
  polling.start();
  await flush();
  fetch.respond(200, { success: true, data: { token: 'T2', expires_at: Math.floor(clock.now() / 1000) + 600 } });
  await flush();
  assert.equal(new URL(fetch.last.url).pathname, '/v1/poll');
  assert.deepEqual(query(fetch.last), { channels: '4', cursor: 'v1.00000001.9.9.9.9', timeout: '30' });
  await polling.stop();

  const before = fetch.calls.length;
  const legacy = lib.LMSUnifiedLongPoll.fromConfig(Object.assign({}, page, { ab: { cohort: 'legacy', rollout_percent: 5 } }), env);
  legacy.start();
  await flush();
  assert.equal(fetch.calls.length, before + 1);
  assert.deepEqual(form(fetch.last), { action: 'lms_unified_long_poll', channel_id: '4', thread_id: '0', last_event_id: '9', nonce: 'abc', client: 'lmsrt' });
  assert.equal(legacy.stats().cohort, 'legacy');
  await legacy.stop();
});

test('createTokenProvider accepts both answer shapes and rejects failures', async () => {
  const answers = [
    jsonResponse(200, { token: 'plain', expires_at: 123 }),
    jsonResponse(200, { success: true, data: { token: 'wp', expires_at: 456 } }),
    jsonResponse(403, { success: false, data: { code: 'not_authenticated' } }),
  ];
  const provider = lib.createTokenProvider({ url: 'http://wp.test/token', nonce: 'n', fetch: async () => answers.shift() });
  assert.deepEqual(await provider(), { token: 'plain', expires_at: 123 });
  assert.deepEqual(await provider(), { token: 'wp', expires_at: 456 });
  await assert.rejects(provider(), (e) => e.status === 403);
});

test('a token about to expire is refreshed before the poll, not after a 401', async () => {
  let n = 0;
  const clock = new FakeClock();
  const tokenProvider = async () => ({ token: 'k' + ++n, expires_at: Math.floor(clock.now() / 1000) + 60 });
  const { client, fetch } = setup({ cursor: 'c0' }, { clock, tokenProvider });
  client.start();
  await flush();
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer k1');
  fetch.respond(200, batch([], 'c1'));
  await flush();
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer k1', 'still valid: reused');
  await clock.advance(31000); // 29 s left: under the 30 s margin (the poll is still open)
  fetch.respond(200, batch([ev(1)], 'c2'));
  await flush();
  assert.equal(n, 2);
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer k2');
  await client.stop();
});
