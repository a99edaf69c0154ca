// socket.io /watch as a client sees it: signed handshake, replay of stored events after a seq,
// then live ones, exactly once across a reconnect; another tenant sees none of it.
import * as assert from 'uvu/assert';
import { io, type Socket } from 'socket.io-client';
import type { RunningManager } from '../../runtime/manager/index.ts';
import type { WatchEvent } from '../../runtime/manager/watch.ts';
import { Client } from '../../runtime/sdk/index.ts';
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
  assert.equal(mine(w1.events), ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_started']);
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
  assert.equal(mine(all), ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_started', 'session_terminating', 'session_terminated']);
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
  assert.ok((await subscribe(ok.socket, { sinceSeq: 0 })).ok);
  ok.socket.disconnect();
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

t.run();
