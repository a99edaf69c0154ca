// The session HTTP API as clients see it, on an in-process manager and agent over the real
// PostgreSQL, Redis, etcd and Docker: request signing (and the quirks of Backend.AI's Python
// client), problem bodies, and bad input answered with the 4xx of API.md with nothing persisted.
import * as assert from 'uvu/assert';
import pg from 'pg';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { rawRequest, type RawOptions } from '../helpers/http.ts';
import { eventually, suite } from '../helpers/suite.ts';

type Ctx = InProcessCluster & { db: pg.Pool };
const t = suite<Ctx>('session API', { timeoutMs: 90_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('api'));
  ctx.db = new pg.Pool({ connectionString: ctx.databaseUrl, max: 2 });
});
t.after(async (ctx) => {
  await ctx.db?.end();
  await ctx.stop?.();
});

const raw = (ctx: Ctx, method: string, path: string, opts: RawOptions = {}) => rawRequest(ctx.m.url, ctx, method, path, opts);

const count = async (ctx: Ctx) => (await ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM sessions`)).rows[0].n;

function problem(r: { status: number; type: string | null; body: { type?: string; title?: string } }, status: number, code: string) {
  assert.is(r.status, status, JSON.stringify(r.body));
  assert.match(r.type ?? '', /application\/json/);
  assert.is(r.body.type, `https://api.backend.ai/probs/${code}`);
  assert.type(r.body.title, 'string');
  assert.not.match(JSON.stringify(r.body), /at .*\.ts:\d+/); // no stack trace
}

t('GET / answers the version unsigned, in the v<major>.<YYYYMMDD> form clients parse', async ({ m }) => {
  const body = await (await fetch(`${m.url}/`)).json() as { version: string };
  assert.match(body.version, /^v\d+\.\d{8}$/);
  const health = await (await fetch(`${m.url}/health`)).json() as { ok: boolean; stores: Record<string, string> };
  assert.ok(health.ok);
  assert.equal(health.stores, { postgres: 'ok', redis: 'ok', etcd: 'ok' });
});

t('GET /metrics answers Prometheus text unsigned: leadership, sessions by status, agents and their slots, requests and lifecycle events', async (ctx) => {
  const s = await ctx.client.sessions.create({ name: 'metered', image: 'python' });
  assert.is(s.status, 'RUNNING');
  const res = await fetch(`${ctx.m.url}/metrics`);
  assert.is(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  let text = await res.text();
  // Occupancy is what the agents report: the session's cpu shows from the agent's next heartbeat.
  await eventually(async () => /^flotilla_agent_slots_occupied\{slot="cpu"\} [1-9]/m.test(text = await (await fetch(`${ctx.m.url}/metrics`)).text()), 5000, 'occupied cpu reported');
  const value = (series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    assert.ok(line, `no series ${series} in:\n${text.slice(0, 2000)}`);
    return Number(line!.slice(series.length + 1));
  };
  assert.is(value('flotilla_manager_leader'), 1);
  assert.ok(value('flotilla_sessions{status="RUNNING"}') >= 1);
  assert.is(value('flotilla_sessions{status="CANCELLED"}'), 0);
  assert.is(value('flotilla_agents{status="ALIVE"}'), 1);
  assert.ok(value('flotilla_agent_slots_capacity{slot="cpu"}') > 0);
  assert.ok(value('flotilla_agent_slots_occupied{slot="cpu"}') >= 1, 'the RUNNING session occupies a cpu');
  assert.ok(value('flotilla_http_requests_total{method="POST",route="/session",status="201"}') >= 1);
  assert.ok(value('flotilla_lifecycle_events_total{event="session_started"}') >= 1);
  assert.ok(value('flotilla_manager_process_cpu_user_seconds_total') > 0);
  // Counts only: no session name, id or access key is in it.
  assert.not.ok(text.includes('metered') || text.includes(s.sessionId) || text.includes(ctx.ak));
  await ctx.client.sessions.destroy(s.sessionId);
});

t('the admin keypair is exactly the one in FLOTILLA_ADMIN_ACCESS_KEY/SECRET_KEY', async (ctx) => {
  const r = await raw(ctx, 'GET', '/manager/announcement');
  assert.is(r.status, 200);
  assert.equal(r.body, { enabled: false, message: '' });
});

t('the Python client\'s request shapes verify: ISO 8601 dates with microseconds, text/plain empty bodies, JSON on GET', async (ctx) => {
  const micro = new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1456+00:00');
  assert.is((await raw(ctx, 'GET', '/session', { date: micro })).status, 200);
  assert.is((await raw(ctx, 'GET', '/session', { contentType: 'text/plain', body: '' })).status, 200);
  assert.is((await raw(ctx, 'GET', '/session?limit=5', { contentType: 'application/json', body: '{"status": null}' })).status, 200);
  const rfc = new Date().toUTCString();
  assert.is((await raw(ctx, 'GET', '/session', { date: rfc })).status, 200);
});

t('bad or stale signatures are 401 and persist nothing', async (ctx) => {
  const before = await count(ctx);
  const body = JSON.stringify({ name: 'sig-test', image: 'python', enqueueOnly: true });
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', secret: 'x'.repeat(40) }), 401, 'auth-failed');
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', date: new Date(Date.now() - 16 * 60_000).toISOString() }), 401, 'auth-failed');
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', auth: null }), 401, 'auth-failed');
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', auth: `BackendAI signMethod=HMAC-SHA256, credential=AKNOSUCHKEY000000000:${'0'.repeat(64)}` }), 401, 'auth-failed');
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', version: null }), 401, 'auth-failed');
  problem(await raw(ctx, 'POST', '/session', { body, contentType: 'application/json', sendDate: 'yesterday' }), 401, 'auth-failed');
  assert.is(await count(ctx), before);
});

t('bad input gets the 4xx of API.md and persists nothing', async (ctx) => {
  const before = await count(ctx);
  const post = (body: string) => raw(ctx, 'POST', '/session', { body, contentType: 'application/json' });
  problem(await post('{"name": "broken",'), 400, 'invalid-api-params');
  problem(await post('[1, 2]'), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ name: 'ok-name', image: 'no-such-image:1' })), 404, 'image-not-found');
  problem(await post(JSON.stringify({ name: 'too-big', image: 'python', config: { resources: { cpu: 64 } } })), 412, 'instance-not-available');
  problem(await post(JSON.stringify({ name: 'x', image: 'python' })), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ name: 'bad name!', image: 'python' })), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ name: 'ok-name', image: 'python', config: { resources: { mem: 'lots' } } })), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ name: 'ok-name', image: 'python', clusterSize: 0 })), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ name: 'ok-name', image: 'python', type: 'weird' })), 400, 'invalid-api-params');
  problem(await post(JSON.stringify({ image: 'python' })), 400, 'invalid-api-params');
  // Docker reads 0 as "no limit": a request of nothing would get an unlimited container that occupies nothing.
  for (const resources of [{ cpu: 0 }, { mem: 0 }, { cpu: '0.001' }, { mem: '1m' }]) {
    const r = await post(JSON.stringify({ name: 'too-small', image: 'python', enqueueOnly: true, config: { resources } }));
    problem(r, 400, 'invalid-api-params');
    assert.match(JSON.stringify(r.body), /must be at least/);
  }
  // A UUID-shaped name would be read as an id by GET /session/{ref}: it could never be reached by name.
  problem(await post(JSON.stringify({ name: '3f2b6c1e-0a4d-4c5e-9b7a-1d2e3f4a5b6c', image: 'python', enqueueOnly: true })), 400, 'invalid-api-params');
  // PostgreSQL stores no lone surrogate: refused up front, so it cannot fail the batch of creates it would share.
  problem(await post('{"name": "lone-surrogate", "image": "python", "config": {"environ": {"A": "\\ud800"}}}'), 400, 'invalid-api-params');
  problem(await post('{"name": "lone-surrogate", "image": "python", "tag": "x\\udc00"}'), 400, 'invalid-api-params');
  problem(await raw(ctx, 'GET', '/session/no-such-session'), 404, 'session-not-found');
  problem(await raw(ctx, 'DELETE', '/session/00000000-0000-0000-0000-000000000000'), 404, 'session-not-found');
  problem(await raw(ctx, 'GET', '/no/such/route'), 404, 'generic-not-found');
  problem(await raw(ctx, 'GET', '/session?limit=-1'), 400, 'invalid-api-params');
  assert.is(await count(ctx), before);
});

t('a body that spells \\u0000 with an escaped backslash holds no NUL and is accepted; a real NUL is 400', async (ctx) => {
  const post = (body: string) => raw(ctx, 'POST', '/session', { body, contentType: 'application/json' });
  // Code that merely spells the escape (an escaped backslash, then u0000) holds no NUL: accepted.
  const spelled = await post('{"name": "spells-nul", "image": "python", "enqueueOnly": true, "tag": "print(\\"\\\\u0000\\")"}');
  assert.is(spelled.status, 201, JSON.stringify(spelled.body));
  assert.is((await ctx.client.sessions.get('spells-nul')).sessionName, 'spells-nul');
  await ctx.client.sessions.destroy('spells-nul', { forced: true });
  problem(await post('{"name": "real-nul", "image": "python", "tag": "a\\u0000b"}'), 400, 'invalid-api-params');
});

t('enqueueOnly answers 201 PENDING at once; reuseIfExists answers 200 with the live session', async (ctx) => {
  const a = await ctx.client.sessions.create({ name: 'reuse-me', image: 'python', enqueueOnly: true });
  assert.ok(a.created);
  assert.ok(['PENDING', 'SCHEDULED', 'PREPARING'].includes(a.status), a.status);
  const again = await raw(ctx, 'POST', '/session', { body: JSON.stringify({ name: 'reuse-me', image: 'python', reuseIfExists: true }), contentType: 'application/json' });
  assert.is(again.status, 200);
  assert.is(again.body.sessionId, a.sessionId);
  assert.is(again.body.created, false);
  const dup = await raw(ctx, 'POST', '/session', { body: JSON.stringify({ name: 'reuse-me', image: 'python', enqueueOnly: true }), contentType: 'application/json' });
  problem(dup, 409, 'session-already-exists');
  const list = await ctx.client.sessions.list();
  assert.ok(list.items.some((s) => s.sessionId === a.sessionId));
  await ctx.client.sessions.destroy(a.sessionId);
});

t('concurrent reuseIfExists creates of one name all get that one session: one 201, the rest 200 created:false, no 409', async (ctx) => {
  const body = JSON.stringify({ name: 'reuse-race', image: 'python', enqueueOnly: true, reuseIfExists: true });
  const answers = await Promise.all(Array.from({ length: 6 }, () => raw(ctx, 'POST', '/session', { body, contentType: 'application/json' })));
  assert.equal(answers.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 201], JSON.stringify(answers.map((r) => r.body)));
  assert.is(new Set(answers.map((r) => r.body.sessionId)).size, 1);
  assert.equal(answers.filter((r) => r.body.created === false).length, 5);
  await ctx.client.sessions.destroy('reuse-race', { forced: true });
});

t('PATCH restarts the kernels and keeps the session: RUNNING again, same container, a fresh interpreter', async (ctx) => {
  const s = await ctx.client.sessions.create({ name: 'restart-1', image: 'python' });
  assert.is(s.status, 'RUNNING');
  const before = await ctx.client.sessions.get(s.sessionId);
  assert.is((await ctx.client.sessions.run(s.sessionId, 'x = 5\nprint(x)')).exitCode, 0);
  await ctx.client.sessions.restart(s.sessionId);
  const after = await ctx.client.sessions.get(s.sessionId);
  assert.is(after.status, 'RUNNING');
  assert.is(after.kernels[0].containerId, before.kernels[0].containerId);
  assert.equal(after.statusHistory.map((h) => h.status).slice(-2), ['RESTARTING', 'RUNNING']);
  let err = '';
  const r = await ctx.client.sessions.run(s.sessionId, 'print(x)', { onOutput: (stream, d) => { if (stream === 'stderr') err += d; } });
  assert.is(r.exitCode, 1);
  assert.match(err, /NameError/);
  await ctx.client.sessions.destroy(s.sessionId);
});

t('logs of a running session come from its container', async (ctx) => {
  const s = await ctx.client.sessions.create({ name: 'logs-1', image: 'python' });
  assert.is(s.status, 'RUNNING');
  // What the kernel runner printed at start (RUNNING means started; the runner's ready line follows).
  const logs = await eventually(async () => {
    const l = await ctx.client.sessions.logs(s.sessionId);
    return /"op":"ready","language":"python"/.test(l) ? l : undefined;
  }, 10_000, 'the runner\'s ready line in the logs');
  assert.match(logs, /"op":"ready"/);
  await ctx.client.sessions.destroy(s.sessionId);
  assert.is((await ctx.client.sessions.get(s.sessionId)).status, 'TERMINATED');
});

t.run();
