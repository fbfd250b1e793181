'use strict';
// The pure building blocks, each on its own with a fake clock: breaker state machine, fallback
// tiers and backoff, router ordering and de-duplication, monitor numbers, cohort, event mapping.

const assert = require('node:assert/strict');
const { test, FakeClock, ev, legacyEv, lib } = require('./helpers.js');
const {
  LMSCircuitBreaker,
  LMSFallbackManager,
  LMSEventRouter,
  LMSPerformanceMonitor,
  LMSABTesting,
  mapLegacyEvent,
  normalizeDaemonEvent,
  parseCursor,
  parseRetryAfter,
} = lib;

test('breaker: closed → open after N consecutive failures; a success in between resets the count', () => {
  const clock = new FakeClock();
  const b = new LMSCircuitBreaker({ failureThreshold: 3, openMs: 1000, maxOpenMs: 5000, now: clock.now });
  assert.equal(b.state, 'closed');
  b.recordFailure();
  b.recordFailure();
  b.recordSuccess();
  b.recordFailure();
  b.recordFailure();
  assert.equal(b.state, 'closed', 'two failures after a success are below the threshold');
  assert.equal(b.allowRequest(), true);
  b.recordFailure();
  assert.equal(b.state, 'open');
  assert.equal(b.allowRequest(), false);
  assert.equal(b.msUntilHalfOpen(), 1000);
});

test('breaker: open → half-open after the period, one probe only, failure re-opens with a doubled period up to the cap', async () => {
  const clock = new FakeClock();
  const b = new LMSCircuitBreaker({ failureThreshold: 1, openMs: 1000, maxOpenMs: 3000, now: clock.now });
  b.recordFailure();
  assert.equal(b.state, 'open');
  await clock.advance(999);
  assert.equal(b.state, 'open');
  assert.equal(b.allowRequest(), false);
  await clock.advance(1);
  assert.equal(b.state, 'half-open');
  assert.equal(b.allowRequest(), true, 'the probe');
  assert.equal(b.allowRequest(), false, 'only one probe at a time');

  b.recordFailure(); // probe failed: 2000 ms now
  assert.equal(b.state, 'open');
  assert.equal(b.openPeriodMs, 2000);
  await clock.advance(1999);
  assert.equal(b.state, 'open');
  await clock.advance(1);
  assert.equal(b.allowRequest(), true);
  b.recordFailure(); // 4000 capped to 3000
  assert.equal(b.openPeriodMs, 3000);
  await clock.advance(3000);
  assert.equal(b.allowRequest(), true);
  b.recordFailure();
  assert.equal(b.openPeriodMs, 3000, 'stays at the cap');

  await clock.advance(3000);
  assert.equal(b.allowRequest(), true);
  b.releaseProbe(); // aborted probe: someone else may probe
  assert.equal(b.allowRequest(), true);
  b.recordSuccess();
  assert.equal(b.state, 'closed');
  assert.equal(b.openPeriodMs, 1000, 'closing resets the period');
  b.recordFailure();
  assert.equal(b.msUntilHalfOpen(), 1000);
});

test('fallback: tiers degrade on consecutive failures and step back to long after successes', () => {
  const f = new LMSFallbackManager({ thresholds: [2, 4, 6], recoverAfter: 3, random: () => 0 });
  const tiers = [];
  for (let i = 0; i < 7; i++) {
    f.recordFailure();
    tiers.push(f.tier);
  }
  assert.deepEqual(tiers, ['long', 'medium', 'medium', 'short', 'short', 'emergency', 'emergency']);

  const back = [];
  for (let i = 0; i < 9; i++) {
    f.recordSuccess({ transport: 'daemon', mode: 'long' });
    back.push(f.tier);
  }
  assert.deepEqual(back, [
    'emergency', 'emergency', 'short',
    'short', 'short', 'medium',
    'medium', 'medium', 'long',
  ]);
  // A failure in the middle of recovery restarts the success streak.
  f.recordFailure();
  f.recordFailure();
  assert.equal(f.tier, 'medium');
  f.recordSuccess();
  f.recordSuccess();
  f.recordFailure();
  f.recordSuccess();
  f.recordSuccess();
  assert.equal(f.tier, 'medium');
  f.recordSuccess();
  assert.equal(f.tier, 'long');
});

test('fallback: the server hint raises the tier per transport; AJAX is never long', () => {
  const f = new LMSFallbackManager();
  assert.deepEqual(f.plan('daemon'), { tier: 'long', transport: 'daemon', waitSeconds: 30, intervalMs: 0 });
  assert.deepEqual(f.plan('ajax'), { tier: 'medium', transport: 'ajax', waitSeconds: null, intervalMs: 10000 });
  f.recordSuccess({ transport: 'daemon', mode: 'short' });
  assert.deepEqual(f.plan('daemon'), { tier: 'short', transport: 'daemon', waitSeconds: 0, intervalMs: 3000 });
  assert.equal(f.plan('ajax').tier, 'medium', "the daemon's hint does not steer AJAX");
  f.recordSuccess({ transport: 'daemon', mode: 'medium' });
  assert.deepEqual(f.plan('daemon'), { tier: 'medium', transport: 'daemon', waitSeconds: 10, intervalMs: 0 });
  f.recordFailure({ transport: 'daemon', mode: 'emergency' });
  assert.deepEqual(f.plan('daemon'), { tier: 'emergency', transport: 'daemon', waitSeconds: 0, intervalMs: 1000 });
  f.recordSuccess({ transport: 'daemon', mode: 'long' });
  assert.equal(f.tier, 'long');
  f.recordSuccess({ transport: 'ajax', mode: 'short' });
  assert.deepEqual(f.plan('ajax'), { tier: 'short', transport: 'ajax', waitSeconds: null, intervalMs: 3000 });
});

test('fallback: backoff doubles per failure up to the cap, with jitter bounded to [exp*(1-j), exp]', () => {
  const noJitter = new LMSFallbackManager({ baseDelayMs: 1000, maxDelayMs: 30000, random: () => 0 });
  const grown = [];
  for (let i = 0; i < 8; i++) grown.push(noJitter.recordFailure());
  assert.deepEqual(grown, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);

  const rs = [0.999999, 0.5, 0.25, 0.75, 0.1, 0.9, 0.333, 0.0001];
  let k = 0;
  const jittered = new LMSFallbackManager({ baseDelayMs: 1000, maxDelayMs: 30000, jitter: 0.5, random: () => rs[k++ % rs.length] });
  for (let n = 1; n <= 40; n++) {
    const exp = Math.min(30000, 1000 * 2 ** (n - 1));
    const d = jittered.backoffDelay(n);
    assert.ok(d <= exp && d >= exp * 0.5, `n=${n}: ${d} not within [${exp / 2}, ${exp}]`);
  }
  const half = new LMSFallbackManager({ baseDelayMs: 1000, jitter: 0.5, random: () => 0.5 });
  assert.equal(half.backoffDelay(3), 3000, '4000 less a quarter');
  const wild = new LMSFallbackManager({ baseDelayMs: 1000, jitter: 0.5, random: () => 7 });
  assert.equal(wild.backoffDelay(1), 500, 'an out-of-range random is clamped');
});

test('router: critical events first, handlers by registered priority, each id once (LRU bounded)', () => {
  const errors = [];
  const r = new LMSEventRouter({ dedupCapacity: 3, onHandlerError: (e) => errors.push(e.message) });
  const log = [];
  r.on('message_create', (e) => log.push('low-handler:' + e.id), { priority: 4 });
  r.on('*', (e) => log.push('any:' + e.id));
  r.on('message_create', (e) => log.push('critical-handler:' + e.id), { priority: 1 });
  r.on('reaction_update', () => {
    throw new Error('boom');
  });
  const out = r.dispatch([
    ev(5, 3),
    ev(3, 1),
    ev(4, 2, { event_type: 'reaction_update' }),
    ev(2, 1),
    ev(3, 1),
  ]);
  assert.deepEqual(out.map((e) => e.id), [2, 3, 4, 5], 'priority then id; the repeated 3 dropped');
  assert.deepEqual(log, [
    'critical-handler:2', 'any:2', 'low-handler:2',
    'critical-handler:3', 'any:3', 'low-handler:3',
    'any:4',
    'critical-handler:5', 'any:5', 'low-handler:5',
  ]);
  assert.deepEqual(errors, ['boom'], 'a throwing handler does not stop the others');
  assert.equal(r.duplicates, 1);
  assert.equal(r.seenCount, 3, 'memory is bounded by dedupCapacity');
  assert.equal(r.hasSeen(2), false, 'the oldest id was evicted');
  assert.deepEqual(r.dispatch([ev(5), ev(4)]).map((e) => e.id), []);
  const unsubscribe = r.on('thread_create', () => log.push('thread'));
  unsubscribe();
  r.dispatch([ev(9, 1, { event_type: 'thread_create' })]);
  assert.equal(log.includes('thread'), false);
});

test('monitor: latency percentiles, requests per minute over a sliding window, error rate, reconnects', async () => {
  const clock = new FakeClock(1_000_000);
  const m = new LMSPerformanceMonitor({ now: clock.now, windowMs: 60000 });
  for (let i = 1; i <= 100; i++) m.recordEvent({ timestamp: clock.now() - i });
  m.recordEvent({ timestamp: null });
  for (let i = 0; i < 30; i++) m.recordRequest();
  await clock.advance(30000);
  for (let i = 0; i < 10; i++) m.recordRequest();
  m.recordError('timeout');
  m.recordError('timeout');
  m.recordError('http_503');
  m.recordReconnect();
  let s = m.snapshot();
  assert.equal(s.latency.count, 100);
  assert.equal(s.latency.p50, 50);
  assert.equal(s.latency.p95, 95);
  assert.equal(s.latency.p99, 99);
  assert.equal(s.latency.max, 100);
  assert.equal(s.events, 101);
  assert.equal(s.requestsPerMinute, 40);
  assert.deepEqual(s.errorsByCode, { timeout: 2, http_503: 1 });
  assert.equal(s.errorRate, 3 / 40);
  assert.equal(s.reconnects, 1);
  await clock.advance(30000);
  s = m.snapshot();
  assert.equal(s.requestsPerMinute, 10, 'the first 30 fell out of the window');
  assert.equal(s.requests, 40);
});

test('A/B: the server cohort decides; anything unexpected is legacy', () => {
  assert.equal(new LMSABTesting({ cohort: 'unified', rollout_percent: 20 }).useUnified(), true);
  assert.equal(new LMSABTesting({ cohort: 'legacy', rollout_percent: 20 }).useUnified(), false);
  assert.equal(new LMSABTesting({ cohort: 'UNIFIED' }).useUnified(), false);
  assert.equal(new LMSABTesting(null).useUnified(), false);
  assert.deepEqual(new LMSABTesting({ cohort: 'unified', rollout_percent: 250 }).snapshot(), { cohort: 'unified', rollout_percent: 100 });
});

test('legacy events map to the daemon shape', () => {
  const daemon = ev(42, 2, { event_type: 'reaction_update', thread_id: 9, timestamp: 1_700_000_123_000 });
  const legacy = legacyEv(daemon);
  assert.equal(typeof legacy.id, 'string');
  const mapped = mapLegacyEvent(legacy);
  assert.deepEqual(mapped, Object.assign({}, normalizeDaemonEvent(daemon), { expires_at: null }));
  assert.deepEqual(Object.keys(mapped), Object.keys(normalizeDaemonEvent(daemon)));

  const odd = mapLegacyEvent({ id: '7', type: 'message_delete', priority: '9', message_id: '0', thread_id: '0', channel_id: '3', user_id: '4', data: '{"a":1}', timestamp: '1700000000' });
  assert.deepEqual(odd, {
    id: 7,
    event_type: 'message_delete',
    priority: 3,
    channel_id: 3,
    message_id: null,
    thread_id: null,
    user_id: 4,
    data: { a: 1 },
    timestamp: 1_700_000_000_000,
    expires_at: null,
  });
  assert.deepEqual(mapLegacyEvent({ id: 1, type: 'x', data: 'not json', timestamp: 1_700_000_000_500 }).data, {});
  assert.equal(mapLegacyEvent({ id: 1, type: 'x', timestamp: 1_700_000_000_500 }).timestamp, 1_700_000_000_500, 'already ms');
});

test('cursor reading is conservative and Retry-After accepts seconds and dates', () => {
  assert.deepEqual(parseCursor('v1.0000abcd.8.7.5.6'), { epoch: '0000abcd', lanes: [8, 7, 5, 6] });
  assert.deepEqual(parseCursor('42'), { epoch: null, lanes: [42, 42, 42, 42] });
  for (const bad of ['', 'v2.0000abcd.1.2.3.4', 'v1.0000abcd.1.2.3', 'opaque', null, 'v1.0000abcd.1.2.3.99999999999999999']) {
    assert.equal(parseCursor(bad), null, String(bad));
  }
  const now = Date.parse('2025-01-22T00:00:00Z');
  assert.equal(parseRetryAfter('7', now), 7000);
  assert.equal(parseRetryAfter('Wed, 22 Jan 2025 00:00:12 GMT', now), 12000);
  assert.equal(parseRetryAfter('Tue, 21 Jan 2025 00:00:00 GMT', now), 0);
  assert.equal(parseRetryAfter('soon', now), null);
  assert.equal(parseRetryAfter(null, now), null);
});

test('fallback: AJAX as the primary transport may run long; hints and failures still raise it', () => {
  const f = new LMSFallbackManager();
  assert.deepEqual(f.plan('ajax', true), { tier: 'long', transport: 'ajax', waitSeconds: null, intervalMs: 1000 });
  assert.equal(f.plan('ajax').tier, 'medium', 'standing in for the daemon, AJAX stays medium');
  f.recordSuccess({ transport: 'ajax', mode: 'medium' });
  assert.deepEqual(f.plan('ajax', true), { tier: 'medium', transport: 'ajax', waitSeconds: null, intervalMs: 10000 });
  f.recordSuccess({ transport: 'ajax', mode: 'long' });
  assert.equal(f.plan('ajax', true).tier, 'long');
  f.recordFailure({ transport: 'ajax' });
  f.recordFailure({ transport: 'ajax' });
  assert.equal(f.plan('ajax', true).tier, 'medium', 'two failures in a row lower the tier');
});
