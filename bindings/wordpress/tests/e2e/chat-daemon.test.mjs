// Two logged-in users in one channel, through the daemon lms-longpolld:
//  - a message posted in one page appears in the other within one second, through the daemon's
//    stream (server-sent events), the client's first choice;
//  - with the daemon stopped the client falls back to the AJAX tiers and still delivers;
//  - when the daemon returns the client goes back to it (its long poll at first: the stream
//    that failed sits out a cool-down before it is tried again);
//  - across all of it no message is lost or shown twice.
// Skipped (with the reason) while the daemon binary or the binding's token issuer is missing:
// the daemon is never faked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { site, launch, login, openChat, post, waitForMessage, waitTransport, pageState, checkExactlyOnce, percentile, Daemon, daemonSkip, useDaemon, dropDaemon, THROUGH_DAEMON } from './lib.mjs';

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

async function say(from, to, text, timeout) {
  const t0 = await post(from.page, text);
  const t1 = await waitForMessage(to.page, text, timeout);
  return t1 - t0;
}

test('through the daemon: within one second, fallback while it is down, back when it returns, exactly once', { skip, timeout: 300000 }, async () => {
  const alice = await login(browser, site.users.alice);
  const bob = await login(browser, site.users.bob);
  const posted = [];
  const text = (tag, i, who) => {
    const t = `${tag} ${i} from ${who} ${Math.random().toString(36).slice(2, 8)}`;
    posted.push(t);
    return t;
  };
  try {
    await openChat(alice.page);
    await openChat(bob.page);
    await waitTransport(alice.page, 'stream', 20000);
    await waitTransport(bob.page, 'stream', 20000);

    // 1. Through the daemon's stream: each message within one second.
    const fast = [];
    for (let i = 0; i < 8; i++) {
      const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
      fast.push(await say(from, to, text('daemon', i, from.user.login), 5000));
    }
    console.log(`through the daemon: latencies ms ${fast.join(', ')} (p50 ${percentile(fast, 0.5)}, max ${Math.max(...fast)})`);
    for (const l of fast) assert.ok(l < 1000, `delivered in ${l} ms through the daemon, expected < 1000 ms`);
    assert.equal(await alice.page.getAttribute('.lms-chat', 'data-transport'), 'stream');

    // 2. The daemon stops: the clients fall back to AJAX and still deliver.
    const stopped = Date.now();
    await daemon.stop();
    const down = [];
    for (let i = 0; i < 4; i++) {
      const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
      down.push(await say(from, to, text('daemon-down', i, from.user.login), 45000));
    }
    await waitTransport(alice.page, 'ajax', 30000);
    await waitTransport(bob.page, 'ajax', 30000);
    console.log(`daemon down (AJAX fallback): latencies ms ${down.join(', ')}; both on AJAX within ${Date.now() - stopped} ms of the stop`);

    // 3. The daemon returns: the clients go back to long-polling it.
    const restarted = Date.now();
    await daemon.start();
    await waitTransport(alice.page, THROUGH_DAEMON, 150000);
    await waitTransport(bob.page, THROUGH_DAEMON, 150000);
    const on = [await alice.page.getAttribute('.lms-chat', 'data-transport'), await bob.page.getAttribute('.lms-chat', 'data-transport')];
    console.log(`both clients go through the daemon again (${on.join(', ')}) ${Date.now() - restarted} ms after it restarted`);
    const back = [];
    for (let i = 0; i < 4; i++) {
      const [from, to] = i % 2 ? [bob, alice] : [alice, bob];
      back.push(await say(from, to, text('daemon-back', i, from.user.login), 5000));
    }
    console.log(`daemon back: latencies ms ${back.join(', ')}`);
    for (const l of back) assert.ok(l < 1000, `delivered in ${l} ms after the daemon returned`);

    // 4. Nothing lost, nothing twice, on either page.
    const sa = await pageState(alice.page);
    const sb = await pageState(bob.page);
    checkExactlyOnce(assert, sa, posted, 'alice');
    checkExactlyOnce(assert, sb, posted, 'bob');
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});
