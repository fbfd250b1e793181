// Helpers of the browser scenarios. run.sh sets the site up and exports LMSRT_E2E_* variables.
import { chromium } from 'playwright-core';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export const site = JSON.parse(fs.readFileSync(process.env.LMSRT_E2E_SITE, 'utf8'));
export const work = process.env.LMSRT_E2E_WORK;
export const daemonPort = Number(process.env.LMSRT_E2E_DAEMON_PORT);
export const dbPath = process.env.LMSRT_E2E_DB;
export const daemonSecret = 'e2e-' + 'k'.repeat(40);
export const daemonKeyId = 'e2e';

/** Sets a WordPress option through PHP CLI (the value as JSON). */
export function setOption(name, value) {
  execFileSync('php', [path.join(here, 'setup-site.php'), 'option', site.base, name, JSON.stringify(value)], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

/** Headless Chromium from Debian (never a downloaded browser). */
export function launch() {
  return chromium.launch({
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
}

/**
 * A browser context logged in as `user` through the wp-login.php form. A login that does not
 * leave wp-login.php within 15 s is retried once (and the reason printed), then fails.
 */
export async function login(browser, user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${user.login}] page error: ${e.message}`));
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    await page.goto(site.base + '/wp-login.php');
    // wp-login.php focuses (and may clear) a field 200 ms after load: fill after that.
    await page.waitForTimeout(300);
    await page.fill('#user_login', user.login);
    await page.fill('#user_pass', user.pass);
    try {
      await Promise.all([page.waitForURL((u) => !u.pathname.endsWith('/wp-login.php'), { timeout: 15000 }), page.click('#wp-submit')]);
      return { context, page, user };
    } catch (e) {
      const why = await page
        .evaluate(() => (document.querySelector('#login_error') || document.body).innerText.slice(0, 300))
        .catch(() => '?');
      const msg = `login of ${user.login} (attempt ${attempt}, ${Date.now() - started} ms) stayed at ${page.url()}: ${why}`;
      if (attempt >= 2) throw new Error(msg);
      console.log(msg);
    }
  }
}

/** Opens the chat page and waits for the client to start. */
export async function openChat(page) {
  await page.goto(site.chat_url);
  await page.waitForFunction(() => window.lmsChat && window.lmsChat.client && window.lmsChat.client.running, null, { timeout: 15000 });
}

export async function transport(page) {
  return page.getAttribute('.lms-chat', 'data-transport');
}

/** The client's transports that go through the daemon: its stream, then its long poll. */
export const THROUGH_DAEMON = ['stream', 'daemon'];

/**
 * Waits until the client's current transport is `want` ('stream', 'daemon' or 'ajax'), or one
 * of `want` when it is a list.
 */
export async function waitTransport(page, want, timeout) {
  const wanted = Array.isArray(want) ? want : [want];
  await page.waitForFunction((w) => w.includes(document.querySelector('.lms-chat').getAttribute('data-transport')), wanted, {
    timeout,
    polling: 50,
  });
}

/** Posts through the page's form; returns the time of the click (ms). */
export async function post(page, text) {
  await page.fill('.lms-chat-input', text);
  const t = Date.now();
  await page.click('.lms-chat-send');
  return t;
}

/** Waits until `text` is in the page's message list; returns when (ms). */
export async function waitForMessage(page, text, timeout) {
  await page.waitForFunction(
    (t) => Array.from(document.querySelectorAll('.lms-chat-text')).some((e) => e.textContent === t),
    text,
    { timeout, polling: 10 }
  );
  return Date.now();
}

/**
 * What a page shows and received: message texts in the list (with counts), the data events the
 * client delivered (ids), and how many duplicates its router dropped.
 */
export async function pageState(page) {
  return page.evaluate(() => {
    const texts = Array.from(document.querySelectorAll('.lms-chat-text')).map((e) => e.textContent);
    const ids = Array.from(document.querySelectorAll('.lms-chat-message')).map((e) => e.getAttribute('data-message-id'));
    const s = window.lmsChat.state;
    return {
      texts,
      ids,
      events: s.events.map((e) => e.id),
      eventsDetail: s.events,
      modes: s.modes,
      errors: s.errors,
      routerDuplicates: window.lmsChat.client.router.duplicates,
      stats: window.lmsChat.client.stats(),
    };
  });
}

/** Asserts each posted text appears exactly once and no event id was delivered twice. */
export function checkExactlyOnce(assert, state, posted, who) {
  for (const text of posted) {
    const n = state.texts.filter((t) => t === text).length;
    assert.equal(n, 1, `${who} shows "${text}" ${n} times`);
  }
  const dupIds = state.ids.filter((id, i) => state.ids.indexOf(id) !== i);
  assert.deepEqual(dupIds, [], `${who} lists message ids twice`);
  const dupEvents = state.events.filter((id, i) => state.events.indexOf(id) !== i);
  assert.deepEqual(dupEvents, [], `${who} received event ids twice`);
}

export function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

/**
 * Why a scenario through the daemon cannot run here (false: it can): the daemon is never faked,
 * so without its binary, or without the binding's token issuer, the scenario is skipped.
 */
export function daemonSkip(daemon) {
  if (!daemon.available) return `no daemon binary (${daemon.argv[0] || 'LMSRT_DAEMON_CMD unset'})`;
  if (!site.token_class) return 'the PHP binding has no LmsRealtime\\Token yet, so the plugin cannot issue daemon tokens';
  return false;
}

/** Points the plugin at the daemon (through nginx at /lmsrt, with its key) and starts it. */
export async function useDaemon(daemon) {
  setOption('lms_realtime_daemon_url', '/lmsrt');
  setOption('lms_realtime_daemon_secret', daemonSecret);
  setOption('lms_realtime_daemon_key_id', daemonKeyId);
  await daemon.start();
}

/** Stops the daemon and points the plugin away from it. */
export async function dropDaemon(daemon) {
  await daemon.stop();
  setOption('lms_realtime_daemon_url', '');
}

/** The daemon's `/healthz` body (asked directly, not through nginx). */
export async function daemonHealth() {
  const r = await fetch(`http://127.0.0.1:${daemonPort}/healthz`);
  return r.json();
}

/** Asks the daemon's `/healthz` until `ready(body)` holds; fails with `what` and the last body. */
export async function waitHealth(ready, what, timeout) {
  const deadline = Date.now() + timeout;
  let last = null;
  while (Date.now() < deadline) {
    last = await daemonHealth().catch((e) => ({ error: String(e) }));
    if (ready(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`waited ${timeout} ms for ${what}; the daemon's /healthz said ${JSON.stringify(last)}`);
}

/**
 * The daemon, run from LMSRT_DAEMON_CMD ({db}, {port}, {key_id}, {secret}, {secret_file}
 * replaced). Never
 * faked: when the binary is missing, `available` is false and the daemon scenario is skipped.
 */
export class Daemon {
  constructor() {
    this.cmd = process.env.LMSRT_DAEMON_CMD || '';
    this.proc = null;
    this.secretFile = path.join(work, 'daemon-secret');
    fs.writeFileSync(this.secretFile, daemonSecret + '\n', { mode: 0o600 });
    this.log = path.join(work, 'daemon.log');
  }

  get argv() {
    const repl = { '{db}': dbPath, '{port}': String(daemonPort), '{secret_file}': this.secretFile, '{secret}': daemonSecret, '{key_id}': daemonKeyId };
    return this.cmd
      .trim()
      .split(/\s+/)
      .map((a) => a.replace(/\{db\}|\{port\}|\{secret_file\}|\{secret\}|\{key_id\}/g, (m) => repl[m]));
  }

  get available() {
    const bin = this.argv[0];
    return Boolean(bin) && fs.existsSync(bin);
  }

  async start(timeoutMs = 15000) {
    const [bin, ...args] = this.argv;
    const out = fs.openSync(this.log, 'a');
    this.proc = spawn(bin, args, { stdio: ['ignore', out, out] });
    fs.writeFileSync(path.join(work, 'daemon.pid'), String(this.proc.pid));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`the daemon exited with ${this.proc.exitCode}; see ${this.log}`);
      try {
        const r = await fetch(`http://127.0.0.1:${daemonPort}/healthz`);
        if (r.ok) return;
      } catch (_) {
        /* not yet listening */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`the daemon did not answer /healthz within ${timeoutMs} ms; see ${this.log}`);
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const p = this.proc;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    this.proc = null;
  }
}
