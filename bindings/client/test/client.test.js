'use strict';
// LMSUnifiedLongPoll against a fake daemon: what it sends (cursor, token, parameters) and how it
// reacts to each answer (batches, gaps, 401, 429, 503, failures, stop).

const assert = require('node:assert/strict');
const { test, setup, flush, query, batch, ev } = require('./helpers.js');

test('cursor: the first poll sends the rendered head cursor, every later poll the cursor last returned', async () => {
  const { client, fetch, clock, seen, life } = setup({ cursor: 'v1.0000abcd.10.10.10.10', channels: [1, 2], thread: 5 });
  client.start();
  await flush();
  assert.equal(fetch.calls.length, 1);
  assert.equal(new URL(fetch.last.url).pathname, '/v1/poll');
  assert.deepEqual(query(fetch.last), { channels: '1,2', cursor: 'v1.0000abcd.10.10.10.10', timeout: '30', thread: '5' });
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok1');
  assert.equal(fetch.last.init.cache, 'no-store');

  fetch.respond(200, batch([ev(11)], 'v1.0000abcd.10.10.11.10'));
  await flush();
  assert.equal(fetch.calls.length, 2, 'long tier re-polls at once');
  assert.equal(query(fetch.last).cursor, 'v1.0000abcd.10.10.11.10');

  // An empty batch (timeout) can still move the cursor; it is passed back verbatim, whatever its form.
  fetch.respond(200, batch([], 'opaque:not-a-v1-cursor'));
  await flush();
  assert.equal(query(fetch.last).cursor, 'opaque:not-a-v1-cursor');

  // A failed poll is retried, after the backoff, with the same cursor.
  fetch.fail();
  await flush();
  assert.equal(fetch.open.length, 0);
  assert.equal(life.error.length, 1);
  assert.equal(life.error[0].code, 'network_error');
  await clock.advance(999);
  assert.equal(fetch.calls.length, 3);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 4);
  assert.equal(query(fetch.last).cursor, 'opaque:not-a-v1-cursor');

  assert.deepEqual(seen, [11]);
  assert.equal(life.connected.length, 1);
  assert.deepEqual(life.connected[0], { transport: 'daemon', tier: 'long', shared: false });
  await client.stop();
});

test('cursor: without a rendered cursor the first poll omits it, or sends the rendered last_event_id', async () => {
  const a = setup({});
  a.client.start();
  await flush();
  assert.equal('cursor' in query(a.fetch.last), false);
  await a.client.stop();

  const b = setup({ lastEventId: 77 });
  b.client.start();
  await flush();
  assert.equal(query(b.fetch.last).cursor, '77');
  b.fetch.respond(200, batch([ev(78)], 'v1.0000abcd.78.78.78.78'));
  await flush();
  assert.equal(query(b.fetch.last).cursor, 'v1.0000abcd.78.78.78.78');
  await b.client.stop();
});

test('gap: true emits resync, delivers the batch and continues from the new cursor', async () => {
  const { client, fetch, seen, life } = setup({ cursor: 'v1.0000abcd.5.5.5.5' });
  client.start();
  await flush();
  fetch.respond(200, batch([ev(6)], 'v1.0000abcd.6.6.6.6'));
  await flush();
  assert.equal(life.resync.length, 0);
  fetch.respond(200, batch([ev(40)], 'v1.0000abcd.40.40.40.40', { gap: true }));
  await flush();
  assert.equal(life.resync.length, 1);
  assert.deepEqual(life.resync[0], { cursor: 'v1.0000abcd.40.40.40.40', source: 'daemon' });
  assert.deepEqual(seen, [6, 40]);
  assert.equal(query(fetch.last).cursor, 'v1.0000abcd.40.40.40.40');

  // A gap from a recreated store (new epoch): ids restart, so old ids are no longer duplicates.
  fetch.respond(200, batch([ev(6)], 'v1.0000beef.6.6.6.6', { gap: true }));
  await flush();
  assert.equal(life.resync.length, 2);
  assert.deepEqual(seen, [6, 40, 6]);
  assert.equal(query(fetch.last).cursor, 'v1.0000beef.6.6.6.6');
  await client.stop();
});

test('401: the token is refreshed once and the poll retried at once', async () => {
  const { client, fetch, tokenCalls, seen, life } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  assert.equal(tokenCalls.length, 1);
  fetch.respond(401, { error: { code: 'unauthorized', message: 'token expired' } });
  await flush();
  assert.equal(tokenCalls.length, 2);
  assert.deepEqual(tokenCalls[1], { force: true });
  assert.equal(fetch.calls.length, 2);
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2');
  assert.equal(query(fetch.last).cursor, 'c0');
  fetch.respond(200, batch([ev(1)], 'c1'));
  await flush();
  assert.deepEqual(seen, [1]);
  assert.equal(life.error.length, 0);
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2', 'the fresh token is kept');
  assert.equal(tokenCalls.length, 2);
  await client.stop();
});

test('401 twice: no refresh loop, it is a failure with backoff', async () => {
  const { client, fetch, clock, tokenCalls, life } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  fetch.respond(401, { error: { code: 'unauthorized', message: 'bad' } });
  await flush();
  fetch.respond(401, { error: { code: 'unauthorized', message: 'still bad' } });
  await flush();
  assert.equal(tokenCalls.length, 2);
  assert.equal(fetch.calls.length, 2);
  assert.equal(life.error.length, 1);
  assert.equal(life.error[0].status, 401);
  assert.equal(life.error[0].code, 'unauthorized');
  await clock.advance(1000);
  assert.equal(fetch.calls.length, 3, 'retried after the backoff');
  await client.stop();
});

test('429: waits exactly Retry-After, without tripping the breaker or changing tier', async () => {
  const { client, fetch, clock, life } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  fetch.respond(429, { error: { code: 'rate_limited', message: 'slow down' } }, { 'Retry-After': '7' });
  await flush();
  assert.equal(life.error.length, 1);
  assert.equal(life.error[0].status, 429);
  assert.equal(life.error[0].retryInMs, 7000);
  await clock.advance(6999);
  assert.equal(fetch.calls.length, 1, 'nothing before Retry-After');
  await clock.advance(1);
  assert.equal(fetch.calls.length, 2);
  assert.equal(query(fetch.last).timeout, '30');
  assert.equal(query(fetch.last).cursor, 'c0');
  assert.equal(client.breaker.state, 'closed');
  assert.equal(client.breaker.failures, 0);
  assert.equal(client.fallback.consecutiveFailures, 0);

  // Repeated 429s do not open the breaker either.
  for (let i = 0; i < 5; i++) {
    fetch.respond(429, { error: { code: 'rate_limited', message: '' } }, { 'Retry-After': '1' });
    await clock.advance(1000);
  }
  assert.equal(client.breaker.state, 'closed');
  assert.equal(client.mode.transport, 'daemon');
  await client.stop();
});

test('503 with a mode hint: the next polls follow the hinted tier, and long returns when the daemon says so', async () => {
  const { client, fetch, clock, life } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  assert.deepEqual(client.mode, { tier: 'long', transport: 'daemon' });
  fetch.respond(503, { error: { code: 'storage_busy', message: 'database is locked' }, mode: 'short' }, { 'Retry-After': '2' });
  await flush();
  assert.equal(life.error[0].status, 503);
  assert.equal(life.error[0].retryInMs, 2000, 'Retry-After beats the 1 s backoff');
  await clock.advance(1999);
  assert.equal(fetch.calls.length, 1);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 2);
  assert.equal(query(fetch.last).timeout, '0', 'short tier: no server-side wait');
  assert.deepEqual(life.mode.at(-1), { tier: 'short', transport: 'daemon', previous: { tier: 'long', transport: 'daemon' } });

  // Still short: the next poll comes 3 s after the previous one started.
  fetch.respond(200, batch([], 'c1', { mode: 'short' }));
  await flush();
  assert.equal(fetch.calls.length, 2);
  await clock.advance(2999);
  assert.equal(fetch.calls.length, 2);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 3);
  assert.equal(query(fetch.last).cursor, 'c1');

  // The daemon is healthy again: straight back to a 30 s long-poll.
  fetch.respond(200, batch([], 'c2', { mode: 'long' }));
  await flush();
  assert.equal(fetch.calls.length, 4);
  assert.equal(query(fetch.last).timeout, '30');
  assert.deepEqual(client.mode, { tier: 'long', transport: 'daemon' });
  await client.stop();
});

test('mode hint on a success (medium) gives a 10 s wait; retry_ms delays the next poll', async () => {
  const { client, fetch, clock } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  fetch.respond(200, batch([], 'c1', { mode: 'medium', retry_ms: 1500 }));
  await flush();
  assert.equal(fetch.calls.length, 1);
  await clock.advance(1499);
  assert.equal(fetch.calls.length, 1);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 2);
  assert.equal(query(fetch.last).timeout, '10');
  await client.stop();
});

test('stop() aborts the request in flight and nothing runs afterwards', async () => {
  const { client, fetch, clock, life, pool } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  const inflight = fetch.last;
  assert.equal(pool.active, 1);
  await client.stop();
  assert.equal(inflight.aborted, true);
  assert.equal(inflight.init.signal.aborted, true);
  assert.equal(pool.active, 0, 'the slot was released');
  await clock.advance(120000);
  assert.equal(fetch.calls.length, 1);
  assert.equal(life.error.length, 0, 'an abort is not an error');
  assert.equal(client.running, false);
});

test('stop() during a backoff sleep: no further requests', async () => {
  const { client, fetch, clock } = setup({ cursor: 'c0' });
  client.start();
  await flush();
  fetch.fail();
  await flush();
  assert.ok(clock.pendingDelays().includes(1000));
  await client.stop();
  await clock.advance(60000);
  assert.equal(fetch.calls.length, 1);
});

test('a hung daemon is cut off by the watchdog (wait + slack) and counted as a failure', async () => {
  const { client, fetch, clock, life } = setup({ cursor: 'c0', requestSlackMs: 5000 });
  client.start();
  await flush();
  await clock.advance(34999);
  assert.equal(fetch.last.aborted, false);
  await clock.advance(1);
  assert.equal(fetch.last.aborted, true);
  assert.equal(life.error.length, 1);
  assert.equal(life.error[0].code, 'timeout');
  assert.equal(client.running, true);
  await clock.advance(1000);
  assert.equal(fetch.calls.length, 2);
  await client.stop();
});

test('types, order and batch size are passed to the daemon; malformed answers are failures', async () => {
  const { client, fetch, life } = setup({ cursor: 'c0', types: ['message_create', 'reaction_update', 'Bad-Type'], order: 'sequential', batchSize: 20 });
  client.start();
  await flush();
  assert.deepEqual(query(fetch.last), { channels: '1', cursor: 'c0', timeout: '30', types: 'message_create,reaction_update', order: 'sequential', limit: '20' });
  fetch.respond(200, { events: 'nope' });
  await flush();
  assert.equal(life.error[0].code, 'invalid_response');
  await client.stop();
});

test('handlers: on/off, lifecycle names, and a throwing handler does not stop delivery', async () => {
  const errors = [];
  const { client, fetch } = setup({ cursor: 'c0', onHandlerError: (e) => errors.push(e.message) });
  const got = [];
  client.on('message_create', () => {
    throw new Error('app bug');
  });
  const off = client.on('reaction_update', (e) => got.push('r' + e.id));
  client.on('message_create', (e) => got.push('m' + e.id));
  client.start();
  await flush();
  fetch.respond(200, batch([ev(1), ev(2, 2, { event_type: 'reaction_update' })], 'c1'));
  await flush();
  assert.deepEqual(got, ['r2', 'm1'], 'the HIGH reaction before the NORMAL message');
  assert.deepEqual(errors, ['app bug']);
  off();
  fetch.respond(200, batch([ev(3, 2, { event_type: 'reaction_update' })], 'c2'));
  await flush();
  assert.deepEqual(got, ['r2', 'm1']);
  assert.equal(query(fetch.last).cursor, 'c2', 'the cursor moves on regardless');
  await client.stop();
});
