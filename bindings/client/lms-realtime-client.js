/*!
 * lms-realtime browser client.
 *
 * One file of ~2,500 lines on purpose: the WordPress plugin and the daemon's demo page serve it as is
 * (bindings/wordpress/build.sh copies this one file into the plugin's assets/; src/daemon/demo.rs
 * embeds it), with no bundler or build step, and one <script> tag loads it all. Inside, each class
 * has one job and sections follow the layers, lowest first: helpers; the policies (breaker,
 * fallback tiers, router, tab pool, cohort, monitor); the position; HTTP and tokens; the
 * transports (daemon stream, daemon long-poll, WordPress AJAX) behind one interface ("The
 * transport interface"); and the loop, LMSUnifiedLongPoll, which drives them.
 *
 * No dependencies. Loaded as a classic <script> it defines window.LMSRealtime (the whole API)
 * and the LMS* class names as globals; required from Node (the tests) it is a CommonJS module. Nothing here touches window, document, fetch, timers or
 * BroadcastChannel at load time: every class takes them as options, and the defaults are looked
 * up when an object is constructed.
 *
 * The delivery contract this client keeps (DESIGN.md, "The delivery contract"):
 *   - the daemon always gets back exactly the cursor it last returned (or the head cursor the
 *     page rendered), as `cursor=` on a poll or `Last-Event-ID` on a stream, so nothing is lost
 *     or repeated;
 *   - `gap: true` becomes a `resync` event so the app reloads from the source of truth;
 *   - the legacy AJAX tier keeps one `last_event_id` per channel (the highest id received), and
 *     the router drops any event this page has already seen, so a tier switch never shows an
 *     event twice.
 */
(function (root, factory) {
  'use strict';
  const api = factory();
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  } else if (root) {
    root.LMSRealtime = api;
    for (const name of Object.keys(api)) {
      if (name.startsWith('LMS')) root[name] = api[name];
    }
  }
})(typeof globalThis !== 'undefined' ? globalThis : this, function () {
  'use strict';

  const VERSION = '0.1.0';

  /** Event priorities, as in the store: lower is more urgent. */
  const PRIORITY = Object.freeze({ CRITICAL: 1, HIGH: 2, NORMAL: 3, LOW: 4 });

  /** Fallback tiers, healthiest first. The index is the tier's severity. */
  const TIERS = Object.freeze(['long', 'medium', 'short', 'emergency']);

  /**
   * How each tier polls. `waitSeconds` is the daemon's `timeout` parameter (how long it may hold
   * the request); the interval is the least time from the start of one request to the start of
   * the next after a success. The AJAX endpoint has no wait parameter (WordPress decides how long
   * it holds a poll), so on that transport a tier is a request cadence only. When AJAX stands in
   * for a daemon that is down, medium is its best tier. When no daemon is configured, WordPress
   * serves the long poll itself and AJAX may run `long`: a poll that waited re-polls at once, one
   * answered early waits out the rest of `ajaxIntervalMs` (1 s), so a server that answers at once
   * can never be hammered.
   */
  const DEFAULT_TIMINGS = Object.freeze({
    long: Object.freeze({ waitSeconds: 30, daemonIntervalMs: 0, ajaxIntervalMs: 1000 }),
    medium: Object.freeze({ waitSeconds: 10, daemonIntervalMs: 0, ajaxIntervalMs: 10000 }),
    short: Object.freeze({ waitSeconds: 0, daemonIntervalMs: 3000, ajaxIntervalMs: 3000 }),
    emergency: Object.freeze({ waitSeconds: 0, daemonIntervalMs: 1000, ajaxIntervalMs: 1000 }),
  });

  /** Client events that are about the connection rather than data events. */
  const LIFECYCLE = Object.freeze(['connected', 'mode', 'resync', 'error']);

  const LEGACY_ACTION = 'lms_unified_long_poll';
  const TYPE_RE = /^[a-z][a-z0-9_]{0,63}$/;

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  function defaultNow() {
    return Date.now();
  }

  function globalTimers() {
    return {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
    };
  }

  function abortError() {
    const e = new Error('aborted');
    e.name = 'AbortError';
    return e;
  }

  function toInt(v) {
    if (v === null || v === undefined || v === '') return null;
    const n = typeof v === 'number' ? v : Number(v);
    return Number.isFinite(n) ? Math.trunc(n) : null;
  }

  /** A positive integer id or null (the legacy endpoint sends 0 or "" for "none"). */
  function toId(v) {
    const n = toInt(v);
    return n !== null && n > 0 ? n : null;
  }

  /** Unix seconds or milliseconds to milliseconds (anything below 1e11 is taken as seconds). */
  function toMillis(v) {
    if (typeof v === 'string' && v !== '' && !/^-?\d+(\.\d+)?$/.test(v)) {
      const t = Date.parse(v);
      return Number.isFinite(t) ? t : null;
    }
    const n = toInt(v);
    if (n === null) return null;
    return Math.abs(n) < 1e11 ? n * 1000 : n;
  }

  function safeJson(text) {
    if (typeof text !== 'string' || text === '') return undefined;
    try {
      return JSON.parse(text);
    } catch (_) {
      return undefined;
    }
  }

  function modeOrNull(m) {
    return typeof m === 'string' && TIERS.includes(m) ? m : null;
  }

  /** The row of hints and timings a transport uses: the stream reads the daemon, so it is the daemon's. */
  function hintKey(transport) {
    return transport === 'stream' ? 'daemon' : transport;
  }

  /**
   * `Retry-After` as milliseconds from now: delta-seconds or an HTTP date. Null when absent or
   * unreadable.
   */
  function parseRetryAfter(value, now) {
    if (value === null || value === undefined || value === '') return null;
    const s = String(value).trim();
    if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
    const t = Date.parse(s);
    return Number.isFinite(t) ? Math.max(0, t - now) : null;
  }

  /**
   * Reads a cursor string. Cursors are opaque to clients and this client never builds or edits
   * one it sends to the daemon; it reads them for two conservative decisions only: where the
   * legacy AJAX tier starts (the lowest lane, which the store documents as the value to hand a
   * legacy client) and which incoming events this page already has (an id at or below its lane).
   * Returns null for a format it does not know, and callers then fall back to the safe choice.
   */
  function parseCursor(s) {
    if (typeof s !== 'string') return null;
    if (/^\d{1,15}$/.test(s)) {
      const n = Number(s);
      return { epoch: null, lanes: [n, n, n, n] };
    }
    const m = /^v1\.([0-9a-fA-F]{8})\.(\d{1,19})\.(\d{1,19})\.(\d{1,19})\.(\d{1,19})$/.exec(s);
    if (!m) return null;
    const lanes = m.slice(2, 6).map(Number);
    if (!lanes.every(Number.isSafeInteger)) return null;
    return { epoch: m[1].toLowerCase(), lanes };
  }

  /** The daemon's event shape, exactly these fields, numbers as numbers. */
  function normalizeDaemonEvent(e) {
    const src = e && typeof e === 'object' ? e : {};
    const priority = toInt(src.priority);
    return {
      id: toInt(src.id),
      event_type: typeof src.event_type === 'string' ? src.event_type : String(src.type ?? ''),
      priority: priority >= 1 && priority <= 4 ? priority : PRIORITY.NORMAL,
      channel_id: toId(src.channel_id),
      message_id: toId(src.message_id),
      thread_id: toId(src.thread_id),
      user_id: toInt(src.user_id),
      data: src.data && typeof src.data === 'object' ? src.data : {},
      timestamp: toInt(src.timestamp),
      expires_at: toInt(src.expires_at),
    };
  }

  /**
   * Maps a legacy AJAX event (`id, type, priority, message_id, thread_id, channel_id, user_id,
   * data, timestamp` in unix seconds, numbers possibly as strings) to the daemon's shape.
   */
  function mapLegacyEvent(e) {
    const src = e && typeof e === 'object' ? e : {};
    let data = src.data;
    if (typeof data === 'string') data = safeJson(data);
    if (!data || typeof data !== 'object') data = {};
    const priority = toInt(src.priority);
    return {
      id: toInt(src.id),
      event_type: String(src.type ?? src.event_type ?? ''),
      priority: priority >= 1 && priority <= 4 ? priority : PRIORITY.NORMAL,
      channel_id: toId(src.channel_id),
      message_id: toId(src.message_id),
      thread_id: toId(src.thread_id),
      user_id: toInt(src.user_id),
      data,
      timestamp: toMillis(src.timestamp),
      expires_at: toMillis(src.expires_at),
    };
  }

  /** A tiny event emitter whose handler errors never escape into the poll loop. */
  class Emitter {
    constructor(onHandlerError) {
      this._map = new Map();
      this._onHandlerError = onHandlerError;
    }
    on(type, fn) {
      if (typeof fn !== 'function') throw new TypeError('handler must be a function');
      if (!this._map.has(type)) this._map.set(type, []);
      this._map.get(type).push(fn);
      return () => this.off(type, fn);
    }
    off(type, fn) {
      const list = this._map.get(type);
      if (!list) return;
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    emit(type, payload) {
      const list = this._map.get(type);
      if (!list || list.length === 0) return 0;
      for (const fn of list.slice()) {
        try {
          fn(payload);
        } catch (err) {
          this._onHandlerError(err, type);
        }
      }
      return list.length;
    }
  }

  function defaultHandlerError(err, type) {
    if (typeof console !== 'undefined' && console.error) {
      console.error('[lms-realtime] handler for "' + type + '" threw', err);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSCircuitBreaker

  /**
   * closed → open after `failureThreshold` consecutive failures; open → half-open once the open
   * period has passed; half-open admits one probe; the probe's success closes the breaker, its
   * failure re-opens it with the period doubled (up to `maxOpenMs`). A close resets the period.
   */
  class LMSCircuitBreaker {
    constructor(options = {}) {
      this.failureThreshold = Math.max(1, options.failureThreshold ?? 3);
      this.baseOpenMs = Math.max(1, options.openMs ?? 5000);
      this.maxOpenMs = Math.max(this.baseOpenMs, options.maxOpenMs ?? 120000);
      this._now = options.now || defaultNow;
      this._state = 'closed';
      this._failures = 0;
      this._openMs = this.baseOpenMs;
      this._openedAt = 0;
      this._probeOut = false;
      this.opens = 0;
    }

    /** 'closed', 'open' or 'half-open' (an open breaker turns half-open when its period ends). */
    get state() {
      if (this._state === 'open' && this._now() - this._openedAt >= this._openMs) {
        this._state = 'half-open';
        this._probeOut = false;
      }
      return this._state;
    }

    get failures() {
      return this._failures;
    }

    /** The current open period in ms. */
    get openPeriodMs() {
      return this._openMs;
    }

    /** True if a request may go out now. In half-open this hands out the single probe. */
    allowRequest() {
      const s = this.state;
      if (s === 'closed') return true;
      if (s === 'half-open' && !this._probeOut) {
        this._probeOut = true;
        return true;
      }
      return false;
    }

    recordSuccess() {
      this._state = 'closed';
      this._failures = 0;
      this._openMs = this.baseOpenMs;
      this._probeOut = false;
    }

    recordFailure() {
      const s = this.state;
      if (s === 'half-open') {
        this._openMs = Math.min(this.maxOpenMs, this._openMs * 2);
        this._open();
      } else if (s === 'closed') {
        this._failures += 1;
        if (this._failures >= this.failureThreshold) this._open();
      }
      // While open: a late failure of a request admitted earlier changes nothing.
    }

    /** A probe ended without a verdict (aborted): let the next request probe instead. */
    releaseProbe() {
      if (this._state === 'half-open') this._probeOut = false;
    }

    /** Milliseconds until an open breaker turns half-open; 0 when not open. */
    msUntilHalfOpen() {
      if (this.state !== 'open') return 0;
      return Math.max(0, this._openedAt + this._openMs - this._now());
    }

    reset() {
      this.recordSuccess();
    }

    snapshot() {
      return { state: this.state, failures: this._failures, openPeriodMs: this._openMs, opens: this.opens };
    }

    _open() {
      this._state = 'open';
      this._openedAt = this._now();
      this._probeOut = false;
      this._failures = 0;
      this.opens += 1;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSFallbackManager

  /**
   * Picks the polling tier and the delay after a failure.
   *
   * The tier is the most severe of: the server's latest mode hint for the transport in use, the
   * client's own failure level, and (for AJAX standing in for the daemon) medium. AJAX as the
   * primary transport (no daemon configured: WordPress serves the long poll) may run `long`. The failure
   * level rises to medium/short/emergency after `thresholds` consecutive failures and steps back
   * one level after every `recoverAfter` consecutive successes, so a flaky path (a proxy that
   * cuts 30 s requests) does not flap straight back to long-polling. The delay after the n-th
   * consecutive failure is min(maxDelayMs, baseDelayMs * 2^(n-1)) less up to `jitter` of it:
   * always within [exp * (1 - jitter), exp].
   *
   * The stream (server-sent events, issue 20) is the daemon's best transport, used only while
   * the daemon's tier is long. A stream that failed `streamFailureLimit` times in a row, or once
   * without a single byte (a proxy that buffers it), is set aside for `streamCooldownMs` and the
   * daemon long-poll serves meanwhile; each further demotion without a healthy stream between
   * doubles the cool-down, up to `streamMaxCooldownMs`. The stream shares the daemon's mode hint
   * and timings (one daemon, two ways to read it).
   */
  class LMSFallbackManager {
    constructor(options = {}) {
      this.thresholds = (options.thresholds || [2, 4, 6]).slice(0, 3);
      this.recoverAfter = Math.max(1, options.recoverAfter ?? 3);
      this.baseDelayMs = Math.max(1, options.baseDelayMs ?? 1000);
      this.maxDelayMs = Math.max(this.baseDelayMs, options.maxDelayMs ?? 30000);
      this.jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
      this._random = options.random || Math.random;
      this.timings = Object.assign({}, DEFAULT_TIMINGS, options.timings || {});
      this._hints = { daemon: 0, ajax: 0 };
      this._level = 0;
      this._failures = 0;
      this._streak = 0;
      this._now = options.now || defaultNow;
      this.streamFailureLimit = Math.max(1, options.streamFailureLimit ?? 2);
      this.streamCooldownMs = Math.max(0, options.streamCooldownMs ?? 60000);
      this.streamMaxCooldownMs = Math.max(this.streamCooldownMs, options.streamMaxCooldownMs ?? 600000);
      this._resetStream();
      /** How many times the stream was set aside. */
      this.streamDemotions = 0;
    }

    get consecutiveFailures() {
      return this._failures;
    }

    /** The level from failures alone, as a tier name. */
    get failureTier() {
      return TIERS[this._level];
    }

    /** The tier the daemon transport would use now. */
    get tier() {
      return this.tierFor('daemon');
    }

    /** The tier for `transport`; `primary` says AJAX is the transport of choice, not a stand-in. */
    tierFor(transport, primary = false) {
      let level = Math.max(this._level, this._hints[hintKey(transport)] || 0);
      if (transport === 'ajax' && !primary) level = Math.max(level, 1);
      return TIERS[level];
    }

    /** `{tier, transport, waitSeconds, intervalMs}` for the next request on `transport`. */
    plan(transport, primary = false) {
      const tier = this.tierFor(transport, primary);
      const t = this.timings[tier];
      if (hintKey(transport) === 'daemon') {
        return { tier, transport, waitSeconds: t.waitSeconds, intervalMs: t.daemonIntervalMs };
      }
      return { tier, transport, waitSeconds: null, intervalMs: t.ajaxIntervalMs ?? 0 };
    }

    /** Sets the server's hint for a transport; an unknown or missing mode means no constraint. */
    setServerHint(transport, mode) {
      const i = TIERS.indexOf(mode);
      this._hints[hintKey(transport)] = i >= 0 ? i : 0;
    }

    /** Whether the stream may be opened now: the daemon's tier is long and no cool-down runs. */
    streamAllowed() {
      return this.tierFor('daemon') === 'long' && this._now() >= this._streamUntil;
    }

    /** Milliseconds left in the stream's cool-down (0: none). */
    streamCooldownLeftMs() {
      return Math.max(0, this._streamUntil - this._now());
    }

    /** The stream delivered: it is healthy again. */
    recordStreamSuccess() {
      this._streamFails = 0;
      this._streamCooldown = this.streamCooldownMs;
    }

    /**
     * A stream that had opened failed; `silent`: it never delivered a byte. Returns true when
     * this set the stream aside.
     */
    recordStreamFailure(silent) {
      this._streamFails += 1;
      if (!silent && this._streamFails < this.streamFailureLimit) return false;
      this._streamFails = 0;
      this._streamUntil = this._now() + this._streamCooldown;
      this._streamCooldown = Math.min(this.streamMaxCooldownMs, this._streamCooldown * 2);
      this.streamDemotions += 1;
      return true;
    }

    recordSuccess({ transport = 'daemon', mode } = {}) {
      this.setServerHint(transport, mode);
      this._failures = 0;
      this._streak += 1;
      if (this._level > 0 && this._streak >= this.recoverAfter) {
        this._level -= 1;
        this._streak = 0;
      }
    }

    /** Records a failure and returns the backoff delay in ms before the next attempt. */
    recordFailure({ transport = 'daemon', mode } = {}) {
      if (modeOrNull(mode)) this.setServerHint(transport, mode);
      this._streak = 0;
      this._failures += 1;
      this._level = Math.max(this._level, this._levelFor(this._failures));
      return this.backoffDelay(this._failures);
    }

    backoffDelay(n) {
      const exp = Math.min(this.maxDelayMs, this.baseDelayMs * Math.pow(2, Math.max(0, n - 1)));
      const r = Math.min(1, Math.max(0, Number(this._random()) || 0));
      return Math.round(exp * (1 - this.jitter * r));
    }

    reset() {
      this._hints = { daemon: 0, ajax: 0 };
      this._level = 0;
      this._failures = 0;
      this._streak = 0;
      this._resetStream();
    }

    _resetStream() {
      this._streamFails = 0;
      this._streamUntil = 0;
      this._streamCooldown = this.streamCooldownMs;
    }

    _levelFor(failures) {
      let level = 0;
      for (const t of this.thresholds) if (failures >= t) level += 1;
      return level;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSEventRouter

  /**
   * Delivers events to handlers by type, most urgent first, each event id at most once.
   *
   * A batch is dispatched in priority order (CRITICAL first), by id within a priority. For one
   * event, its type's handlers and the '*' handlers run in order of the priority they registered
   * with (`on(type, fn, {priority})`, default NORMAL), then registration order. Ids seen are kept
   * in an LRU of `dedupCapacity` entries; an id seen again (another tier, another tab's relay, a
   * replay after a reconnect) is dropped.
   */
  class LMSEventRouter {
    constructor(options = {}) {
      this.dedupCapacity = Math.max(1, options.dedupCapacity ?? 5000);
      this._onHandlerError = options.onHandlerError || defaultHandlerError;
      this._handlers = new Map();
      this._seen = new Map();
      this._seq = 0;
      this.delivered = 0;
      this.duplicates = 0;
    }

    on(type, handler, options = {}) {
      if (typeof type !== 'string' || type === '') throw new TypeError('type must be a non-empty string');
      if (typeof handler !== 'function') throw new TypeError('handler must be a function');
      const priority = toInt(options.priority) ?? PRIORITY.NORMAL;
      if (!this._handlers.has(type)) this._handlers.set(type, []);
      this._handlers.get(type).push({ handler, priority, seq: this._seq++ });
      return () => this.off(type, handler);
    }

    off(type, handler) {
      const list = this._handlers.get(type);
      if (!list) return;
      const i = list.findIndex((h) => h.handler === handler);
      if (i >= 0) list.splice(i, 1);
    }

    /** Whether an id is in the recent-ids memory. */
    hasSeen(id) {
      return this._seen.has(id);
    }

    get seenCount() {
      return this._seen.size;
    }

    /** Forgets every id (after the store was recreated and ids restarted). */
    clearSeen() {
      this._seen.clear();
    }

    /**
     * Dispatches a batch; returns the events actually delivered (duplicates removed), in the
     * order they were delivered.
     */
    dispatch(events) {
      const list = Array.isArray(events) ? events : [events];
      const order = list
        .map((e, i) => ({ e, i }))
        .filter((x) => x.e && typeof x.e === 'object')
        .sort((a, b) => {
          const pa = a.e.priority ?? PRIORITY.NORMAL;
          const pb = b.e.priority ?? PRIORITY.NORMAL;
          if (pa !== pb) return pa - pb;
          if (a.e.id != null && b.e.id != null && a.e.id !== b.e.id) return a.e.id - b.e.id;
          return a.i - b.i;
        });
      const out = [];
      for (const { e } of order) {
        if (e.id !== null && e.id !== undefined) {
          if (this._seen.has(e.id)) {
            // Refresh its place so a busy overlap keeps the id remembered.
            this._seen.delete(e.id);
            this._seen.set(e.id, true);
            this.duplicates += 1;
            continue;
          }
          this._remember(e.id);
        }
        out.push(e);
        this.delivered += 1;
        this._deliver(e);
      }
      return out;
    }

    _remember(id) {
      this._seen.set(id, true);
      while (this._seen.size > this.dedupCapacity) {
        this._seen.delete(this._seen.keys().next().value);
      }
    }

    _deliver(e) {
      const own = this._handlers.get(e.event_type) || [];
      const any = e.event_type === '*' ? [] : this._handlers.get('*') || [];
      const hs = own.concat(any).sort((a, b) => a.priority - b.priority || a.seq - b.seq);
      for (const h of hs) {
        try {
          h.handler(e);
        } catch (err) {
          this._onHandlerError(err, e.event_type);
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSConnectionPool

  function defaultBroadcastFactory() {
    return typeof BroadcastChannel === 'function' ? (name) => new BroadcastChannel(name) : null;
  }

  function randomId(random) {
    let s = '';
    for (let i = 0; i < 12; i++) s += Math.floor(random() * 36).toString(36);
    return s;
  }

  /** One subscriber's place in the pool: leader (polls and relays) or follower (listens). */
  class PoolMember {
    constructor(pool, key, id, handlers) {
      this.pool = pool;
      this.key = key;
      this.id = id;
      this.handlers = handlers || {};
      this.role = 'candidate';
      this.leaderId = null;
      this.leaderAt = 0;
      this.claimedAt = 0;
      this.lastSeen = 0;
      this.electionTimer = null;
      this.left = false;
    }
    get isLeader() {
      return this.role === 'leader' && !this.left;
    }
    /** Leader only: relays a batch state to the followers of this key. */
    publish(state) {
      if (!this.isLeader) return false;
      this.pool._post({ t: 'batch', key: this.key, member: this.id, at: this.claimedAt, state });
      return true;
    }
    leave() {
      this.pool._leave(this);
    }
  }

  /**
   * Caps concurrent requests and shares one poll between the tabs of a browser.
   *
   * Within a tab the cap is exact: `acquire()` hands out at most `maxConnections` slots (FIFO
   * queue). Across tabs each pool broadcasts how many slots it holds and counts its peers' slots
   * against the cap; that census is best-effort (two tabs can race), the daemon's per-user lease
   * is the hard limit and answers 429, which the client honours.
   *
   * Sharing: every client joins with a key (its subscription). Members with the same key elect
   * one leader over the BroadcastChannel (and in-process for clients of the same tab); only the
   * leader polls, and it relays each batch with the cursor it got, so a follower that takes over
   * (leader's `bye`, or no heartbeat for `leaderTimeoutMs`) resumes from the last cursor. Claims
   * collide harmlessly: the newer claim wins (ties: the lower member id), the other steps down
   * and aborts its request, and the event router's de-duplication hides any overlap. Without BroadcastChannel (`broadcastChannel: null`) tabs
   * poll on their own; clients inside one tab still share.
   */
  class LMSConnectionPool {
    constructor(options = {}) {
      this.maxConnections = Math.max(1, options.maxConnections ?? 3);
      this._bcFactory = options.broadcastChannel !== undefined ? options.broadcastChannel : defaultBroadcastFactory();
      this.channelName = options.channelName || 'lms-realtime';
      const timers = globalTimers();
      this._setTimeout = options.setTimeout || timers.setTimeout;
      this._clearTimeout = options.clearTimeout || timers.clearTimeout;
      this._now = options.now || defaultNow;
      this._random = options.random || Math.random;
      this.tabId = options.tabId || randomId(this._random);
      this.heartbeatMs = options.heartbeatMs ?? 2000;
      this.leaderTimeoutMs = options.leaderTimeoutMs ?? 3 * this.heartbeatMs;
      this.electionMs = options.electionMs ?? 300;
      this._active = 0;
      this._queue = [];
      this._peers = new Map();
      this._members = new Set();
      this._seq = 0;
      this._bc = null;
      this._hbTimer = null;
      this._lastAnnounced = -1;
    }

    /** Slots held by this tab. */
    get active() {
      return this._active;
    }

    /** Requests waiting for a slot in this tab. */
    get queued() {
      return this._queue.length;
    }

    /** Whether tabs can share (a BroadcastChannel is available). */
    get shared() {
      return !!this._bcFactory;
    }

    /** Slots other tabs reported holding (peers silent for `leaderTimeoutMs` are dropped). */
    othersActive() {
      const now = this._now();
      let n = 0;
      for (const [tab, p] of this._peers) {
        if (now - p.seen > this.leaderTimeoutMs) this._peers.delete(tab);
        else n += p.active;
      }
      return n;
    }

    /**
     * Resolves with a release function once a slot is free. Rejects with an AbortError if
     * `signal` aborts first. Call the release function exactly once (extra calls are ignored).
     */
    acquire(signal) {
      return new Promise((resolve, reject) => {
        if (signal && signal.aborted) {
          reject(abortError());
          return;
        }
        const w = { resolve, reject, signal, onAbort: null };
        if (signal) {
          w.onAbort = () => {
            const i = this._queue.indexOf(w);
            if (i >= 0) this._queue.splice(i, 1);
            reject(abortError());
          };
          signal.addEventListener('abort', w.onAbort, { once: true });
        }
        this._queue.push(w);
        this._drain();
      });
    }

    /** Joins the group of members sharing `key`; see PoolMember. */
    join(key, handlers) {
      const m = new PoolMember(this, String(key), this.tabId + ':' + ++this._seq, handlers);
      this._members.add(m);
      this._open();
      const local = this._localLeader(m.key);
      if (local) {
        m.role = 'follower';
        m.leaderId = local.id;
        m.leaderAt = local.claimedAt;
        m.lastSeen = this._now();
      } else if (!this._bc) {
        m.role = 'leader';
        m.leaderId = m.id;
        m.claimedAt = this._now();
      } else {
        // Ask the other tabs who leads; claim if nobody answers within electionMs.
        m.electionTimer = this._setTimeout(() => {
          m.electionTimer = null;
          if (!m.left && m.role === 'candidate') this._claim(m);
        }, this.electionMs);
        this._post({ t: 'hello', from: this.tabId });
      }
      return m;
    }

    /** Leaves every member and closes the channel. */
    close() {
      for (const m of Array.from(this._members)) this._leave(m);
      this._shutdown();
    }

    // -- internals ---------------------------------------------------------------------------

    _localLeader(key) {
      for (const x of this._members) if (x.key === key && x.role === 'leader' && !x.left) return x;
      return null;
    }

    _open() {
      if (this._bc || !this._bcFactory) {
        this._armHeartbeat();
        return;
      }
      try {
        this._bc = this._bcFactory(this.channelName);
      } catch (_) {
        this._bc = null;
      }
      if (this._bc) this._bc.onmessage = (ev) => this._receive(ev && ev.data, false);
      this._armHeartbeat();
    }

    _armHeartbeat() {
      if (this._hbTimer !== null || !this._bc) return;
      this._hbTimer = this._setTimeout(() => {
        this._hbTimer = null;
        this._tick();
        if (this._bc) this._armHeartbeat();
      }, this.heartbeatMs);
    }

    _shutdown() {
      if (this._hbTimer !== null) this._clearTimeout(this._hbTimer);
      this._hbTimer = null;
      if (this._bc) {
        try {
          this._bc.postMessage({ v: 1, t: 'gone', from: this.tabId });
          this._bc.close();
        } catch (_) {
          /* closing is best-effort */
        }
      }
      this._bc = null;
      this._peers.clear();
      this._lastAnnounced = -1;
    }

    _maybeShutdown() {
      if (this._members.size === 0 && this._active === 0 && this._queue.length === 0) this._shutdown();
    }

    _post(msg) {
      msg.v = 1;
      if (!msg.from) msg.from = this.tabId;
      if (this._bc) {
        try {
          this._bc.postMessage(msg);
        } catch (_) {
          /* a closed channel: peers will time us out */
        }
      }
      // Members in this tab hear it too (a BroadcastChannel does not echo to its sender), on a
      // copy, as another tab would.
      const copy = typeof structuredClone === 'function' ? structuredClone(msg) : JSON.parse(JSON.stringify(msg));
      Promise.resolve().then(() => this._receive(copy, true));
    }

    _heartbeat() {
      if (!this._bc) return;
      const leads = [];
      for (const m of this._members) if (m.isLeader) leads.push([m.key, m.id, m.claimedAt]);
      this._lastAnnounced = this._active;
      try {
        this._bc.postMessage({ v: 1, t: 'hb', from: this.tabId, active: this._active, leads });
      } catch (_) {
        /* see _post */
      }
    }

    _tick() {
      const now = this._now();
      for (const m of this._members) {
        if (m.role !== 'follower') continue;
        if (this._localLeaderId(m.key) === m.leaderId) m.lastSeen = now;
        else if (now - m.lastSeen > this.leaderTimeoutMs) this._claim(m);
      }
      this._heartbeat();
      this._drain();
    }

    _localLeaderId(key) {
      const l = this._localLeader(key);
      return l ? l.id : null;
    }

    _receive(msg, local) {
      if (!msg || msg.v !== 1) return;
      if (!local && msg.from === this.tabId) return;
      const now = this._now();
      switch (msg.t) {
        case 'hello':
          if (!local) this._heartbeat();
          break;
        case 'hb':
          this._peers.set(msg.from, { active: Math.max(0, toInt(msg.active) || 0), seen: now });
          for (const l of Array.isArray(msg.leads) ? msg.leads : []) this._sawLeader(l[0], l[1], l[2]);
          this._drain();
          break;
        case 'gone':
          this._peers.delete(msg.from);
          this._drain();
          break;
        case 'claim':
          this._sawLeader(msg.key, msg.member, msg.at);
          break;
        case 'bye':
          for (const m of Array.from(this._members)) {
            if (m.key === msg.key && m.role === 'follower' && m.leaderId === msg.member) this._claim(m);
          }
          break;
        case 'batch':
          this._sawLeader(msg.key, msg.member, msg.at);
          for (const m of Array.from(this._members)) {
            if (m.key !== msg.key || m.id === msg.member || m.role !== 'follower' || m.left) continue;
            if (typeof m.handlers.onBatch === 'function') m.handlers.onBatch(msg.state);
          }
          break;
        default:
          break;
      }
    }

    /**
     * Someone (`id`, claimed at `at`) leads `key`: follow it. Two leaders resolve to the newer
     * claim (ties to the lower id). Newest-wins matters for background tabs: browsers throttle
     * their timers, so a hidden leader's heartbeat can stall, a visible follower takes over,
     * and when the old leader wakes up it must yield rather than take the lead back.
     */
    _sawLeader(key, id, at) {
      if (typeof key !== 'string' || typeof id !== 'string') return;
      const claimed = Number(at) || 0;
      const now = this._now();
      for (const m of Array.from(this._members)) {
        if (m.key !== key || m.id === id || m.left) continue;
        if (m.role === 'leader') {
          if (claimed > m.claimedAt || (claimed === m.claimedAt && id < m.id)) {
            this._setRole(m, 'follower', id);
            m.leaderAt = claimed;
          } else {
            // Ours is newer: say so, and the other leader steps down when it hears it.
            this._post({ t: 'claim', key: m.key, member: m.id, at: m.claimedAt });
          }
        } else if (m.role === 'follower' && m.leaderId !== id && claimed < m.leaderAt) {
          // A stale claim from a leader that has since been replaced: keep following the newer one.
          continue;
        } else {
          if (m.electionTimer !== null) {
            this._clearTimeout(m.electionTimer);
            m.electionTimer = null;
          }
          m.role = 'follower';
          m.leaderId = id;
          m.leaderAt = claimed;
          m.lastSeen = now;
        }
      }
    }

    _claim(m) {
      if (m.left) return;
      if (m.electionTimer !== null) {
        this._clearTimeout(m.electionTimer);
        m.electionTimer = null;
      }
      m.claimedAt = this._now();
      this._setRole(m, 'leader', m.id);
      this._post({ t: 'claim', key: m.key, member: m.id, at: m.claimedAt });
    }

    _setRole(m, role, leaderId) {
      const was = m.isLeader;
      m.role = role;
      m.leaderId = leaderId;
      m.lastSeen = this._now();
      if (was !== m.isLeader && typeof m.handlers.onLeadership === 'function') {
        m.handlers.onLeadership(m.isLeader);
      }
    }

    _leave(m) {
      if (m.left) return;
      const wasLeader = m.isLeader;
      m.left = true;
      if (m.electionTimer !== null) this._clearTimeout(m.electionTimer);
      m.electionTimer = null;
      this._members.delete(m);
      if (wasLeader) this._post({ t: 'bye', key: m.key, member: m.id });
      this._maybeShutdown();
    }

    _drain() {
      while (this._queue.length > 0 && this._active + this.othersActive() < this.maxConnections) {
        const w = this._queue.shift();
        if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
        this._active += 1;
        let released = false;
        w.resolve(() => {
          if (released) return;
          released = true;
          this._active -= 1;
          this._drain();
          this._announce();
          this._maybeShutdown();
        });
      }
      this._announce();
    }

    _announce() {
      if (this._bc && this._lastAnnounced !== this._active) this._heartbeat();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSABTesting

  /**
   * The cohort the server assigned (bucketed by a stable hash on the server, so it never flips):
   * `{cohort: 'unified'|'legacy', rollout_percent}` rendered into the page. Anything unexpected
   * means legacy, the path that always works.
   */
  class LMSABTesting {
    constructor(config = {}) {
      const c = config || {};
      this.cohort = c.cohort === 'unified' ? 'unified' : 'legacy';
      const p = Number(c.rollout_percent ?? c.rolloutPercent ?? 0);
      this.rolloutPercent = Number.isFinite(p) ? Math.min(100, Math.max(0, p)) : 0;
    }

    useUnified() {
      return this.cohort === 'unified';
    }

    snapshot() {
      return { cohort: this.cohort, rollout_percent: this.rolloutPercent };
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSPerformanceMonitor

  function percentile(sorted, p) {
    if (sorted.length === 0) return null;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[i];
  }

  /**
   * Client-side numbers: delivery latency (event timestamp → receipt, over the last
   * `maxSamples` events), request rate over a sliding `windowMs`, errors by code, reconnects.
   */
  class LMSPerformanceMonitor {
    constructor(options = {}) {
      this._now = options.now || defaultNow;
      this.windowMs = Math.max(1000, options.windowMs ?? 60000);
      this.maxSamples = Math.max(1, options.maxSamples ?? 500);
      this.reset();
    }

    reset() {
      this._latencies = [];
      this._requestTimes = [];
      this.requests = 0;
      this.events = 0;
      this.errors = 0;
      this.errorsByCode = {};
      this.reconnects = 0;
    }

    recordRequest() {
      this.requests += 1;
      this._requestTimes.push(this._now());
      this._trim();
    }

    recordEvent(event, receivedAt) {
      this.events += 1;
      const ts = event && event.timestamp;
      if (typeof ts !== 'number' || !Number.isFinite(ts)) return;
      const at = receivedAt ?? this._now();
      this._latencies.push(Math.max(0, at - ts));
      if (this._latencies.length > this.maxSamples) this._latencies.shift();
    }

    recordError(code) {
      this.errors += 1;
      const k = code ? String(code) : 'unknown';
      this.errorsByCode[k] = (this.errorsByCode[k] || 0) + 1;
    }

    recordReconnect() {
      this.reconnects += 1;
    }

    snapshot() {
      this._trim();
      const lat = this._latencies.slice().sort((a, b) => a - b);
      const sum = lat.reduce((a, b) => a + b, 0);
      return {
        requests: this.requests,
        requestsPerMinute: Math.round((this._requestTimes.length * 60000) / this.windowMs),
        events: this.events,
        errors: this.errors,
        errorsByCode: Object.assign({}, this.errorsByCode),
        errorRate: this.requests ? this.errors / this.requests : 0,
        reconnects: this.reconnects,
        latency: {
          count: lat.length,
          avg: lat.length ? sum / lat.length : null,
          p50: percentile(lat, 50),
          p95: percentile(lat, 95),
          p99: percentile(lat, 99),
          max: lat.length ? lat[lat.length - 1] : null,
        },
      };
    }

    _trim() {
      const cutoff = this._now() - this.windowMs;
      let i = 0;
      while (i < this._requestTimes.length && this._requestTimes[i] <= cutoff) i++;
      if (i) this._requestTimes.splice(0, i);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // CursorPosition

  /**
   * Where the page is in the stream: the daemon cursor last returned (or rendered), the legacy
   * tier's highest id per channel, and the highest lanes of every cursor held since the last
   * reset (the "cover"), which says which incoming events the page already has.
   */
  class CursorPosition {
    constructor(cursor, lastEventId) {
      this._initialLastEventId = toInt(lastEventId);
      this.reset(cursor);
    }

    /** The cursor the daemon last returned (or the initial one); null when none is held. */
    get cursor() {
      return this._cursor;
    }

    /** Starts over from `cursor` (empty: none); ids received on the legacy tier are forgotten. */
    reset(cursor) {
      this._cursor = cursor === undefined || cursor === null || cursor === '' ? null : String(cursor);
      this._legacyIds = new Map();
      this._cover = null;
      this._noteCursor(this._cursor);
    }

    /**
     * A gap: what the page held no longer says which events it has. Returns true when the store
     * was recreated (the new cursor's epoch differs), so ids remembered elsewhere mean nothing.
     */
    restart(cursor) {
      const next = parseCursor(cursor);
      const cover = this._cover;
      this._cover = null;
      return !!(next && cover && next.epoch && cover.epoch && next.epoch !== cover.epoch);
    }

    /** True if the page already has this event: its id is at or below its lane in a cursor held. */
    covers(e) {
      if (!this._cover || typeof e.id !== 'number') return false;
      const p = e.priority;
      const lane = p >= 1 && p <= 4 ? this._cover.lanes[p - 1] : Math.min.apply(null, this._cover.lanes);
      return e.id <= lane;
    }

    /** Takes the position a batch leads to: its cursor (if any) and its legacy ids (highest wins). */
    advance(cursor, legacyIds) {
      if (typeof cursor === 'string') {
        this._cursor = cursor;
        this._noteCursor(cursor);
      }
      if (!legacyIds || typeof legacyIds !== 'object') return;
      for (const k of Object.keys(legacyIds)) {
        const ch = toId(k);
        const id = toInt(legacyIds[k]);
        if (ch === null || id === null) continue;
        this._legacyIds.set(ch, Math.max(this._legacyIds.get(ch) ?? id, id));
      }
    }

    /** Where the legacy tier starts for a channel: the safe floor from the cursor, or further. */
    legacyPosition(ch) {
      const c = parseCursor(this._cursor);
      const floor = c ? Math.min.apply(null, c.lanes) : this._initialLastEventId ?? 0;
      return Math.max(this._legacyIds.get(ch) ?? floor, floor);
    }

    /** `{channel_id: last_event_id}` for the legacy tier. */
    lastEventIds(channels) {
      const out = {};
      for (const ch of channels) out[ch] = this.legacyPosition(ch);
      return out;
    }

    /** The legacy ids received, `{channel_id: id}` (for relaying to other tabs). */
    legacyIds() {
      return Object.fromEntries(this._legacyIds);
    }

    /**
     * The cursor for the daemon: the one it last returned (or the page's head cursor). Only a
     * client that never held one sends the legacy integer it has (accepted by the daemon as a
     * sequential cursor), or nothing.
     */
    daemonCursor(channels) {
      if (this._cursor !== null) return this._cursor;
      if (this._legacyIds.size > 0 || this._initialLastEventId !== null) {
        return String(Math.min.apply(null, channels.map((ch) => this.legacyPosition(ch))));
      }
      return null;
    }

    /** Keeps the highest lane positions of every cursor held since the last reset. */
    _noteCursor(cursor) {
      const c = parseCursor(cursor);
      if (!c) return;
      const cover = this._cover;
      if (!cover || (c.epoch && cover.epoch && c.epoch !== cover.epoch)) {
        this._cover = { epoch: c.epoch, lanes: c.lanes.slice() };
        return;
      }
      cover.lanes = cover.lanes.map((v, i) => Math.max(v, c.lanes[i]));
      cover.epoch = cover.epoch || c.epoch;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // HTTP and tokens (what the transports share)

  /** A failed outcome from a thrown error (network error, watchdog timeout, token provider). */
  function failureFrom(err, fallbackCode) {
    return { ok: false, kind: 'failure', code: (err && err.code) || fallbackCode, message: String((err && err.message) || err), error: err };
  }

  function headerOf(r, name) {
    return r.headers && typeof r.headers.get === 'function' ? r.headers.get(name) : null;
  }

  /**
   * fetch with a watchdog, counting each request sent (`onRequest`). Resolves with
   * `{status, headers, text}`; a request the watchdog cut off rejects with `code: 'timeout'`,
   * one aborted through `signal` with the abort error.
   */
  class HttpRequester {
    constructor(options = {}) {
      const timers = globalTimers();
      this._fetch = options.fetch || ((url, init) => globalThis.fetch(url, init));
      this._setTimeout = options.setTimeout || timers.setTimeout;
      this._clearTimeout = options.clearTimeout || timers.clearTimeout;
      this._onRequest = options.onRequest || (() => {});
    }

    async request(url, init, timeoutMs, outer) {
      const ctrl = new AbortController();
      const onAbort = () => ctrl.abort();
      if (outer.aborted) ctrl.abort();
      else outer.addEventListener('abort', onAbort, { once: true });
      let timedOut = false;
      const timer = this._setTimeout(() => {
        timedOut = true;
        ctrl.abort();
      }, timeoutMs);
      this._onRequest();
      try {
        const res = await this._fetch(url, Object.assign({}, init, { signal: ctrl.signal }));
        const text = await res.text();
        return { status: res.status, headers: res.headers, text };
      } catch (err) {
        if (timedOut && !outer.aborted) {
          const e = new Error('request timed out after ' + timeoutMs + ' ms');
          e.code = 'timeout';
          throw e;
        }
        throw err;
      } finally {
        this._clearTimeout(timer);
        outer.removeEventListener('abort', onAbort);
      }
    }

    /**
     * Starts a request whose body the caller reads as it comes (a stream), counted like the
     * others: resolves with the fetch Response. No watchdog here: the caller's decides how long
     * the body may stay quiet, and aborts through `signal`.
     */
    open(url, init, signal) {
      this._onRequest();
      return Promise.resolve().then(() => this._fetch(url, Object.assign({}, init, { signal })));
    }
  }

  /** The transport's `http` option, or one built from its `fetch`, timers and `onRequest`. */
  function httpFrom(o) {
    return o.http || new HttpRequester(o);
  }

  /**
   * Holds the daemon token from `provider` and asks for a new one `skewMs` before it expires;
   * concurrent callers share one provider call.
   */
  class TokenCache {
    constructor({ provider, skewMs, now } = {}) {
      this._provider = typeof provider === 'function' ? provider : null;
      this.skewMs = skewMs ?? 30000;
      this._now = now || defaultNow;
      this._token = null;
      this._pending = null;
    }

    /** Whether there is a provider (without one, requests go out without a token). */
    get enabled() {
      return !!this._provider;
    }

    /** The token to send, or null without a provider; `force` asks the provider for a new one. */
    async get(force) {
      if (!this._provider) return null;
      const t = this._token;
      if (!force && t && (t.expiresAt === null || t.expiresAt - this._now() > this.skewMs)) return t.token;
      if (!this._pending) {
        this._pending = Promise.resolve()
          .then(() => this._provider({ force: !!force }))
          .then((r) => {
            if (!r || typeof r.token !== 'string' || r.token === '') throw new Error('token provider returned no token');
            this._token = { token: r.token, expiresAt: toMillis(r.expires_at) };
            return r.token;
          })
          .finally(() => {
            this._pending = null;
          });
      }
      return this._pending;
    }

    /** Forgets the token (the daemon refused it). */
    drop() {
      this._token = null;
    }

    /**
     * Ms from now until the held token is due for renewal (`skewMs` before it expires; 0 when
     * due), or null: no token, or one that never expires.
     */
    renewInMs() {
      const t = this._token;
      if (!this._provider || !t || t.expiresAt === null) return null;
      return Math.max(0, t.expiresAt - this.skewMs - this._now());
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Transports

  /*
   * The transport interface. LMSUnifiedLongPoll picks one transport per request and calls
   *
   *   transport.poll(request, signal, push) → Promise<outcome>
   *
   *   request  {tier, waitSeconds, cursor, lastEventIds}: how long the server may hold the request
   *            (null on AJAX) and where to resume: the daemon cursor (null: none held) and the
   *            legacy position per channel.
   *   signal   aborts the call (stop, or this tab stepped down); poll() then rejects with it.
   *   push     push(batch), for a streaming transport (LMSStreamTransport): each batch as it
   *            arrives is applied, counted as a success and relayed to the other tabs at once,
   *            and poll() resolves when the stream ends. A transport that gets one batch per
   *            request ignores it and returns the batch in its outcome.
   *   outcome  {ok: true, batch, retryMs, mode}
   *            | {ok: false, kind: 'failure' | 'rate_limited', status, code, message, retryAfterMs,
   *               mode, error, batch, stream}. A failure may carry the part received before it.
   *            `mode` on a success without a batch (a stream's end) is the server's hint;
   *            `stream` ('silent' | 'dropped') marks the failure of a stream that had opened.
   *            A rejection other than the abort is a failure with the error's code
   *            ('network_error' if none).
   *   batch    {events (the daemon's shape), cursor, legacyIds, gap, mode}; cursor and
   *            legacyIds are each optional.
   *
   * Besides poll(): `name` (the `transport` in the client's events and the fallback manager's
   * hints and timings: 'stream', 'daemon' or 'ajax'; the stream uses the daemon's), `guarded`
   * (true: it talks to the daemon, so the circuit breaker and the A/B cohort gate it),
   * `streaming` (true: the loop uses it only while LMSFallbackManager.streamAllowed() and the
   * breaker is closed, and counts its failures toward setting it aside) and `close()` (releases
   * what it holds between polls; it may be polled again afterwards). Transports keep no
   * position: the loop owns it.
   */

  /**
   * What both daemon transports share: the subscription (`url`, `channels`, `thread`, `types`,
   * `order`, `batchSize`, already normalised), the bearer token (`tokens`, a TokenCache the two
   * transports of one client share, or one built from `tokenProvider` and `tokenSkewMs`
   * 30 000; one refresh after a 401) and how an answer the daemon refused is read.
   */
  class DaemonEndpoint {
    constructor(o) {
      this.guarded = true;
      this.url = String(o.url || '').replace(/\/+$/, '');
      this.channels = o.channels || [];
      this.thread = o.thread ?? null;
      this.types = o.types || null;
      this.order = o.order || null;
      this.batchSize = o.batchSize ?? null;
      this._now = o.now || defaultNow;
      this._http = httpFrom(o);
      this._tokens = o.tokens || new TokenCache({ provider: o.tokenProvider, skewMs: o.tokenSkewMs, now: this._now });
    }

    close() {}

    /** `{path}?channels=…` with the subscription's optional parameters and `extra` (already encoded). */
    _endpoint(path, extra) {
      let q = 'channels=' + this.channels.join(',') + extra;
      if (this.thread !== null) q += '&thread=' + this.thread;
      if (this.types) q += '&types=' + this.types.join(',');
      if (this.order) q += '&order=' + this.order;
      if (this.batchSize !== null) q += '&limit=' + this.batchSize;
      return this.url + path + '?' + q;
    }

    /**
     * Sends with the token's `Authorization` header (`send(headers)` resolves with something that
     * has a `status`); on a 401, `discard`s that answer, fetches a fresh token and sends again,
     * once. Resolves `{response}`, or `{failure}` when no token could be had.
     */
    async _authorized(signal, send, discard) {
      let refreshed = false;
      for (;;) {
        let token;
        try {
          token = await this._tokens.get(refreshed);
        } catch (err) {
          if (signal.aborted) throw abortError();
          return { failure: failureFrom(err, 'token_unavailable') };
        }
        if (signal.aborted) throw abortError();
        const response = await send(token ? { Authorization: 'Bearer ' + token } : {});
        if (response.status === 401 && !refreshed && this._tokens.enabled) {
          // The token expired or was revoked: fetch a fresh one and retry, once.
          refreshed = true;
          this._tokens.drop();
          if (discard) discard(response);
          continue;
        }
        return { response };
      }
    }

    /**
     * The outcome of a refused request (`status` null: an error the daemon wrote into an open
     * stream): its JSON error body, `Retry-After` (ms, or null) and `X-LMS-Mode` header.
     */
    _refused(status, body, retryAfterMs, headerMode) {
      const err = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : {};
      const base = {
        ok: false,
        status,
        code: typeof err.code === 'string' ? err.code : status === null ? 'stream_error' : 'http_' + status,
        message: typeof err.message === 'string' ? err.message : '',
        retryAfterMs: retryAfterMs ?? (toInt(body && body.retry_ms) || null),
      };
      if (status === 429) return Object.assign(base, { kind: 'rate_limited' });
      const mode = modeOrNull(body && body.mode) || modeOrNull(err.mode) || modeOrNull(headerMode);
      return Object.assign(base, { kind: 'failure', mode });
    }

    /** `_refused` for an HTTP answer `{status, headers, text}`. */
    _refusedAnswer(r) {
      return this._refused(r.status, safeJson(r.text), parseRetryAfter(headerOf(r, 'Retry-After'), this._now()), headerOf(r, 'X-LMS-Mode'));
    }
  }

  /**
   * Long-polls the daemon: `GET {url}/v1/poll` with a bearer token. Options: those of
   * DaemonEndpoint, `requestSlackMs` (10 000: the watchdog cuts a poll off after wait + slack),
   * `now`, and `http` or `fetch`/`setTimeout`/`clearTimeout`/`onRequest`.
   */
  class LMSDaemonTransport extends DaemonEndpoint {
    constructor(options = {}) {
      const o = options || {};
      super(o);
      this.name = 'daemon';
      this.requestSlackMs = o.requestSlackMs ?? 10000;
    }

    async poll(request, signal) {
      const got = await this._authorized(signal, (auth) =>
        this._http.request(
          this._pollUrl(request),
          { method: 'GET', headers: Object.assign({ Accept: 'application/json' }, auth), cache: 'no-store', credentials: 'omit' },
          request.waitSeconds * 1000 + this.requestSlackMs,
          signal
        )
      );
      return got.failure || this._classify(got.response);
    }

    _pollUrl(request) {
      let extra = '';
      if (request.cursor !== null && request.cursor !== undefined) extra += '&cursor=' + encodeURIComponent(request.cursor);
      return this._endpoint('/v1/poll', extra + '&timeout=' + request.waitSeconds);
    }

    _classify(r) {
      if (r.status < 200 || r.status >= 300) return this._refusedAnswer(r);
      const body = safeJson(r.text);
      if (!body || typeof body !== 'object' || !Array.isArray(body.events) || typeof body.cursor !== 'string') {
        return { ok: false, kind: 'failure', status: r.status, code: 'invalid_response', message: 'malformed poll response' };
      }
      return {
        ok: true,
        batch: { events: body.events.map(normalizeDaemonEvent), cursor: body.cursor, gap: body.gap === true, mode: modeOrNull(body.mode) },
        retryMs: Math.max(0, toInt(body.retry_ms) || 0),
      };
    }
  }

  /**
   * A `text/event-stream` parser as the WHATWG HTML standard specifies it ("Parsing an event
   * stream"): lines end at CR LF, LF or CR (a CR at the end of one chunk and the LF starting the
   * next are one line end); `field: value` with one optional space after the colon; a line
   * starting with ':' is a comment; `data` lines join with LF; a blank line ends a frame; `id`
   * sets the last event id, which persists across frames; `retry` takes ASCII digits only. Feed
   * decoded text in any chunks; what follows the last blank line waits for the next chunk (and
   * is dropped at the end of the stream, as the standard says).
   *
   * `onFrame({event, data, id, hasId})` is called for every frame: `event` ('' when none),
   * `data` (null when the frame had no data line; the standard dispatches nothing then, but its
   * `id` still counts), `id` the last event id after the frame, `hasId` whether the frame set it.
   * `onComment(text)` for each comment. `retry` holds the latest reconnection time (ms) or null.
   */
  class SseParser {
    constructor(onFrame, onComment) {
      this._onFrame = onFrame;
      this._onComment = onComment || (() => {});
      this._rest = '';
      this._afterCr = false;
      this.lastEventId = '';
      this.retry = null;
      this._startFrame();
    }

    feed(text) {
      if (text === '') return;
      let s = this._rest + text;
      if (this._afterCr) {
        this._afterCr = false;
        if (this._rest === '' && s[0] === '\n') s = s.slice(1);
      }
      let at = 0;
      const re = /\r\n|\r|\n/g;
      let m;
      while ((m = re.exec(s)) !== null) {
        if (m[0] === '\r' && re.lastIndex === s.length) this._afterCr = true;
        this._line(s.slice(at, m.index));
        at = re.lastIndex;
      }
      this._rest = s.slice(at);
    }

    _startFrame() {
      this._event = '';
      this._data = null;
      this._hasId = false;
    }

    _line(line) {
      if (line === '') {
        const frame = { event: this._event, data: this._data, id: this.lastEventId, hasId: this._hasId };
        this._startFrame();
        this._onFrame(frame);
        return;
      }
      if (line[0] === ':') {
        this._onComment(line.slice(line[1] === ' ' ? 2 : 1));
        return;
      }
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      switch (field) {
        case 'event':
          this._event = value;
          break;
        case 'data':
          this._data = this._data === null ? value : this._data + '\n' + value;
          break;
        case 'id':
          if (!value.includes('\u0000')) {
            this.lastEventId = value;
            this._hasId = true;
          }
          break;
        case 'retry':
          if (/^\d+$/.test(value)) this.retry = Number(value);
          break;
        default:
          break;
      }
    }
  }

  /** A timer that fires `onQuiet` unless it is kicked at least every `ms`. */
  function watchdog(timers, ms, onQuiet) {
    let id = null;
    const dog = {
      fired: false,
      kick() {
        if (id !== null) timers.clearTimeout(id);
        id = timers.setTimeout(() => {
          id = null;
          dog.fired = true;
          onQuiet();
        }, ms);
      },
      stop() {
        if (id !== null) timers.clearTimeout(id);
        id = null;
      },
    };
    dog.kick();
    return dog;
  }

  /**
   * Streams the daemon: `GET {url}/v1/stream`, server-sent events read from a fetch body, with
   * the position in `Last-Event-ID`. Not `EventSource`: it cannot send an `Authorization`
   * header, and the token must not travel in the URL (access logs, `Referer`). It also lets the
   * loop, not the browser, decide when and where to reconnect.
   *
   * One poll() is one stream: each chunk read is parsed and what it completed is pushed as one
   * batch (its events, the cursor after the last of them, `gap: true` when a gap frame came
   * first, the mode from the `X-LMS-Mode` head or the gap frame); an `id:` without data (the
   * heartbeat's position, the position written at the end) moves the cursor alone. poll()
   * resolves when the stream ends: `{ok: true, retryMs}` when the server ended it after a
   * position (the `retry:` it sent, at most `retryMaxMs`), or a failure: refused before it
   * started (as the long-poll reads it; one token refresh on 401), an `event: error` frame, a
   * malformed frame, a broken connection, an end without any position, or no byte for
   * `watchdogMs` (the heartbeat is 15 s; a proxy that buffers the stream trips it). Failures of a stream that had opened carry `stream: 'silent'` (not a byte
   * came) or `'dropped'`, which the loop uses to set the stream aside (LMSFallbackManager).
   *
   * Options: those of DaemonEndpoint, `watchdogMs` (37 500), `retryMaxMs` (30 000),
   * `setTimeout`/`clearTimeout`, `now`, and `http` or `fetch`/`onRequest`.
   */
  class LMSStreamTransport extends DaemonEndpoint {
    constructor(options = {}) {
      const o = options || {};
      super(o);
      this.name = 'stream';
      this.streaming = true;
      this.watchdogMs = Math.max(1, o.watchdogMs ?? 37500);
      this.retryMaxMs = Math.max(0, o.retryMaxMs ?? 30000);
      const timers = globalTimers();
      this._timers = { setTimeout: o.setTimeout || timers.setTimeout, clearTimeout: o.clearTimeout || timers.clearTimeout };
    }

    async poll(request, signal, push) {
      const ctrl = new AbortController();
      const onAbort = () => ctrl.abort();
      if (signal.aborted) throw abortError();
      signal.addEventListener('abort', onAbort, { once: true });
      const dog = watchdog(this._timers, this.watchdogMs, () => ctrl.abort());
      const read = { opened: false, bytes: 0, batches: 0 };
      let renewal = null;
      try {
        const got = await this._authorized(
          signal,
          (auth) => this._open(request, auth, ctrl.signal),
          (res) => cancelBody(res)
        );
        if (got.failure) return got.failure;
        renewal = this._renewWhileOpen();
        return await this._consume(got.response, read, ctrl.signal, dog, push);
      } catch (err) {
        if (signal.aborted) throw abortError();
        if (dog.fired) {
          const e = new Error('no data from the stream for ' + this.watchdogMs + ' ms');
          e.code = 'timeout';
          return this._broken(failureFrom(e, 'timeout'), read);
        }
        return this._broken(failureFrom(err, 'network_error'), read);
      } finally {
        dog.stop();
        if (renewal !== null) this._timers.clearTimeout(renewal);
        signal.removeEventListener('abort', onAbort);
      }
    }

    /**
     * The daemon ends a stream when its token expires. Renewing the token while the stream is
     * still open (at the cache's skew before expiry) means the reconnect that follows needs no
     * token request first: without it, every stream's reconnect waited on WordPress (all of a
     * page's clients at once, as their tokens were issued together), and events in that window
     * came late. Returns the timer, or null when the token does not expire.
     */
    _renewWhileOpen() {
      const ms = this._tokens.renewInMs();
      if (ms === null) return null;
      return this._timers.setTimeout(() => {
        this._tokens.get(false).catch(() => {
          /* the reconnect asks again, and reports it if it still fails */
        });
      }, ms);
    }

    _open(request, auth, signal) {
      const headers = Object.assign({ Accept: 'text/event-stream' }, auth);
      if (request.cursor !== null && request.cursor !== undefined) headers['Last-Event-ID'] = String(request.cursor);
      return this._http.open(this._endpoint('/v1/stream', ''), { method: 'GET', headers, cache: 'no-store', credentials: 'omit' }, signal);
    }

    /** Reads an answer to its end (see the class doc). `read.bytes` counts what came. */
    async _consume(res, read, signal, dog, push) {
      if (res.status < 200 || res.status >= 300) {
        const text = await res.text();
        return this._refusedAnswer({ status: res.status, headers: res.headers, text });
      }
      const type = String(headerOf(res, 'Content-Type') || '');
      if (!/^text\/event-stream\b/i.test(type) || !res.body || typeof res.body.getReader !== 'function') {
        cancelBody(res);
        return { ok: false, kind: 'failure', status: res.status, code: 'invalid_response', message: 'not an event stream: ' + type, stream: 'silent' };
      }
      read.opened = true;
      const frames = new StreamFrames(modeOrNull(headerOf(res, 'X-LMS-Mode')) || 'long');
      const reader = res.body.getReader();
      // A body the fetch signal does not reach (a Response built by hand) still ends on abort.
      const stopReading = () => reader.cancel().catch(() => {});
      signal.addEventListener('abort', stopReading, { once: true });
      if (signal.aborted) stopReading();
      const decoder = new TextDecoder();
      try {
        for (;;) {
          const chunk = await reader.read();
          if (signal.aborted) throw abortError();
          const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
          if (!chunk.done) {
            read.bytes += chunk.value.byteLength;
            dog.kick();
          }
          frames.parser.feed(text);
          const batch = frames.take();
          if (batch) {
            read.batches += 1;
            push(batch);
          }
          if (frames.failure) {
            stopReading();
            return this._streamFailure(frames, read);
          }
          if (chunk.done) break;
        }
      } finally {
        signal.removeEventListener('abort', stopReading);
      }
      if (read.batches === 0) {
        // The daemon writes its position before it ends a stream; an end without one is not
        // its doing (a proxy cutting the stream), and counts as a failure so the reconnects
        // back off instead of hammering at `retry: 0`.
        return this._broken({ ok: false, kind: 'failure', status: res.status, code: 'stream_closed', message: 'the stream ended without a position' }, read);
      }
      return { ok: true, batch: null, retryMs: Math.min(this.retryMaxMs, frames.parser.retry ?? 0), mode: frames.mode };
    }

    /**
     * The failure a frame reported: a malformed frame (the stream's fault), or an `event: error`
     * with the daemon's error body (the daemon's: its breaker deals with it, not the stream's).
     */
    _streamFailure(frames, read) {
      const f = frames.failure;
      if (f.code) return this._broken({ ok: false, kind: 'failure', status: null, code: f.code, message: f.message }, read);
      return this._refused(null, f.body, frames.parser.retry || null, null);
    }

    /** Marks the failure of a stream that had opened (`stream`), so the loop can set it aside. */
    _broken(failure, read) {
      if (read.opened) failure.stream = read.bytes > 0 ? 'dropped' : 'silent';
      return failure;
    }
  }

  /** Cancels a body nobody will read (so the connection is let go). */
  function cancelBody(res) {
    if (res && res.body && typeof res.body.cancel === 'function') res.body.cancel().catch(() => {});
  }

  /**
   * The frames of one stream turned into batches: collected while a chunk is parsed, taken as
   * one batch after it. `failure` is set by an error frame (`{body}`) or a malformed one
   * (`{code, message}`); nothing after it is taken.
   */
  class StreamFrames {
    constructor(mode) {
      this.mode = mode;
      this.failure = null;
      this._batch = null;
      this.parser = new SseParser((f) => this._frame(f));
    }

    /** The batch the frames parsed since the last call make, or null. */
    take() {
      const b = this._batch;
      this._batch = null;
      if (b) b.mode = this.mode;
      return b;
    }

    _frame(f) {
      if (this.failure) return;
      if (f.event === 'error') {
        this.failure = { body: safeJson(f.data) };
        return;
      }
      if (f.data === null && !f.hasId) return;
      let event = null;
      let gap = false;
      if (f.event === 'gap') {
        const body = safeJson(f.data);
        gap = true;
        this.mode = modeOrNull(body && body.mode) || this.mode;
      } else if (f.data !== null && (f.event === '' || f.event === 'message')) {
        // An event of a type this client does not know (none today) only moves the position.
        event = safeJson(f.data);
        if (!event || typeof event !== 'object' || Array.isArray(event)) {
          this.failure = { code: 'invalid_response', message: 'malformed stream frame' };
          return;
        }
      }
      const b = this._batch || (this._batch = { events: [], gap: false, mode: this.mode });
      if (event) b.events.push(normalizeDaemonEvent(event));
      b.gap = b.gap || gap;
      if (f.id !== '') b.cursor = f.id;
    }
  }

  /**
   * Polls WordPress's admin-ajax.php (the legacy endpoint, `action=lms_unified_long_poll`): one
   * POST per channel, which WordPress may hold (it decides how long). Options: `url`, `action`,
   * `nonce` (a value, or a function called for every request), `nonceAction`, `channels`,
   * `thread`, `timeoutMs` (45 000: the watchdog), `now`, and `http` or
   * `fetch`/`setTimeout`/`clearTimeout`/`onRequest`.
   */
  class LMSAjaxTransport {
    constructor(options = {}) {
      const o = options || {};
      this.name = 'ajax';
      this.guarded = false;
      this.url = String(o.url || '');
      this.action = o.action || LEGACY_ACTION;
      this.nonceAction = o.nonceAction || null;
      this.channels = o.channels || [];
      this.thread = o.thread ?? null;
      this.timeoutMs = o.timeoutMs ?? 45000;
      this._nonce = o.nonce;
      this._now = o.now || defaultNow;
      this._http = httpFrom(o);
    }

    /**
     * One POST per channel (the endpoint takes one `channel_id`), in sequence, as one batch.
     * Channels answered before a failure keep their events and positions.
     */
    async poll(request, signal) {
      const events = [];
      const legacyIds = {};
      let mode = null;
      let gap = false;
      const partial = () => (events.length || Object.keys(legacyIds).length ? { events, legacyIds, mode, gap } : null);
      for (const ch of this.channels) {
        const last = toInt(request.lastEventIds && request.lastEventIds[ch]) ?? 0;
        let r;
        try {
          r = await this._post(ch, last, signal);
        } catch (err) {
          if (signal.aborted) throw err;
          return Object.assign(failureFrom(err, 'network_error'), { batch: partial() });
        }
        const c = this._classify(r);
        if (!c.ok) return Object.assign(c, { batch: partial() });
        let max = last;
        for (const e of c.events) {
          if (typeof e.id === 'number' && e.id > max) max = e.id;
          events.push(e);
        }
        legacyIds[ch] = max;
        mode = c.mode || mode;
        gap = gap || c.gap;
      }
      return { ok: true, batch: { events, legacyIds, mode, gap } };
    }

    close() {}

    async _post(ch, last, signal) {
      const nonce = typeof this._nonce === 'function' ? await this._nonce() : this._nonce;
      if (signal.aborted) throw abortError();
      const form = new URLSearchParams();
      form.set('action', this.action);
      form.set('channel_id', String(ch));
      form.set('thread_id', String(this.thread ?? 0));
      form.set('last_event_id', String(last));
      form.set('nonce', nonce == null ? '' : String(nonce));
      if (this.nonceAction) form.set('nonce_action', this.nonceAction);
      // This client may be held longer than the LMS theme's own (which the plugin caps at 5 s).
      form.set('client', 'lmsrt');
      return this._http.request(
        this.url,
        {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8', Accept: 'application/json' },
          body: form.toString(),
          credentials: 'same-origin',
          cache: 'no-store',
        },
        this.timeoutMs,
        signal
      );
    }

    _classify(r) {
      const body = safeJson(r.text);
      const ok = r.status >= 200 && r.status < 300;
      if (ok && body && body.success === true && body.data && Array.isArray(body.data.events)) {
        return { ok: true, events: body.data.events.map(mapLegacyEvent), mode: modeOrNull(body.data.mode), gap: body.data.gap === true };
      }
      const data = body && typeof body === 'object' && body.data && typeof body.data === 'object' ? body.data : {};
      let code = typeof data.code === 'string' ? data.code : null;
      // admin-ajax.php answers a bare -1 when check_ajax_referer fails and 0 for an unknown action.
      if (!code && (body === -1 || r.text === '-1')) code = 'invalid_nonce';
      if (!code && (body === 0 || r.text === '0')) code = 'unknown_action';
      if (!code) code = ok ? 'invalid_response' : 'http_' + r.status;
      const now = this._now();
      const retryAfterMs = parseRetryAfter(headerOf(r, 'Retry-After'), now) ?? (data.retry_after != null ? parseRetryAfter(data.retry_after, now) : null);
      const base = { ok: false, status: r.status, code, message: typeof data.message === 'string' ? data.message : '', retryAfterMs };
      if (r.status === 429 || code === 'rate_limit_exceeded' || code === 'connection_limit_exceeded') {
        return Object.assign(base, { kind: 'rate_limited' });
      }
      return Object.assign(base, { kind: 'failure', mode: modeOrNull(data.mode) });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // LMSUnifiedLongPoll

  let sharedPool = null;

  /** Where the page's lifecycle events fire (the window), or null outside a page. */
  function defaultPageEvents() {
    return typeof globalThis.addEventListener === 'function' ? globalThis : null;
  }

  /**
   * The client: the loop. It picks a transport (the daemon's stream, else its long poll, when
   * configured, the cohort allows it and its breaker admits the request; otherwise AJAX), keeps
   * the position, backs off, trips the breaker, dispatches events and relays them to the other
   * tabs. The transports only speak their protocol (see "The transport interface" above). See
   * README.md for the options, the transport per tier and the error handling.
   */
  class LMSUnifiedLongPoll {
    constructor(options = {}) {
      const o = options || {};
      this.daemonUrl = o.daemonUrl ? String(o.daemonUrl).replace(/\/+$/, '') : null;
      this.tokenProvider = typeof o.tokenProvider === 'function' ? o.tokenProvider : null;
      this.ajaxUrl = o.ajaxUrl ? String(o.ajaxUrl) : null;
      this.ajaxAction = o.ajaxAction || LEGACY_ACTION;
      this.nonceAction = o.nonceAction || null;
      const custom = Array.isArray(o.transports) && o.transports.length > 0;
      if (!this.daemonUrl && !this.ajaxUrl && !custom) throw new TypeError('daemonUrl or ajaxUrl is required');

      const chans = Array.isArray(o.channels) ? o.channels : o.channels != null ? [o.channels] : [];
      this.channels = Array.from(new Set(chans.map(toId).filter((c) => c !== null)));
      if (this.channels.length === 0) throw new TypeError('channels must hold at least one positive id');
      this.thread = toId(o.thread);
      this.types = Array.isArray(o.types) && o.types.length ? o.types.filter((t) => TYPE_RE.test(t)) : null;
      this._typeSet = this.types ? new Set(this.types) : null;
      this.batchSize = toId(o.batchSize);
      this.order = o.order === 'sequential' || o.order === 'priority' ? o.order : null;
      this._position = new CursorPosition(o.cursor, o.lastEventId);

      const timers = globalTimers();
      this._setTimeout = o.setTimeout || timers.setTimeout;
      this._clearTimeout = o.clearTimeout || timers.clearTimeout;
      this._now = o.now || defaultNow;
      this._random = o.random || Math.random;

      const onHandlerError = o.onHandlerError || defaultHandlerError;
      this.router = o.router || new LMSEventRouter({ dedupCapacity: o.dedupCapacity, onHandlerError });
      this.fallback =
        o.fallback ||
        new LMSFallbackManager({
          random: this._random,
          now: this._now,
          streamFailureLimit: o.streamFailureLimit,
          streamCooldownMs: o.streamCooldownMs,
          streamMaxCooldownMs: o.streamMaxCooldownMs,
        });
      this.breaker = o.breaker || new LMSCircuitBreaker({ now: this._now });
      this.monitor = o.monitor || new LMSPerformanceMonitor({ now: this._now });
      this.abTesting = o.abTesting || null;
      this.pool = o.pool || LMSUnifiedLongPoll.defaultPool();
      this._life = new Emitter(onHandlerError);
      /** The transports, most preferred first (see _choose). */
      this._transports = custom ? o.transports.slice() : this._builtinTransports(o);

      this._running = false;
      this._gen = 0;
      this._member = null;
      this._ctrl = null;
      this._wake = null;
      this._loop = null;
      this._mode = null;
      this._connected = false;
      this._failing = false;
      this._rateStreak = 0;
      this._page = o.pageEvents !== undefined ? o.pageEvents : defaultPageEvents();
      this._pageHooks = null;
      this._hidden = false;
    }

    /** The pool shared by clients that were not given one (created on first use). */
    static defaultPool() {
      if (!sharedPool) sharedPool = new LMSConnectionPool();
      return sharedPool;
    }

    _builtinTransports(o) {
      const http = new HttpRequester({
        fetch: o.fetch,
        setTimeout: this._setTimeout,
        clearTimeout: this._clearTimeout,
        onRequest: () => this.monitor.recordRequest(),
      });
      const sub = { channels: this.channels, thread: this.thread, http, now: this._now };
      const list = [];
      if (this.daemonUrl) {
        const daemon = Object.assign({}, sub, {
          url: this.daemonUrl,
          types: this.types,
          order: this.order,
          batchSize: this.batchSize,
          // One token for the stream and the long poll: a switch between them costs no token request.
          tokens: new TokenCache({ provider: this.tokenProvider, skewMs: o.tokenSkewMs, now: this._now }),
        });
        if (o.stream !== false && typeof TextDecoder === 'function') {
          list.push(
            new LMSStreamTransport(
              Object.assign({}, daemon, {
                watchdogMs: o.streamWatchdogMs,
                retryMaxMs: o.streamRetryMaxMs,
                setTimeout: this._setTimeout,
                clearTimeout: this._clearTimeout,
              })
            )
          );
        }
        list.push(new LMSDaemonTransport(Object.assign(daemon, { requestSlackMs: o.requestSlackMs })));
      }
      if (this.ajaxUrl) {
        list.push(
          new LMSAjaxTransport(
            Object.assign({}, sub, { url: this.ajaxUrl, action: this.ajaxAction, nonce: o.nonce, nonceAction: this.nonceAction, timeoutMs: o.ajaxTimeoutMs })
          )
        );
      }
      return list;
    }

    // -- public API -------------------------------------------------------------------------

    /**
     * `on(type, handler[, {priority}])`: a data event type, '*' for every data event, or a
     * lifecycle event ('connected', 'mode', 'resync', 'error'). Returns an unsubscribe function.
     */
    on(type, handler, options) {
      if (LIFECYCLE.includes(type)) return this._life.on(type, handler);
      return this.router.on(type, handler, options);
    }

    off(type, handler) {
      if (LIFECYCLE.includes(type)) this._life.off(type, handler);
      else this.router.off(type, handler);
    }

    /** The cursor the daemon last returned (or the initial one). */
    get cursor() {
      return this._position.cursor;
    }

    /** `{channel_id: last_event_id}` for the legacy tier. */
    get lastEventIds() {
      return this._position.lastEventIds(this.channels);
    }

    /** `{tier, transport}` of the latest request, or null before the first. */
    get mode() {
      return this._mode ? Object.assign({}, this._mode) : null;
    }

    get running() {
      return this._running;
    }

    /** Whether this client polls (true) or listens to another tab's poll (false). */
    get isLeader() {
      return !!(this._member && this._member.isLeader);
    }

    /**
     * Replaces the position, e.g. with a fresh head cursor after the app resynchronised. The
     * next request uses it; events at or below it are treated as already shown.
     */
    setCursor(cursor) {
      this._position.reset(cursor);
    }

    start() {
      if (this._running) return;
      this._hookPage();
      this._running = true;
      const gen = ++this._gen;
      this._member = this.pool.join(this._shareKey(), {
        onBatch: (state) => this._onRelay(state),
        onLeadership: (isLeader) => {
          if (!isLeader && this._ctrl) this._ctrl.abort();
          this._wakeUp();
        },
      });
      this._loop = this._run(gen).catch((err) => {
        this._emit('error', { code: 'internal', message: String((err && err.message) || err), error: err });
      });
    }

    /** Stops polling and aborts the request in flight. Resolves when the loop has exited. */
    stop() {
      this._unhookPage();
      this._hidden = false;
      return this._halt();
    }

    /**
     * When the page goes away (`pagehide`, or `beforeunload` where there is no `pagehide`), the
     * client stops at once: leaving the pool says `bye`, so a follower in another tab takes the
     * lead now rather than after the leader timeout. A page restored from the back/forward
     * cache (`pageshow` with `persisted`) starts again.
     */
    _hookPage() {
      const target = this._page;
      if (this._pageHooks || !target || typeof target.addEventListener !== 'function') return;
      const hide = 'onpagehide' in target ? 'pagehide' : 'beforeunload';
      const hooks = {
        hide,
        onHide: () => {
          if (!this._running) return;
          this._hidden = true;
          this._halt();
        },
        onShow: (ev) => {
          if (!this._hidden || !(ev && ev.persisted)) return;
          this._hidden = false;
          this.start();
        },
      };
      target.addEventListener(hide, hooks.onHide);
      target.addEventListener('pageshow', hooks.onShow);
      this._pageHooks = hooks;
    }

    _unhookPage() {
      const hooks = this._pageHooks;
      if (!hooks) return;
      this._pageHooks = null;
      this._page.removeEventListener(hooks.hide, hooks.onHide);
      this._page.removeEventListener('pageshow', hooks.onShow);
    }

    _halt() {
      if (!this._running) return this._loop || Promise.resolve();
      this._running = false;
      if (this._ctrl) this._ctrl.abort();
      this._wakeUp();
      if (this._member) {
        this._member.leave();
        this._member = null;
      }
      for (const t of this._transports) t.close();
      return this._loop;
    }

    /** Monitor snapshot plus the connection state. */
    stats() {
      return Object.assign(this.monitor.snapshot(), {
        mode: this.mode,
        breaker: this.breaker.snapshot(),
        leader: this.isLeader,
        cohort: this.abTesting ? this.abTesting.cohort : null,
        stream: this._transports.some((t) => t.streaming)
          ? { allowed: this.fallback.streamAllowed(), cooldownLeftMs: this.fallback.streamCooldownLeftMs(), demotions: this.fallback.streamDemotions }
          : null,
      });
    }

    // -- the loop ---------------------------------------------------------------------------

    _alive(gen) {
      return this._running && gen === this._gen;
    }

    async _run(gen) {
      while (this._alive(gen)) {
        if (!this.isLeader) {
          await this._idle();
          continue;
        }
        const choice = this._choose();
        if (!choice) {
          // Daemon breaker open and no AJAX endpoint: wait for the probe window.
          await this._sleep(Math.max(250, this.breaker.msUntilHalfOpen()));
          continue;
        }
        const { transport, plan } = choice;
        this._announceMode(plan.tier, transport.name);
        const started = this._now();
        const ctrl = new AbortController();
        this._ctrl = ctrl;
        const push = (batch) => {
          if (!ctrl.signal.aborted && this._alive(gen)) this._onPushed(transport, plan, batch);
        };
        let outcome = null;
        let release = null;
        try {
          release = await this.pool.acquire(ctrl.signal);
          if (this._alive(gen) && this.isLeader) {
            if (this._failing) this.monitor.recordReconnect();
            outcome = await transport.poll(this._request(plan), ctrl.signal, push);
          }
        } catch (err) {
          outcome = ctrl.signal.aborted ? null : failureFrom(err, 'network_error');
        } finally {
          if (release) release();
          if (this._ctrl === ctrl) this._ctrl = null;
        }
        if (outcome === null || ctrl.signal.aborted) {
          // Stopped or stepped down: nothing was applied, the cursor is unchanged.
          if (plan.probe) this.breaker.releaseProbe();
          continue;
        }
        const delay = this._settle(transport, plan, outcome, started);
        if (delay > 0 && this._alive(gen)) await this._sleep(delay);
      }
    }

    _request(plan) {
      return {
        tier: plan.tier,
        waitSeconds: plan.waitSeconds,
        cursor: this._position.daemonCursor(this.channels),
        lastEventIds: this._position.lastEventIds(this.channels),
      };
    }

    /** Whether the A/B cohort lets this client use the daemon (guarded transports). */
    _unified() {
      return !this.abTesting || this.abTesting.useUnified();
    }

    /** Whether a guarded transport (the daemon) may be used at all. */
    _guardedAllowed() {
      return this._unified() && this._transports.some((t) => t.guarded);
    }

    /**
     * An unguarded transport (AJAX) is the transport of choice when there is no daemon and the
     * user is in the unified cohort: WordPress then holds the poll itself. Otherwise it stands in
     * (the legacy cohort keeps a fixed cadence).
     */
    _planFor(transport) {
      const primary = !transport.guarded && this._unified() && !this._transports.some((t) => t.guarded);
      return this.fallback.plan(transport.name, primary);
    }

    /**
     * The transport and plan of the next request: the first guarded transport the cohort allows
     * and the breaker admits (a half-open probe asks for an immediate answer, timeout=0, so a hung
     * daemon cannot stall the page), else the first unguarded one; null if none.
     */
    _choose() {
      const unified = this._unified();
      for (const transport of this._transports) {
        if (!transport.guarded) return { transport, plan: this._planFor(transport) };
        if (!unified) continue;
        // The stream only while the daemon is healthy and long-polling (never as the probe).
        if (transport.streaming && (this.breaker.state !== 'closed' || !this.fallback.streamAllowed())) continue;
        const probe = this.breaker.state === 'half-open';
        if (!this.breaker.allowRequest()) continue;
        const plan = this._planFor(transport);
        plan.probe = probe;
        if (probe) plan.waitSeconds = 0;
        return { transport, plan };
      }
      return null;
    }

    /** The end of one poll() call: returns how long to wait before the next. */
    _settle(transport, plan, outcome, started) {
      const name = transport.name;
      if (outcome.batch) this._applyBatch(outcome.batch, name);
      let wait;
      if (outcome.ok) {
        this._recordSuccess(transport, plan, outcome.batch ? outcome.batch.mode : outcome.mode ?? null);
        const interval = this._planFor(transport).intervalMs || 0;
        wait = Math.max(0, interval - (this._now() - started), outcome.retryMs || 0);
        if (!transport.guarded && this._guardedAllowed() && this.breaker.state === 'open') {
          // Probe the daemon as soon as its breaker allows rather than at the next AJAX tick.
          wait = Math.min(wait, this.breaker.msUntilHalfOpen());
        }
      } else if (outcome.kind === 'rate_limited') {
        // Not a fault of the path: neither the breaker nor the tier moves, we just wait.
        this.monitor.recordError(outcome.code);
        this._rateStreak += 1;
        wait = outcome.retryAfterMs ?? this.fallback.backoffDelay(this._rateStreak);
        this._emit('error', this._errorPayload(outcome, name, wait));
      } else {
        this.monitor.recordError(outcome.code);
        if (transport.guarded) this.breaker.recordFailure();
        if (outcome.stream) this.fallback.recordStreamFailure(outcome.stream === 'silent');
        const backoff = this.fallback.recordFailure({ transport: name, mode: outcome.mode });
        this._failing = true;
        this._connected = false;
        wait = Math.max(backoff, outcome.retryAfterMs || 0);
        this._emit('error', this._errorPayload(outcome, name, wait));
      }
      if (outcome.batch) this._relay(transport, outcome.batch);
      return wait;
    }

    /** A batch a streaming transport pushed while its poll() is still open. */
    _onPushed(transport, plan, batch) {
      if (transport.streaming) this.fallback.recordStreamSuccess();
      this._applyBatch(batch, transport.name);
      this._recordSuccess(transport, plan, batch.mode);
      this._relay(transport, batch);
    }

    _recordSuccess(transport, plan, mode) {
      if (transport.guarded) this.breaker.recordSuccess();
      this.fallback.recordSuccess({ transport: transport.name, mode });
      this._failing = false;
      this._rateStreak = 0;
      if (!this._connected) {
        this._connected = true;
        this._emit('connected', { transport: transport.name, tier: plan.tier, shared: false });
      }
    }

    /** Followers get what was applied here, with the position it leads to. */
    _relay(transport, batch) {
      if (!this.isLeader) return;
      this._member.publish({
        events: batch.events,
        cursor: this._position.cursor,
        legacyIds: this._position.legacyIds(),
        gap: !!batch.gap,
        tier: this._planFor(transport).tier,
        transport: transport.name,
      });
    }

    _errorPayload(outcome, transport, retryInMs) {
      return {
        transport,
        status: outcome.status ?? null,
        code: outcome.code || 'error',
        message: outcome.message || '',
        retryInMs,
        consecutiveFailures: this.fallback.consecutiveFailures,
        breaker: this.breaker.state,
        error: outcome.error,
      };
    }

    _announceMode(tier, transport) {
      const prev = this._mode;
      if (prev && prev.tier === tier && prev.transport === transport) return;
      if (prev && prev.transport !== transport) this._connected = false;
      this._mode = { tier, transport };
      this._emit('mode', { tier, transport, previous: prev ? Object.assign({}, prev) : null });
    }

    _emit(type, payload) {
      this._life.emit(type, payload);
    }

    _idle() {
      return new Promise((resolve) => {
        this._wake = resolve;
      });
    }

    _sleep(ms) {
      return new Promise((resolve) => {
        let id = null;
        const done = () => {
          if (id !== null) this._clearTimeout(id);
          if (this._wake === done) this._wake = null;
          resolve();
        };
        this._wake = done;
        id = this._setTimeout(done, ms);
      });
    }

    _wakeUp() {
      const w = this._wake;
      this._wake = null;
      if (w) w();
    }

    // -- applying batches -------------------------------------------------------------------

    /** Dispatches a batch and takes its position, in that order. */
    _applyBatch(batch, source) {
      const events = Array.isArray(batch.events) ? batch.events : [];
      const cursor = typeof batch.cursor === 'string' ? batch.cursor : null;
      if (batch.gap) {
        // A new store: ids restarted, so remembered ids mean nothing any more.
        if (this._position.restart(cursor)) this.router.clearSeen();
        this._emit('resync', { cursor, source });
      }
      const fresh = events.filter((e) => !this._position.covers(e) && (!this._typeSet || this._typeSet.has(e.event_type)));
      const delivered = this.router.dispatch(fresh);
      const at = this._now();
      for (const e of delivered) this.monitor.recordEvent(e, at);
      this._position.advance(cursor, batch.legacyIds);
    }

    _onRelay(state) {
      if (!this._running || !state || this.isLeader) return;
      this._applyBatch(
        { events: Array.isArray(state.events) ? state.events : [], cursor: state.cursor, legacyIds: state.legacyIds, gap: !!state.gap },
        'relay'
      );
      const tier = modeOrNull(state.tier);
      const transport = this._transports.some((t) => t.name === state.transport) ? state.transport : null;
      if (tier && transport) this._announceMode(tier, transport);
      if (!this._connected) {
        this._connected = true;
        this._emit('connected', { transport, tier, shared: true });
      }
    }

    _shareKey() {
      return JSON.stringify({
        d: this.daemonUrl,
        a: this.ajaxUrl,
        c: this.channels.slice().sort((x, y) => x - y),
        t: this.thread,
        y: this.types ? this.types.slice().sort() : null,
        o: this.order,
      });
    }

    // -- configuration from the page --------------------------------------------------------

    /**
     * Builds a client from the configuration the WordPress plugin renders into the page
     * (snake_case keys; see README.md). `overrides` wins over the page values.
     */
    static fromConfig(config, overrides = {}) {
      const c = config || {};
      const ab = new LMSABTesting(c.ab || { cohort: c.cohort, rollout_percent: c.rollout_percent });
      const tokenProvider = c.token_url
        ? createTokenProvider({ url: c.token_url, action: c.token_action, nonce: c.token_nonce ?? c.nonce, fetch: overrides.fetch })
        : undefined;
      return new LMSUnifiedLongPoll(
        Object.assign(
          {
            daemonUrl: c.daemon_url || null,
            tokenProvider,
            ajaxUrl: c.ajax_url || null,
            nonce: c.nonce,
            nonceAction: c.nonce_action,
            channels: c.channels ?? (c.channel_id != null ? [c.channel_id] : []),
            thread: c.thread_id,
            types: c.types,
            cursor: c.cursor,
            lastEventId: c.last_event_id,
            batchSize: c.batch_size,
            stream: c.stream,
            abTesting: ab,
          },
          overrides
        )
      );
    }
  }

  /**
   * A token provider for a WordPress endpoint: POSTs `action` (if given) and `nonce` as a form
   * and accepts either `{token, expires_at}` or WordPress's `{success, data: {token, expires_at}}`.
   */
  function createTokenProvider({ url, action, nonce, fetch } = {}) {
    if (!url) throw new TypeError('url is required');
    const doFetch = fetch || ((u, init) => globalThis.fetch(u, init));
    return async function tokenProvider() {
      const form = new URLSearchParams();
      if (action) form.set('action', action);
      if (nonce != null) form.set('nonce', typeof nonce === 'function' ? await nonce() : String(nonce));
      const res = await doFetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8', Accept: 'application/json' },
        body: form.toString(),
        credentials: 'same-origin',
        cache: 'no-store',
      });
      const body = safeJson(await res.text());
      const data = body && body.success === true && body.data ? body.data : body;
      if (!res.ok || !data || typeof data.token !== 'string') {
        const e = new Error('token endpoint answered ' + res.status);
        e.status = res.status;
        throw e;
      }
      return { token: data.token, expires_at: data.expires_at ?? null };
    };
  }

  return {
    VERSION,
    PRIORITY,
    TIERS,
    DEFAULT_TIMINGS,
    LMSUnifiedLongPoll,
    LMSConnectionPool,
    LMSEventRouter,
    LMSFallbackManager,
    LMSCircuitBreaker,
    LMSABTesting,
    LMSPerformanceMonitor,
    LMSDaemonTransport,
    LMSStreamTransport,
    LMSAjaxTransport,
    SseParser,
    CursorPosition,
    HttpRequester,
    TokenCache,
    parseCursor,
    parseRetryAfter,
    mapLegacyEvent,
    normalizeDaemonEvent,
    createTokenProvider,
  };
});
