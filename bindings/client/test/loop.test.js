'use strict';
// The loop (LMSUnifiedLongPoll) over fake transports: what it asks each transport for, how it
// takes each outcome (position, dispatch, backoff, breaker, choice of transport), and how a
// streaming transport that pushes batches through an open call fits the same interface.

const assert = require('node:assert/strict');
const { test, flush, ev, FakeClock, FakeTransport, lib } = require('./helpers.js');

/** A client over `transports` (most preferred first), jitter-free, on a fake clock. */
function loop(transports, options = {}, env = {}) {
  const clock = env.clock || new FakeClock();
  const pool =
    env.pool || new lib.LMSConnectionPool({ broadcastChannel: null, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now });
  const client = new lib.LMSUnifiedLongPoll(
    Object.assign(
      { transports, channels: [1], setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, random: () => 0, pool },
      options
    )
  );
  const seen = [];
  client.on('*', (e) => seen.push(e.id));
  const life = { connected: [], mode: [], resync: [], error: [] };
  for (const k of Object.keys(life)) client.on(k, (p) => life[k].push(p));
  return { client, clock, pool, seen, life };
}

const ok = (events, cursor, extra = {}) => ({ ok: true, batch: Object.assign({ events, cursor, gap: false, mode: 'long' }, extra), retryMs: 0 });
const failure = (extra = {}) => Object.assign({ ok: false, kind: 'failure', status: 503, code: 'storage_busy', message: '', retryAfterMs: null, mode: null }, extra);

test('loop: each request carries the position the last outcome led to; events are dispatched once, in priority order', async () => {
  const d = new FakeTransport('daemon', { guarded: true });
  const { client, seen, life } = loop([d], { cursor: 'v1.00000001.5.5.5.5', lastEventId: 3 });
  assert.throws(() => loop([], {}), /daemonUrl or ajaxUrl is required/, 'an empty transport list is no transport');
  client.start();
  await flush();
  assert.deepEqual(d.last.request, { tier: 'long', waitSeconds: 30, cursor: 'v1.00000001.5.5.5.5', lastEventIds: { 1: 5 } });
  d.settle(ok([ev(7, 3), ev(6, 1), ev(5, 3)], 'v1.00000001.7.7.7.7'));
  await flush();
  assert.deepEqual(seen, [6, 7], 'CRITICAL first; 5 was at or below the cursor held');
  assert.equal(d.calls.length, 2, 'the long tier asks again at once');
  assert.equal(d.last.request.cursor, 'v1.00000001.7.7.7.7');
  assert.equal(client.cursor, 'v1.00000001.7.7.7.7');
  d.settle(ok([ev(7, 3), ev(8, 3)], 'v1.00000001.8.8.8.8'));
  await flush();
  assert.deepEqual(seen, [6, 7, 8], 'a replayed id is dropped');
  assert.deepEqual(life.connected, [{ transport: 'daemon', tier: 'long', shared: false }]);
  assert.deepEqual(life.mode, [{ tier: 'long', transport: 'daemon', previous: null }]);
  await client.stop();
  assert.equal(d.closed, 1, 'stop() closes the transports');
});

test('loop: a failure keeps the position and waits the backoff; a rate limit waits retryAfterMs and moves neither breaker nor tier', async () => {
  const d = new FakeTransport('daemon', { guarded: true });
  const { client, clock, life } = loop([d], { cursor: 'c0' });
  client.start();
  await flush();
  d.last.reject(Object.assign(new Error('socket hang up'), { code: 'timeout' }));
  await flush();
  assert.deepEqual(
    { code: life.error[0].code, transport: life.error[0].transport, retryInMs: life.error[0].retryInMs, failures: life.error[0].consecutiveFailures },
    { code: 'timeout', transport: 'daemon', retryInMs: 1000, failures: 1 },
    'a rejection is a failure with its code'
  );
  await clock.advance(999);
  assert.equal(d.calls.length, 1);
  await clock.advance(1);
  assert.equal(d.calls.length, 2);
  assert.equal(d.last.request.cursor, 'c0');

  d.settle({ ok: false, kind: 'rate_limited', status: 429, code: 'rate_limited', message: '', retryAfterMs: 7000 });
  await clock.advance(6999);
  assert.equal(d.calls.length, 2);
  await clock.advance(1);
  assert.equal(d.calls.length, 3);
  assert.equal(client.breaker.failures, 1, 'only the first failure counted');
  assert.equal(client.fallback.consecutiveFailures, 1);

  // A failure's server hint (mode) and Retry-After both apply.
  d.settle(failure({ mode: 'short', retryAfterMs: 2500 }));
  await clock.advance(2500);
  assert.deepEqual({ tier: d.last.request.tier, wait: d.last.request.waitSeconds }, { tier: 'short', wait: 0 });
  await client.stop();
});

test('loop: guarded failures open the breaker, the next transport takes over from the safe position, and the half-open probe asks for timeout 0', async () => {
  const clock = new FakeClock();
  const breaker = new lib.LMSCircuitBreaker({ failureThreshold: 1, openMs: 5000, now: clock.now });
  const d = new FakeTransport('daemon', { guarded: true });
  const a = new FakeTransport('ajax');
  const { client, seen, life } = loop([d, a], { cursor: 'v1.00000001.9.8.7.6', breaker }, { clock });
  client.start();
  await flush();
  d.settle(failure());
  await clock.advance(1000);
  assert.equal(breaker.state, 'open');
  assert.equal(a.calls.length, 1);
  assert.deepEqual(a.last.request, { tier: 'medium', waitSeconds: null, cursor: 'v1.00000001.9.8.7.6', lastEventIds: { 1: 6 } });
  a.settle({ ok: true, batch: { events: [ev(7, 4), ev(8, 2)], legacyIds: { 1: 8 }, gap: false, mode: null } });
  await flush();
  assert.deepEqual(seen, [7], '7 is past the LOW lane (6); 8 is at the HIGH lane (8), so the page had it');
  assert.deepEqual(client.lastEventIds, { 1: 8 });
  assert.equal(client.cursor, 'v1.00000001.9.8.7.6', 'AJAX leaves the daemon cursor alone');
  // The breaker turns half-open 5 s after it opened: the loop wakes early for the probe.
  await clock.advance(3999);
  assert.equal(d.calls.length, 1);
  await clock.advance(1);
  assert.equal(d.calls.length, 2);
  assert.equal(d.last.request.waitSeconds, 0);
  d.settle(ok([], 'v1.00000001.9.8.8.8'));
  await flush();
  assert.equal(breaker.state, 'closed');
  assert.deepEqual(
    life.mode.map((m) => m.tier + '/' + m.transport),
    ['long/daemon', 'medium/ajax', 'long/daemon'],
    'one failure leaves the failure level at long; AJAX standing in runs medium'
  );
  await client.stop();
});

test('loop: the legacy cohort never reaches a guarded transport; without an unguarded one it waits for the breaker', async () => {
  const d = new FakeTransport('daemon', { guarded: true });
  const a = new FakeTransport('ajax');
  const ab = new lib.LMSABTesting({ cohort: 'legacy' });
  const legacy = loop([d, a], { abTesting: ab });
  legacy.client.start();
  await flush();
  assert.deepEqual([d.calls.length, a.calls.length], [0, 1]);
  await legacy.client.stop();

  const only = new FakeTransport('daemon', { guarded: true });
  const breaker = { state: 'open', allowRequest: () => false, recordSuccess() {}, recordFailure() {}, releaseProbe() {}, msUntilHalfOpen: () => 4000, snapshot: () => ({}) };
  const { client, clock } = loop([only], { breaker });
  client.start();
  await flush();
  assert.equal(only.calls.length, 0);
  assert.deepEqual(clock.pendingDelays(), [4000]);
  await client.stop();
});

test('loop: a streaming transport pushes batches through one open call; they are applied and relayed at once, and the next call resumes from the last', async () => {
  const clock = new FakeClock();
  const pool = new lib.LMSConnectionPool({ broadcastChannel: null, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now });
  const stream = new FakeTransport('daemon', { guarded: true });
  const leader = loop([stream], { cursor: 'c0' }, { clock, pool });
  const follower = loop([new FakeTransport('daemon', { guarded: true })], { cursor: 'c0' }, { clock, pool });
  leader.client.start();
  follower.client.start();
  await flush();
  assert.equal(leader.client.isLeader, true);
  assert.equal(follower.client.isLeader, false);
  const call = stream.last;
  call.push({ events: [ev(1)], cursor: 'c1', gap: false, mode: 'long' });
  await flush();
  assert.deepEqual(leader.seen, [1]);
  assert.equal(leader.client.cursor, 'c1');
  assert.deepEqual(leader.life.connected, [{ transport: 'daemon', tier: 'long', shared: false }]);
  assert.deepEqual(follower.seen, [1], 'relayed while the call is still open');
  assert.equal(follower.client.cursor, 'c1');
  call.push({ events: [ev(2), ev(3)], cursor: 'c3', gap: true, mode: 'long' });
  await flush();
  assert.deepEqual(leader.seen, [1, 2, 3]);
  assert.equal(leader.life.resync.length, 1);
  assert.deepEqual(follower.seen, [1, 2, 3]);
  assert.equal(stream.calls.length, 1, 'still one call');

  // The stream ends (token expiry, server restart): the next call resumes from the last push.
  call.resolve({ ok: true, batch: null, retryMs: 0 });
  await flush();
  assert.equal(stream.calls.length, 2);
  assert.equal(stream.last.request.cursor, 'c3');

  // After stop() a late push from the aborted call changes nothing.
  const late = stream.last;
  await leader.client.stop();
  assert.equal(late.signal.aborted, true);
  late.push({ events: [ev(4)], cursor: 'c4', gap: false, mode: 'long' });
  await flush();
  assert.deepEqual(leader.seen, [1, 2, 3]);
  assert.equal(leader.client.cursor, 'c3');
  assert.equal(leader.life.error.length, 0, 'an abort is not an error');
  await follower.client.stop();
});
