/**
 * lms-realtime: the LMS chat theme's own long poll, served by the daemon (lms-longpolld).
 *
 * The theme's client long-polls admin-ajax.php (action=lms_unified_long_poll) with jQuery.ajax,
 * and every poll holds a PHP worker. This script, printed by the plugin before the theme's
 * scripts, registers a jQuery transport for exactly those requests: the same form fields go to
 * the daemon's `POST /v1/lms/poll` with the user's daemon token, and the daemon's answer (the
 * same `{success, data: {events, last_event_id, ...}}` the plugin gives) completes the theme's
 * request. Nothing of the theme changes: not its code, its URL, its fields or its handlers.
 *
 * When the daemon fails (network, 5xx, 429, a refused token) the same request goes to
 * admin-ajax.php as the theme sent it, so the theme never sees an error it would count towards
 * giving up; the daemon is then skipped for a backoff that doubles up to 30 s. A token is
 * renewed from admin-ajax (action lms_realtime_token) before it expires or after the daemon
 * refused it. Every other request of the page is left to jQuery.
 *
 * A client still holding an id from before the store took over (0 < last_event_id < storeFloor)
 * is left to admin-ajax, where the plugin serves the rest of its old table first; a fresh
 * client (last_event_id 0) has the page's messages already and starts on the daemon.
 *
 * Configuration (window.lmsRealtimeThemeBridge, printed by the plugin): pollUrl, token,
 * expiresAt (unix s), tokenUrl, tokenAction, tokenNonce, nonceAction, storeFloor. State for tests and the
 * curious: window.lmsRealtimeThemeBridge.stats.
 */
(function (root) {
  'use strict';

  var POLL_ACTION = 'lms_unified_long_poll';
  var RENEW_BEFORE_S = 30;
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;

  /** The fields of a jQuery request, whatever form its data took (object, string, GET query). */
  function requestFields(options, original) {
    var fields = new URLSearchParams();
    var data = original && original.data !== undefined ? original.data : options.data;
    if (typeof data === 'string') {
      fields = new URLSearchParams(data);
    } else if (data && typeof data === 'object') {
      Object.keys(data).forEach(function (k) {
        var v = data[k];
        if (v !== undefined && v !== null && typeof v !== 'object' && typeof v !== 'function') {
          fields.append(k, String(v));
        }
      });
    }
    var url = String(options.url || '');
    var q = url.indexOf('?');
    if (q >= 0) {
      new URLSearchParams(url.slice(q + 1).split('#')[0]).forEach(function (v, k) {
        if (!fields.has(k)) fields.append(k, v);
      });
    }
    return fields;
  }

  /** Whether a jQuery request is the theme's long poll. */
  function isThemePoll(options, original) {
    return requestFields(options, original).get('action') === POLL_ACTION;
  }

  /**
   * The bridge: `transport(options, original)` answers jQuery's transport factory; `fetch` and
   * `now` are injectable for tests.
   */
  function create(cfg, deps) {
    var doFetch = (deps && deps.fetch) || root.fetch.bind(root);
    var now = (deps && deps.now) || Date.now;
    var stats = { daemon: 0, fallback: 0, failures: 0, renewals: 0, lastError: '' };
    var token = cfg.token || '';
    var expiresAt = Number(cfg.expiresAt) || 0;
    var renewing = null;
    var downUntil = 0;
    var failuresInARow = 0;

    function renew() {
      if (!renewing) {
        var body = new URLSearchParams({ action: cfg.tokenAction, nonce: cfg.tokenNonce, nonce_action: cfg.nonceAction || '' });
        renewing = doFetch(cfg.tokenUrl, { method: 'POST', body: body, credentials: 'same-origin', cache: 'no-store' })
          .then(function (r) {
            return r.json();
          })
          .then(function (j) {
            if (!j || !j.success || !j.data || !j.data.token) throw new Error('token refused: ' + JSON.stringify(j && j.data));
            token = j.data.token;
            expiresAt = Number(j.data.expires_at) || 0;
            stats.renewals++;
            return token;
          })
          .finally(function () {
            renewing = null;
          });
      }
      return renewing;
    }

    function currentToken() {
      if (token && expiresAt - now() / 1000 > RENEW_BEFORE_S) return Promise.resolve(token);
      return renew();
    }

    function failed(why, dropToken) {
      stats.failures++;
      stats.lastError = String(why);
      if (dropToken) {
        token = '';
        return;
      }
      failuresInARow++;
      downUntil = now() + Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, failuresInARow - 1));
    }

    /** The request as the theme sent it, to admin-ajax; completes jQuery's request with its answer. */
    function fallback(options, complete, signal) {
      stats.fallback++;
      var method = String(options.type || 'GET').toUpperCase();
      var init = { method: method, credentials: 'same-origin', cache: 'no-store', signal: signal };
      if (method !== 'GET' && method !== 'HEAD' && options.data !== undefined) {
        init.body = options.data;
        init.headers = { 'Content-Type': options.contentType || 'application/x-www-form-urlencoded; charset=UTF-8' };
      }
      return doFetch(options.url, init).then(function (r) {
        return r.text().then(function (text) {
          complete(r.status, r.statusText || String(r.status), { text: text }, 'Content-Type: ' + (r.headers.get('Content-Type') || ''));
        });
      });
    }

    function tableEra(fields) {
      var last = Number(fields.get('last_event_id')) || 0;
      return last > 0 && last < (Number(cfg.storeFloor) || 0);
    }

    function transport(options, original) {
      if (!isThemePoll(options, original) || now() < downUntil || tableEra(requestFields(options, original))) {
        return undefined; // jQuery's own XHR to admin-ajax
      }
      var controller = new AbortController();
      var aborted = false;
      return {
        send: function (headers, complete) {
          var fields = requestFields(options, original);
          currentToken()
            .then(function (t) {
              return doFetch(cfg.pollUrl, {
                method: 'POST',
                headers: { Authorization: 'Bearer ' + t, 'Content-Type': 'application/x-www-form-urlencoded' },
                body: fields.toString(),
                cache: 'no-store',
                signal: controller.signal,
              });
            })
            .then(function (r) {
              return r.text().then(function (text) {
                var body = null;
                try {
                  body = JSON.parse(text);
                } catch (e) {
                  body = null;
                }
                if (r.status === 200 && body && body.success) {
                  failuresInARow = 0;
                  stats.daemon++;
                  complete(200, 'success', { text: text }, 'Content-Type: application/json');
                  return;
                }
                var code = (body && body.data && body.data.code) || '';
                // A refused token (expired, or a channel joined after it was issued): renew it,
                // and keep using the daemon.
                var tokenProblem = r.status === 401 || (r.status === 403 && code === 'forbidden_channel');
                failed('daemon ' + r.status + ' ' + code, tokenProblem);
                throw new Error('fallback');
              });
            })
            .catch(function (e) {
              if (aborted) return undefined;
              if (!e || e.message !== 'fallback') failed(e && e.message ? e.message : e, false);
              return fallback(options, complete, controller.signal);
            })
            .catch(function (e) {
              if (!aborted) complete(0, 'error', { text: String(e && e.message) }, '');
            });
        },
        abort: function () {
          aborted = true;
          controller.abort();
        },
      };
    }

    return { transport: transport, stats: stats, renew: renew };
  }

  var api = { create: create, isThemePoll: isThemePoll, requestFields: requestFields };
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
    return;
  }
  var cfg = root.lmsRealtimeThemeBridge;
  var $ = root.jQuery;
  if (!cfg || !cfg.pollUrl || !$ || !$.ajaxTransport || !root.fetch || !root.AbortController) {
    return;
  }
  var bridge = create(cfg);
  cfg.stats = bridge.stats;
  // '+*': ahead of jQuery's own transports, for every data type the theme may ask for.
  $.ajaxTransport('+*', bridge.transport);
})(typeof window !== 'undefined' ? window : globalThis);
