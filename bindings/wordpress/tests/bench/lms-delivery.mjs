// Delivery latency on an LMS chat site, as its users see it: from the moment one session user
// posts a message through the LMS theme's own AJAX path to the moment the theme's own client on
// another user's page shows it. One run measures the path the site is on (the plugin's event
// store, or its table with the kill switch on, or the daemon through the plugin's theme bridge
// when a daemon is configured and running); run it once per path.
//
//   LMSRT_E2E_BASE=… LMSRT_E2E_LMS_SITE=… node bindings/wordpress/tests/bench/lms-delivery.mjs <label> [messages]
//
// (A site held up by `LMSRT_E2E_HOLD=/tmp/site.env bash bindings/wordpress/tests/e2e/run.sh`
// after its LMS phase; see benches/README.md.) Prints one JSON line: label, n, p50, p90, p99,
// max in ms, how many polls the receiver's client sent per minute, and (with the theme bridge)
// how many of them the daemon answered and how many went to admin-ajax.
import { base, cast, launch, close, login, waitShown } from '../e2e/lms-lib.mjs';

const label = process.argv[2] || 'path';
const n = Number(process.argv[3] || 100);

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];

await launch();
try {
  const c = cast();
  const chat = `${base}/?lms_fixture_chat=${c.general}`;
  const a = await login(c.sender, chat);
  const b = await login(c.receiver, chat);
  await new Promise((r) => setTimeout(r, 1000));
  const polls0 = await b.page.evaluate(() => window.lmsFixture.polls);
  const started = Date.now();
  const ms = [];
  for (let i = 0; i < n; i++) {
    // Spread the posts over the receiver's hold, as people's messages are.
    await new Promise((r) => setTimeout(r, 50 + Math.floor(Math.random() * 400)));
    const sent = await a.page.evaluate(async (text) => {
      const at = Date.now();
      const r = await window.lmsFixtureSend(text);
      return { at, r };
    }, `bench ${label} ${i}`);
    if (!sent.r || !sent.r.success) throw new Error(`send failed: ${JSON.stringify(sent.r)}`);
    const shown = await waitShown(b, ['message_create'], Number(sent.r.data.message_id), 15000);
    ms.push(shown.at - sent.at);
  }
  const minutes = (Date.now() - started) / 60000;
  const polls = (await b.page.evaluate(() => window.lmsFixture.polls)) - polls0;
  const bridge = await b.page.evaluate(() => (window.lmsRealtimeThemeBridge ? { ...window.lmsRealtimeThemeBridge.stats } : null));
  ms.sort((x, y) => x - y);
  console.log(JSON.stringify({ label, n, p50: pct(ms, 50), p90: pct(ms, 90), p99: pct(ms, 99), max: ms.at(-1), polls_per_minute: Math.round((polls / minutes) * 10) / 10, bridge }));
  await a.context.close();
  await b.context.close();
} finally {
  await close();
}
