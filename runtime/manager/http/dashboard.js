// The /dashboard page: signs the socket.io /inspect handshake in the browser (Backend.AI's
// HMAC-SHA256, as schema/signing.ts), keeps a copy of the actor graph from the `graph` snapshot
// and the `delta` messages, and draws it as SVG. Plain JS, no build step.
'use strict';
(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const EMPTY_BODY_HASH = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
  const STORE = { ak: 'flotilla.dashboard.ak', sk: 'flotilla.dashboard.sk' };
  const COLORS = {
    RUNNING: '#43a047', ALIVE: '#43a047', PENDING: '#cfd8dc', SCHEDULED: '#b0bec5', PREPARING: '#ffca28', PULLING: '#ffb300',
    PREPARED: '#ffd54f', CREATING: '#ffa000', RESTARTING: '#fb8c00', TERMINATING: '#ab47bc', TERMINATED: '#9e9e9e',
    CANCELLED: '#bdbdbd', ERROR: '#e53935', LOST: '#e53935',
  };
  const DARK_TEXT = new Set(['PENDING', 'SCHEDULED', 'PREPARING', 'PULLING', 'PREPARED', 'CREATING', 'CANCELLED']);

  const $ = (id) => document.getElementById(id);
  const state = { managerId: '', nodes: new Map(), selected: null, socket: null, drawQueued: false };

  // ---- signing (WebCrypto; a plain-JS SHA-256 where crypto.subtle is missing: plain http off localhost)

  const enc = new TextEncoder();
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

  async function hmac(key, data) {
    const msg = typeof data === 'string' ? enc.encode(data) : data;
    if (globalThis.crypto && crypto.subtle) {
      const k = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
      return new Uint8Array(await crypto.subtle.sign('HMAC', k, msg));
    }
    return hmacFallback(key, msg);
  }

  /** The `handshake.auth` headers signing `GET /socket.io` for this page's host. */
  async function signHandshake(ak, sk, version) {
    const date = new Date().toISOString();
    const day = date.slice(0, 10).replace(/-/g, '');
    const host = location.host;
    const toSign = ['GET', '/socket.io', date, `host:${host}`, 'content-type:application/octet-stream', `x-backendai-version:${version}`, EMPTY_BODY_HASH].join('\n');
    const key = await hmac(await hmac(enc.encode(sk), day), host);
    const signature = hex(await hmac(key, toSign));
    return { Date: date, 'X-BackendAI-Version': version, Authorization: `BackendAI signMethod=HMAC-SHA256, credential=${ak}:${signature}` };
  }

  // SHA-256 (FIPS 180-4) and HMAC (RFC 2104) for pages served over plain http to another host.
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  function sha256(data) {
    const bitLen = data.length * 8;
    const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[data.length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(bitLen / 0x100000000));
    view.setUint32(padded.length - 4, bitLen >>> 0);
    const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    const w = new Uint32Array(64);
    const rotr = (x, n) => (x >>> n) | (x << (32 - n));
    for (let off = 0; off < padded.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) ov.setUint32(i * 4, h[i]);
    return out;
  }
  function hmacFallback(key, msg) {
    let k = key.length > 64 ? sha256(key) : key;
    const block = new Uint8Array(64);
    block.set(k);
    const inner = new Uint8Array(64 + msg.length);
    const outer = new Uint8Array(64 + 32);
    for (let i = 0; i < 64; i++) { inner[i] = block[i] ^ 0x36; outer[i] = block[i] ^ 0x5c; }
    inner.set(msg, 64);
    outer.set(sha256(inner), 64);
    return sha256(outer);
  }
  // For tests of the fallback from a page: window.flotillaDashboard.hmacFallback.
  window.flotillaDashboard = { hmacFallback: (k, m) => hex(hmacFallback(enc.encode(k), enc.encode(m))), state };

  // ---- connection

  function setConn(text, s) { const c = $('conn'); c.textContent = text; c.dataset.state = s; }

  function showLogin(message) {
    $('login').classList.remove('hidden');
    $('view').classList.add('hidden');
    $('logout').classList.add('hidden');
    $('login-error').textContent = message || '';
    $('ak').value = sessionStorage.getItem(STORE.ak) || '';
  }

  async function apiVersion() {
    try {
      const r = await fetch('/', { headers: { accept: 'application/json' } });
      const body = await r.json();
      if (body && typeof body.version === 'string') return body.version;
    } catch { /* the manager answers below or the connection fails with a message */ }
    return 'v6.20220315';
  }

  async function connect() {
    const ak = sessionStorage.getItem(STORE.ak);
    const sk = sessionStorage.getItem(STORE.sk);
    if (!ak || !sk) { showLogin(); return; }
    if (state.socket) state.socket.disconnect();
    $('login').classList.add('hidden');
    $('view').classList.remove('hidden');
    $('logout').classList.remove('hidden');
    setConn('connecting…', 'connecting');
    const version = await apiVersion();
    const socket = io('/inspect', {
      transports: ['websocket'],
      // A fresh signature (and Date) for every connection attempt.
      auth: (cb) => { signHandshake(ak, sk, version).then(cb, (e) => { setConn(`signing failed: ${e.message}`, 'error'); }); },
    });
    state.socket = socket;
    socket.on('connect', () => setConn('live', 'connected'));
    socket.on('disconnect', () => setConn('reconnecting…', 'connecting'));
    socket.on('connect_error', (err) => {
      if (/admin only|signature|access key|Authorization|Date header|request date/i.test(err.message)) {
        socket.disconnect();
        state.socket = null;
        setConn('refused', 'error');
        showLogin(`The manager refused the keys: ${err.message}`);
      } else setConn(`connection failed: ${err.message}`, 'error');
    });
    socket.on('graph', (g) => {
      state.managerId = g.managerId;
      state.nodes = new Map(g.nodes.map((n) => [n.id, n]));
      $('manager').textContent = g.managerId;
      queueDraw();
    });
    socket.on('delta', (d) => {
      for (const id of d.removes) state.nodes.delete(id);
      for (const n of d.upserts) state.nodes.set(n.id, n);
      queueDraw();
    });
  }

  // ---- drawing

  function queueDraw() {
    if (state.drawQueued) return;
    state.drawQueued = true;
    requestAnimationFrame(() => { state.drawQueued = false; draw(); renderDetails(); });
  }

  const el = (name, attrs = {}, parent) => {
    const e = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (parent) parent.appendChild(e);
    return e;
  };
  const shortId = (id) => (/^[0-9a-f]{8}-[0-9a-f-]{27}$/i.test(id) ? id.slice(0, 8) : id);
  const clip = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

  const NODE_W = 200, NODE_H = 44, ROW = 56, TOP = 56, LEFT = 16;
  const COL = { manager: LEFT, session: LEFT + 250, kernel: LEFT + 520, agent: LEFT + 790 };

  function layout() {
    const nodes = [...state.nodes.values()];
    const pos = new Map();
    const byStart = (a, b) => a.startedAt.localeCompare(b.startedAt) || a.id.localeCompare(b.id);
    const sessions = nodes.filter((n) => n.kind === 'session').sort(byStart);
    const kernels = nodes.filter((n) => n.kind === 'kernel');
    const agents = nodes.filter((n) => n.kind === 'agent').sort((a, b) => a.id.localeCompare(b.id));
    const kernelsOf = new Map();
    for (const k of kernels) kernelsOf.set(k.parent, [...(kernelsOf.get(k.parent) || []), k]);
    let row = 0;
    const blocks = sessions.map((s) => s.id);
    for (const parent of kernelsOf.keys()) if (!state.nodes.has(parent)) blocks.push(parent); // kernels whose session is gone
    for (const sid of blocks) {
      const ks = (kernelsOf.get(sid) || []).sort((a, b) => String(a.summary.hostname || a.id).localeCompare(String(b.summary.hostname || b.id)));
      const rows = Math.max(1, ks.length);
      if (state.nodes.has(sid)) pos.set(sid, { x: COL.session, y: TOP + (row + (rows - 1) / 2) * ROW });
      ks.forEach((k, i) => pos.set(k.id, { x: COL.kernel, y: TOP + (row + i) * ROW }));
      row += rows;
    }
    agents.forEach((a, i) => pos.set(a.id, { x: COL.agent, y: TOP + i * ROW }));
    const manager = state.nodes.get(state.managerId);
    if (manager) pos.set(manager.id, { x: COL.manager, y: TOP });
    const height = TOP + Math.max(row, agents.length, 1) * ROW + 40;
    return { pos, height };
  }

  function label(n) {
    const s = n.summary || {};
    switch (n.kind) {
      case 'session': return [s.name ? `${s.name}` : shortId(n.id), `${n.state} · ${shortId(n.id)}`];
      case 'kernel': return [s.hostname ? `${s.hostname}${s.role ? ` (${s.role})` : ''}` : shortId(n.id), n.state];
      case 'agent': return [n.id, n.state];
      default: return ['manager', n.id];
    }
  }

  function draw() {
    const svg = $('graph');
    const { pos, height } = layout();
    const width = COL.agent + NODE_W + LEFT;
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('width', width);
    svg.setAttribute('height', height);
    svg.replaceChildren();
    const defs = el('defs', {}, svg);
    const marker = el('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, defs);
    el('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#1e6fd9' }, marker);
    for (const [kind, x] of Object.entries(COL)) {
      const t = el('text', { x, y: 24, class: 'column' }, svg);
      t.textContent = kind === 'manager' ? 'manager' : `${kind}s`;
    }

    const edges = el('g', { class: 'edges' }, svg);
    const right = (p) => [p.x + NODE_W, p.y + NODE_H / 2];
    const left = (p) => [p.x, p.y + NODE_H / 2];
    const curve = ([x1, y1], [x2, y2]) => `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
    for (const n of state.nodes.values()) {
      const p = pos.get(n.id);
      if (!p) continue;
      const parent = n.parent && pos.get(n.parent);
      if (parent && n.kind === 'agent') {
        // manager → agent: over the top of the other columns.
        const [x1, y1] = [parent.x + NODE_W / 2, parent.y];
        const [x2, y2] = left(p);
        el('path', { class: 'edge agent', d: `M${x1},${y1} C${x1},${TOP - 30} ${x2 - 80},${TOP - 30} ${x2 - 40},${y2} L${x2},${y2}`, 'data-from': n.parent, 'data-to': n.id }, edges);
      } else if (parent) {
        el('path', { class: 'edge supervision', d: curve(right(parent), left(p)), 'data-from': n.parent, 'data-to': n.id }, edges);
      }
      const agent = n.kind === 'kernel' && n.agentId && pos.get(n.agentId);
      if (agent) el('path', { class: 'edge placement', d: curve(right(p), left(agent)), 'marker-end': 'url(#arrow)', 'data-from': n.id, 'data-to': n.agentId }, edges);
    }

    const layer = el('g', { class: 'nodes' }, svg);
    for (const n of state.nodes.values()) {
      const p = pos.get(n.id);
      if (!p) continue;
      const classes = ['node', n.kind, n.endedAt ? 'ended' : '', state.selected === n.id ? 'selected' : ''].filter(Boolean).join(' ');
      const g = el('g', { class: classes, transform: `translate(${p.x},${p.y})`, 'data-id': n.id, 'data-kind': n.kind, 'data-status': n.status, tabindex: 0 }, layer);
      const fill = n.kind === 'manager' ? '#37474f' : COLORS[n.status] || '#90a4ae';
      el('rect', { width: NODE_W, height: NODE_H, rx: 8, fill }, g);
      const color = DARK_TEXT.has(n.status) ? '#1d1f24' : '#fff';
      const [l1, l2] = label(n);
      const t1 = el('text', { x: 10, y: 18, fill: color, 'font-weight': 600 }, g);
      t1.textContent = clip(String(l1), 28);
      const t2 = el('text', { x: 10, y: 35, fill: color, 'font-size': 11 }, g);
      t2.textContent = clip(String(l2) + (n.endedAt ? ' · ended' : ''), 29);
      const title = el('title', {}, g);
      title.textContent = `${n.kind} ${n.id}\n${n.state}`;
      g.addEventListener('click', () => { state.selected = n.id; queueDraw(); });
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter') { state.selected = n.id; queueDraw(); } });
    }

    const legend = el('g', { transform: `translate(${LEFT},${height - 18})` }, svg);
    let x = 0;
    for (const [name, color] of [['running/alive', COLORS.RUNNING], ['starting', COLORS.PREPARING], ['terminating', COLORS.TERMINATING], ['ended', COLORS.TERMINATED], ['error/lost', COLORS.ERROR]]) {
      el('rect', { x, y: -9, width: 10, height: 10, rx: 2, fill: color }, legend);
      const t = el('text', { x: x + 14, y: 0, 'font-size': 11, fill: '#6b7080' }, legend);
      t.textContent = name;
      x += 26 + name.length * 7;
    }
    el('path', { class: 'edge supervision', d: `M${x},-4 h24` }, legend);
    const ts = el('text', { x: x + 28, y: 0, 'font-size': 11, fill: '#6b7080' }, legend);
    ts.textContent = 'supervises';
    x += 110;
    el('path', { class: 'edge placement', d: `M${x},-4 h24` }, legend);
    const tp = el('text', { x: x + 28, y: 0, 'font-size': 11, fill: '#6b7080' }, legend);
    tp.textContent = 'placed on';

    const counts = { agent: 0, session: 0, kernel: 0 };
    for (const n of state.nodes.values()) if (n.kind in counts && !n.endedAt) counts[n.kind]++;
    $('counts').textContent = `${counts.agent} agents · ${counts.session} sessions · ${counts.kernel} kernels`;
  }

  // ---- details of the selected node

  const td = (tr, text) => { const c = document.createElement('td'); c.textContent = text; tr.appendChild(c); return c; };
  function row(table, k, v) { const tr = document.createElement('tr'); td(tr, k); td(tr, v); table.appendChild(tr); }
  function relative(ms) {
    const s = Math.round(Math.abs(ms) / 1000);
    const text = s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
    return ms >= 0 ? `in ${text}` : `${text} ago`;
  }

  function renderDetails() {
    const box = $('details');
    const n = state.selected && state.nodes.get(state.selected);
    if (!n) {
      if (state.selected) { box.replaceChildren(Object.assign(document.createElement('p'), { className: 'muted', textContent: 'That actor left the graph.' })); }
      return;
    }
    const parts = [];
    const h = document.createElement('h2');
    h.textContent = `${n.kind} ${n.summary && n.summary.name ? n.summary.name : n.id}`;
    parts.push(h);
    const info = document.createElement('table');
    info.id = 'details-info';
    row(info, 'id', n.id);
    row(info, 'state', n.state);
    row(info, 'machine', n.machine);
    if (n.parent) row(info, 'parent', n.parent);
    if (n.agentId) row(info, 'agent', n.agentId);
    row(info, 'started', n.startedAt);
    row(info, 'updated', n.updatedAt);
    if (n.endedAt) row(info, 'ended', n.endedAt);
    row(info, 'deadline', typeof n.deadlineAt === 'number' ? `${new Date(n.deadlineAt).toISOString()} (${relative(n.deadlineAt - Date.now())})` : 'none');
    parts.push(info);

    const ha = document.createElement('h3'); ha.textContent = 'accepts next'; parts.push(ha);
    const accepts = document.createElement('div');
    accepts.id = 'details-accepts';
    if (!n.accepts.length) accepts.textContent = 'nothing (final or waiting)';
    for (const a of n.accepts) accepts.appendChild(Object.assign(document.createElement('span'), { className: 'chip', textContent: a }));
    parts.push(accepts);

    const he = document.createElement('h3'); he.textContent = `history (last ${n.events.length} events)`; parts.push(he);
    const events = document.createElement('table');
    events.id = 'details-events';
    for (const e of [...n.events].reverse()) row(events, e.at.slice(11, 23), e.type);
    if (!n.events.length) row(events, '', 'no events yet');
    parts.push(events);

    const hs = document.createElement('h3'); hs.textContent = 'summary'; parts.push(hs);
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(n.summary, null, 2);
    parts.push(pre);
    box.replaceChildren(...parts);
  }

  // ---- start

  function start() {
    // `#ak=...&sk=...` (automation): taken into sessionStorage, then removed from the address bar.
    const frag = new URLSearchParams(location.hash.slice(1));
    if (frag.get('ak') && frag.get('sk')) {
      sessionStorage.setItem(STORE.ak, frag.get('ak'));
      sessionStorage.setItem(STORE.sk, frag.get('sk'));
      history.replaceState(null, '', location.pathname + location.search);
    }
    $('login-form').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(STORE.ak, $('ak').value.trim());
      sessionStorage.setItem(STORE.sk, $('sk').value.trim());
      $('sk').value = '';
      void connect();
    });
    $('logout').addEventListener('click', () => {
      sessionStorage.removeItem(STORE.ak);
      sessionStorage.removeItem(STORE.sk);
      if (state.socket) state.socket.disconnect();
      state.socket = null;
      state.nodes = new Map();
      setConn('not connected', 'idle');
      showLogin();
    });
    // Deadlines count down in the details panel.
    setInterval(() => { if (state.selected) renderDetails(); }, 1000);
    void connect();
  }
  start();
})();
