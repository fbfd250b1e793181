// Shared by the LMS fixture theme scenarios (lms-*.test.mjs): the site facts, the browser, a
// session user's login through the fixture's login page, and the page's actions and state.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { launch as launchChromium } from './lib.mjs';

const sitePath = process.env.LMSRT_E2E_LMS_SITE;
export const lms = sitePath ? JSON.parse(fs.readFileSync(sitePath, 'utf8')) : null;
export const base = (process.env.LMSRT_E2E_BASE || (lms && lms.base) || '').replace(/\/$/, '');
export const skip = lms && base ? false : 'needs LMSRT_E2E_LMS_SITE and LMSRT_E2E_BASE (a site running the LMS fixture theme)';
export const pathLabel = process.env.LMSRT_E2E_PATH_LABEL || 'theme';
export const latencyOut = process.env.LMSRT_E2E_LATENCY_OUT || '';
export const LIMIT_MS = 1000;
export const expectPlugin = !!process.env.LMSRT_E2E_EXPECT_PLUGIN;

/** Two members of `general` (sender, receiver) and a member of `general` not in `private`. */
export function cast() {
  const users = Object.values(lms.users);
  const general = lms.channels.general;
  const priv = lms.channels.private;
  const inGeneral = users.filter((u) => general.members.includes(u.id));
  const outsider = inGeneral.find((u) => !priv.members.includes(u.id));
  const [sender, receiver] = inGeneral.filter((u) => u !== outsider);
  assert.ok(sender && receiver && outsider, 'the seed has two members of general and one of general only');
  return { sender, receiver, outsider, general: general.id, priv: priv.id };
}

let browser = null;

/** Starts the shared browser (once per test file, in before()). */
export async function launch() {
  browser = await launchChromium();
  return browser;
}

/** Closes it (in after()). */
export async function close() {
  await browser?.close();
  browser = null;
}

/** A browser context logged in as a session user through the fixture's login page. */
export async function login(user, chatUrl) {
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
export async function act(who, fn, ...args) {
  return who.page.evaluate(
    async ([name, a]) => {
      const r = await window[name](...a);
      return { r, at: Date.now() };
    },
    [fn, args]
  );
}

/** Waits until `who` shows an event of one of `types` for `id`; returns that `shown` entry. */
export async function waitShown(who, types, id, timeout = 10000) {
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

export async function state(who) {
  return who.page.evaluate(() => {
    const s = window.lmsFixture;
    return { dropped: s.dropped, detailCalls: s.detailCalls, stopped: s.stopped, timeouts: s.timeouts, errors: s.errors, method: s.method, lastEventId: s.lastEventId };
  });
}

