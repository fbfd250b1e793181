// Two logged-in users in one channel, without a running daemon:
//  1. no daemon configured: WordPress serves the long poll itself (admin-ajax waits in the store);
//  2. a daemon configured but not running: the client tries it, falls back to the AJAX tiers,
//     and still delivers everything.
// In both, every message posted shows up on the other page exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { site, launch, login, openChat, post, waitForMessage, waitTransport, pageState, checkExactlyOnce, setOption, percentile, daemonSecret, daemonKeyId, THROUGH_DAEMON } from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
  setOption('lms_realtime_daemon_url', '');
});

/** Posts `n` messages alternating sender, each awaited on the other page; returns latencies. */
async function exchange(a, b, tag, n, timeout, pauseMs = 0) {
  const posted = [];
  const latencies = [];
  for (let i = 0; i < n; i++) {
    const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
    const text = `${tag} ${i} from ${from.user.login} ${Math.random().toString(36).slice(2, 8)}`;
    posted.push(text);
    const t0 = await post(from.page, text);
    await waitForMessage(from.page, text, timeout); // the sender's own list (from the post answer)
    const t1 = await waitForMessage(to.page, text, timeout);
    latencies.push(t1 - t0);
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
  return { posted, latencies };
}

/** A burst: `n` messages from one sender, no waiting between them. */
async function burst(from, to, tag, n, timeout) {
  const posted = [];
  for (let i = 0; i < n; i++) {
    const text = `${tag} burst ${i} ${Math.random().toString(36).slice(2, 8)}`;
    posted.push(text);
    await post(from.page, text);
    await waitForMessage(from.page, text, 10000);
  }
  for (const text of posted) await waitForMessage(to.page, text, timeout);
  return posted;
}

test('without a daemon, WordPress serves the long poll and delivers every message once', { timeout: 180000 }, async () => {
  setOption('lms_realtime_daemon_url', '');
  const alice = await login(browser, site.users.alice);
  const bob = await login(browser, site.users.bob);
  try {
    await openChat(alice.page);
    await openChat(bob.page);
    await waitTransport(alice.page, 'ajax', 20000);
    await waitTransport(bob.page, 'ajax', 20000);
    // Let both clients settle into a waiting poll, then talk.
    await new Promise((r) => setTimeout(r, 1500));
    const first = await exchange(alice, bob, 'self-served', 4, 20000, 11000);
    const more = await burst(alice, bob, 'self-served', 5, 20000);
    const posted = [...first.posted, ...more];
    const sa = await pageState(alice.page);
    const sb = await pageState(bob.page);
    checkExactlyOnce(assert, sa, posted, 'alice');
    checkExactlyOnce(assert, sb, posted, 'bob');
    const p50 = percentile(first.latencies, 0.5);
    console.log(`self-served long poll: latencies ms ${first.latencies.join(', ')} (p50 ${p50})`);
    // A message posted while the other side's poll is waiting in PHP arrives at once: with 11 s
    // between messages the receiver is always waiting (the client paces AJAX polls 10 s apart).
    for (const l of first.latencies) assert.ok(l < 1000, `delivered in ${l} ms, expected < 1000 ms while a poll waits`);
    assert.equal(await alice.page.getAttribute('.lms-chat', 'data-transport'), 'ajax');
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});

const noTokens = site.token_class ? false : 'the PHP binding has no LmsRealtime\\Token, so the plugin never configures clients for a daemon';
test('with the daemon configured but not running, the client falls back to AJAX and delivers every message once', { skip: noTokens, timeout: 240000 }, async () => {
  setOption('lms_realtime_daemon_url', '/lmsrt');
  setOption('lms_realtime_daemon_secret', daemonSecret);
  setOption('lms_realtime_daemon_key_id', daemonKeyId);
  const alice = await login(browser, site.users.alice);
  const bob = await login(browser, site.users.bob);
  try {
    await openChat(alice.page);
    await openChat(bob.page);
    const config = await alice.page.evaluate(() => window.lmsRealtimeConfig);
    assert.equal(config.daemon_url, '/lmsrt', 'the page is configured for the daemon');
    assert.equal(config.token_action, 'lms_realtime_token');
    // The daemon fails (nginx answers 502), the breaker opens after 3 failures, AJAX takes over.
    await waitTransport(alice.page, 'ajax', 30000);
    await waitTransport(bob.page, 'ajax', 30000);
    const first = await exchange(alice, bob, 'fallback', 4, 30000);
    const more = await burst(bob, alice, 'fallback', 4, 30000);
    const posted = [...first.posted, ...more];
    const sa = await pageState(alice.page);
    const sb = await pageState(bob.page);
    checkExactlyOnce(assert, sa, posted, 'alice');
    checkExactlyOnce(assert, sb, posted, 'bob');
    // Its stream first, then its long poll, until the breaker opened.
    const daemonErrors = sa.errors.filter((e) => THROUGH_DAEMON.includes(e.transport));
    assert.ok(daemonErrors.length >= 3, `the client tried the daemon first (${daemonErrors.length} daemon errors)`);
    assert.equal(daemonErrors[0].transport, 'stream', 'the first attempt was not the stream');
    console.log(`fallback (daemon down): latencies ms ${first.latencies.join(', ')}; daemon errors seen by alice: ${[...new Set(daemonErrors.map((e) => e.code))].join(', ')}`);
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});
