// An unmodified legacy-style client (jQuery posting action=lms_unified_long_poll with
// last_event_id, as DESIGN.md "The legacy AJAX contract" describes) against the plugin, in a
// browser: the response shape field by field, and every error shape.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { site, launch, login, setOption } from './lib.mjs';

const EVENT_KEYS = ['id', 'type', 'event_type', 'priority', 'message_id', 'thread_id', 'channel_id', 'user_id', 'data', 'timestamp', 'created_at'];
let browser;

before(async () => {
  setOption('lms_realtime_daemon_url', '');
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** POSTs a form to admin-ajax.php from the page (same origin, cookies). */
function ajax(page, fields) {
  return page.evaluate(async (f) => {
    const r = await fetch('/wp-admin/admin-ajax.php', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      body: new URLSearchParams(f).toString(),
    });
    const text = await r.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = undefined;
    }
    return { status: r.status, retryAfter: r.headers.get('Retry-After'), text, body };
  }, fields);
}

function assertError(r, code) {
  assert.equal(r.status, 200, `errors keep the legacy HTTP 200 (${r.text})`);
  assert.deepEqual(Object.keys(r.body), ['success', 'data'], r.text);
  assert.equal(r.body.success, false);
  assert.equal(r.body.data.code, code, r.text);
  assert.equal(typeof r.body.data.message, 'string');
  assert.ok(r.body.data.message.length > 0);
}

test('the legacy client receives every event in the legacy shape, field by field', { timeout: 120000 }, async () => {
  const bob = await login(browser, site.users.bob);
  const alice = await login(browser, site.users.alice);
  try {
    await bob.page.goto(site.legacy_url);
    await bob.page.waitForFunction(() => Boolean(window.legacy), null, { timeout: 10000 });
    // alice posts three messages and reacts to one, from her session.
    await alice.page.goto(site.chat_url);
    const nonce = await alice.page.evaluate(() => window.lmsRealtimeConfig.nonce);
    const texts = ['legacy one', 'legacy two', 'legacy three ✓ "quoted" & more'];
    const ids = [];
    for (const message of texts) {
      const r = await ajax(alice.page, { action: 'lmsrt_demo_post_message', nonce, channel_id: String(site.channel_id), thread_id: '0', message });
      assert.equal(r.body.success, true, r.text);
      ids.push(r.body.data.message.id);
    }
    const reacted = await ajax(alice.page, { action: 'lmsrt_demo_toggle_reaction', nonce, message_id: String(ids[0]), emoji: '👍' });
    assert.equal(reacted.body.success, true, reacted.text);
    const started = Math.floor(Date.now() / 1000);

    await bob.page.waitForFunction((n) => window.legacy.events.length >= n, 4, { timeout: 40000 });
    const legacy = await bob.page.evaluate(() => window.legacy);
    assert.deepEqual(legacy.errors, []);

    const ok = legacy.responses.filter((r) => r.body && r.body.success);
    assert.ok(ok.length >= 1);
    for (const r of ok) {
      assert.equal(r.status, 200);
      assert.deepEqual(Object.keys(r.body), ['success', 'data']);
      assert.ok(Array.isArray(r.body.data.events));
      assert.ok(Number.isInteger(r.body.data.timestamp), 'timestamp: unix seconds');
      assert.ok(Math.abs(r.body.data.timestamp - started) < 120);
      for (const e of r.body.data.events) {
        assert.deepEqual(Object.keys(e), EVENT_KEYS, JSON.stringify(e));
        assert.ok(Number.isInteger(e.id) && e.id > 0);
        assert.equal(typeof e.type, 'string');
        assert.ok([1, 2, 3, 4].includes(e.priority));
        assert.equal(e.channel_id, site.channel_id);
        assert.equal(e.user_id, site.users.alice.id);
        assert.equal(e.thread_id, null);
        assert.ok(e.data !== null && typeof e.data === 'object' && !Array.isArray(e.data), 'data is a decoded object');
        assert.ok(Number.isInteger(e.timestamp) && Math.abs(e.timestamp / 1000 - started) < 120, 'event timestamp: unix milliseconds');
        // What the LMS theme's client does with it: events older than an hour are dropped.
        assert.ok(Math.abs(new Date(e.created_at || e.timestamp).getTime() / 1000 - started) < 120, 'created_at parses to now');
        assert.equal(new Date(e.created_at).getTime(), e.timestamp);
      }
      // Inside a batch: priority first, then id.
      const order = r.body.data.events.map((e) => [e.priority, e.id]);
      assert.deepEqual(order, [...order].sort((a, b) => a[0] - b[0] || a[1] - b[1]));
    }
    const created = legacy.events.filter((e) => e.type === 'message_create');
    assert.deepEqual(created.map((e) => e.message_id), ids, 'every message, in order');
    assert.deepEqual(created.map((e) => e.data.text), texts, 'the text as posted (escaping is the page\'s job)');
    assert.ok(created.every((e) => e.priority === 1), 'messages are critical');
    const reaction = legacy.events.find((e) => e.type === 'reaction_update');
    assert.ok(reaction, 'the reaction arrived');
    assert.equal(reaction.priority, 2, 'reactions are high');
    assert.equal(reaction.message_id, ids[0]);
    assert.deepEqual(reaction.data.reactions, [{ emoji: '👍', count: 1 }], 'a list of objects with emoji, as the LMS theme builds them');
    assert.equal(reaction.data.message_id, ids[0]);
    const seen = legacy.events.map((e) => e.id);
    assert.equal(new Set(seen).size, seen.length, 'no event twice across polls');
  } finally {
    await bob.context.close();
    await alice.context.close();
  }
});

test('the legacy error shapes: nonce, login, parameters, access, rate and connection limits', { timeout: 120000 }, async () => {
  const bob = await login(browser, site.users.bob);
  const carol = await login(browser, site.users.carol);
  const dave = await login(browser, site.users.dave);
  const erin = await login(browser, site.users.erin);
  const anon = await browser.newContext();
  const anonPage = await anon.newPage();
  try {
    const nonceOf = async (s) => {
      await s.page.goto(site.chat_url);
      return s.page.evaluate(() => (window.lmsRealtimeConfig ? window.lmsRealtimeConfig.nonce : null));
    };
    const poll = (page, extra) => ajax(page, Object.assign({ action: 'lms_unified_long_poll', channel_id: String(site.channel_id), thread_id: '0', last_event_id: '0' }, extra));

    const bobNonce = await nonceOf(bob);
    assertError(await poll(bob.page, { nonce: 'not-a-nonce' }), 'invalid_nonce');
    assertError(await poll(bob.page, { nonce: bobNonce, channel_id: 'abc' }), 'invalid_parameters');
    assertError(await poll(bob.page, { nonce: bobNonce, last_event_id: '-1' }), 'invalid_parameters');

    // carol is not a member of the (private) channel; her chat page does not render.
    await carol.page.goto(site.base + '/?lmsrt_legacy_client=' + site.channel_id);
    const carolNonce = await carol.page.evaluate(() => document.documentElement.innerHTML.match(/var nonce = "([0-9a-f]+)"/)[1]);
    assertError(await poll(carol.page, { nonce: carolNonce }), 'access_denied');

    await anonPage.goto(site.base + '/wp-login.php');
    assertError(await poll(anonPage, { nonce: bobNonce }), 'not_authenticated');

    // dave polls faster than allowed (immediate answers: last_event_id 0 has events): a burst
    // of 90 at once, three times the per-user burst of 30. (One after the other, on a loaded
    // host each poll can take longer than the refill interval of 1/3 s, and none is refused.)
    const daveNonce = await nonceOf(dave);
    await dave.page.evaluate(() => window.lmsChat && window.lmsChat.client.stop());
    const burst = await Promise.all(Array.from({ length: 90 }, () => poll(dave.page, { nonce: daveNonce })));
    const code = (r) => (r.body && r.body.success === false ? r.body.data.code : 'ok');
    // Those let through may also meet the connection slots (3 held at once per user).
    for (const r of burst) assert.ok(['ok', 'rate_limit_exceeded', 'connection_limit_exceeded'].includes(code(r)), r.text);
    const limited = burst.find((r) => code(r) === 'rate_limit_exceeded');
    assert.ok(limited, 'a burst of polls is limited');
    assertError(limited, 'rate_limit_exceeded');
    assert.ok(Number(limited.retryAfter) >= 1, 'with Retry-After');
    assert.ok(limited.body.data.retry_after >= 1);

    // erin holds more waiting polls than her connection slots (3): the fourth is refused.
    const erinNonce = await nonceOf(erin);
    await erin.page.evaluate(() => window.lmsChat && window.lmsChat.client.stop());
    const head = await erin.page.evaluate(() => window.lmsRealtimeConfig.last_event_id);
    const waiting = [1, 2, 3].map(() => poll(erin.page, { nonce: erinNonce, last_event_id: String(head + 1000000) }));
    await new Promise((r) => setTimeout(r, 1500));
    const fourth = await poll(erin.page, { nonce: erinNonce, last_event_id: String(head + 1000000) });
    assertError(fourth, 'connection_limit_exceeded');
    assert.ok(Number(fourth.retryAfter) >= 1);
    const held = await Promise.all(waiting);
    for (const r of held) assert.equal(r.body.success, true, r.text);
  } finally {
    for (const s of [bob, carol, dave, erin]) await s.context.close();
    await anon.close();
  }
});
