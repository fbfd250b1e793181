// Load comparison: N simulated clients over D seconds of chat traffic against the real site
// (nginx + php-fpm + MariaDB + the plugin, set up by run-bench.sh).
//
//   node bench.mjs <mode> <clients.json> <out.json>
//
// Modes:
//   legacy         the old front end: one admin-ajax poll every 6 s (start to start), users in
//                  the legacy cohort (the endpoint answers at once)
//   unified-ajax   the real browser client (LMSUnifiedLongPoll) without a daemon: WordPress
//                  serves the long poll itself (admin-ajax waits in the store)
//   unified-daemon the real browser client long-polling lms-longpolld (token from WordPress),
//                  its stream turned off
//   unified-stream the real browser client on lms-longpolld's server-sent events (/v1/stream)
//
// Traffic: every channel gets a message on average every POST_MEAN_S seconds (Poisson), posted
// by a random member through admin-ajax (lmsrt_demo_post_message). Measured: poll requests per
// client per minute, server CPU (php-fpm, nginx, mariadbd, daemon: utime+stime from /proc) per
// delivered message, delivery latency from the post request to receipt (p50, p99), lost and
// duplicate deliveries.
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const [mode, clientsFile, outFile] = process.argv.slice(2);
const env = process.env;
const base = env.LMSRT_E2E_BASE;
const work = env.LMSRT_E2E_WORK;
const DURATION = Number(env.BENCH_SECONDS || 600) * 1000;
const POST_MEAN_S = Number(env.BENCH_POST_MEAN_S || 10);
const WARMUP = 15000;
const DRAIN = 20000;
const { clients, channels } = JSON.parse(fs.readFileSync(clientsFile, 'utf8'));
const head = JSON.parse(env.BENCH_HEAD);
const client = require(env.LMSRT_CLIENT_JS);

// -- server CPU from /proc ------------------------------------------------------------------
const HZ = 100;
function pidsOf(rootPid) {
  const all = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  const parent = new Map();
  for (const pid of all) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(pid), Number(rest[1]));
    } catch (_) {
      /* gone */
    }
  }
  const out = new Set([rootPid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) if (out.has(ppid) && !out.has(pid)) out.add(pid), (grew = true);
  }
  return [...out];
}
function cpuTicks(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime
  } catch (_) {
    return 0;
  }
}
/** Proportional set size (shared pages split between the processes sharing them), kB. */
function pssKb(pid) {
  try {
    const m = /^Pss:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch (_) {
    return 0;
  }
}
function serverPids() {
  const read = (f) => (fs.existsSync(f) ? Number(fs.readFileSync(f, 'utf8').trim()) : null);
  const groups = {
    'php-fpm': read(`${work}/php-fpm.pid`),
    nginx: read(`${work}/nginx/nginx.pid`),
    mariadb: read(`${work}/mysql/mysqld.pid`),
    daemon: read(`${work}/daemon.pid`),
  };
  const out = {};
  for (const [name, pid] of Object.entries(groups)) if (pid) out[name] = pidsOf(pid);
  return out;
}
function cpuSnapshot() {
  const out = {};
  for (const [name, pids] of Object.entries(serverPids())) out[name] = pids.reduce((s, p) => s + cpuTicks(p), 0) / HZ;
  return out;
}

// -- HTTP with the client's cookies, counted ------------------------------------------------
const counts = { poll: 0, post: 0, token: 0, daemon: 0, other: 0 };
function counted(c) {
  return async (url, init = {}) => {
    const u = String(url);
    const body = init.body ? String(init.body) : '';
    if (u.includes('/v1/poll') || u.includes('/v1/stream')) counts.daemon++;
    else if (body.includes('action=lms_unified_long_poll')) counts.poll++;
    else if (body.includes('action=lms_realtime_token')) counts.token++;
    else counts.other++;
    const headers = Object.assign({}, init.headers || {});
    if (!u.includes('/v1/')) headers.Cookie = c.cookie;
    return fetch(new URL(u, base), Object.assign({}, init, { headers }));
  };
}

// -- deliveries -----------------------------------------------------------------------------
const sent = new Map(); // message id -> {t, channel}
const received = new Map(); // `${client}:${message}` -> t
let duplicates = 0;
const latencies = [];
function receive(ci, messageId) {
  const key = `${ci}:${messageId}`;
  if (received.has(key)) {
    duplicates++;
    return;
  }
  received.set(key, Date.now());
}

// -- clients --------------------------------------------------------------------------------
let stopping = false;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function legacyClient(c, ci) {
  let last = head.last_event_id;
  await sleep(Math.random() * 6000);
  while (!stopping) {
    const started = Date.now();
    try {
      const r = await counted(c)('/wp-admin/admin-ajax.php', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' },
        body: new URLSearchParams({ action: 'lms_unified_long_poll', channel_id: String(c.channel), thread_id: '0', last_event_id: String(last), nonce: c.nonce }).toString(),
      });
      const body = await r.json();
      if (body && body.success) {
        for (const e of body.data.events) {
          if (e.type === 'message_create' && e.data && e.data.id) receive(ci, e.data.id);
          if (e.id > last) last = e.id;
        }
      }
    } catch (_) {
      /* counted as a request; retried at the next tick */
    }
    await sleep(Math.max(0, 6000 - (Date.now() - started)));
  }
}

function unifiedClient(c, ci, withDaemon, stream) {
  const fetchImpl = counted(c);
  const opts = {
    ajaxUrl: base + '/wp-admin/admin-ajax.php',
    nonce: c.nonce,
    nonceAction: 'lms_chat_nonce',
    channels: [c.channel],
    cursor: head.cursor,
    lastEventId: head.last_event_id,
    fetch: fetchImpl,
    pool: new client.LMSConnectionPool({ broadcastChannel: null }),
    abTesting: new client.LMSABTesting({ cohort: 'unified', rollout_percent: 100 }),
    onHandlerError: () => {},
  };
  if (withDaemon) {
    opts.daemonUrl = base + '/lmsrt';
    opts.stream = stream;
    opts.tokenProvider = client.createTokenProvider({ url: base + '/wp-admin/admin-ajax.php', action: 'lms_realtime_token', nonce: c.nonce, fetch: fetchImpl });
  }
  const lp = new client.LMSUnifiedLongPoll(opts);
  lp.on('message_create', (e) => e.data && e.data.id && receive(ci, e.data.id));
  return lp;
}

// -- traffic --------------------------------------------------------------------------------
const members = new Map();
clients.forEach((c, i) => members.set(c.channel, [...(members.get(c.channel) || []), i]));
let postErrors = 0;
async function poster(channel, until) {
  while (Date.now() < until && !stopping) {
    await sleep(-Math.log(1 - Math.random()) * POST_MEAN_S * 1000);
    if (Date.now() >= until || stopping) break;
    const list = members.get(channel);
    const c = clients[list[Math.floor(Math.random() * list.length)]];
    const t = Date.now();
    try {
      const r = await counted(c)('/wp-admin/admin-ajax.php', {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' },
        body: new URLSearchParams({ action: 'lmsrt_demo_post_message', channel_id: String(channel), thread_id: '0', message: `bench ${t}`, nonce: c.nonce }).toString(),
      });
      const body = await r.json();
      if (body && body.success) sent.set(body.data.message.id, { t, channel });
      else postErrors++;
    } catch (_) {
      postErrors++;
    }
  }
}

function pct(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

// -- run ------------------------------------------------------------------------------------
const started = Date.now();
const unified = [];
if (mode === 'legacy') clients.forEach((c, i) => legacyClient(c, i));
else
  clients.forEach((c, i) => {
    const lp = unifiedClient(c, i, mode !== 'unified-ajax', mode === 'unified-stream');
    unified.push(lp);
    setTimeout(() => lp.start(), Math.random() * 3000);
  });
await sleep(WARMUP);
const cpu0 = cpuSnapshot();
const counts0 = Object.assign({}, counts);
const t0 = Date.now();
const postUntil = t0 + DURATION - DRAIN;
await Promise.all(channels.map((ch) => poster(ch, postUntil)));
await sleep(Math.max(0, t0 + DURATION - Date.now()));
const cpu1 = cpuSnapshot();
const counts1 = Object.assign({}, counts);
const elapsedMin = (Date.now() - t0) / 60000;
const pss = {};
for (const [name, pids] of Object.entries(serverPids())) pss[name] = Math.round(pids.reduce((s, p) => s + pssKb(p), 0) / 1024);
stopping = true;
await Promise.all(unified.map((lp) => lp.stop().catch(() => {})));

let expected = 0;
let lost = 0;
for (const [id, s] of sent) {
  for (const ci of members.get(s.channel)) {
    expected++;
    const t = received.get(`${ci}:${id}`);
    if (t === undefined) lost++;
    else latencies.push(t - s.t);
  }
}
const cpuDelta = {};
for (const k of Object.keys(cpu1)) cpuDelta[k] = +(cpu1[k] - (cpu0[k] || 0)).toFixed(2);
const cpuTotal = Object.values(cpuDelta).reduce((a, b) => a + b, 0);
const delivered = latencies.length;
const d = (k) => counts1[k] - counts0[k];
const result = {
  mode,
  clients: clients.length,
  channels: channels.length,
  seconds: Math.round(elapsedMin * 60),
  posts: sent.size,
  post_errors: postErrors,
  expected_deliveries: expected,
  delivered,
  lost,
  duplicates,
  requests: { poll: d('poll'), daemon: d('daemon'), token: d('token'), post_and_other: d('other') },
  poll_requests_per_client_per_minute: +((d('poll') + d('daemon') + d('token')) / clients.length / elapsedMin).toFixed(2),
  server_cpu_seconds: cpuDelta,
  server_cpu_seconds_total: +cpuTotal.toFixed(2),
  server_cpu_ms_per_delivered_event: delivered ? +((cpuTotal * 1000) / delivered).toFixed(2) : null,
  latency_ms: { p50: pct(latencies, 0.5), p99: pct(latencies, 0.99), max: latencies.length ? Math.max(...latencies) : null },
  server_pss_mb_at_end: pss,
  started_at: new Date(started).toISOString(),
};
fs.writeFileSync(outFile, JSON.stringify(result, null, 2));
console.log(JSON.stringify(result));
process.exit(0);
