'use strict';
// Deterministic fakes for the client tests: a manual clock with timers, a fetch whose requests the
// test answers one by one, and an in-memory BroadcastChannel. Nothing here sleeps for real; the
// only waiting is for queued microtasks and immediates to run.

/** Lets every queued promise continuation run. */
async function flush(turns = 10) {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.t = start;
    this.timers = new Map();
    this.nextId = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { fn, at: this.t + Math.max(0, Number(ms) || 0), id });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Moves time forward by `ms`, firing due timers in order and flushing after each. */
  async advance(ms) {
    const end = this.t + ms;
    await flush();
    for (;;) {
      let next = null;
      for (const tm of this.timers.values()) {
        if (tm.at <= end && (next === null || tm.at < next.at || (tm.at === next.at && tm.id < next.id))) next = tm;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }

  /** Delays of the pending timers, soonest first. */
  pendingDelays() {
    return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b);
  }
}

function jsonResponse(status, body, headers = {}) {
  return new Response(typeof body === 'string' ? body : JSON.stringify(body), {
    status,
    headers: Object.assign({ 'content-type': 'application/json' }, headers),
  });
}

/** A fetch the test drives: every call waits until the test answers it. */
class FakeFetch {
  constructor() {
    this.calls = [];
    this.fn = (url, init = {}) => {
      const call = { url: String(url), init, aborted: false, settled: false };
      const p = new Promise((resolve, reject) => {
        call.resolve = (res) => {
          if (call.settled) return;
          call.settled = true;
          resolve(res);
        };
        call.reject = (err) => {
          if (call.settled) return;
          call.settled = true;
          reject(err);
        };
      });
      const signal = init.signal;
      if (signal) {
        const onAbort = () => {
          call.aborted = true;
          const e = new Error('The operation was aborted');
          e.name = 'AbortError';
          call.reject(e);
        };
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
      this.calls.push(call);
      return p;
    };
  }

  get last() {
    return this.calls[this.calls.length - 1];
  }

  /** Calls not answered yet. */
  get open() {
    return this.calls.filter((c) => !c.settled);
  }

  /** Answers the oldest open call. */
  respond(status, body, headers) {
    const c = this.open[0];
    if (!c) throw new Error('no open request to answer');
    c.resolve(jsonResponse(status, body, headers));
    return c;
  }

  /**
   * Answers the oldest open call with a streaming body (default: a 200 `text/event-stream`) and
   * returns the server's end: `write(text or bytes)`, `end()`, `error(err)`, and `cancelled`
   * (the client stopped reading) and `call`.
   */
  respondStream(status = 200, headers = {}) {
    const c = this.open[0];
    if (!c) throw new Error('no open request to answer');
    const server = { call: c, cancelled: false, controller: null };
    const body = new ReadableStream({
      start(controller) {
        server.controller = controller;
      },
      cancel() {
        server.cancelled = true;
      },
    });
    const encoder = new TextEncoder();
    server.write = (chunk) => {
      if (!server.cancelled) server.controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
    };
    server.end = () => {
      if (!server.cancelled) server.controller.close();
    };
    server.error = (err = new TypeError('network error')) => {
      if (!server.cancelled) server.controller.error(err);
    };
    c.resolve(new Response(body, { status, headers: Object.assign({ 'content-type': 'text/event-stream' }, headers) }));
    return server;
  }

  fail(err = new TypeError('Failed to fetch')) {
    const c = this.open[0];
    if (!c) throw new Error('no open request to fail');
    c.reject(err);
    return c;
  }
}

/** Query parameters of a daemon poll URL. */
function query(call) {
  return Object.fromEntries(new URL(call.url).searchParams);
}

/** The frame the daemon writes for `e`, with `id` the cursor after it. */
function sseEvent(e, id) {
  return 'id: ' + id + '\ndata: ' + JSON.stringify(e) + '\n\n';
}

/** Form fields of an AJAX POST. */
function form(call) {
  return Object.fromEntries(new URLSearchParams(call.init.body));
}

/** In-memory BroadcastChannel: delivers structured clones to the other channels of the same name. */
class FakeBroadcastHub {
  constructor() {
    this.channels = new Set();
    this.sent = [];
    this.held = null;
    this.factory = (name) => {
      const hub = this;
      const ch = {
        name,
        onmessage: null,
        closed: false,
        postMessage(msg) {
          if (this.closed) throw new Error('InvalidStateError: channel closed');
          const data = structuredClone(msg);
          hub.sent.push(data);
          for (const other of hub.channels) {
            if (other === this || other.name !== name) continue;
            const deliver = () => {
              if (!other.closed && typeof other.onmessage === 'function') other.onmessage({ data: structuredClone(data) });
            };
            if (hub.held) hub.held.push(deliver);
            else queueMicrotask(deliver);
          }
        },
        close() {
          this.closed = true;
          hub.channels.delete(this);
        },
      };
      this.channels.add(ch);
      return ch;
    };
  }

  /** Queues messages instead of delivering them (a slow or partitioned bus). */
  hold() {
    this.held = [];
  }

  /** Delivers what was held, in order, and resumes normal delivery. */
  release() {
    const q = this.held || [];
    this.held = null;
    for (const d of q) queueMicrotask(d);
  }
}

/** A daemon poll body. */
function batch(events, cursor, extra = {}) {
  return Object.assign({ events, cursor, gap: false, mode: 'long', retry_ms: 0 }, extra);
}

let nextTs = 1_700_000_000_000;
/** A daemon-shaped event. */
function ev(id, priority = 3, extra = {}) {
  return Object.assign(
    {
      id,
      event_type: 'message_create',
      priority,
      channel_id: 1,
      message_id: 100 + id,
      thread_id: null,
      user_id: 7,
      data: { n: id },
      timestamp: nextTs,
      expires_at: nextTs + 3_600_000,
    },
    extra
  );
}

/** The same event as the legacy AJAX endpoint sends it. */
function legacyEv(e) {
  return {
    id: String(e.id),
    type: e.event_type,
    priority: String(e.priority),
    message_id: String(e.message_id ?? 0),
    thread_id: e.thread_id ?? 0,
    channel_id: String(e.channel_id),
    user_id: String(e.user_id),
    data: e.data,
    timestamp: Math.floor(e.timestamp / 1000),
  };
}

function ajaxOk(events, extra = {}) {
  return { success: true, data: Object.assign({ events, timestamp: Math.floor(nextTs / 1000) }, extra) };
}

/**
 * A transport the test drives, behind the same interface as the real ones: every poll() waits
 * until the test settles it, and a streaming test pushes batches through the call's `push`.
 */
class FakeTransport {
  constructor(name, { guarded = false } = {}) {
    this.name = name;
    this.guarded = guarded;
    this.calls = [];
    this.closed = 0;
  }

  poll(request, signal, push) {
    return new Promise((resolve, reject) => {
      const call = { request, signal, push, settled: false };
      call.resolve = (outcome) => {
        call.settled = true;
        resolve(outcome);
      };
      call.reject = (err) => {
        call.settled = true;
        reject(err);
      };
      signal.addEventListener(
        'abort',
        () => {
          const e = new Error('aborted');
          e.name = 'AbortError';
          call.reject(e);
        },
        { once: true }
      );
      this.calls.push(call);
    });
  }

  close() {
    this.closed += 1;
  }

  get last() {
    return this.calls[this.calls.length - 1];
  }

  /** Ends the open call with `outcome`. */
  settle(outcome) {
    const c = this.last;
    if (!c || c.settled) throw new Error(this.name + ': no open poll to settle');
    c.resolve(outcome);
    return c;
  }
}

module.exports = { flush, FakeClock, FakeFetch, FakeBroadcastHub, FakeTransport, jsonResponse, query, form, sseEvent, batch, ev, legacyEv, ajaxOk };

const lib = require('../lms-realtime-client.js');

/**
 * A client wired to fakes: daemon at http://daemon.test, AJAX at http://wp.test, jitter-free
 * backoff (random() = 0), tokens tok1, tok2, ... Returns the pieces and recorders. The stream
 * transport is off unless `options.stream` is true: these tests are about the long-poll path
 * (stream.test.js covers the stream, in front of it).
 */
function setup(options = {}, env = {}) {
  const clock = env.clock || new FakeClock();
  const fetch = env.fetch || new FakeFetch();
  const tokenCalls = [];
  const tokenProvider =
    env.tokenProvider ||
    (async (arg) => {
      tokenCalls.push(arg);
      return { token: 'tok' + tokenCalls.length, expires_at: Math.floor(clock.now() / 1000) + 3600 };
    });
  const pool =
    env.pool ||
    new lib.LMSConnectionPool({
      broadcastChannel: env.broadcastChannel === undefined ? null : env.broadcastChannel,
      setTimeout: clock.setTimeout,
      clearTimeout: clock.clearTimeout,
      now: clock.now,
      random: Math.random,
    });
  const client = new lib.LMSUnifiedLongPoll(
    Object.assign(
      {
        daemonUrl: 'http://daemon.test/',
        ajaxUrl: 'http://wp.test/wp-admin/admin-ajax.php',
        nonce: 'n1',
        channels: [1],
        tokenProvider,
        fetch: fetch.fn,
        setTimeout: clock.setTimeout,
        clearTimeout: clock.clearTimeout,
        now: clock.now,
        random: () => 0,
        pool,
        stream: false,
        pageEvents: null,
      },
      options
    )
  );
  const seen = [];
  const received = [];
  client.on('*', (e) => {
    seen.push(e.id);
    received.push(e);
  });
  const life = { connected: [], mode: [], resync: [], error: [] };
  for (const k of Object.keys(life)) client.on(k, (p) => life[k].push(p));
  return { clock, fetch, client, seen, received, life, tokenCalls, pool };
}

module.exports.setup = setup;
module.exports.lib = lib;

/** node:test's test() with a timeout, so a hang (e.g. a stop() that never ends) fails fast. */
function testWithTimeout(name, fn) {
  return require('node:test').test(name, { timeout: 5000 }, fn);
}
module.exports.test = testWithTimeout;
