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
//   LMSRT_E2E_EXPECT_PLUGIN when set, every poll must have been answered by the lms-realtime
//                           plugin (which takes the action over), not by the theme's handler
// Without LMSRT_E2E_LMS_SITE (a site without the fixture theme) the tests are skipped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { lms, base, skip, pathLabel, latencyOut, LIMIT_MS, expectPlugin, cast, launch, close, login, act, waitShown, state } from './lms-lib.mjs';

before(async () => {
  if (!skip) await launch();
});
after(close);

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
    if (expectPlugin) {
      // The plugin's answer carries last_event_id and gap; the theme's says system: 'theme'.
      const answers = await b.page.evaluate(() => window.lmsFixture.responses.map((r) => r.body || r).filter((r) => r && r.success));
      assert.ok(answers.length > 0);
      for (const r of answers) {
        assert.notEqual(r.data.system, 'theme', 'a poll answered by the theme\'s own handler');
        assert.ok('last_event_id' in r.data && 'gap' in r.data, `not the plugin's answer: ${JSON.stringify(r).slice(0, 300)}`);
      }
    }

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
