'use strict';
// LMSConnectionPool: the per-user cap of 3 (exact within a tab, census across tabs) and one shared
// poll per subscription across the tabs of a browser, over a fake BroadcastChannel.

const assert = require('node:assert/strict');
const { test, setup, flush, query, batch, ev, FakeClock, FakeFetch, FakeBroadcastHub, lib } = require('./helpers.js');
const { LMSConnectionPool } = lib;

function pool(clock, extra = {}) {
  return new LMSConnectionPool(
    Object.assign({ setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, random: Math.random, broadcastChannel: null }, extra)
  );
}

test('acquire: at most 3 slots, FIFO, an aborted waiter leaves the queue', async () => {
  const clock = new FakeClock();
  const p = pool(clock);
  const got = [];
  const releases = [];
  const ctrl = new AbortController();
  const abortedWaiter = p.acquire(ctrl.signal).then(
    () => 'granted',
    (e) => e.name
  );
  for (let i = 0; i < 4; i++) p.acquire().then((r) => (got.push(i), releases.push(r)));
  await flush();
  // The first acquire (the abortable one) took a slot; two of the four more got one.
  assert.equal(await abortedWaiter, 'granted');
  assert.deepEqual(got, [0, 1]);
  assert.equal(p.active, 3);
  assert.equal(p.queued, 2);

  const c2 = new AbortController();
  const waiting = p.acquire(c2.signal).then(
    () => 'granted',
    (e) => e.name
  );
  c2.abort();
  assert.equal(await waiting, 'AbortError');
  assert.equal(p.queued, 2);

  releases[0]();
  releases[0](); // a second release of the same slot is ignored
  await flush();
  assert.deepEqual(got, [0, 1, 2]);
  assert.equal(p.active, 3);
  releases[1]();
  await flush();
  assert.deepEqual(got, [0, 1, 2, 3]);
  assert.equal(p.queued, 0);
});

test('four clients in one tab never have more than 3 polls in flight', async () => {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const p = pool(clock);
  const clients = [1, 2, 3, 4].map((ch) => setup({ channels: [ch], cursor: 'c' + ch }, { clock, fetch, pool: p }).client);
  clients.forEach((c) => c.start());
  await flush();
  assert.equal(fetch.calls.length, 3);
  assert.equal(fetch.open.length, 3);
  assert.equal(p.queued, 1);
  // The first answer frees a slot: the waiting 4th client gets it, the 1st queues behind it.
  fetch.respond(200, batch([], 'c1b'));
  await flush();
  assert.equal(fetch.open.length, 3);
  assert.deepEqual(fetch.open.map((c) => query(c).channels).sort(), ['2', '3', '4']);
  assert.equal(p.queued, 1);
  for (let i = 0; i < 10; i++) {
    fetch.respond(200, batch([], 'x' + i));
    await flush();
    assert.ok(fetch.open.length <= 3);
  }
  await Promise.all(clients.map((c) => c.stop()));
  assert.equal(p.active, 0);
  assert.equal(p.queued, 0);
});

test('the cap counts the other tabs: slots they report are not handed out here', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const a = pool(clock, { broadcastChannel: hub.factory, tabId: 'tab-a' });
  const b = pool(clock, { broadcastChannel: hub.factory, tabId: 'tab-b' });
  a.join('k-a', {});
  b.join('k-b', {});
  const ra1 = await a.acquire();
  const ra2 = await a.acquire();
  await flush();
  assert.equal(b.othersActive(), 2);
  const granted = [];
  b.acquire().then(() => granted.push(1));
  b.acquire().then(() => granted.push(2));
  await flush();
  assert.deepEqual(granted, [1]);
  assert.equal(b.queued, 1);
  ra1();
  await flush();
  assert.deepEqual(granted, [1, 2], 'tab A released one: tab B may use it');
  ra2();
  await flush();
  assert.equal(b.othersActive(), 0);
  // A peer that reported a slot and then went silent stops counting after leaderTimeoutMs.
  const ra3 = await a.acquire();
  await flush();
  assert.equal(b.othersActive(), 1);
  for (const ch of hub.channels) if (ch === a._bc) ch.close();
  await clock.advance(b.leaderTimeoutMs + 1);
  assert.equal(b.othersActive(), 0);
  ra3();
  a.close();
  b.close();
});

test('tabs share one poll: the leader polls and relays, the follower delivers and keeps the cursor', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fa = new FakeFetch();
  const fb = new FakeFetch();
  const A = setup({ cursor: 'v1.00000001.1.1.1.1' }, { clock, fetch: fa, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'a' }) });
  const B = setup({ cursor: 'v1.00000001.1.1.1.1' }, { clock, fetch: fb, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'b' }) });

  A.client.start();
  await flush();
  assert.equal(fa.calls.length, 0, 'waits for an existing leader to answer');
  await clock.advance(300);
  assert.equal(A.client.isLeader, true);
  assert.equal(fa.calls.length, 1);

  B.client.start();
  await clock.advance(1000);
  assert.equal(B.client.isLeader, false);
  assert.equal(fb.calls.length, 0, 'the follower does not poll');

  fa.respond(200, batch([ev(2, 1), ev(3, 3)], 'v1.00000001.3.3.3.3'));
  await flush();
  assert.deepEqual(A.seen, [2, 3]);
  assert.deepEqual(B.seen, [2, 3], 'relayed to the other tab');
  assert.equal(B.client.cursor, 'v1.00000001.3.3.3.3');
  assert.deepEqual(B.life.connected, [{ transport: 'daemon', tier: 'long', shared: true }]);

  // Heartbeats keep the follower quiet for as long as the leader lives.
  await clock.advance(20000);
  assert.equal(fb.calls.length, 0);

  // The leader's tab closes: the follower takes over from the last relayed cursor.
  await A.client.stop();
  await flush();
  await clock.advance(0);
  assert.equal(B.client.isLeader, true);
  assert.equal(fb.calls.length, 1);
  assert.equal(query(fb.last).cursor, 'v1.00000001.3.3.3.3');
  fb.respond(200, batch([ev(3, 3), ev(4, 3)], 'v1.00000001.4.4.4.4'));
  await flush();
  assert.deepEqual(B.seen, [2, 3, 4], 'no duplicate after the hand-over');
  await B.client.stop();
});

test('a crashed leader (no bye, no heartbeat) is replaced after leaderTimeoutMs', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fa = new FakeFetch();
  const fb = new FakeFetch();
  const pa = pool(clock, { broadcastChannel: hub.factory, tabId: 'a', heartbeatMs: 1000, leaderTimeoutMs: 3000 });
  const pb = pool(clock, { broadcastChannel: hub.factory, tabId: 'b', heartbeatMs: 1000, leaderTimeoutMs: 3000 });
  const A = setup({ cursor: 'c0' }, { clock, fetch: fa, pool: pa });
  const B = setup({ cursor: 'c0' }, { clock, fetch: fb, pool: pb });
  A.client.start();
  await clock.advance(300);
  B.client.start();
  await clock.advance(300);
  assert.equal(B.client.isLeader, false);
  fa.respond(200, batch([ev(1)], 'c1'));
  await flush();
  // Tab A dies: its channel goes silent without a goodbye.
  for (const ch of hub.channels) if (pa._bc === ch) ch.close();
  pa._bc = null;
  await clock.advance(2999);
  assert.equal(fb.calls.length, 0);
  await clock.advance(2000);
  assert.equal(B.client.isLeader, true);
  assert.equal(fb.calls.length, 1);
  assert.equal(query(fb.last).cursor, 'c1');
  await B.client.stop();
  await A.client.stop();
});

test('two tabs claiming at once: the lower id keeps the lead, the other aborts its poll', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fa = new FakeFetch();
  const fb = new FakeFetch();
  const A = setup({ cursor: 'c0' }, { clock, fetch: fa, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'a' }) });
  const B = setup({ cursor: 'c0' }, { clock, fetch: fb, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'b' }) });
  // Neither hears the other in time: both claim and both start polling.
  hub.hold();
  A.client.start();
  B.client.start();
  await clock.advance(300);
  assert.equal(A.client.isLeader, true);
  assert.equal(B.client.isLeader, true);
  assert.equal(fa.calls.length, 1);
  assert.equal(fb.calls.length, 1);
  // The claims cross: 'b:1' > 'a:1', so B steps down and aborts; A keeps polling.
  hub.release();
  await flush();
  assert.equal(A.client.isLeader, true);
  assert.equal(B.client.isLeader, false);
  assert.equal(fb.last.aborted, true);
  assert.equal(fa.last.aborted, false);
  await clock.advance(10000);
  assert.equal(fb.calls.length, 1, 'B stays quiet');
  assert.equal(B.life.error.length, 0);
  fa.respond(200, batch([ev(9)], 'c9'));
  await flush();
  assert.deepEqual(B.seen, [9]);
  assert.equal(B.client.cursor, 'c9');
  await A.client.stop();
  await B.client.stop();
});

test('a stalled leader (throttled background tab) is replaced and yields when it wakes, without flapping', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fa = new FakeFetch();
  const fb = new FakeFetch();
  const A = setup({ cursor: 'c0' }, { clock, fetch: fa, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'a' }) });
  const B = setup({ cursor: 'c0' }, { clock, fetch: fb, pool: pool(clock, { broadcastChannel: hub.factory, tabId: 'b' }) });
  A.client.start();
  await clock.advance(300);
  B.client.start();
  await clock.advance(300);
  assert.equal(A.client.isLeader, true);
  assert.equal(B.client.isLeader, false);
  // Nothing from A reaches B for longer than leaderTimeoutMs (6 s): B takes over.
  hub.hold();
  await clock.advance(8000);
  assert.equal(B.client.isLeader, true);
  assert.equal(fb.calls.length, 1);
  // A wakes up and hears B's newer claim: A yields (although its id is lower) and aborts.
  hub.release();
  await flush();
  assert.equal(A.client.isLeader, false);
  assert.equal(B.client.isLeader, true);
  assert.equal(fa.last.aborted, true);
  assert.equal(fb.last.aborted, false);
  // And it stays that way: no leadership ping-pong over the next minute (B's polls answered).
  for (let i = 0; i < 6; i++) {
    fb.respond(200, batch([ev(100 + i)], 'c' + (i + 1)));
    await clock.advance(10000);
    assert.equal(A.client.isLeader, false);
    assert.equal(B.client.isLeader, true);
  }
  assert.equal(fa.calls.length, 1, 'A never polled again');
  assert.equal(fb.calls.length, 7);
  assert.deepEqual(A.seen, [100, 101, 102, 103, 104, 105], 'A gets the events as a follower');
  assert.equal(A.client.cursor, 'c6');
  await A.client.stop();
  await B.client.stop();
});

test('two clients with the same subscription in one tab share one poll even without BroadcastChannel', async () => {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const p = pool(clock);
  const A = setup({ cursor: 'c0' }, { clock, fetch, pool: p });
  const B = setup({ cursor: 'c0' }, { clock, fetch, pool: p });
  const C = setup({ cursor: 'c0', channels: [2] }, { clock, fetch, pool: p });
  A.client.start();
  B.client.start();
  C.client.start();
  await flush();
  assert.equal(fetch.calls.length, 2, 'one poll for channel 1, one for channel 2');
  assert.deepEqual(fetch.calls.map((c) => query(c).channels).sort(), ['1', '2']);
  const ch1 = fetch.calls.find((c) => query(c).channels === '1');
  ch1.resolve(new Response(JSON.stringify(batch([ev(5)], 'c5')), { status: 200 }));
  await flush();
  assert.deepEqual(A.seen, [5]);
  assert.deepEqual(B.seen, [5]);
  assert.deepEqual(C.seen, []);
  await Promise.all([A, B, C].map((x) => x.client.stop()));
});

test('without BroadcastChannel each tab polls on its own', async () => {
  const clock = new FakeClock();
  const fa = new FakeFetch();
  const fb = new FakeFetch();
  const A = setup({ cursor: 'c0' }, { clock, fetch: fa, pool: pool(clock) });
  const B = setup({ cursor: 'c0' }, { clock, fetch: fb, pool: pool(clock) });
  A.client.start();
  B.client.start();
  await flush();
  assert.equal(fa.calls.length, 1);
  assert.equal(fb.calls.length, 1);
  assert.equal(A.client.isLeader && B.client.isLeader, true);
  await A.client.stop();
  await B.client.stop();
});
