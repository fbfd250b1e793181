// The LMS chat theme's own client, with two session users, on a site running the fixture theme
// (fixtures/lms-theme, installed as lms-chat-fixture). Whatever server code answers
// action=lms_unified_long_poll (the theme's LMS_Unified_LongPoll, or a plugin that took the
// action over), every action of one user shows on the other user's page within 1 s of the
// sender's AJAX answer, no event is dropped as too old, no event lacks its data, and the client
// never gives up; a non-member is refused with access_denied. Once with POST polls, once with GET.
//
// Environment (the site's set-up writes them):
//   LMSRT_E2E_BASE          the site's URL
//   LMSRT_E2E_LMS_SITE      JSON written by the set-up: { users: { taro: { id, username,
//                           password, display_name }, ... }, channels: { general: { id, name,
//                           type, members: [ids] }, private: {...} }, ... } (lms_fixture_seed())
//   LMSRT_E2E_LATENCY_OUT   optional: per-event latencies appended as JSON lines {path, type, ms}
//   LMSRT_E2E_PATH_LABEL    the `path` of those lines (default 'theme')
// Without LMSRT_E2E_LMS_SITE (a site without the fixture theme) the tests are skipped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { chromium } from 'playwright-core';

const sitePath = process.env.LMSRT_E2E_LMS_SITE;
const lms = sitePath ? JSON.parse(fs.readFileSync(sitePath, 'utf8')) : null;
const base = (process.env.LMSRT_E2E_BASE || (lms && lms.base) || '').replace(/\/$/, '');
const skip = lms && base ? false : 'needs LMSRT_E2E_LMS_SITE and LMSRT_E2E_BASE (a site running the LMS fixture theme)';
const pathLabel = process.env.LMSRT_E2E_PATH_LABEL || 'theme';
const latencyOut = process.env.LMSRT_E2E_LATENCY_OUT || '';
const LIMIT_MS = 1000;

/** Two members of `general` (sender, receiver) and a member of `general` not in `private`. */
function cast() {
  const users = Object.values(lms.users);
  const general = lms.channels.general;
  const priv = lms.channels.private;
  const inGeneral = users.filter((u) => general.members.includes(u.id));
  const outsider = inGeneral.find((u) => !priv.members.includes(u.id));
  const [sender, receiver] = inGeneral.filter((u) => u !== outsider);
  assert.ok(sender && receiver && outsider, 'the seed has two members of general and one of general only');
  return { sender, receiver, outsider, general: general.id, priv: priv.id };
}

let browser;
before(async () => {
  if (skip) return;
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-background-networking',
      '--disable-dev-shm-usage',
      '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding',
      '--disable-backgrounding-occluded-windows',
    ],
  });
});
after(async () => {
  await browser?.close();
});

/** A browser context logged in as a session user through the fixture's login page. */
async function login(user, chatUrl) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${user.username}] page error: ${e.message}`));
  await page.goto(`${base}/?lms_fixture_login=1&redirect_to=${encodeURIComponent(chatUrl)}`);
  await page.fill('#lms-username', user.username);
  await page.fill('#lms-password', user.password);
  await Promise.all([page.waitForURL((u) => u.searchParams.has('lms_fixture_chat'), { timeout: 15000 }), page.click('#lms-login-submit')]);
  // The client has started and its first poll is on its way.
  await page.waitForFunction(() => window.lmsFixture && window.lmsFixture.polls > 0, null, { timeout: 15000 });
  return { context, page, user };
}

/** Calls one of the page's lmsFixture* actions; returns its answer and when it came (page clock). */
async function act(who, fn, ...args) {
  return who.page.evaluate(
    async ([name, a]) => {
      const r = await window[name](...a);
      return { r, at: Date.now() };
    },
    [fn, args]
  );
}

/** Waits until `who` shows an event of one of `types` for `id`; returns that `shown` entry. */
async function waitShown(who, types, id, timeout = 10000) {
  try {
    const h = await who.page.waitForFunction(
      ([t, i]) => window.lmsFixture.shown.find((s) => t.includes(s.type) && Number(s.message_id) === i),
      [types, id],
      { timeout, polling: 20 }
    );
    return await h.jsonValue();
  } catch (e) {
    // Say why: dropped as too old, the client stopped, what the server answered last.
    const why = await who.page
      .evaluate(() => {
        const s = window.lmsFixture;
        return JSON.stringify({ dropped: s.dropped, stopped: s.stopped, timeouts: s.timeouts, errors: s.errors, lastEventId: s.lastEventId, lastEvents: s.events.slice(-3), lastResponses: s.responses.slice(-2) });
      })
      .catch(() => '?');
    throw new Error(`${who.user.username} did not show ${types.join('/')} of ${id} within ${timeout} ms: ${why.slice(0, 1500)}`);
  }
}

async function state(who) {
  return who.page.evaluate(() => {
    const s = window.lmsFixture;
    return { dropped: s.dropped, detailCalls: s.detailCalls, stopped: s.stopped, timeouts: s.timeouts, errors: s.errors, method: s.method, lastEventId: s.lastEventId };
  });
}

/** A raw poll for `channel` from the page, with the page's nonce, by `method`. */
async function rawPoll(who, channel, method) {
  return who.page.evaluate(
    async ([c, m]) => {
      const p = new URLSearchParams({
        action: 'lms_unified_long_poll',
        channel_id: String(c),
        thread_id: '0',
        last_event_id: '0',
        timeout: '1',
        event_types: 'all',
        nonce: window.lmsLongPollConfig.nonce,
        nonce_action: 'lms_unified_longpoll',
      });
      const url = window.lmsLongPollConfig.ajaxUrl;
      const r = m === 'GET' ? await fetch(`${url}?${p}`, { cache: 'no-store' }) : await fetch(url, { method: 'POST', body: p });
      const text = await r.text();
      try {
        return { status: r.status, body: JSON.parse(text) };
      } catch (e) {
        return { status: r.status, text: text.slice(0, 300) };
      }
    },
    [channel, method]
  );
}

async function scenario(method) {
  const c = cast();
  const suffix = method === 'GET' ? '&lms_fixture_get=1' : '';
  const chat = (channel) => `${base}/?lms_fixture_chat=${channel}${suffix}`;
  const a = await login(c.sender, chat(c.general));
  const b = await login(c.receiver, chat(c.general));
  const o = await login(c.outsider, chat(c.general));
  try {
    assert.equal((await state(b)).method, method);
    // Let both clients settle into a waiting poll.
    await new Promise((r) => setTimeout(r, 1500));
    const tag = `${method} ${Date.now().toString(36)}`;
    const lat = [];
    const measure = async (label, types, sent, id, expectText) => {
      const shown = await waitShown(b, types, id);
      const ms = shown.at - sent.at;
      lat.push({ type: label, ms });
      if (expectText !== undefined) assert.equal(shown.text, expectText, `${label}: the receiver shows the text`);
      return shown;
    };

    const text = `hello ${tag}`;
    const sent = await act(a, 'lmsFixtureSend', text);
    assert.equal(sent.r.success, true, `send: ${JSON.stringify(sent.r)}`);
    const messageId = Number(sent.r.data.message_id);
    await measure('message_create', ['message_create'], sent, messageId, text);

    const replyText = `reply ${tag}`;
    const replied = await act(a, 'lmsFixtureThreadSend', messageId, replyText);
    assert.equal(replied.r.success, true, `thread send: ${JSON.stringify(replied.r)}`);
    const replyId = Number(replied.r.data.message_id);
    await measure('thread_create', ['thread_create'], replied, replyId, replyText);

    const reacted = await act(a, 'lmsFixtureReact', messageId, '👍');
    assert.equal(reacted.r.success, true, `react: ${JSON.stringify(reacted.r)}`);
    const r1 = await measure('reaction_update', ['reaction_update'], reacted, messageId);
    assert.match(r1.text, /👍 1/, 'the receiver shows the reaction');

    const threadReacted = await act(a, 'lmsFixtureThreadReact', replyId, '🎉');
    assert.equal(threadReacted.r.success, true, `thread react: ${JSON.stringify(threadReacted.r)}`);
    const r2 = await measure('thread_reaction_update', ['thread_reaction_update', 'thread_reaction'], threadReacted, replyId);
    assert.match(r2.text, /🎉 1/, 'the receiver shows the thread reaction');

    const replyDeleted = await act(a, 'lmsFixtureThreadDelete', replyId);
    assert.equal(replyDeleted.r.success, true, `thread delete: ${JSON.stringify(replyDeleted.r)}`);
    await measure('thread_delete', ['thread_delete'], replyDeleted, replyId);

    const deleted = await act(a, 'lmsFixtureDelete', messageId);
    assert.equal(deleted.r.success, true, `delete: ${JSON.stringify(deleted.r)}`);
    await measure('message_delete', ['message_delete'], deleted, messageId);
    assert.equal(await b.page.locator(`.lms-message[data-message-id="${messageId}"]`).count(), 0, 'the deleted message is gone from the page');

    console.log(`${pathLabel} ${method}: ${lat.map((l) => `${l.type} ${l.ms} ms`).join(', ')}`);
    if (latencyOut) {
      fs.appendFileSync(latencyOut, lat.map((l) => JSON.stringify({ path: pathLabel, type: l.type, ms: l.ms, method })).join('\n') + '\n');
    }

    for (const who of [a, b]) {
      const s = await state(who);
      assert.equal(s.dropped, 0, `${who.user.username}: events dropped as older than an hour (${JSON.stringify(s)})`);
      assert.equal(s.detailCalls, 0, `${who.user.username}: events without data made the client call lms_get_message_details`);
      assert.equal(s.stopped, false, `${who.user.username}: the client stopped polling (${JSON.stringify(s)})`);
    }
    for (const l of lat) assert.ok(l.ms < LIMIT_MS, `${l.type} shown ${l.ms} ms after the sender's answer (limit ${LIMIT_MS} ms)`);

    // A member of general only: its own channel answers, the private channel is refused.
    const ok = await rawPoll(o, c.general, method);
    assert.equal(ok.body && ok.body.success, true, `the outsider polls general: ${JSON.stringify(ok)}`);
    const refused = await rawPoll(o, c.priv, method);
    assert.equal(refused.body && refused.body.success, false, `the outsider polls private: ${JSON.stringify(refused)}`);
    assert.equal(refused.body.data && refused.body.data.code, 'access_denied', `the outsider polls private: ${JSON.stringify(refused)}`);
  } finally {
    await a.context.close();
    await b.context.close();
    await o.context.close();
  }
}

test('LMS theme client, POST polls: every action shows on the other page within 1 s', { skip, timeout: 120000 }, () => scenario('POST'));
test('LMS theme client, GET polls (lms_fixture_get=1): every action shows on the other page within 1 s', { skip, timeout: 120000 }, () => scenario('GET'));
