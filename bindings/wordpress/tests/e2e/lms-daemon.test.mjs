// The LMS chat theme's own client through the daemon. With the daemon configured, the plugin
// prints its theme bridge (assets/lms-realtime-theme-bridge.js) and the theme's unchanged
// jQuery long poll is answered by lms-longpolld's /v1/lms/poll instead of admin-ajax.php:
//  - every message shows on the receiver's page within 1 s of the sender's answer, and no poll
//    went to admin-ajax while the daemon was up;
//  - with the daemon stopped, the same client is answered by admin-ajax (the theme sees no
//    error and never stops), and messages still arrive;
//  - when the daemon returns, the polls go back to it;
//  - across all of it every event reaches the receiver exactly once (counted in the raw answers,
//    before the client's own de-duplication).
// Runs on the store path once (label `store`); skipped without the daemon binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Daemon, useDaemon, dropDaemon } from './lib.mjs';
import { base, skip as lmsSkip, pathLabel, latencyOut, LIMIT_MS, cast, launch, close, login, act, waitShown, state } from './lms-lib.mjs';

const daemon = new Daemon();
const skip = lmsSkip || (pathLabel !== 'store' ? `runs once, on the store path (this is ${pathLabel})` : false) || (!daemon.available ? `no daemon binary (${daemon.argv[0]})` : false);

before(async () => {
  if (skip) return;
  await useDaemon(daemon);
  await launch();
});
after(async () => {
  await close();
  if (!skip) await dropDaemon(daemon);
});

const bridgeStats = (who) => who.page.evaluate(() => window.lmsRealtimeThemeBridge && { ...window.lmsRealtimeThemeBridge.stats });

async function waitStats(who, pred, what, timeout) {
  const deadline = Date.now() + timeout;
  let s;
  while (Date.now() < deadline) {
    s = await bridgeStats(who);
    if (s && pred(s)) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${who.user.username}: ${what} within ${timeout} ms; bridge stats ${JSON.stringify(s)}`);
}

test('the theme client long-polls the daemon; admin-ajax serves it while the daemon is down; exactly once', { skip, timeout: 240000 }, async () => {
  const c = cast();
  const chat = `${base}/?lms_fixture_chat=${c.general}`;
  const a = await login(c.sender, chat);
  const b = await login(c.receiver, chat);
  const sentIds = [];
  const send = async (text, limit) => {
    const sent = await act(a, 'lmsFixtureSend', text);
    assert.equal(sent.r.success, true, `send: ${JSON.stringify(sent.r)}`);
    const id = Number(sent.r.data.message_id);
    sentIds.push(id);
    const shown = await waitShown(b, ['message_create'], id, limit);
    assert.equal(shown.text, text);
    return shown.at - sent.at;
  };
  try {
    assert.ok(await bridgeStats(b), 'the plugin printed its theme bridge on the theme page');
    await waitStats(b, (s) => s.daemon > 0, 'a first poll answered by the daemon', 15000);
    const tag = Date.now().toString(36);

    // 1. Through the daemon.
    const lat = [];
    for (let i = 0; i < 6; i++) lat.push(await send(`daemon ${i} ${tag}`, 5000));
    const up = await bridgeStats(b);
    assert.equal(up.fallback, 0, `no poll went to admin-ajax while the daemon was up: ${JSON.stringify(up)}`);
    console.log(`daemon path: ${lat.map((ms) => `${ms} ms`).join(', ')}`);
    if (latencyOut) fs.appendFileSync(latencyOut, lat.map((ms) => JSON.stringify({ path: 'daemon', type: 'message_create', ms })).join('\n') + '\n');
    for (const ms of lat) assert.ok(ms < LIMIT_MS, `shown ${ms} ms after the sender's answer through the daemon (limit ${LIMIT_MS} ms)`);

    // 2. The daemon stops: admin-ajax answers the same client.
    await daemon.stop();
    for (let i = 0; i < 3; i++) await send(`down ${i} ${tag}`, 15000);
    const down = await bridgeStats(b);
    assert.ok(down.fallback > 0, `admin-ajax answered while the daemon was down: ${JSON.stringify(down)}`);

    // 3. It returns: the polls go back to it (after the bridge's backoff, at most 30 s).
    await daemon.start();
    await waitStats(b, (s) => s.daemon > down.daemon, 'a poll answered by the daemon again', 45000);
    for (let i = 0; i < 3; i++) await send(`back ${i} ${tag}`, 5000);

    const s = await state(b);
    assert.equal(s.stopped, false, `the theme client never stopped: ${JSON.stringify(s)}`);
    assert.equal(s.dropped, 0, `no event dropped as too old: ${JSON.stringify(s)}`);
    // Exactly once, in the answers themselves.
    const counts = await b.page.evaluate(() => {
      const n = {};
      for (const r of window.lmsFixture.responses) {
        for (const e of (r.body && r.body.data && r.body.data.events) || []) {
          if ((e.event_type || e.type) === 'message_create') {
            const id = Number((e.data && e.data.message_id) || e.message_id);
            n[id] = (n[id] || 0) + 1;
          }
        }
      }
      return n;
    });
    for (const id of sentIds) assert.equal(counts[id], 1, `message ${id} delivered ${counts[id] || 0} times: ${JSON.stringify(counts)}`);
  } finally {
    await a.context.close();
    await b.context.close();
  }
});
