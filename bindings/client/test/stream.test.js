'use strict';
// The stream transport (GET /v1/stream, server-sent events read from a fetch body): the parser,
// what the client sends, how frames become batches, resuming after a drop, the watchdog, the
// token refresh and the answers refused before the stream starts.

const assert = require('node:assert/strict');
const { test, setup, flush, query, sseEvent, batch, ev, lib } = require('./helpers.js');
const { SseParser } = lib;

const C = (n) => 'v1.00000001.' + [n, n, n, n].join('.');
const path = (call) => new URL(call.url).pathname;

/** Parses `chunks` in order; returns the frames and comments seen, and the parser. */
function parse(chunks) {
  const frames = [];
  const comments = [];
  const p = new SseParser(
    (f) => frames.push(f),
    (c) => comments.push(c)
  );
  for (const c of chunks) p.feed(c);
  return { frames, comments, p };
}

test('parser: line ends (LF, CRLF, CR, CR|LF across chunks), one optional space, multi-line data, comments', () => {
  const text = 'retry: 250\r\n: hb\r\nid: a\r\ndata: {"x":\rdata:1}\n\nevent: gap\ndata:  two\nfield-without-colon\n\r\n';
  const whole = parse([text]);
  // Every split point, and one character at a time, give the same frames.
  for (let i = 0; i <= text.length; i++) {
    assert.deepEqual(parse([text.slice(0, i), text.slice(i)]).frames, whole.frames, 'split at ' + i);
  }
  assert.deepEqual(parse(text.split('')).frames, whole.frames);
  assert.deepEqual(whole.frames, [
    { event: '', data: '{"x":\n1}', id: 'a', hasId: true },
    { event: 'gap', data: ' two', id: 'a', hasId: false },
  ]);
  assert.deepEqual(whole.comments, ['hb']);
  assert.equal(whole.p.retry, 250);
  assert.equal(whole.p.lastEventId, 'a', 'the id persists across frames');
});

test('parser: a CR at the end of a chunk and an LF starting the next are one line end, not a blank line', () => {
  const { frames } = parse(['data: a\r', '\ndata: b\r', '\n\r', '\n']);
  assert.deepEqual(frames, [{ event: '', data: 'a\nb', id: '', hasId: false }]);
});

test('parser: bad retry and NUL ids are ignored, an id-only frame is reported, an unfinished frame waits', () => {
  const { frames, p } = parse(['retry: 1x\nretry: 30\nid: ok\n\nid: bad\u0000\ndata: d\n\ndata: unfinished\n']);
  assert.equal(p.retry, 30);
  assert.deepEqual(frames, [
    { event: '', data: null, id: 'ok', hasId: true },
    { event: '', data: 'd', id: 'ok', hasId: false },
  ]);
  p.feed('\n');
  assert.equal(frames.at(-1).data, 'unfinished');
});

test('stream: the request carries the token in a header and the cursor in Last-Event-ID, never in the URL', async () => {
  const { client, fetch, life } = setup({ stream: true, cursor: C(5) });
  client.start();
  await flush();
  const call = fetch.last;
  assert.equal(path(call), '/v1/stream');
  assert.deepEqual(query(call), { channels: '1' });
  assert.equal(call.init.headers.Authorization, 'Bearer tok1');
  assert.equal(call.init.headers['Last-Event-ID'], C(5));
  assert.equal(call.init.headers.Accept, 'text/event-stream');
  assert.equal(call.init.credentials, 'omit');
  assert.deepEqual(life.mode, [{ tier: 'long', transport: 'stream', previous: null }]);
  await client.stop();
  assert.ok(call.aborted, 'stop() aborts the stream');
});

test('stream: frames become batches per chunk read; partial frames wait; heartbeats move only the cursor; gap resyncs', async () => {
  const { client, fetch, seen, life } = setup({ stream: true, cursor: C(5) });
  client.start();
  await flush();
  const s = fetch.respondStream();
  s.write('retry: 0\n\n');
  // Two frames in one chunk (a batch: delivered most urgent first), the third cut in two.
  s.write(sseEvent(ev(7, 3), 'v1.00000001.8.8.6.8') + sseEvent(ev(8, 1), 'v1.00000001.8.8.7.8') + sseEvent(ev(9, 3), C(9)).slice(0, 20));
  await flush();
  assert.deepEqual(seen, [8, 7]);
  assert.equal(client.cursor, 'v1.00000001.8.8.7.8');
  assert.deepEqual(life.connected, [{ transport: 'stream', tier: 'long', shared: false }]);
  s.write(sseEvent(ev(9, 3), C(9)).slice(20));
  await flush();
  assert.deepEqual(seen, [8, 7, 9]);
  assert.equal(client.cursor, C(9));

  // A heartbeat carries the position only.
  s.write(': hb\nid: ' + C(12) + '\n\n');
  await flush();
  assert.deepEqual(seen, [8, 7, 9]);
  assert.equal(client.cursor, C(12));

  // A gap frame: the batch it starts is a resync, and its events are delivered.
  const gap = 'event: gap\nid: ' + C(20) + '\ndata: {"gap":true,"cursor":"' + C(20) + '","mode":"long"}\n\n';
  s.write('retry: 0\n' + gap + sseEvent(ev(21, 3), C(21)));
  await flush();
  assert.deepEqual(life.resync, [{ cursor: C(21), source: 'stream' }]);
  assert.deepEqual(seen, [8, 7, 9, 21]);

  // A frame of a type the client does not know is not an event; its id still counts.
  s.write('event: notice\nid: ' + C(22) + '\ndata: {"id":99}\n\n');
  await flush();
  assert.deepEqual(seen, [8, 7, 9, 21]);
  assert.equal(client.cursor, C(22));
  assert.equal(life.error.length, 0);
  assert.equal(fetch.calls.length, 1, 'still one request');
  await client.stop();
});

test('stream: ended by the server, it reconnects after retry: (capped), from the last position', async () => {
  const { client, fetch, clock, seen } = setup({ stream: true, cursor: C(1), streamRetryMaxMs: 10000 });
  client.start();
  await flush();
  let s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(2), C(2)));
  s.end();
  await flush();
  assert.equal(fetch.calls.length, 2, 'retry: 0 reconnects at once');
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(2));

  // Shutdown: the daemon writes its position and retry: 1000.
  s = fetch.respondStream();
  s.write('retry: 1000\n: hb\nid: ' + C(3) + '\n\n');
  s.end();
  await clock.advance(999);
  assert.equal(fetch.calls.length, 2);
  await clock.advance(1);
  assert.equal(fetch.calls.length, 3);
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(3));

  // A huge retry is capped.
  s = fetch.respondStream();
  s.write('retry: 3600000\n\n');
  s.end();
  await clock.advance(10000);
  assert.equal(fetch.calls.length, 4);
  assert.equal(path(fetch.last), '/v1/stream');
  assert.deepEqual(seen, [2]);
  await client.stop();
});

test('stream: a dropped stream resumes with Last-Event-ID: the partial frame is not applied, nothing lost or repeated', async () => {
  const { client, fetch, clock, seen, life } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  let s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(1), C(1)) + sseEvent(ev(2), C(2)));
  s.write(sseEvent(ev(3), C(3)).slice(0, 30)); // cut mid-frame
  await flush();
  s.error(new TypeError('network error'));
  await flush();
  assert.equal(life.error.length, 1);
  assert.deepEqual({ transport: life.error[0].transport, code: life.error[0].code }, { transport: 'stream', code: 'network_error' });
  await clock.advance(1000);
  assert.equal(path(fetch.last), '/v1/stream', 'one drop does not set the stream aside');
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(2));
  // The daemon resumes right after 2.
  s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(3), C(3)) + sseEvent(ev(4), C(4)));
  await flush();
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.equal(client.router.duplicates, 0);
  assert.equal(client.monitor.snapshot().reconnects, 1);
  await client.stop();
});

test('stream: the watchdog ends a quiet stream; heartbeats keep it open; a silent stream is set aside at once', async () => {
  const { client, fetch, clock, life, tokenCalls } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  const s = fetch.respondStream();
  s.write('retry: 0\n\n');
  for (let i = 0; i < 8; i++) {
    await clock.advance(15000);
    s.write(': hb\nid: ' + C(0) + '\n\n');
  }
  await flush();
  assert.equal(fetch.calls.length, 1, 'two minutes of heartbeats: still the same stream');
  await clock.advance(37499);
  assert.equal(s.cancelled, false);
  await clock.advance(1);
  assert.ok(s.cancelled, 'the reader was cancelled');
  assert.equal(life.error.at(-1).code, 'timeout');
  assert.equal(client.fallback.streamDemotions, 0, 'it had delivered: one failure is not enough');

  // The next stream opens (200) but no byte ever comes: a proxy buffering it.
  await clock.advance(1000);
  assert.equal(path(fetch.last), '/v1/stream');
  fetch.respondStream();
  await clock.advance(37500);
  assert.equal(life.error.at(-1).code, 'timeout');
  assert.equal(client.fallback.streamDemotions, 1);
  await clock.advance(2000);
  assert.equal(path(fetch.last), '/v1/poll', 'the long poll serves during the cool-down');
  assert.equal(life.mode.at(-1).transport, 'daemon');
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok1', 'the stream and the long poll share the token');
  assert.equal(tokenCalls.length, 1);
  assert.deepEqual(client.stats().stream, { allowed: false, cooldownLeftMs: 60000 - 2000, demotions: 1 });
  await client.stop();
});

test('stream: a 401 before the stream starts refreshes the token once; a second 401 is a failure', async () => {
  const { client, fetch, clock, tokenCalls, life } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  fetch.respond(401, { error: { code: 'invalid_token', message: 'expired' } });
  await flush();
  assert.deepEqual(tokenCalls, [{ force: false }, { force: true }]);
  assert.equal(fetch.calls.length, 2, 'retried at once');
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2');
  assert.equal(life.error.length, 0);
  fetch.respond(401, { error: { code: 'invalid_token', message: 'expired' } });
  await flush();
  assert.equal(fetch.calls.length, 2);
  assert.deepEqual(
    { transport: life.error[0].transport, status: life.error[0].status, code: life.error[0].code },
    { transport: 'stream', status: 401, code: 'invalid_token' }
  );
  // As on the long poll, the token is kept after the second 401; the next attempt refreshes again.
  await clock.advance(1000);
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2');
  fetch.respond(401, { error: { code: 'invalid_token', message: 'expired' } });
  await flush();
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok3');
  await client.stop();
});

test('stream: answers refused before the stream are read as the long poll reads them', async () => {
  const { client, fetch, clock, life } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  // 429: wait Retry-After; neither the breaker nor the stream moves.
  fetch.respond(429, { error: { code: 'slots_exhausted', message: 'too many' } }, { 'Retry-After': '4' });
  await flush();
  assert.deepEqual({ code: life.error[0].code, retryInMs: life.error[0].retryInMs }, { code: 'slots_exhausted', retryInMs: 4000 });
  await clock.advance(4000);
  assert.equal(path(fetch.last), '/v1/stream');
  assert.equal(client.breaker.failures, 0);

  // 503 with a mode hint: the daemon is degraded, so the short-tier poll replaces the stream.
  fetch.respond(503, { error: { code: 'storage_busy', message: 'busy' }, mode: 'short' }, { 'Retry-After': '2' });
  await flush();
  assert.deepEqual(
    { status: life.error[1].status, code: life.error[1].code, retryInMs: life.error[1].retryInMs },
    { status: 503, code: 'storage_busy', retryInMs: 2000 }
  );
  await clock.advance(2000);
  assert.equal(path(fetch.last), '/v1/poll');
  assert.equal(query(fetch.last).timeout, '0');
  assert.equal(client.fallback.streamDemotions, 0, 'a daemon error is not the stream path failing');

  // The daemon says long again: the stream comes back.
  fetch.respond(200, batch([], C(1), { mode: 'long' }));
  await flush();
  assert.equal(path(fetch.last), '/v1/stream');
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(1));
  await client.stop();
});

test('stream: an error frame ends it with the daemon error; a non-stream 200 and a malformed frame are stream failures', async () => {
  const { client, fetch, clock, seen, life } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  let s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(1), C(1)) + 'retry: 3000\nevent: error\ndata: {"error":{"code":"storage_busy","message":"m"}}\n\n');
  await flush();
  assert.deepEqual(seen, [1], 'what came before the error is kept');
  assert.deepEqual({ code: life.error[0].code, retryInMs: life.error[0].retryInMs }, { code: 'storage_busy', retryInMs: 3000 });
  assert.equal(client.fallback.streamDemotions, 0);
  await clock.advance(3000);
  assert.equal(path(fetch.last), '/v1/stream');
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(1));

  // A proxy's HTML page with 200: not an event stream.
  fetch.respond(200, '<html>login</html>', { 'content-type': 'text/html' });
  await flush();
  assert.equal(life.error[1].code, 'invalid_response');
  assert.equal(client.fallback.streamDemotions, 1, 'set aside at once');
  await client.stop();

  // A frame whose data is not an event: nothing applied, the position stays.
  const b = setup({ stream: true, cursor: C(1) });
  b.client.start();
  await flush();
  s = b.fetch.respondStream();
  s.write('retry: 0\n\nid: ' + C(9) + '\ndata: [1,2]\n\n');
  await flush();
  assert.equal(b.life.error.at(-1).code, 'invalid_response');
  assert.ok(s.cancelled);
  assert.equal(b.client.cursor, C(1));
  await b.client.stop();
});

test('stream: an end without any position (a proxy cutting it) backs off instead of reconnecting at retry: 0', async () => {
  const { client, fetch, clock, life } = setup({ stream: true, cursor: C(0) });
  client.start();
  await flush();
  let s = fetch.respondStream();
  s.write('retry: 0\n\n');
  s.end();
  await flush();
  assert.equal(life.error.at(-1).code, 'stream_closed');
  assert.equal(fetch.calls.length, 1, 'not at once');
  await clock.advance(1000);
  assert.equal(fetch.calls.length, 2);
  s = fetch.respondStream();
  s.write('retry: 0\n\n');
  s.end();
  await clock.advance(2000);
  assert.equal(client.fallback.streamDemotions, 1, 'two in a row set the stream aside');
  assert.equal(path(fetch.last), '/v1/poll');
  await client.stop();
});

test('stream: the token is renewed while the stream is open, so the reconnect after its expiry asks WordPress nothing', async () => {
  // Tokens for two minutes; heartbeats every 15 s keep the stream open past the watchdog.
  const tokenCalls = [];
  let now = () => 0;
  const tokenProvider = async (arg) => {
    tokenCalls.push(arg);
    return { token: 'tok' + tokenCalls.length, expires_at: Math.floor(now() / 1000) + 120 };
  };
  const { client, fetch, clock, seen } = setup({ stream: true, cursor: C(1) }, { tokenProvider });
  now = () => clock.now();
  client.start();
  await flush();
  assert.equal(tokenCalls.length, 1);
  let s = fetch.respondStream();
  s.write('retry: 0\n\n' + sseEvent(ev(2), C(2)));
  const heartbeats = async (ms) => {
    for (let t = 0; t < ms; t += 15000) {
      await clock.advance(Math.min(15000, ms - t));
      s.write(': hb\nid: ' + C(2) + '\n\n');
    }
  };
  // Due 30 s before it expires: renewed then, with the stream still open.
  await heartbeats(89_000);
  assert.equal(tokenCalls.length, 1, 'not renewed early');
  await heartbeats(1_000);
  assert.equal(tokenCalls.length, 2, 'renewed while the stream is open');
  assert.equal(fetch.calls.length, 1, 'the open stream is left alone');
  // The daemon ends the stream at the old token's expiry, after writing its position.
  await heartbeats(30_000);
  s.end();
  await flush();
  assert.equal(fetch.calls.length, 2, 'reconnected at once');
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2', 'with the renewed token');
  assert.equal(tokenCalls.length, 2, 'no token request on the reconnect');
  assert.equal(fetch.last.init.headers['Last-Event-ID'], C(2));
  s = fetch.respondStream();
  s.write(sseEvent(ev(3), C(3)));
  await flush();
  assert.deepEqual(seen, [2, 3]);
  await client.stop();
});
