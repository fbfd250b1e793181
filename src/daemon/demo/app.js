// The demo page: one LMSUnifiedLongPoll on the demo channels, a send form, a live table.
(async function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const status = (text, cls) => { $('status').textContent = text; $('status').className = cls || ''; };
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
    const tr = document.createElement('tr');
    tr.className = 'fresh';
    const latency = Math.max(0, Date.now() - e.timestamp);
    for (const v of [e.id, e.event_type, e.priority, e.channel_id, JSON.stringify(e.data), latency + ' ms']) {
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
      body: JSON.stringify({ channel_id: Number($('channel').value), text }),
    });
  });
})();
