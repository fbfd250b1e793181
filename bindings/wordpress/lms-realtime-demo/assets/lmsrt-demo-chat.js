/*!
 * The [lmsrt_demo_chat] page: a message list kept live by LMSUnifiedLongPoll, and a post box.
 * Reads window.lmsRealtimeConfig (rendered by the plugin). Message ids de-duplicate the list:
 * the page's own post, the history and the live events may all carry one message.
 */
(function () {
  'use strict';
  var cfg = window.lmsRealtimeConfig;
  if (!cfg || !window.LMSUnifiedLongPoll) return;
  var root = document.getElementById('lms-chat-' + cfg.channel_id);
  if (!root) return;
  var list = root.querySelector('.lms-chat-messages');
  var form = root.querySelector('.lms-chat-form');
  var input = root.querySelector('.lms-chat-input');
  var status = root.querySelector('.lms-chat-status');
  var i18n = cfg.i18n || {};

  // What the page received, for diagnostics (and the end-to-end tests).
  var state = { events: [], posted: [], errors: [], modes: [] };

  function post(action, fields) {
    var body = new URLSearchParams();
    body.set('action', action);
    body.set('nonce', cfg.nonce);
    Object.keys(fields).forEach(function (k) { body.set(k, String(fields[k])); });
    return fetch(cfg.ajax_url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded; charset=UTF-8' },
      body: body.toString(),
    }).then(function (r) { return r.json(); });
  }

  function findItem(id) {
    return list.querySelector('.lms-chat-message[data-message-id="' + Number(id) + '"]');
  }

  function renderReactions(li, reactions) {
    var box = li.querySelector('.lms-chat-reactions');
    if (!box) {
      box = document.createElement('span');
      box.className = 'lms-chat-reactions';
      li.appendChild(box);
    }
    // The LMS theme's shape: a list of {emoji, count}; the history's: a map of emoji => count.
    var list = Array.isArray(reactions) ? reactions
      : Object.keys(reactions || {}).map(function (e) { return { emoji: e, count: reactions[e] }; });
    box.textContent = list.map(function (r) { return r.emoji + ' ' + r.count; }).join('  ');
  }

  /** Adds a message unless the list has it, keeping the list in id order. */
  function upsert(m) {
    if (!m || !m.id || m.thread_id) return;
    if (findItem(m.id)) return;
    var li = document.createElement('li');
    li.className = 'lms-chat-message';
    li.setAttribute('data-message-id', String(m.id));
    li.setAttribute('data-user-id', String(m.user_id));
    var who = document.createElement('strong');
    who.className = 'lms-chat-author';
    who.textContent = m.author || '';
    var text = document.createElement('span');
    text.className = 'lms-chat-text';
    text.textContent = m.text || '';
    li.appendChild(who);
    li.appendChild(document.createTextNode(' '));
    li.appendChild(text);
    if (m.reactions && Object.keys(m.reactions).length) renderReactions(li, m.reactions);
    if (Number(m.user_id) === Number(cfg.own_user_id)) {
      var del = document.createElement('button');
      del.type = 'button';
      del.className = 'lms-chat-delete';
      del.textContent = i18n.delete || 'Delete';
      del.addEventListener('click', function () { post('lmsrt_demo_delete_message', { message_id: m.id }); });
      li.appendChild(del);
    }
    var after = null;
    var items = list.querySelectorAll('.lms-chat-message');
    for (var i = items.length - 1; i >= 0; i--) {
      if (Number(items[i].getAttribute('data-message-id')) < m.id) { after = items[i]; break; }
    }
    if (after) after.insertAdjacentElement('afterend', li);
    else list.insertBefore(li, list.firstChild);
  }

  function setStatus(text) { if (status) status.textContent = text; }

  var client = window.LMSUnifiedLongPoll.fromConfig(cfg);
  client.on('*', function (e) {
    state.events.push({ id: e.id, type: e.event_type, message_id: e.message_id, received_at: Date.now(), timestamp: e.timestamp, transport: client.mode && client.mode.transport });
  });
  client.on('message_create', function (e) { upsert(e.data); }, { priority: 1 });
  client.on('message_delete', function (e) {
    var li = findItem(e.message_id);
    if (li) li.parentNode.removeChild(li);
  }, { priority: 1 });
  client.on('reaction_update', function (e) {
    var li = findItem(e.message_id);
    if (li) renderReactions(li, e.data.reactions);
  });
  client.on('resync', function () {
    post('lmsrt_demo_history', { channel_id: cfg.channel_id }).then(function (r) {
      if (r && r.success) r.data.messages.forEach(upsert);
    });
  });
  function showMode() {
    var m = client.mode;
    if (!m) return;
    root.setAttribute('data-transport', m.transport || '');
    root.setAttribute('data-tier', m.tier || '');
  }
  client.on('connected', function (e) { state.modes.push({ at: Date.now(), connected: e.transport, tier: e.tier }); showMode(); setStatus(''); });
  client.on('mode', function (e) { state.modes.push({ at: Date.now(), transport: e.transport, tier: e.tier }); showMode(); });
  client.on('error', function (e) { state.errors.push({ at: Date.now(), code: e.code, transport: e.transport }); });

  form.addEventListener('submit', function (ev) {
    ev.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = '';
    post('lmsrt_demo_post_message', { channel_id: cfg.channel_id, thread_id: 0, message: text }).then(function (r) {
      if (r && r.success) {
        state.posted.push(r.data.message.id);
        upsert(r.data.message);
      } else {
        state.errors.push({ at: Date.now(), code: r && r.data && r.data.code, transport: 'post' });
        setStatus(i18n.failed || 'The message could not be sent.');
      }
    }, function () { setStatus(i18n.failed || 'The message could not be sent.'); });
  });

  window.lmsChat = { client: client, state: state, upsert: upsert };
  client.start();
  window.addEventListener('pagehide', function () { client.stop(); });
})();
