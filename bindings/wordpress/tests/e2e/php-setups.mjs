// One PHP set-up over HTTP (php-setups.sh restarts php-fpm in the mode LMSRT_E2E_MODE first):
// every page answers, the set-up check reports the expected live path, the admin notice says
// why on the table path, and an event recorded through the plugin reaches a poll of the
// theme's AJAX action. No browser: fetch with a cookie jar.
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

const mode = process.env.LMSRT_E2E_MODE;
const base = process.env.LMSRT_E2E_BASE;
const setups = JSON.parse(fs.readFileSync(process.env.LMSRT_E2E_SETUPS_FILE, 'utf8'));
const plugin = setups.plugin_dir;
const preloadScript = `${plugin}/lib/php-ext/preload.php`;
const bundled = `${plugin}/lib/liblms_realtime.so`;
const channel = setups.channels[mode];

/** What each mode must run. */
const expected = {
  ffi: { live: 'store', via: 'cdef', ffiEnable: '1' },
  preload: { live: 'store', via: 'scope', ffiEnable: 'preload' },
  noffi: { live: 'table', via: '', ffiEnable: '' },
  badpreload: { live: 'table', via: '', ffiEnable: 'preload' },
  'badpreload-user': { live: 'table', via: '', ffiEnable: 'preload' },
}[mode];
assert.ok(expected, `unknown mode ${mode}`);
assert.ok(channel > 0, `no channel for ${mode}`);

/** A logged-in (or not) client: cookies kept across requests, redirects not followed. */
class Client {
  constructor() {
    this.jar = new Map([['wordpress_test_cookie', 'WP%20Cookie%20check']]);
  }

  async fetch(path, opts = {}) {
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(base + path, { ...opts, redirect: 'manual', headers: { ...(opts.headers || {}), cookie } });
    for (const c of res.headers.getSetCookie()) {
      const pair = c.split(';')[0];
      const i = pair.indexOf('=');
      const [k, v] = [pair.slice(0, i), pair.slice(i + 1)];
      if (/expires=[^;]*19[0-9][0-9]/i.test(c) || v === '' || v === '+') this.jar.delete(k);
      else this.jar.set(k, v);
    }
    return res;
  }

  async text(path, opts) {
    const res = await this.fetch(path, opts);
    return { status: res.status, body: await res.text() };
  }

  async ajax(fields) {
    const res = await this.fetch('/wp-admin/admin-ajax.php', { method: 'POST', body: new URLSearchParams(fields) });
    const body = await res.text();
    let json = null;
    try {
      json = JSON.parse(body);
    } catch (_) {
      /* not JSON */
    }
    return { status: res.status, body, json };
  }

  async login(user) {
    const body = new URLSearchParams({ log: user.login, pwd: user.pass, 'wp-submit': 'Log In', redirect_to: base + '/wp-admin/', testcookie: '1' });
    const res = await this.fetch('/wp-login.php', { method: 'POST', body });
    assert.equal(res.status, 302, `login of ${user.login}: HTTP ${res.status}`);
    assert.ok([...this.jar.keys()].some((k) => k.startsWith('wordpress_logged_in_')), `login of ${user.login}: no session cookie`);
    return this;
  }
}

/** The plugin's last lines in PHP's error log (for failure messages). */
function phpErrors() {
  try {
    const lines = fs.readFileSync(`${process.env.LMSRT_E2E_WORK}/php-errors.log`, 'utf8').split('\n');
    return lines.filter((l) => l.includes('lms-realtime')).slice(-3).join('\n');
  } catch (_) {
    return '';
  }
}

const admin = new Client();
const alice = new Client();

test(`${mode}: every page answers (no 5xx)`, async () => {
  const anon = new Client();
  const home = await anon.text('/');
  assert.equal(home.status, 200, 'home page');
  const login = await anon.text('/wp-login.php');
  assert.equal(login.status, 200, 'wp-login.php');
  assert.match(login.body, /id="loginform"/);
  const ajax = await anon.text('/wp-admin/admin-ajax.php');
  assert.equal(ajax.status, 400, 'admin-ajax.php without an action: WordPress answers 400 "0"');
  assert.equal(ajax.body, '0');
  const poll = await anon.ajax({ action: 'lms_unified_long_poll', channel_id: String(channel), last_event_id: '0' });
  assert.ok(poll.status < 500, `the poll without a login: HTTP ${poll.status}`);
  assert.equal(poll.json?.success, false);
  assert.equal(poll.json?.data?.code, 'not_authenticated', poll.body);
  await admin.login(setups.admin);
  const dashboard = await admin.text('/wp-admin/');
  assert.equal(dashboard.status, 200, 'the dashboard');
  const settings = await admin.text('/wp-admin/options-general.php?page=lms-realtime');
  assert.equal(settings.status, 200, 'the settings page');
});

test(`${mode}: the set-up check reports the ${expected.live}${expected.via ? ' (' + expected.via + ')' : ''} path`, async () => {
  const page = (await admin.text('/wp-admin/options-general.php?page=lms-realtime')).body;
  const shown = (page.match(/class="lmsrt-live" data-live="[a-z]*" data-via="[a-z]*"/) || ['no set-up check on the page'])[0];
  assert.equal(shown, `class="lmsrt-live" data-live="${expected.live}" data-via="${expected.via}"`, 'the status page');
  const link = page.match(/admin-ajax\.php\?action=lms_realtime_doctor(?:&amp;|&#038;|&)_wpnonce=([0-9a-f]{10})/);
  assert.ok(link, 'the status page links the JSON check');
  const res = await admin.text(`/wp-admin/admin-ajax.php?action=lms_realtime_doctor&_wpnonce=${link[1]}`);
  assert.equal(res.status, 200, res.body);
  const r = JSON.parse(res.body);
  assert.equal(r.success, true, res.body);
  const d = r.data;
  const f = d.facts;
  assert.equal(d.live, expected.live, JSON.stringify(d.problems));
  assert.equal(d.via, expected.via);
  assert.equal(f.sapi, 'fpm-fcgi');
  assert.equal(f.ffi_enable, expected.ffiEnable);
  assert.equal(f.binding_dir, `${plugin}/lib/php-ext`);
  // Set-up (ii) with this installation's real paths, never the source tree's php-ext/preload.php.
  assert.ok(d.setups.preload.ini.includes(`opcache.preload=${preloadScript}`), JSON.stringify(d.setups.preload.ini));
  assert.ok(d.setups.preload.commands[0].startsWith(`php ${plugin}/lib/php-ext/bin/write-header.php `), d.setups.preload.commands[0]);
  assert.ok(d.setups.preload.commands[0].endsWith(` ${bundled}`), d.setups.preload.commands[0]);
  assert.ok(!JSON.stringify(d.setups).includes('=php-ext/preload.php'));
  const startup = fs.readFileSync(process.env.LMSRT_E2E_STARTUP_LOG, 'utf8').split('\n').filter((l) => l.includes('lms-realtime preload'));
  const status = f.preload_status;

  switch (mode) {
    case 'ffi':
      assert.equal(f.library_tried, bundled, 'FFI::cdef() with the library the plugin bundles');
      assert.equal(f.scope_loaded, false);
      assert.deepEqual(d.problems, []);
      break;
    case 'preload':
      assert.equal(f.scope_loaded, true);
      assert.equal(f.opcache_preload, preloadScript);
      assert.equal(f.opcache_preload_user, 'www-data');
      assert.equal(f.ffi_preload, `${process.env.LMSRT_E2E_WORK}/lms_realtime.h`);
      assert.equal(status?.ok, true, JSON.stringify(status));
      assert.equal(status.via, 'ffi.preload');
      assert.equal(status.user, 'www-data', 'preload.php ran as opcache.preload_user');
      assert.equal(status.library, bundled);
      assert.equal(f.library_tried, bundled);
      assert.deepEqual(d.problems, []);
      assert.deepEqual(startup, [], 'nothing logged at start-up');
      break;
    case 'noffi':
      assert.equal(f.scope_loaded, false);
      assert.match(d.problems[0].problem, /FFI is disabled \(ffi\.enable=0\)/);
      assert.ok(d.problems[0].ini.includes(`opcache.preload=${preloadScript}`));
      assert.ok(d.problems[0].ini.some((l) => l.startsWith('ffi.preload=/')));
      break;
    case 'badpreload':
    case 'badpreload-user': {
      assert.equal(f.scope_loaded, false);
      assert.equal(f.opcache_preload, preloadScript);
      assert.equal(status?.ok, false, JSON.stringify(status));
      assert.equal(status.user, 'www-data');
      const why = mode === 'badpreload' ? '/nonexistent/liblms_realtime.so' : 'opcache.preload_user';
      assert.ok(status.error.includes(why), status.error);
      const p = d.problems[0];
      assert.ok(p.problem.startsWith(`opcache.preload ran ${preloadScript} at `), p.problem);
      assert.ok(p.problem.includes(why), p.problem);
      if (mode === 'badpreload-user') assert.match(p.fix, /PHP refuses FFI::load\(\) under opcache\.preload_user/);
      assert.ok(p.ini.some((l) => l.startsWith('ffi.preload=/')), JSON.stringify(p.ini));
      assert.ok(p.ini.includes(`opcache.preload=${preloadScript}`));
      assert.equal(startup.length, 1, `one line in PHP's start-up log: ${startup.join('\n')}`);
      assert.ok(startup[0].includes(why), startup[0]);
      break;
    }
  }
});

test(`${mode}: the admin notice ${expected.live === 'table' ? 'says why, with the real paths' : 'stays away'}`, async () => {
  const page = (await admin.text('/wp-admin/')).body;
  if (expected.live === 'store') {
    assert.ok(!page.includes('lmsrt-notice'), 'no notice on the store path');
    return;
  }
  const notice = page.slice(page.indexOf('lmsrt-notice'), page.indexOf('</div>', page.indexOf('lmsrt-notice')));
  assert.ok(notice.includes('running on legacy polling'), notice);
  assert.ok(notice.includes(`opcache.preload=${preloadScript}`), notice);
  assert.ok(notice.includes(`php ${plugin}/lib/php-ext/bin/write-header.php`), notice);
  if (mode === 'badpreload') assert.ok(notice.includes('/nonexistent/liblms_realtime.so'), notice);
  if (mode === 'noffi') assert.ok(notice.includes('FFI is disabled'), notice);
});

test(`${mode}: an event recorded through the plugin reaches the theme's poll`, async () => {
  await alice.login(setups.alice);
  const nonces = await alice.ajax({ action: 'lmsrt_e2e_nonces' });
  assert.equal(nonces.json?.success, true, nonces.body);
  const n = nonces.json.data;
  const poll = (last, timeout, action = 'lms_ajax_nonce') =>
    alice.ajax({
      action: 'lms_unified_long_poll',
      channel_id: String(channel),
      thread_id: '0',
      last_event_id: String(last),
      timeout: String(timeout),
      event_types: 'all',
      nonce: n[action],
      nonce_action: action,
    });

  // A poll is open when the message is posted: the store holds it (woken by the append), the
  // table holds it too for the theme's client (a query every 250 ms, as the theme's own handler).
  const text = `${mode} ${Date.now()}`;
  const first = poll(0, 5);
  const posted = await alice.ajax({ action: 'lmsrt_demo_post_message', nonce: n.lms_chat_nonce, channel_id: String(channel), thread_id: '0', message: text });
  assert.equal(posted.json?.success, true, `${posted.body}\n${phpErrors()}`);
  const tPosted = Date.now();
  let answer = await first;
  const tFirst = Date.now();
  assert.equal(answer.status, 200, answer.body);
  assert.equal(answer.json?.success, true, `${answer.body}\n${phpErrors()}`);
  const found = (a) => a.json.data.events.find((e) => e.type === 'message_create' && e.data && e.data.message === text);
  let event = found(answer);
  for (let i = 0; !event && i < 5; i++) {
    // The held poll may have answered with older events of the channel first.
    answer = await poll(answer.json.data.last_event_id, 5, 'lms_unified_longpoll');
    assert.equal(answer.json?.success, true, answer.body);
    event = found(answer);
  }
  assert.ok(event, `a poll returned the event: ${answer.body}`);
  assert.ok(tFirst - tPosted < 3000, `the held poll answered soon after the post, not at its 5 s timeout (${tFirst - tPosted} ms after)`);
  assert.equal(event.channel_id, channel);
  assert.equal(typeof event.id, 'number');
  assert.ok(Math.abs(new Date(event.created_at || event.timestamp).getTime() - Date.now()) < 3600e3, `the time parses in JavaScript: ${event.created_at || event.timestamp}`);

  // Nothing new: the theme's poll is held at most 5 s whatever it asks, on the store and on the table.
  const t1 = Date.now();
  const idle = await poll(answer.json.data.last_event_id, 30);
  const held = Date.now() - t1;
  assert.equal(idle.json?.success, true, idle.body);
  assert.deepEqual(idle.json.data.events, []);
  assert.ok(held >= 4500 && held < 6500, `held ${held} ms (the theme's client: at most 5 s, on either path)`);
});
