// The tab sweep of benches/README.md (issue 20): N tabs of one user in one browser (real
// Chromium, one context) on the demo chat page, through lms-longpolld. For each N: the streams
// and waiting polls the daemon holds for that user (read from its /healthz; the only client),
// the requests the tabs made to the daemon over a quiet minute, and how long a message posted
// in the first tab (through admin-ajax) takes from its append to the first and the last tab.
//
//   LMSRT_E2E_HOLD=/tmp/site.env bash bindings/wordpress/tests/e2e/run.sh &   # hold a site
//   source /tmp/site.env && node bindings/wordpress/tests/bench/tabs.mjs [1 5 20]
//
// BENCH_QUIET_S (60): the quiet window in which requests are counted.
import { site, launch, login, openChat, waitTransport, Daemon, useDaemon, dropDaemon, waitHealth, daemonHealth } from '../e2e/lib.mjs';

const counts = process.argv.slice(2).map(Number).filter((n) => n > 0);
const sweep = counts.length ? counts : [1, 5, 20];
const QUIET_MS = Number(process.env.BENCH_QUIET_S || 60) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const daemon = new Daemon();
await useDaemon(daemon);
const browser = await launch();
const rows = [];
try {
  for (const n of sweep) {
    const user = await login(browser, site.users.alice);
    const tabs = [user.page];
    for (let i = 1; i < n; i++) tabs.push(await user.context.newPage());
    let requests = 0;
    let counting = false;
    for (const p of tabs) {
      p.on('request', (r) => {
        if (counting && r.url().includes('/lmsrt/')) requests++;
      });
    }
    const t0 = Date.now();
    for (const p of tabs) await openChat(p);
    const leaderIdx = async () => (await Promise.all(tabs.map((p) => p.evaluate(() => window.lmsChat.client.isLeader)))).indexOf(true);
    let li = -1;
    while (li < 0 && Date.now() - t0 < 30000) {
      li = await leaderIdx();
      if (li < 0) await sleep(50);
    }
    if (li < 0) throw new Error(`no leading tab among ${n} after 30 s`);
    await waitTransport(tabs[li], 'stream', 20000);
    const settled = await waitHealth((h) => h.streams >= 1, 'a stream', 20000);
    const ready = Date.now() - t0;
    counting = true;
    await sleep(QUIET_MS);
    counting = false;
    const h = await daemonHealth();

    // One message posted in the first tab: from its append (the event's timestamp, this host's
    // clock) to its arrival in each tab (the client's receipt time). A click's own time is left
    // out: Playwright's click takes 1-2 s with many pages open, which says nothing of delivery.
    const text = `sweep ${n} ${Math.random().toString(36).slice(2, 8)}`;
    await tabs[0].fill('.lms-chat-input', text);
    await tabs[0].click('.lms-chat-send');
    await Promise.all(tabs.map((p) => p.waitForFunction((t) => Array.from(document.querySelectorAll('.lms-chat-text')).some((e) => e.textContent === t), text, { timeout: 20000, polling: 10 })));
    const arrivals = await Promise.all(
      tabs.map((p) =>
        p.evaluate(() => {
          const e = window.lmsChat.state.events.filter((x) => x.type === 'message_create').at(-1);
          return e.received_at - e.timestamp;
        })
      )
    );
    const lastTab = Math.max(...arrivals);
    rows.push({ tabs: n, streams: h.streams, waiters: h.waiters, streams_when_ready: settled.streams, requests_per_min: +((requests * 60000) / QUIET_MS).toFixed(2), all_tabs_ready_ms: ready, append_to_last_tab_ms: lastTab, append_to_first_tab_ms: Math.min(...arrivals) });
    console.log(JSON.stringify(rows[rows.length - 1]));
    await user.context.close();
    await waitHealth((x) => x.streams === 0, 'the streams of the closed tabs to end', 20000);
  }
} finally {
  await browser.close();
  await dropDaemon(daemon);
}
console.log('\n| tabs of one user | streams held | waiting polls | daemon requests / min (all tabs) | append → first / last tab |');
console.log('|---:|---:|---:|---:|---:|');
for (const r of rows) console.log(`| ${r.tabs} | ${r.streams} | ${r.waiters} | ${r.requests_per_min} | ${r.append_to_first_tab_ms} / ${r.append_to_last_tab_ms} ms |`);
