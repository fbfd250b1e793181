// Several tabs of one user in one browser (one context), through the daemon's stream (issue 20):
//  - the tabs elect one leader; the user holds one connection to the daemon, however many tabs;
//  - a message posted by another user reaches every tab, exactly once;
//  - when the leading tab closes another tab takes over (at once: the closing tab says `bye`),
//    the user still holds one connection, and messages keep reaching every open tab once.
// Skipped (with the reason) while the daemon binary or the binding's token issuer is missing:
// the daemon is never faked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { site, launch, login, openChat, post, waitForMessage, waitTransport, pageState, checkExactlyOnce, Daemon, daemonSkip, useDaemon, dropDaemon, daemonHealth, waitHealth } from './lib.mjs';

const TABS = 4;
const daemon = new Daemon();
const skip = daemonSkip(daemon);

let browser;
before(async () => {
  if (skip) return;
  await useDaemon(daemon);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  if (!skip) await dropDaemon(daemon);
});

/** Which of `pages` lead (their client polls or streams for all the tabs). */
async function leaders(pages) {
  const flags = await Promise.all(pages.map((p) => p.evaluate(() => window.lmsChat.client.isLeader)));
  return pages.filter((_, i) => flags[i]);
}

/** Waits until exactly one of `pages` leads, and returns it. */
async function oneLeader(pages, timeout) {
  const deadline = Date.now() + timeout;
  let last = [];
  while (Date.now() < deadline) {
    last = await leaders(pages);
    if (last.length === 1) return last[0];
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`waited ${timeout} ms for one leading tab among ${pages.length}; ${last.length} lead`);
}

test(`${TABS} tabs of one user share one stream; a closed leader is replaced; every tab gets each message once`, { skip, timeout: 300000 }, async () => {
  const alice = await login(browser, site.users.alice);
  const bob = await login(browser, site.users.bob);
  const posted = [];
  const text = (tag, i) => {
    const t = `${tag} ${i} ${Math.random().toString(36).slice(2, 8)}`;
    posted.push(t);
    return t;
  };
  try {
    const tabs = [alice.page];
    for (let i = 1; i < TABS; i++) tabs.push(await alice.context.newPage());
    for (const p of tabs) await openChat(p);
    await openChat(bob.page);
    await waitTransport(bob.page, 'stream', 20000);
    const leader = await oneLeader(tabs, 20000);
    await waitTransport(leader, 'stream', 20000);

    // One stream for alice's tabs, one for bob's page: two in all, whatever the tab count.
    const h = await waitHealth((x) => x.streams === 2, 'two open streams (one per user)', 10000);
    console.log(`${TABS} tabs of alice + bob's page: ${h.streams} streams, ${h.waiters} waiters in the daemon`);

    // Every tab, follower or leader, shows each message once.
    for (let i = 0; i < 3; i++) {
      const t = text('to every tab', i);
      await post(bob.page, t);
      for (const p of tabs) await waitForMessage(p, t, 10000);
    }

    // The leader's tab closes: another takes over at once and resumes from the shared position.
    const rest = tabs.filter((p) => p !== leader);
    const closed = Date.now();
    await leader.close({ runBeforeUnload: true });
    const next = await oneLeader(rest, 10000);
    const tookOver = Date.now() - closed;
    console.log(`a new leading tab ${tookOver} ms after the leader's tab closed`);
    // The bye path is immediate; without it a follower would wait for the leader's heartbeat to
    // time out (three heartbeats, 6 s). The bound tells the two apart with room for a busy host.
    assert.ok(tookOver < 3000, `a new leader took ${tookOver} ms (the closing tab's bye was not heard?)`);
    await waitTransport(next, 'stream', 20000);
    await waitHealth((x) => x.streams === 2, 'two open streams after the hand-over', 20000);

    for (let i = 0; i < 3; i++) {
      const t = text('after the hand-over', i);
      await post(bob.page, t);
      for (const p of rest) await waitForMessage(p, t, 10000);
    }
    // Posted from a follower tab too: the page that posts hears its own message once.
    const own = text('from a follower', 0);
    const follower = rest.find((p) => p !== next);
    await post(follower, own);
    for (const p of rest) await waitForMessage(p, own, 10000);
    await waitForMessage(bob.page, own, 10000);

    const expect = (p, list) => pageState(p).then((s) => checkExactlyOnce(assert, s, list, 'a tab of alice'));
    for (const p of rest) await expect(p, posted);
    checkExactlyOnce(assert, await pageState(bob.page), posted, 'bob');
    const after = await daemonHealth();
    assert.equal(after.streams, 2, `open streams at the end: ${after.streams}`);
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});
