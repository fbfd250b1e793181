// The LMS theme's own client across a move of the plugin between its backends: the event store
// (FFI), the plugin's table (as on a site without FFI: the kill switch LMSRT_DISABLED, flipped
// through the e2e mu-plugin's option), and back. The client keeps one last_event_id and knows
// nothing of the move; it must show every message once, in order, and never stop.
//
// Runs only with the lms-realtime plugin active on the LMS fixture theme (LMSRT_E2E_EXPECT_PLUGIN).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setOption } from './lib.mjs';
import { base, skip, expectPlugin, cast, launch, close, login, act, waitShown, state } from './lms-lib.mjs';

const why = skip || (expectPlugin ? false : 'needs the plugin active (LMSRT_E2E_EXPECT_PLUGIN)');

/** Turns the plugin's kill switch on (table path) or off (store path) for the next requests. */
function tablePath(on) {
  setOption('lmsrt_e2e_kill_switch', on);
}

before(async () => {
  if (!why) await launch();
});
after(async () => {
  if (!why) tablePath(false);
  await close();
});

test('store → table → store: the theme client shows every message once, in order, and keeps polling', { skip: why, timeout: 180000 }, async () => {
  const c = cast();
  const chat = `${base}/?lms_fixture_chat=${c.general}`;
  const a = await login(c.sender, chat);
  const b = await login(c.receiver, chat);
  try {
    const tag = Date.now().toString(36);
    const sent = [];
    const send = async (text) => {
      const r = await act(a, 'lmsFixtureSend', text);
      assert.equal(r.r.success, true, JSON.stringify(r.r));
      const id = Number(r.r.data.message_id);
      sent.push({ id, text });
      // The hold of a poll already waiting on the other backend ends within 5 s.
      await waitShown(b, ['message_create'], id, 15000);
    };
    await send(`on the store ${tag}`);
    tablePath(true);
    await send(`on the table ${tag}`);
    await send(`on the table again ${tag}`);
    tablePath(false);
    await send(`back on the store ${tag}`);

    // This run's messages, by their text (the channel may hold older events with the same
    // message ids from other chats on the site).
    const seen = await b.page.evaluate(() =>
      window.lmsFixture.events.map((e) => ({ id: Number(e.id), type: e.type || e.event_type, message_id: Number(e.message_id), text: String((e.data && (e.data.message || e.data.content)) || '') }))
    );
    const mine = seen.filter((e) => e.type === 'message_create' && e.text.endsWith(tag));
    assert.deepEqual(mine.map((e) => e.message_id), sent.map((s) => s.id), 'every message once, in the order sent');
    const ids = seen.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no event id twice');
    for (let i = 1; i < mine.length; i++) assert.ok(mine[i].id > mine[i - 1].id, `event ids increase across the moves: ${JSON.stringify(mine)}`);
    const s = await state(b);
    assert.equal(s.stopped, false, JSON.stringify(s));
    assert.equal(s.dropped, 0, JSON.stringify(s));
  } finally {
    await a.context.close();
    await b.context.close();
  }
});
