'use strict';
// Where the stream sits among the transports (stream → daemon long-poll → AJAX → short poll,
// and back), and one stream per browser: the tab that leads holds it, relays what it pushes,
// and hands over at once when its page goes away.

const assert = require('node:assert/strict');
const { test, setup, flush, query, sseEvent, batch, ev, ajaxOk, FakeClock, FakeFetch, FakeBroadcastHub, lib } = require('./helpers.js');

const C = (n) => 'v1.00000001.' + [n, n, n, n].join('.');
const path = (call) => new URL(call.url).pathname;
const AJAX = 'http://wp.test/wp-admin/admin-ajax.php';
const kind = (call) => (call.url === AJAX ? 'ajax' : path(call) === '/v1/stream' ? 'stream' : 'poll:' + query(call).timeout);

test('order: stream, then the daemon long-poll when streams fail, AJAX when the breaker opens, short polls, and back up to the stream', async () => {
  const clock = new FakeClock();
  const breaker = new lib.LMSCircuitBreaker({ failureThreshold: 3, openMs: 60000, now: clock.now });
  const { client, fetch, life, seen } = setup({ stream: true, cursor: C(0), breaker }, { clock });
  const trail = [];
  const note = () => trail.push(kind(fetch.last));
  client.start();
  await flush();

  note();
  let s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(1), C(1)));
  await flush();
  s.error(); // stream failure 1 (it had delivered): the stream again after the backoff
  await clock.advance(1000);
  note();
  s = fetch.respondStream();
  s.write('retry: 0\n\n');
  s.error(); // stream failure 2 in a row: set aside for the cool-down (60 s)
  await clock.advance(2000);
  note();
  assert.equal(client.fallback.streamDemotions, 1);
  fetch.fail(); // the daemon itself fails: the breaker opens (3 failures)
  await flush();
  assert.equal(breaker.state, 'open');
  await clock.advance(4000);
  note();
  fetch.fail(); // AJAX fails once too: the failure level reaches short
  await clock.advance(8000);
  for (let i = 0; i < 100 && kind(fetch.last) === 'ajax'; i++) {
    note();
    fetch.respond(200, ajaxOk([]));
    await flush();
    // The tier's cadence (3 s short, 10 s medium), or the probe when the breaker half-opens.
    for (let j = 0; j < 40 && fetch.open.length === 0; j++) await clock.advance(500);
  }
  note();
  assert.equal(trail.at(-1), 'poll:0', 'the half-open probe asks for an immediate answer');
  fetch.respond(200, batch([], C(2)));
  await flush();
  note();
  assert.equal(breaker.state, 'closed');

  const compact = trail.filter((k, i) => k !== trail[i - 1]);
  assert.deepEqual(compact, ['stream', 'poll:10', 'ajax', 'poll:0', 'stream']);
  const modes = life.mode.map((m) => m.tier + '/' + m.transport).filter((m, i, a) => m !== a[i - 1]);
  assert.deepEqual(modes.slice(0, 4), ['long/stream', 'medium/daemon', 'medium/ajax', 'short/ajax']);
  assert.deepEqual(modes.slice(-2), ['long/daemon', 'long/stream']);
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(2), 'the stream resumes where the probe left off');
  assert.deepEqual(seen, [1]);
  await client.stop();
});

test('order: the stream is retried after its cool-down, which doubles while it keeps failing and resets once it works', async () => {
  const clock = new FakeClock();
  const { client, fetch } = setup({ stream: true, cursor: C(0), streamCooldownMs: 10000 }, { clock });
  client.start();
  await flush();
  const silentStream = async () => {
    assert.equal(kind(fetch.last), 'stream');
    fetch.respondStream().end(); // 200 and not a byte: a stream that cannot work here
    await flush();
  };
  /** Answers long polls until the stream is back; returns how long that took. */
  const pollUntilStream = async () => {
    const from = clock.now();
    for (let i = 0; i < 100 && kind(fetch.last) !== 'stream'; i++) {
      assert.equal(kind(fetch.last), 'poll:30');
      await clock.advance(1000);
      fetch.respond(200, batch([], C(0)));
      await flush();
    }
    return clock.now() - from;
  };
  await silentStream();
  await clock.advance(1000);
  const first = await pollUntilStream();
  await silentStream();
  await clock.advance(1000);
  const second = await pollUntilStream();
  assert.ok(first >= 9000 && first <= 11000, 'about the 10 s cool-down: ' + first);
  assert.ok(second >= 19000 && second <= 21000, 'doubled: ' + second);
  // Now it works: a later failure starts from the base cool-down again.
  let s = fetch.respondStream();
  s.write('retry: 0\n\n: hb\nid: ' + C(0) + '\n\n');
  await flush();
  s.end();
  await flush();
  await silentStream();
  await clock.advance(1000);
  assert.ok((await pollUntilStream()) <= 11000);
  s = fetch.respondStream();
  await client.stop();
  assert.ok(s.cancelled);
});

/** A tab: its own pool on the shared bus, its own page lifecycle target, one shared fetch. */
function tab(hub, clock, fetch, id) {
  const page = new EventTarget();
  page.onpagehide = null; // the target supports pagehide, as a window does
  const pool = new lib.LMSConnectionPool({ broadcastChannel: hub.factory, tabId: id, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now });
  const t = setup({ stream: true, cursor: C(0), pageEvents: page }, { clock, fetch, pool });
  t.page = page;
  t.hide = () => page.dispatchEvent(new Event('pagehide'));
  return t;
}

/** Streams the tabs hold: opened and neither aborted by the client nor answered otherwise. */
const liveStreams = (fetch) => fetch.calls.filter((c) => path(c) === '/v1/stream' && !c.aborted);

test('tabs: the follower takes over within a second of the leader tab pagehide, from the relayed position', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fetch = new FakeFetch();
  const A = tab(hub, clock, fetch, 'a');
  const B = tab(hub, clock, fetch, 'b');
  A.client.start();
  await clock.advance(300);
  B.client.start();
  await clock.advance(1000);
  assert.equal(A.client.isLeader, true);
  assert.equal(B.client.isLeader, false);
  assert.equal(liveStreams(fetch).length, 1);

  const s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(1, 3), C(1)) + sseEvent(ev(2, 1), C(2)));
  await flush();
  assert.deepEqual(A.seen, [2, 1]);
  assert.deepEqual(B.seen, [2, 1], 'streamed batches are relayed to the follower');
  assert.deepEqual(B.life.connected, [{ transport: 'stream', tier: 'long', shared: true }]);
  s.write(': hb\nid: ' + C(3) + '\n\n');
  await flush();
  assert.equal(B.client.cursor, C(3), 'the heartbeat position is relayed too');

  const handoverFrom = clock.now();
  A.hide();
  await flush();
  assert.ok(s.cancelled, "the leaving tab's stream is closed");
  assert.equal(A.client.running, false);
  assert.equal(B.client.isLeader, true);
  const open = liveStreams(fetch);
  assert.equal(open.length, 1);
  assert.equal(open[0].init.headers['Last-Event-ID'], C(3));
  assert.ok(clock.now() - handoverFrom < 1000, 'within a second');
  const s2 = fetch.respondStream();
  s2.write('retry: 0\n\n' + sseEvent(ev(4), C(4)));
  await flush();
  assert.deepEqual(B.seen, [2, 1, 4]);

  // The page comes back from the back/forward cache: it rejoins, as a follower.
  const show = new Event('pageshow');
  show.persisted = true;
  A.page.dispatchEvent(show);
  await clock.advance(1000);
  assert.equal(A.client.running, true);
  assert.equal(A.client.isLeader, false);
  assert.equal(liveStreams(fetch).length, 1);
  s2.write(sseEvent(ev(5), C(5)));
  await flush();
  assert.deepEqual(A.seen, [2, 1, 5]);
  await Promise.all([A.client.stop(), B.client.stop()]);
  assert.equal(liveStreams(fetch).length, 0);
});

test('tabs: with N tabs one stream is held; each leader that leaves is replaced, never by two', async () => {
  const clock = new FakeClock();
  const hub = new FakeBroadcastHub();
  const fetch = new FakeFetch();
  const tabs = [];
  for (let i = 0; i < 6; i++) {
    const t = tab(hub, clock, fetch, 't' + i);
    t.client.start();
    tabs.push(t);
    await clock.advance(100);
  }
  await clock.advance(1000);
  assert.equal(liveStreams(fetch).length, 1);
  assert.equal(tabs.filter((t) => t.client.isLeader).length, 1);
  let id = 0;
  while (tabs.length > 0) {
    const open = liveStreams(fetch);
    assert.equal(open.length, 1, tabs.length + ' tabs: one stream');
    const s = fetch.respondStream();
    id += 1;
    s.write('retry: 0\n\n' + sseEvent(ev(id), C(id)));
    await flush();
    for (const t of tabs) assert.equal(t.seen.filter((x) => x === id).length, 1, 'every tab gets ' + id + ' once');
    const leader = tabs.find((t) => t.client.isLeader);
    leader.hide();
    tabs.splice(tabs.indexOf(leader), 1);
    await clock.advance(500);
    assert.ok(s.cancelled);
    assert.equal(tabs.filter((t) => t.client.isLeader).length, Math.min(1, tabs.length));
  }
  assert.equal(liveStreams(fetch).length, 0);
});

test('page lifecycle: beforeunload where there is no pagehide; an explicit stop() stops listening', async () => {
  const clock = new FakeClock();
  const page = new EventTarget(); // no `onpagehide`: an old browser
  const { client, fetch } = setup({ stream: true, cursor: C(0), pageEvents: page }, { clock });
  client.start();
  await flush();
  page.dispatchEvent(new Event('pagehide'));
  await flush();
  assert.equal(client.running, true, 'pagehide is not listened to where the target lacks it');
  page.dispatchEvent(new Event('beforeunload'));
  await flush();
  assert.equal(client.running, false);
  assert.ok(fetch.last.aborted);

  const show = new Event('pageshow');
  show.persisted = true;
  page.dispatchEvent(show);
  await flush();
  assert.equal(client.running, true, 'back from the back/forward cache');
  await client.stop();
  page.dispatchEvent(show);
  await flush();
  assert.equal(client.running, false, 'after stop() the page events are not listened to');
});
