'use strict';
// Each transport alone, behind the transport interface: what one poll(request, signal) sends and
// the outcome it resolves with. No loop, no position: the request says where to resume.

const assert = require('node:assert/strict');
const { test, flush, query, form, batch, ev, legacyEv, ajaxOk, FakeClock, FakeFetch, lib } = require('./helpers.js');
const { LMSDaemonTransport, LMSAjaxTransport } = lib;

const AJAX = 'http://wp.test/wp-admin/admin-ajax.php';

function daemon(extra = {}) {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const tokenCalls = [];
  let requests = 0;
  const t = new LMSDaemonTransport(
    Object.assign(
      {
        url: 'http://daemon.test/',
        channels: [1, 2],
        tokenProvider: async (arg) => {
          tokenCalls.push(arg);
          return { token: 'tok' + tokenCalls.length, expires_at: null };
        },
        fetch: fetch.fn,
        setTimeout: clock.setTimeout,
        clearTimeout: clock.clearTimeout,
        now: clock.now,
        onRequest: () => (requests += 1),
      },
      extra
    )
  );
  return { t, clock, fetch, tokenCalls, requests: () => requests };
}

function ajax(extra = {}) {
  const clock = new FakeClock();
  const fetch = new FakeFetch();
  const t = new LMSAjaxTransport(
    Object.assign({ url: AJAX, nonce: 'n1', channels: [3, 4], fetch: fetch.fn, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now }, extra)
  );
  return { t, clock, fetch };
}

const request = (extra = {}) => Object.assign({ tier: 'long', waitSeconds: 30, cursor: 'c0', lastEventIds: { 3: 10, 4: 20 } }, extra);

test('daemon transport: the interface fields, and one GET with the request cursor, wait and bearer token', async () => {
  const { t, fetch, requests } = daemon({ thread: 5, types: ['message_create'], order: 'priority', batchSize: 50 });
  assert.equal(t.name, 'daemon');
  assert.equal(t.guarded, true);
  assert.equal(typeof t.close, 'function');
  const p = t.poll(request({ cursor: 'v1.0000abcd.1.2.3.4', waitSeconds: 10 }), new AbortController().signal);
  await flush();
  assert.equal(new URL(fetch.last.url).origin + new URL(fetch.last.url).pathname, 'http://daemon.test/v1/poll');
  assert.deepEqual(query(fetch.last), { channels: '1,2', cursor: 'v1.0000abcd.1.2.3.4', timeout: '10', thread: '5', types: 'message_create', order: 'priority', limit: '50' });
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok1');
  assert.equal(fetch.last.init.credentials, 'omit');
  fetch.respond(200, batch([ev(3)], 'c1', { mode: 'medium', retry_ms: 250, gap: true }));
  const out = await p;
  assert.equal(out.ok, true);
  assert.equal(out.retryMs, 250);
  assert.deepEqual(
    { cursor: out.batch.cursor, gap: out.batch.gap, mode: out.batch.mode, ids: out.batch.events.map((e) => e.id) },
    { cursor: 'c1', gap: true, mode: 'medium', ids: [3] }
  );
  assert.equal(requests(), 1);

  // No cursor held: the parameter is left out.
  const p2 = t.poll(request({ cursor: null }), new AbortController().signal);
  await flush();
  assert.equal('cursor' in query(fetch.last), false);
  fetch.respond(200, batch([], 'c2'));
  await p2;
});

test('daemon transport: a 401 refreshes the token and retries once; a second 401 is the outcome', async () => {
  const { t, fetch, tokenCalls, requests } = daemon();
  const p = t.poll(request(), new AbortController().signal);
  await flush();
  fetch.respond(401, { error: { code: 'unauthorized', message: 'expired' } });
  await flush();
  assert.deepEqual(tokenCalls, [{ force: false }, { force: true }]);
  assert.equal(fetch.last.init.headers.Authorization, 'Bearer tok2');
  assert.equal(query(fetch.last).cursor, 'c0', 'the retry resumes from the same cursor');
  fetch.respond(401, { error: { code: 'unauthorized', message: 'still' } });
  const out = await p;
  assert.deepEqual(
    { ok: out.ok, kind: out.kind, status: out.status, code: out.code, message: out.message },
    { ok: false, kind: 'failure', status: 401, code: 'unauthorized', message: 'still' }
  );
  assert.equal(requests(), 2);
});

test('daemon transport: answers become outcomes (429, 503 with a mode hint, malformed) and a failing token provider one too', async () => {
  const { t, fetch } = daemon();
  const signal = new AbortController().signal;
  const answer = async (status, body, headers) => {
    const p = t.poll(request(), signal);
    await flush();
    fetch.respond(status, body, headers);
    return p;
  };
  const limited = await answer(429, { error: { code: 'rate_limited', message: 'slow' } }, { 'Retry-After': '7' });
  assert.equal(limited.kind, 'rate_limited');
  assert.equal(limited.retryAfterMs, 7000);
  const busy = await answer(503, { error: { code: 'storage_busy', message: '' } }, { 'X-LMS-Mode': 'short' });
  assert.deepEqual({ kind: busy.kind, code: busy.code, mode: busy.mode, retryAfterMs: busy.retryAfterMs }, { kind: 'failure', code: 'storage_busy', mode: 'short', retryAfterMs: null });
  const bad = await answer(200, { events: 'nope' });
  assert.equal(bad.code, 'invalid_response');

  const noToken = daemon({
    tokenProvider: async () => {
      throw new Error('login expired');
    },
  });
  const out = await noToken.t.poll(request(), signal);
  assert.deepEqual({ ok: out.ok, code: out.code, message: out.message }, { ok: false, code: 'token_unavailable', message: 'login expired' });
  assert.equal(noToken.fetch.calls.length, 0);
});

test('daemon transport: the watchdog rejects with code timeout after wait + slack; an abort rejects as an abort', async () => {
  const { t, clock, fetch } = daemon({ requestSlackMs: 2000 });
  const p = t.poll(request({ waitSeconds: 1 }), new AbortController().signal);
  const settled = p.then(
    () => 'resolved',
    (e) => e.code
  );
  await clock.advance(2999);
  assert.equal(fetch.last.aborted, false);
  await clock.advance(1);
  assert.equal(await settled, 'timeout');

  const ctrl = new AbortController();
  const p2 = t.poll(request(), ctrl.signal);
  await flush();
  ctrl.abort();
  await assert.rejects(p2, (e) => e.name === 'AbortError');
  assert.equal(fetch.last.aborted, true);
  assert.deepEqual(clock.pendingDelays(), [], 'the watchdog timer was cleared');
});

test('AJAX transport: the interface fields, one POST per channel from the request positions, one batch with the highest ids', async () => {
  let n = 0;
  const { t, fetch } = ajax({ thread: 12, nonce: () => 'nonce' + ++n, nonceAction: 'lms_chat' });
  assert.equal(t.name, 'ajax');
  assert.equal(t.guarded, false);
  const p = t.poll(request({ waitSeconds: null }), new AbortController().signal);
  await flush();
  assert.equal(fetch.last.url, AJAX);
  assert.equal(fetch.last.init.method, 'POST');
  assert.equal(fetch.last.init.credentials, 'same-origin');
  assert.deepEqual(form(fetch.last), { action: 'lms_unified_long_poll', channel_id: '3', thread_id: '12', last_event_id: '10', nonce: 'nonce1', nonce_action: 'lms_chat', client: 'lmsrt' });
  fetch.respond(200, ajaxOk([ev(12, 3, { channel_id: 3 }), ev(11, 1, { channel_id: 3 })].map(legacyEv), { mode: 'short' }));
  await flush();
  assert.deepEqual(form(fetch.last), { action: 'lms_unified_long_poll', channel_id: '4', thread_id: '12', last_event_id: '20', nonce: 'nonce2', nonce_action: 'lms_chat', client: 'lmsrt' });
  fetch.respond(200, ajaxOk([], { gap: true }));
  const out = await p;
  assert.equal(out.ok, true);
  assert.deepEqual(out.batch.events.map((e) => e.id), [12, 11]);
  assert.equal(typeof out.batch.events[0].timestamp, 'number', 'legacy events come back in the daemon shape');
  assert.deepEqual(out.batch.legacyIds, { 3: 12, 4: 20 });
  assert.equal(out.batch.mode, 'short');
  assert.equal(out.batch.gap, true);
  assert.equal('cursor' in out.batch, false, 'AJAX never moves the daemon cursor');
});

test('AJAX transport: a failure on the second channel keeps the first channel part; -1 and rate limits are classified', async () => {
  const { t, fetch } = ajax();
  const signal = new AbortController().signal;
  const p = t.poll(request(), signal);
  await flush();
  fetch.respond(200, ajaxOk([ev(15, 3, { channel_id: 3 })].map(legacyEv)));
  await flush();
  fetch.fail();
  const out = await p;
  assert.deepEqual({ ok: out.ok, kind: out.kind, code: out.code }, { ok: false, kind: 'failure', code: 'network_error' });
  assert.deepEqual(out.batch.events.map((e) => e.id), [15]);
  assert.deepEqual(out.batch.legacyIds, { 3: 15 });

  const p2 = t.poll(request(), signal);
  await flush();
  fetch.respond(403, '-1');
  const nonce = await p2;
  assert.deepEqual({ code: nonce.code, batch: nonce.batch }, { code: 'invalid_nonce', batch: null });

  const p3 = t.poll(request(), signal);
  await flush();
  fetch.respond(200, { success: false, data: { code: 'connection_limit_exceeded', retry_after: 4 } });
  const limited = await p3;
  assert.deepEqual({ kind: limited.kind, retryAfterMs: limited.retryAfterMs }, { kind: 'rate_limited', retryAfterMs: 4000 });
});

test('AJAX transport: an abort mid-poll rejects and sends nothing more', async () => {
  const { t, fetch } = ajax();
  const ctrl = new AbortController();
  const p = t.poll(request(), ctrl.signal);
  await flush();
  ctrl.abort();
  await assert.rejects(p, (e) => e.name === 'AbortError');
  assert.equal(fetch.calls.length, 1);
  assert.equal(fetch.last.aborted, true);
});
