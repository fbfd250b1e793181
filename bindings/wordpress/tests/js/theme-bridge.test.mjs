// The theme bridge (lms-realtime/assets/lms-realtime-theme-bridge.js): the LMS theme's jQuery
// long poll sent to the daemon, admin-ajax.php as the fallback, tokens renewed. Driven through
// the transport jQuery would call, with a scripted fetch and clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const bridgeApi = require('../../lms-realtime/assets/lms-realtime-theme-bridge.js');

const POLL = 'action=lms_unified_long_poll&channel_id=3&thread_id=0&last_event_id=41&nonce=n1&nonce_action=lms_unified_longpoll';

function response(status, body, contentType = 'application/json') {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return { status, statusText: String(status), text: async () => text, json: async () => JSON.parse(text), headers: { get: () => contentType } };
}

/** A bridge over a fetch that answers from `routes` (url prefix -> function(init) -> response). */
function setup(routes, { token = 't1', expiresAt = 10_000, nowMs = 1_000_000 } = {}) {
  const calls = [];
  const clock = { ms: nowMs };
  const fetch = async (url, init) => {
    calls.push({ url, init });
    for (const [prefix, fn] of routes) if (url.startsWith(prefix)) return fn(init, calls.length);
    throw new Error('no route for ' + url);
  };
  const cfg = { pollUrl: '/lmsrt/v1/lms/poll', token, expiresAt, tokenUrl: '/wp-admin/admin-ajax.php', tokenAction: 'lms_realtime_token', tokenNonce: 'tn', nonceAction: 'lms_chat_nonce' };
  const bridge = bridgeApi.create(cfg, { fetch, now: () => clock.ms });
  return { bridge, calls, clock };
}

/** Runs one jQuery request through the bridge; resolves with what complete() got, or 'default'. */
function run(bridge, options, original) {
  const t = bridge.transport(options, original ?? options);
  if (!t) return Promise.resolve('default');
  return new Promise((resolve) => {
    t.send({}, (status, statusText, responses) => resolve({ status, statusText, text: responses.text }));
  });
}

const pollOptions = () => ({ url: '/wp-admin/admin-ajax.php', type: 'POST', data: POLL, contentType: 'application/x-www-form-urlencoded; charset=UTF-8' });
const daemonOk = { success: true, data: { events: [{ id: 42, event_type: 'message_create' }], last_event_id: 42 } };
const ajaxOk = { success: true, data: { events: [], last_event_id: 41, system: 'plugin' } };

test('requests other than the theme poll are left to jQuery', async () => {
  const { bridge, calls } = setup([]);
  assert.equal(await run(bridge, { url: '/wp-admin/admin-ajax.php', type: 'POST', data: 'action=lms_send_message&x=1' }), 'default');
  assert.equal(await run(bridge, { url: '/other', type: 'GET' }), 'default');
  assert.equal(calls.length, 0);
});

test('the theme poll goes to the daemon with the token and the same fields; its answer completes the request', async () => {
  const { bridge, calls } = setup([['/lmsrt/', () => response(200, daemonOk)]]);
  const r = await run(bridge, pollOptions());
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.text), daemonOk);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, '/lmsrt/v1/lms/poll');
  assert.equal(calls[0].init.headers.Authorization, 'Bearer t1');
  assert.equal(new URLSearchParams(calls[0].init.body).toString(), new URLSearchParams(POLL).toString());
  assert.equal(bridge.stats.daemon, 1);
});

test('object data and a GET query both become the form fields', async () => {
  const { bridge, calls } = setup([['/lmsrt/', () => response(200, daemonOk)]]);
  await run(bridge, { url: '/wp-admin/admin-ajax.php', type: 'POST', data: 'ignored' }, { data: { action: 'lms_unified_long_poll', channel_id: 5, thread_id: 0, skip: undefined } });
  assert.equal(calls[0].init.body, 'action=lms_unified_long_poll&channel_id=5&thread_id=0');
  await run(bridge, { url: '/wp-admin/admin-ajax.php?action=lms_unified_long_poll&channel_id=6&_=123', type: 'GET' }, {});
  const f = new URLSearchParams(calls[1].init.body);
  assert.equal(f.get('channel_id'), '6');
  assert.equal(f.get('action'), 'lms_unified_long_poll');
});

test('a failing daemon: the same request is answered by admin-ajax, then the daemon is skipped for a backoff', async () => {
  let daemonStatus = 503;
  const { bridge, calls, clock } = setup([
    ['/lmsrt/', () => (daemonStatus === 200 ? response(200, daemonOk) : response(daemonStatus, { success: false, data: { code: 'storage' } }))],
    ['/wp-admin/', () => response(200, ajaxOk)],
  ]);
  const r = await run(bridge, pollOptions());
  assert.equal(r.status, 200);
  assert.deepEqual(JSON.parse(r.text), ajaxOk);
  assert.equal(calls[1].url, '/wp-admin/admin-ajax.php');
  assert.equal(calls[1].init.method, 'POST');
  assert.equal(calls[1].init.body, POLL, 'the request as the theme sent it');
  assert.equal(bridge.stats.fallback, 1);

  // Within the backoff (1 s after one failure) jQuery's own XHR serves the poll.
  clock.ms += 500;
  assert.equal(await run(bridge, pollOptions()), 'default');
  // After it, the daemon is tried again; a second failure doubles the backoff.
  clock.ms += 600;
  await run(bridge, pollOptions());
  assert.equal(calls.at(-2).url, '/lmsrt/v1/lms/poll');
  clock.ms += 1500;
  assert.equal(await run(bridge, pollOptions()), 'default', 'still backing off (2 s)');
  clock.ms += 600;
  daemonStatus = 200;
  const back = await run(bridge, pollOptions());
  assert.deepEqual(JSON.parse(back.text), daemonOk, 'the daemon serves again once it answers');
  assert.equal(bridge.stats.daemon, 1);
  assert.equal(bridge.stats.fallback, 2);
});

test('a 200 that is not a success (or not JSON) is no daemon answer: admin-ajax answers', async () => {
  for (const body of [{ success: false, data: { code: 'rate_limited' } }, '<html>bad gateway</html>']) {
    const { bridge } = setup([
      ['/lmsrt/', () => response(200, body)],
      ['/wp-admin/', () => response(200, ajaxOk)],
    ]);
    const r = await run(bridge, pollOptions());
    assert.deepEqual(JSON.parse(r.text), ajaxOk);
    assert.equal(bridge.stats.daemon, 0);
  }
});

test('a network error falls back too', async () => {
  const { bridge } = setup([
    ['/lmsrt/', () => Promise.reject(new TypeError('Failed to fetch'))],
    ['/wp-admin/', () => response(200, ajaxOk)],
  ]);
  const r = await run(bridge, pollOptions());
  assert.deepEqual(JSON.parse(r.text), ajaxOk);
  assert.match(bridge.stats.lastError, /Failed to fetch/);
});

test('a refused token is renewed (no backoff), and a token near expiry is renewed first', async () => {
  let tokens = 0;
  const { bridge, calls, clock } = setup([
    ['/lmsrt/', (init) => (init.headers.Authorization === 'Bearer t1' ? response(401, { success: false, data: { code: 'token_expired' } }) : response(200, daemonOk))],
    ['/wp-admin/', (init) => {
      const f = new URLSearchParams(init.body);
      if (f.get('action') === 'lms_realtime_token') {
        tokens++;
        assert.equal(f.get('nonce'), 'tn');
        return response(200, { success: true, data: { token: 't' + (tokens + 1), expires_at: clock.ms / 1000 + 600 } });
      }
      return response(200, ajaxOk);
    }],
  ]);
  clock.ms = 1_000_000; // expiresAt 10,000 s is far ahead of 1,000 s
  const first = await run(bridge, pollOptions());
  assert.deepEqual(JSON.parse(first.text), ajaxOk, 'answered by admin-ajax while the token was refused');
  const second = await run(bridge, pollOptions());
  assert.deepEqual(JSON.parse(second.text), daemonOk, 'no backoff: straight back to the daemon with a new token');
  assert.equal(tokens, 1);
  assert.equal(calls.at(-1).init.headers.Authorization, 'Bearer t2');
  // 580 s later the token has 20 s left (< 30 s): renewed before the poll.
  clock.ms += 580_000;
  await run(bridge, pollOptions());
  assert.equal(tokens, 2);
  assert.equal(calls.at(-1).init.headers.Authorization, 'Bearer t3');
  assert.equal(bridge.stats.renewals, 2);
});

test('an aborted request (jQuery timeout) completes nothing and falls back to nothing', async () => {
  let release;
  const { bridge, calls } = setup([['/lmsrt/', (init) => new Promise((_, reject) => {
    release = () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' }));
    init.signal.addEventListener('abort', release);
  })]]);
  const t = bridge.transport(pollOptions(), pollOptions());
  let completed = false;
  t.send({}, () => {
    completed = true;
  });
  await new Promise((r) => setImmediate(r));
  t.abort();
  await new Promise((r) => setImmediate(r));
  assert.equal(completed, false);
  assert.equal(calls.length, 1, 'no fallback request after an abort');
});

test('a client holding an id from the table era is left to admin-ajax; a fresh one (0) starts on the daemon', async () => {
  const { bridge } = setup([['/lmsrt/', () => response(200, daemonOk)]]);
  const opts = (last) => ({ url: '/wp-admin/admin-ajax.php', type: 'POST', data: `action=lms_unified_long_poll&channel_id=3&last_event_id=${last}` });
  const withFloor = bridgeApi.create({ pollUrl: '/lmsrt/v1/lms/poll', token: 't', expiresAt: 1e12, storeFloor: 1000 }, { fetch: async () => response(200, daemonOk), now: () => 0 });
  assert.equal(withFloor.transport(opts(999), opts(999)), undefined, 'below the floor: admin-ajax');
  assert.notEqual(withFloor.transport(opts(1000), opts(1000)), undefined, 'at the floor: the daemon');
  assert.notEqual(withFloor.transport(opts(0), opts(0)), undefined, 'a fresh client: the daemon');
  assert.notEqual(bridge.transport(opts(5), opts(5)), undefined, 'no floor configured: the daemon');
});
