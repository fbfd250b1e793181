'use strict';
// Tier switches end to end: the daemon fails, the client falls back to admin-ajax.php, probes the
// daemon again and climbs back to long-polling, showing every event exactly once on the way.

const assert = require('node:assert/strict');
const { test, setup, flush, query, form, batch, ev, legacyEv, ajaxOk, lib } = require('./helpers.js');

const AJAX = 'http://wp.test/wp-admin/admin-ajax.php';
const isAjax = (call) => call.url === AJAX;

test('no duplicates and no loss across daemon → AJAX → daemon', async () => {
  const clock0 = new (require('./helpers.js').FakeClock)();
  const breaker = new lib.LMSCircuitBreaker({ failureThreshold: 1, openMs: 5000, now: clock0.now });
  const { client, fetch, clock, seen, received, life } = setup({ cursor: 'v1.00000001.5.5.5.5', breaker }, { clock: clock0 });
  client.start();
  await flush();

  // The daemon delivers two CRITICAL events; the NORMAL lane is still at 5 (6 is pending there).
  fetch.respond(200, batch([ev(7, 1), ev(8, 1)], 'v1.00000001.8.8.5.5'));
  await flush();
  // Then it goes away: the breaker opens and the client falls back to AJAX after the backoff.
  fetch.fail();
  await flush();
  assert.equal(breaker.state, 'open');
  await clock.advance(1000);
  assert.ok(isAjax(fetch.last));
  assert.equal(fetch.last.init.method, 'POST');
  assert.deepEqual(form(fetch.last), {
    action: 'lms_unified_long_poll',
    channel_id: '1',
    thread_id: '0',
    last_event_id: '5',
    nonce: 'n1',
    client: 'lmsrt',
  });
  assert.deepEqual(life.mode.at(-1), { tier: 'medium', transport: 'ajax', previous: { tier: 'long', transport: 'daemon' } });

  // AJAX answers sequentially from id 5: 7 and 8 again (already shown), plus 6 and 9.
  fetch.respond(200, ajaxOk([ev(6, 3), ev(7, 1), ev(8, 1), ev(9, 3)].map(legacyEv)));
  await flush();
  assert.deepEqual(seen, [7, 8, 6, 9]);
  assert.deepEqual(client.lastEventIds, { 1: 9 }, 'legacy tier tracks the max id received');
  assert.equal(received[2].event_type, 'message_create');
  assert.equal(typeof received[2].id, 'number', 'AJAX events arrive in the daemon shape');
  assert.equal(client.cursor, 'v1.00000001.8.8.5.5', 'the daemon cursor is left untouched by AJAX');

  // The breaker opened at t=0 for 5 s: the client wakes at t=5 s rather than at the next AJAX
  // tick and probes the daemon with its own last cursor and an immediate answer (timeout=0);
  // the daemon re-sends 6 and 9, which are dropped, and the new 10.
  await clock.advance(3999);
  assert.ok(isAjax(fetch.last));
  await clock.advance(1);
  assert.ok(!isAjax(fetch.last));
  assert.equal(query(fetch.last).cursor, 'v1.00000001.8.8.5.5');
  assert.equal(query(fetch.last).timeout, '0');
  fetch.respond(200, batch([ev(6, 3), ev(9, 3), ev(10, 3)], 'v1.00000001.10.10.10.10'));
  await flush();
  assert.deepEqual(seen, [7, 8, 6, 9, 10]);
  assert.equal(breaker.state, 'closed');
  assert.equal(query(fetch.last).cursor, 'v1.00000001.10.10.10.10');
  assert.equal(client.router.duplicates, 2, 'the replayed 6 and 9 dropped by id (7 and 8 were already below the cursor)');
  await client.stop();
});

test('tier progression on consecutive failures, breaker fallback to AJAX, and return to long after recovery', async () => {
  const { client, fetch, clock, life } = setup({ cursor: 'v1.00000001.1.1.1.1' });
  client.start();
  await flush();
  const trail = [];
  const note = () => {
    const c = fetch.last;
    trail.push(isAjax(c) ? 'ajax' : 'daemon:' + query(c).timeout);
  };

  note();
  fetch.fail(); // failure 1: still long, retry in 1 s
  await clock.advance(1000);
  note();
  fetch.fail(); // failure 2: medium, retry in 2 s
  await clock.advance(2000);
  note();
  fetch.fail(); // failure 3: breaker opens (5 s), retry in 4 s over AJAX
  await clock.advance(4000);
  note();
  assert.equal(client.breaker.state, 'open');
  assert.equal(client.fallback.consecutiveFailures, 3);

  fetch.respond(200, ajaxOk([]));
  await flush();
  // AJAX medium would wait 10 s, but the breaker (opened at t=3 s) turns half-open at t=8 s:
  // the daemon is probed then.
  await clock.advance(999);
  assert.equal(fetch.calls.length, 4);
  await clock.advance(1);
  note();
  fetch.respond(200, batch([], 'v1.00000001.2.2.2.2', { mode: 'long' })); // probe succeeds
  await flush();
  note();
  assert.equal(client.breaker.state, 'closed');
  fetch.respond(200, batch([], 'v1.00000001.3.3.3.3', { mode: 'long' })); // third success: level back to long
  await flush();
  note();
  assert.deepEqual(trail, ['daemon:30', 'daemon:30', 'daemon:10', 'ajax', 'daemon:0', 'daemon:10', 'daemon:30']);
  assert.deepEqual(client.mode, { tier: 'long', transport: 'daemon' });
  assert.deepEqual(
    life.mode.map((m) => m.tier + '/' + m.transport),
    ['long/daemon', 'medium/daemon', 'medium/ajax', 'medium/daemon', 'long/daemon']
  );
  assert.deepEqual(
    life.connected.map((c) => c.transport),
    ['ajax', 'daemon'],
    'connected is announced per transport after failures'
  );
  const s = client.stats();
  assert.equal(s.reconnects, 3);
  assert.equal(s.errors, 3);
  await client.stop();
});

test('emergency tier over AJAX polls every second once failures pile up, then recovers', async () => {
  const breaker = { state: 'open', allowRequest: () => false, recordSuccess() {}, recordFailure() {}, releaseProbe() {}, msUntilHalfOpen: () => 1e9, snapshot: () => ({}) };
  const fallback = new lib.LMSFallbackManager({ random: () => 0, baseDelayMs: 100, maxDelayMs: 100 });
  const { client, fetch, clock } = setup({ cursor: '0', breaker, fallback });
  client.start();
  await flush();
  for (let i = 0; i < 6; i++) {
    assert.ok(isAjax(fetch.last));
    fetch.respond(500, '<html>fatal error</html>');
    await clock.advance(100);
  }
  assert.equal(fallback.tierFor('ajax'), 'emergency');
  assert.equal(client.mode.tier, 'emergency');
  fetch.respond(200, ajaxOk([]));
  await flush();
  const before = fetch.calls.length;
  await clock.advance(999);
  assert.equal(fetch.calls.length, before);
  await clock.advance(1);
  assert.equal(fetch.calls.length, before + 1, 'one request per second');
  // 3 successes per step: emergency → short → medium.
  for (let i = 0; i < 8; i++) {
    fetch.respond(200, ajaxOk([]));
    await clock.advance(10000);
  }
  assert.equal(client.mode.tier, 'medium', 'AJAX tops out at medium');
  await client.stop();
});

test('legacy cohort: AJAX only, last_event_id is the max id received, one POST per channel', async () => {
  const ab = new lib.LMSABTesting({ cohort: 'legacy', rollout_percent: 10 });
  const { client, fetch, clock, seen } = setup({ abTesting: ab, channels: [3, 4], lastEventId: 100, thread: 12 });
  client.start();
  await flush();
  assert.ok(isAjax(fetch.last));
  assert.deepEqual(form(fetch.last), { action: 'lms_unified_long_poll', channel_id: '3', thread_id: '12', last_event_id: '100', nonce: 'n1', client: 'lmsrt' });
  fetch.respond(200, ajaxOk([ev(103, 3, { channel_id: 3 }), ev(101, 1, { channel_id: 3 })].map(legacyEv)));
  await flush();
  assert.deepEqual(form(fetch.last), { action: 'lms_unified_long_poll', channel_id: '4', thread_id: '12', last_event_id: '100', nonce: 'n1', client: 'lmsrt' });
  fetch.respond(200, ajaxOk([ev(102, 2, { channel_id: 4 })].map(legacyEv)));
  await flush();
  assert.deepEqual(seen, [101, 102, 103], 'one tick is one batch: most urgent first across channels');
  assert.deepEqual(client.lastEventIds, { 3: 103, 4: 102 });
  await clock.advance(10000);
  assert.equal(form(fetch.last).channel_id, '3');
  assert.equal(form(fetch.last).last_event_id, '103');
  assert.ok(fetch.calls.every(isAjax), 'never the daemon');
  await client.stop();
});

test('AJAX errors: -1 is a nonce failure, rate_limit_exceeded waits Retry-After, a nonce function is re-read', async () => {
  const breaker = new lib.LMSCircuitBreaker({ failureThreshold: 1, openMs: 1e9 });
  let n = 0;
  const { client, fetch, clock, life } = setup({ daemonUrl: null, breaker, nonce: () => 'nonce' + ++n });
  client.start();
  await flush();
  assert.equal(form(fetch.last).nonce, 'nonce1');
  fetch.respond(403, '-1');
  await flush();
  assert.equal(life.error[0].code, 'invalid_nonce');
  assert.equal(life.error[0].transport, 'ajax');
  await clock.advance(1000);
  assert.equal(form(fetch.last).nonce, 'nonce2');
  fetch.respond(200, { success: false, data: { code: 'rate_limit_exceeded', message: 'slow down' } }, { 'Retry-After': '20' });
  await flush();
  assert.equal(life.error[1].code, 'rate_limit_exceeded');
  const count = fetch.calls.length;
  await clock.advance(19999);
  assert.equal(fetch.calls.length, count);
  await clock.advance(1);
  assert.equal(fetch.calls.length, count + 1);
  await client.stop();
});

test('a daemon outage right after page load falls back from the rendered head cursor, not from 0', async () => {
  const breaker = new lib.LMSCircuitBreaker({ failureThreshold: 1 });
  const { client, fetch, clock, seen } = setup({ cursor: 'v1.00000001.50.48.45.45', breaker });
  client.start();
  await flush();
  fetch.fail();
  await clock.advance(1000);
  assert.equal(form(fetch.last).last_event_id, '45', 'the lowest lane: nothing after it can be missed');
  // 46..50 as AJAX sees them: 46 LOW and 47 NORMAL are new; 48 HIGH and 50 CRITICAL were rendered.
  fetch.respond(200, ajaxOk([ev(46, 4), ev(47, 3), ev(48, 2), ev(50, 1)].map(legacyEv)));
  await flush();
  assert.deepEqual(seen, [47, 46]);
  await client.stop();
});

test('no daemon configured: WordPress holds the poll; re-poll at once after a wait, within 1 s after an early answer', async () => {
  const { client, fetch, clock, seen, life } = setup({ daemonUrl: null });
  client.start();
  await flush();
  assert.ok(isAjax(fetch.last));
  const n0 = fetch.calls.length;
  await clock.advance(25000); // the server held the poll for 25 s, then answered empty
  fetch.respond(200, ajaxOk([]));
  await flush();
  assert.equal(fetch.calls.length, n0 + 1, 'a poll that waited is followed at once by the next');
  assert.deepEqual(life.mode.at(-1).tier, 'long');
  assert.deepEqual(life.mode.at(-1).transport, 'ajax');
  await clock.advance(200); // an event arrives 200 ms into the next poll
  fetch.respond(200, ajaxOk([ev(5, 3)].map(legacyEv)));
  await flush();
  assert.deepEqual(seen, [5]);
  const n1 = fetch.calls.length;
  await clock.advance(799);
  assert.equal(fetch.calls.length, n1, 'an early answer waits out the rest of the 1 s interval');
  await clock.advance(1);
  assert.equal(fetch.calls.length, n1 + 1);
  assert.equal(form(fetch.last).last_event_id, '5');
  await client.stop();
});
