// The demo page: one LMSUnifiedLongPoll on the demo channels, a send form, a live table that
// shows who sent each event. Each tab is one participant: a name (random, editable) and an id,
// kept in sessionStorage so a reload keeps them and another tab gets its own.
(async function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const status = (text, cls) => { $('status').textContent = text; $('status').className = cls || ''; };

  const me = participant();
  $('name').value = me.name;
  $('name').addEventListener('change', () => {
    me.name = $('name').value.trim().slice(0, 40) || me.name;
    $('name').value = me.name;
    sessionStorage.setItem('lmsrt-demo-me', JSON.stringify(me));
  });

  let session;
  async function fetchSession() {
    const r = await fetch('/demo/session', { cache: 'no-store' });
    if (!r.ok) throw new Error('session: HTTP ' + r.status);
    session = await r.json();
    return session;
  }
  try { await fetchSession(); } catch (e) { status('cannot reach the daemon: ' + e.message, 'err'); return; }

  const client = new LMSUnifiedLongPoll({
    daemonUrl: location.origin,
    channels: session.channels,
    cursor: session.cursor,
    tokenProvider: async ({ force }) => {
      const s = force || !session ? await fetchSession() : session;
      session = null; // the next call (after expiry or a 401) asks for a fresh one
      return { token: s.token, expires_at: s.expires_at };
    },
  });
  let received = 0;
  client.on('*', (e) => {
    received += 1;
    const mine = e.user_id === me.id;
    const tr = document.createElement('tr');
    tr.className = mine ? 'fresh mine' : 'fresh';
    const latency = Math.max(0, Date.now() - e.timestamp);
    const shown = typeof e.data.text === 'string' ? e.data.text : JSON.stringify(e.data);
    const from = sender(e) + (mine ? ' (you)' : '');
    for (const v of [e.id, from, e.event_type, e.priority, e.channel_id, shown, latency + ' ms']) {
      const td = document.createElement('td');
      td.textContent = String(v);
      tr.appendChild(td);
    }
    const body = $('events');
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > 50) body.removeChild(body.lastChild);
    $('stats').textContent = received + ' events received; cursor ' + client.cursor;
  });
  client.on('connected', (e) => status('live (' + e.transport + ', ' + e.tier + ')', 'ok'));
  client.on('mode', (e) => status('live (' + e.transport + ', ' + e.tier + ')', e.tier === 'long' ? 'ok' : ''));
  client.on('error', (e) => status('error ' + (e.code || e.status) + ', retrying', 'err'));
  client.start();
  addEventListener('pagehide', () => client.stop());

  $('send').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    $('text').value = '';
    await fetch('/demo/publish', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel_id: Number($('channel').value), text, user_id: me.id, from: me.name }),
    });
  });

  /** This tab's participant: from sessionStorage (per tab, survives a reload) or new. */
  function participant() {
    try {
      const saved = JSON.parse(sessionStorage.getItem('lmsrt-demo-me') || 'null');
      if (saved && Number.isSafeInteger(saved.id) && typeof saved.name === 'string') return saved;
    } catch (_) { /* a damaged entry: start over */ }
    // Ids from 10^6 up stay clear of the bot (1, 2) and the daemon's session users (1000-1255).
    const id = 1000000 + (crypto.getRandomValues(new Uint32Array(1))[0] % 1000000000);
    const adjectives = ['Amber', 'Brisk', 'Calm', 'Dusky', 'Eager', 'Fuzzy', 'Gentle', 'Jolly', 'Lucky', 'Misty', 'Nimble', 'Quiet'];
    const animals = ['Otter', 'Heron', 'Lynx', 'Panda', 'Robin', 'Gecko', 'Moose', 'Koala', 'Finch', 'Badger', 'Ibis', 'Yak'];
    const me = { id, name: adjectives[id % 12] + ' ' + animals[Math.floor(id / 12) % 12] };
    sessionStorage.setItem('lmsrt-demo-me', JSON.stringify(me));
    return me;
  }

  /** Who sent an event: the name in its data (the daemon keeps the posted one), else its user id. */
  function sender(e) {
    const from = e.data.from;
    if (typeof from === 'string' && from !== '') return from;
    return e.user_id != null ? 'user ' + e.user_id : '?';
  }
})();
