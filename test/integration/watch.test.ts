// socket.io /watch as a client sees it: signed handshake, replay of stored events after a seq,
// then live ones, exactly once across a reconnect; another tenant sees none of it.
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server as SocketServer } from 'socket.io';
import { io, type Socket } from 'socket.io-client';
import { createLogger } from '../../runtime/log.ts';
import type { RunningManager } from '../../runtime/manager/index.ts';
import { insertEvents, type EventRow } from '../../runtime/manager/persistence.ts';
import { WatchGateway, type WatchEvent } from '../../runtime/manager/watch.ts';
import { issueSocketToken } from '../../runtime/manager/http/auth.ts';
import { Client, watchSessions } from '../../runtime/sdk/index.ts';
import { AuthorizationFailed, InvalidAPIParameters } from '../../schema/errors.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

type Ctx = InProcessCluster & { a: { ak: string; sk: string }; b: { ak: string; sk: string } };
const t = suite<Ctx>('/watch', { timeoutMs: 90_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('watch'));
  ctx.a = { ak: ctx.ak, sk: ctx.sk };
  const user = await ctx.m.keypairs.create({ email: `b-${ctx.tag}@example.com` });
  ctx.b = { ak: user.accessKey, sk: user.secretKey };
});
t.after(async (ctx) => { await ctx.stop?.(); });

function watcher(m: RunningManager, keys: { ak: string; sk: string }): { socket: Socket; events: WatchEvent[] } {
  const url = new URL(m.url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: '/socket.io', date, host: url.host, version: API_VERSION, accessKey: keys.ak, secretKey: keys.sk });
  const socket = io(`${m.url}/watch`, { transports: ['websocket'], reconnection: false, auth: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
  const events: WatchEvent[] = [];
  socket.onAny((_name, e: WatchEvent) => events.push(e));
  return { socket, events };
}

const subscribe = (socket: Socket, payload: object) => socket.timeout(10_000).emitWithAck('subscribe', payload) as Promise<{ ok: boolean; replayed?: number; error?: string }>;

t('a session\'s lifecycle arrives live, in order; after a reconnect with the last seq, the rest arrives exactly once', async ({ m, a }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const w1 = watcher(m, a);
  assert.ok((await subscribe(w1.socket, {})).ok);
  const s = await client.sessions.create({ name: 'watched-1', image: 'python' });
  await eventually(() => w1.events.some((e) => e.name === 'session_started' && e.sessionId === s.sessionId), 10_000, 'session_started seen live');
  const mine = (es: WatchEvent[]) => es.filter((e) => e.sessionId === s.sessionId && e.kernelId === null).map((e) => e.name);
  assert.equal(mine(w1.events), ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_creating', 'session_started']);
  const lastSeq = Math.max(...w1.events.map((e) => e.seq));
  w1.socket.disconnect();

  await client.sessions.destroy(s.sessionId); // while nobody watches

  const w2 = watcher(m, a);
  const r = await subscribe(w2.socket, { sinceSeq: lastSeq });
  assert.ok(r.ok);
  await eventually(() => w2.events.some((e) => e.name === 'session_terminated'), 10_000, 'replayed to the end');
  const all = [...w1.events, ...w2.events].filter((e) => e.sessionId === s.sessionId);
  const seqs = all.map((e) => e.seq);
  assert.equal(seqs, [...new Set(seqs)].sort((x, y) => x - y), 'every event once, in order');
  assert.equal(mine(all), ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_creating', 'session_started', 'session_terminating', 'session_terminated']);
  for (const e of all) assert.is(e.ownerAccessKey, a.ak);
  w2.socket.disconnect();
});

t('another tenant sees none of it, even subscribing to the session by id from seq 0', async ({ m, a, b }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const s = await client.sessions.create({ name: 'private-1', image: 'python', enqueueOnly: true });
  const wb = watcher(m, b);
  assert.ok((await subscribe(wb.socket, { sessionId: s.sessionId, sinceSeq: 0 })).ok);
  const wbAll = watcher(m, b);
  assert.ok((await subscribe(wbAll.socket, { sinceSeq: 0 })).ok);
  await client.sessions.destroy(s.sessionId);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(wb.events, []);
  assert.equal(wbAll.events, []);
  wb.socket.disconnect();
  wbAll.socket.disconnect();
});

t('an unsigned or badly signed handshake is refused; a malformed subscribe is answered, not fatal', async ({ m, a }) => {
  const bare = io(`${m.url}/watch`, { transports: ['websocket'], reconnection: false });
  const err = await new Promise<Error>((resolve) => bare.on('connect_error', resolve));
  assert.match(err.message, /Authorization/);
  const w = watcher(m, { ak: a.ak, sk: 'x'.repeat(40) });
  const err2 = await new Promise<Error>((resolve) => w.socket.on('connect_error', resolve));
  assert.match(err2.message, /signature/);
  const ok = watcher(m, a);
  const r = await subscribe(ok.socket, { sinceSeq: -5 });
  assert.is(r.ok, false);
  // Past what a bigint seq (or an exact JSON number) holds: refused up front, and nothing is delivered to a refused subscription.
  for (const sinceSeq of [1e300, 9223372036854775807]) assert.is((await subscribe(ok.socket, { sinceSeq })).ok, false);
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const s = await client.sessions.create({ name: 'unwatched-1', image: 'python', enqueueOnly: true });
  await client.sessions.destroy(s.sessionId);
  await new Promise((res) => setTimeout(res, 500));
  assert.equal(ok.events, []);
  assert.ok((await subscribe(ok.socket, { sinceSeq: 0 })).ok);
  ok.socket.disconnect();
  // The SDK's watch gives up at once, with the typed error, on a handshake its clock made stale (it would never pass).
  const skewed = watchSessions(m.url, () => {
    const date = new Date(Date.now() - 20 * 60_000).toISOString();
    const { authorization } = signRequest({ method: 'GET', pathWithQuery: '/socket.io', date, host: new URL(m.url).host, version: API_VERSION, accessKey: a.ak, secretKey: a.sk });
    return { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization };
  });
  try { await skewed.ready; assert.unreachable('a stale handshake was accepted'); } catch (e) { assert.instance(e, AuthorizationFailed); } finally { skewed.close(); }
});

t('a socket token from POST /auth/token opens /watch without the secret key, for its owner only; tampered, expired or revoked ones are refused', async ({ m, a, b }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const { token, accessKey, expiresAt } = await client.socketToken({ ttl: 60 });
  assert.is(accessKey, a.ak);
  const left = Date.parse(expiresAt) - Date.now();
  assert.ok(left > 50_000 && left <= 60_000, `expires in ${left} ms`);
  // The SDK's watch with a token instead of a signer: a session's lifecycle, live.
  const w = watchSessions(m.url, () => ({ token }), {});
  await w.ready;
  const s = await client.sessions.create({ name: 'token-watched', image: 'python', enqueueOnly: true });
  const seen: string[] = [];
  for await (const e of w) {
    if (e.name !== 'execution_output' && e.sessionId === s.sessionId && e.kernelId === null) seen.push(e.name);
    if (seen.includes('session_scheduled')) break;
  }
  w.close();
  assert.equal(seen.slice(0, 2), ['session_enqueued', 'session_scheduled']);
  // Tenancy is the token's owner's: b's token sees none of a's sessions.
  const bToken = (await new Client({ endpoint: m.url, accessKey: b.ak, secretKey: b.sk }).socketToken()).token;
  const wb = io(`${m.url}/watch`, { transports: ['websocket'], reconnection: false, auth: { token: bToken } });
  const wbEvents: WatchEvent[] = [];
  wb.onAny((_n, e: WatchEvent) => wbEvents.push(e));
  assert.ok((await subscribe(wb, { sessionId: s.sessionId, sinceSeq: 0 })).ok);
  await client.sessions.destroy(s.sessionId);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(wbEvents, []);
  wb.disconnect();
  // Refused: another payload under the same MAC, one past its expiry, one of a deactivated keypair, garbage.
  const refused = async (auth: object) => {
    const sock = io(`${m.url}/watch`, { transports: ['websocket'], reconnection: false, auth });
    try { return await new Promise<string>((resolve, reject) => { sock.on('connect_error', (e) => resolve(e.message)); sock.on('connect', () => reject(new Error(`accepted ${JSON.stringify(auth)}`))); }); } finally { sock.disconnect(); }
  };
  const [, , mac] = token.split('.');
  const forged = `fst1.${Buffer.from(JSON.stringify({ ak: a.ak, ow: a.ak, exp: Date.now() + 86_400_000 })).toString('base64url')}.${mac}`;
  assert.match(await refused({ token: forged }), /signature/);
  const kp = (await m.keypairs.get(a.ak))!;
  assert.match(await refused({ token: issueSocketToken(kp, a.ak, -1).token }), /expired/);
  assert.match(await refused({ token: 'not-a-token' }), /malformed/);
  const c = await m.keypairs.create({ email: `c-token@example.com` });
  const cToken = (await new Client({ endpoint: m.url, accessKey: c.accessKey, secretKey: c.secretKey }).socketToken()).token;
  await m.keypairs.update(c.accessKey, { isActive: false });
  assert.match(await refused({ token: cToken }), /inactive/);
});

t('POST /auth/token refuses a ttl out of range or of the wrong type (400), and needs a signed request (401)', async ({ m, a }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  for (const body of [{ ttl: 0 }, { ttl: 3601 }, { ttl: 1.5 }, { ttl: '60' }, [1]]) {
    try { await client.request('POST', '/auth/token', { body }); assert.unreachable(`ttl ${JSON.stringify(body)} accepted`); } catch (e) { assert.instance(e, InvalidAPIParameters); }
  }
  const unsigned = await fetch(`${m.url}/auth/token`, { method: 'POST' });
  assert.is(unsigned.status, 401);
});

t('a run\'s output reaches the session\'s watchers live, in order, with the final status; another tenant gets none', async ({ m, a, b }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const s = await client.sessions.create({ name: 'watched-output', image: 'python' });
  const wa = watcher(m, a);
  assert.ok((await subscribe(wa.socket, { sessionId: s.sessionId })).ok);
  const wb = watcher(m, b);
  assert.ok((await subscribe(wb.socket, {})).ok);
  const code = "import sys, time\nfor i in range(5):\n    print('line', i)\n    time.sleep(0.3)\nprint('oops', file=sys.stderr)\nraise SystemExit(3)";
  const r = await client.sessions.run(s.sessionId, code);
  assert.is(r.exitCode, 3);
  type Out = { sessionId: string; runId: string; status: string; exitCode: number | null; console: Array<[string, string]> };
  const outs = () => (wa.events as unknown as Array<Out & { name?: string }>).filter((e) => 'console' in e) as Out[];
  await eventually(() => outs().some((o) => o.status === 'finished'), 10_000, 'the finished output seen live');
  const got = outs();
  assert.ok(got.length >= 2, 'output came in more than one piece, as the run produced it');
  for (const o of got) { assert.is(o.sessionId, s.sessionId); assert.is(o.runId, r.runId); }
  const stdout = got.flatMap((o) => o.console.filter(([st]) => st === 'stdout').map(([, d]) => d)).join('');
  assert.is(stdout, [0, 1, 2, 3, 4].map((i) => `line ${i}\n`).join(''));
  assert.is(got.flatMap((o) => o.console.filter(([st]) => st === 'stderr').map(([, d]) => d)).join(''), 'oops\n');
  assert.is(got[got.length - 1].exitCode, 3);
  assert.equal(wb.events, []);
  wa.socket.disconnect();
  wb.socket.disconnect();
  await client.sessions.destroy(s.sessionId);
});

/** One event-producing cycle: a session in a resource group without agents, created then cancelled (4 events). */
async function cycle(client: Client, group: string, i: number): Promise<string> {
  const s = await client.sessions.create({ name: `burst-${i}`, image: 'python', resourceGroup: group, enqueueOnly: true });
  await client.sessions.destroy(s.sessionId);
  return s.sessionId;
}

t('the SDK watch, cut off for 3 s in a burst of 500 events, has every event exactly once, in order', async ({ m, a, stores, tag }) => {
  const group = `burst-${tag}`;
  await stores.db.query(`INSERT INTO resource_groups (name) VALUES ($1) ON CONFLICT DO NOTHING`, [group]);
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const w = client.watch({ reconnectionDelayMs: 3000 });
  await w.ready;
  const got: WatchEvent[] = [];
  const reading = (async () => { for await (const e of w) if ('seq' in e && e.sessionName?.startsWith('burst-')) got.push(e); })();
  const ids: string[] = [];
  let cut = 0;
  for (let i = 0; i < 125; i++) {
    if (i === 30) {
      // Drop the connection from the server side: the client reconnects after its 3 s delay.
      for (const sock of m.io.of('/watch').sockets.values()) { sock.conn.close(); cut++; }
    }
    ids.push(await cycle(client, group, i));
  }
  assert.ok(cut >= 1, 'a watcher was cut off');
  const expected = (await stores.db.query<{ seq: string }>(
    `SELECT seq FROM session_events WHERE session_id = ANY($1::uuid[]) ORDER BY seq`, [ids])).rows.map((r) => Number(r.seq));
  assert.is(expected.length, 500);
  await eventually(() => got.length >= 500, 20_000, `all 500 events arrive (have ${got.length})`);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(got.map((e) => e.seq), expected, 'every event exactly once, in seq order');
  w.close();
  await reading;
});

t('Backend.AI-style SSE delivers the same lifecycle of a session as /watch', async ({ m, a }) => {
  const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
  const w = watcher(m, a);
  assert.ok((await subscribe(w.socket, {})).ok);
  const sse = await openSse(m.url, a, '/events/session?sessionName=sse-1');
  const s = await client.sessions.create({ name: 'sse-1', image: 'python' });
  await client.sessions.destroy(s.sessionId);
  await eventually(() => sse.events.some((e) => e.event === 'session_terminated'), 10_000, 'SSE saw the end');
  await eventually(() => w.events.some((e) => e.name === 'session_terminated' && e.sessionId === s.sessionId), 10_000, '/watch saw the end');
  const viaWatch = w.events.filter((e) => e.sessionId === s.sessionId).map((e) => [e.name, e.seq]);
  const viaSse = sse.events.map((e) => [e.event, Number(e.id)]);
  assert.equal(viaSse, viaWatch);
  for (const e of sse.events) {
    const data = JSON.parse(e.data);
    assert.is(data.sessionId, s.sessionId);
    assert.is(data.sessionName, 'sse-1');
    assert.is(data.ownerAccessKey, a.ak);
    assert.is(data.name, e.event);
  }
  assert.ok(viaSse.some(([n]) => n === 'session_started'));
  sse.close();

  // Resuming with Last-Event-ID replays what came after it.
  const mid = viaSse[2][1] as number;
  const again = await openSse(m.url, a, '/events/session?sessionName=sse-1', { 'Last-Event-ID': String(mid) });
  await eventually(() => again.events.some((e) => e.event === 'session_terminated'), 10_000, 'replayed to the end');
  assert.equal(again.events.map((e) => [e.event, Number(e.id)]), viaSse.slice(3));
  again.close();
  w.socket.disconnect();
});

// Guards insertEvents' order lock: two transactions could commit their seqs out of order, and a
// watcher that saw the higher one and resumed from it never got the lower one.
t('a watcher resuming from the last seq it saw misses no event committed late below it', async ({ m, a, stores }) => {
  const before = Number((await stores.db.query<{ seq: string | null }>('SELECT max(seq) AS seq FROM session_events')).rows[0].seq ?? 0);
  const event = (name: string): EventRow => ({ sessionId: randomUUID(), accessKey: a.ak, name, status: 'PENDING', at: new Date().toISOString() });
  // Transaction A inserts its event and stays open; B inserts another and commits meanwhile.
  let releaseA!: () => void;
  const aOpen = new Promise<void>((r) => { releaseA = r; });
  let aInserted!: () => void;
  const aHasSeq = new Promise<void>((r) => { aInserted = r; });
  const aDone = stores.db.tx(async (c) => { const [e] = await insertEvents(c, [event('session_late_a')]); aInserted(); await aOpen; return e; });
  await aHasSeq;
  const bDone = stores.db.tx((c) => insertEvents(c, [event('session_late_b')]));
  await new Promise((r) => setTimeout(r, 300));
  // A watcher replays what is committed by now, then goes away.
  const w1 = watcher(m, a);
  assert.ok((await subscribe(w1.socket, { sinceSeq: before })).ok);
  w1.socket.disconnect();
  const late = (es: WatchEvent[]) => es.filter((e) => e.name.startsWith('session_late_'));
  const lastSeen = Math.max(before, ...late(w1.events).map((e) => e.seq));
  releaseA();
  const [ea, [eb]] = await Promise.all([aDone, bDone]);
  // It comes back from the last seq it saw: between the two visits it has both events, once each.
  const w2 = watcher(m, a);
  assert.ok((await subscribe(w2.socket, { sinceSeq: lastSeen })).ok);
  const seen = await eventually(() => { const es = late([...w1.events, ...w2.events]); return es.length >= 2 ? es : undefined; }, 10_000, 'both events');
  w2.socket.disconnect();
  assert.equal(seen.map((e) => e.seq).sort((x, y) => x - y), [ea.seq, eb.seq].sort((x, y) => x - y), 'each event once');
  assert.ok(ea.seq < eb.seq, 'seqs follow the commit order');
});

t('events reach watchers connected to another manager, through the socket.io Redis adapter', async ({ m, a, b, stores, tag }) => {
  // A second manager's /watch: its own HTTP and socket.io server on the same Redis and database.
  const server = createServer();
  const io2 = new SocketServer(server, { serveClient: false });
  const pub = new Redis(process.env.FLOTILLA_REDIS_URL!, { protocol: 2 });
  const sub = pub.duplicate();
  io2.adapter(createAdapter(pub, sub, { key: `flotilla:test/watch-${tag}/socket.io` }));
  const gw2 = new WatchGateway({ db: stores.db, keypairs: m.keypairs, log: createLogger('test', 'silent'), fanOut: true });
  gw2.attach(io2.of('/watch'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url2 = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  try {
    const fake = { ...m, url: url2 } as RunningManager;
    const wa = watcher(fake, a);
    assert.ok((await subscribe(wa.socket, {})).ok);
    const wb = watcher(fake, b);
    assert.ok((await subscribe(wb.socket, {})).ok);
    await new Promise((r) => setTimeout(r, 300)); // the adapter's subscriptions settle
    const client = new Client({ endpoint: m.url, accessKey: a.ak, secretKey: a.sk });
    const s = await client.sessions.create({ name: 'fanout-1', image: 'python' });
    await client.sessions.run(s.sessionId, 'print("across managers")');
    await client.sessions.destroy(s.sessionId);
    await eventually(() => wa.events.some((e) => e.name === 'session_terminated' && e.sessionId === s.sessionId), 10_000, 'the end seen on the other manager');
    const names = wa.events.filter((e) => e.sessionId === s.sessionId && e.kernelId === null && 'seq' in e).map((e) => e.name);
    assert.equal(names, ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_creating', 'session_started', 'session_terminating', 'session_terminated']);
    const out = (wa.events as unknown as Array<{ console?: Array<[string, string]> }>).flatMap((e) => e.console ?? []).map(([, d]) => d).join('');
    assert.is(out, 'across managers\n', 'execution output crosses too');
    assert.equal(wb.events, [], 'another tenant on the other manager sees nothing');
    wa.socket.disconnect();
    wb.socket.disconnect();
  } finally {
    io2.close();
    pub.disconnect();
    sub.disconnect();
  }
});

/** A raw SSE client (node:http) with signed headers; collects `{event, id, data}` frames. */
async function openSse(base: string, keys: { ak: string; sk: string }, path: string, extra: Record<string, string> = {}) {
  const url = new URL(path, base);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: url.pathname + url.search, date, host: url.host, version: API_VERSION, accessKey: keys.ak, secretKey: keys.sk });
  const events: Array<{ event: string; id: string; data: string }> = [];
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    const req = httpRequest(url, { headers: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization, Accept: 'text/event-stream', ...extra } }, resolve);
    req.on('error', reject);
    req.end();
  });
  assert.is(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /^text\/event-stream/);
  let buf = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const f: Record<string, string> = {};
      for (const line of frame.split('\n')) { if (line.startsWith(':')) continue; const c = line.indexOf(': '); if (c > 0) f[line.slice(0, c)] = line.slice(c + 2); }
      if (f.event) events.push({ event: f.event, id: f.id, data: f.data });
    }
  });
  return { events, close: () => res.destroy() };
}

t.run();
