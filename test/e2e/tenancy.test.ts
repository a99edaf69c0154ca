// A cluster shared by several tenants: keypairs managed by admins, every object isolated by
// owner, resource policies enforced at creation and by the periodic jobs, a rate limit per
// keypair, and usage accounted per keypair and hour. Real PostgreSQL, Redis, etcd and Docker.
import * as assert from 'uvu/assert';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { Client, Conflict, QuotaExceeded, SessionNotFound, AuthorizationFailed, Forbidden } from '../../runtime/sdk/index.ts';
import type { CreateRequest } from '../../runtime/manager/sessions.ts';
import type { SessionStatus } from '../../schema/status.ts';
import { rawRequest } from '../helpers/http.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

type Ctx = InProcessCluster;
const t = suite<Ctx>('tenancy', { timeoutMs: 120_000 });

const SMALL = { cpu: '0.25', mem: '128m' };

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('tenancy'));
  // Jobs every second, so the tests wait seconds, not minutes.
  for (const k of ['jobs.idle_check', 'jobs.lifetime_check']) await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}${k}`, '* * * * * *');
  await eventually(() => ctx.m.config.get('jobs.idle_check') === '* * * * * *', 5000, 'live config picked up');
});
t.after(async (ctx) => { await ctx.stop?.(); });

let n = 0;
/** A new user with its own keypair (and policy, when limits are given), as an SDK client. */
async function tenant(ctx: Ctx, limits?: Parameters<Client['admin']['createResourcePolicy']>[1], extra: { rate_limit?: number } = {}) {
  n++;
  let policy: string | undefined;
  if (limits) policy = (await ctx.client.admin.createResourcePolicy(`p-${ctx.tag}-${n}`, limits)).name;
  const kp = await ctx.client.admin.createKeypair({ email: `user${n}-${ctx.tag}@example.com`, resource_policy: policy, ...extra });
  return { ak: kp.access_key, sk: kp.secret_key, client: new Client({ endpoint: ctx.m.url, accessKey: kp.access_key, secretKey: kp.secret_key }) };
}

async function rejects<E>(p: Promise<unknown>, cls: new (...a: any[]) => E): Promise<E> {
  try { await p; } catch (e) { if (e instanceof cls) return e; throw e; }
  assert.unreachable(`expected ${cls.name}`);
  throw new Error('unreachable');
}

async function statusOf(c: Client, id: string): Promise<{ status: SessionStatus; statusInfo: string | null }> {
  const s = await c.sessions.get(id);
  return { status: s.status, statusInfo: s.statusInfo };
}

t('keypairs: the secret is shown once and kept encrypted; a deactivated keypair is refused at once; admin routes are admin-only', async (ctx) => {
  const a = await tenant(ctx);
  assert.match(a.ak, /^AK[A-Z0-9]{18}$/);
  assert.is(a.sk.length, 40);
  const listed = (await ctx.client.admin.listKeypairs()).find((k) => k.access_key === a.ak)!;
  assert.ok(listed, 'listed');
  assert.not.ok('secret_key' in listed, 'a listing never shows the secret');
  const stored = (await ctx.stores.db.query<{ secret_key_enc: string }>(`SELECT secret_key_enc FROM keypairs WHERE access_key = $1`, [a.ak])).rows[0];
  assert.not.ok(stored.secret_key_enc.includes(a.sk), 'the secret is not stored in the clear');
  assert.equal((await a.client.sessions.list()).items, []);

  await rejects(a.client.admin.listKeypairs(), Forbidden);
  await rejects(a.client.admin.createKeypair({ email: 'evil@example.com' }), Forbidden);
  await rejects(a.client.admin.jobs(), Forbidden);

  await ctx.client.admin.deactivateKeypair(a.ak);
  await rejects(a.client.sessions.list(), AuthorizationFailed);
  await ctx.client.admin.updateKeypair(a.ak, { is_active: true });
  assert.equal((await a.client.sessions.list()).items, []);
  await ctx.client.admin.deleteKeypair(a.ak);
  await rejects(a.client.sessions.list(), AuthorizationFailed);
  assert.not.ok((await ctx.client.admin.listKeypairs()).some((k) => k.access_key === a.ak));
});

t('the last active admin keypair cannot be deactivated, demoted or deleted (409); a keypair that owns folders cannot be deleted until they are purged', async (ctx) => {
  // This suite's database has one admin: the cluster's.
  for (const take of [() => ctx.client.admin.deactivateKeypair(ctx.ak), () => ctx.client.admin.updateKeypair(ctx.ak, { is_admin: false }), () => ctx.client.admin.deleteKeypair(ctx.ak)]) {
    const e = await rejects(take(), Conflict);
    assert.match(e.message, /last active admin/);
  }
  assert.equal((await ctx.client.admin.listKeypairs()).filter((k) => k.is_admin && k.is_active).map((k) => k.access_key), [ctx.ak], 'still an admin, still active');
  // With a second admin, either may step down.
  const second = await ctx.client.admin.createKeypair({ email: `admin2-${ctx.tag}@example.com`, is_admin: true });
  await ctx.client.admin.updateKeypair(second.access_key, { is_admin: false });
  await ctx.client.admin.deleteKeypair(second.access_key);

  const a = await tenant(ctx);
  await a.client.folders.create('owned-by-a');
  const e = await rejects(ctx.client.admin.deleteKeypair(a.ak), Conflict);
  assert.match(e.message, /owns 1 virtual folders/);
  await a.client.folders.delete('owned-by-a');
  await rejects(ctx.client.admin.deleteKeypair(a.ak), Conflict); // in the trash, its data is still there
  await a.client.folders.purge('owned-by-a');
  await ctx.client.admin.deleteKeypair(a.ak);
  assert.not.ok((await ctx.client.admin.listKeypairs()).some((k) => k.access_key === a.ak));
});

t('another tenant cannot see, run code in, destroy or read the files of a session: 404 as for a missing one; admins act with owner_access_key', async (ctx) => {
  const a = await tenant(ctx);
  const b = await tenant(ctx);
  const s = await a.client.sessions.create({ name: 'a-private', image: 'python', resources: SMALL });
  assert.is(s.status, 'RUNNING');
  for (const ref of [s.sessionId, 'a-private']) {
    const missing = await rejects(b.client.sessions.get(`${ref === s.sessionId ? '00000000-0000-4000-8000-000000000000' : 'nope-nope'}`), SessionNotFound);
    const theirs = await rejects(b.client.sessions.get(ref), SessionNotFound);
    assert.is(theirs.status, missing.status);
    assert.is(theirs.code, missing.code);
    await rejects(b.client.sessions.execute(ref, { mode: 'query', code: 'print(1)' }), SessionNotFound);
    await rejects(b.client.sessions.interrupt(ref), SessionNotFound);
    await rejects(b.client.sessions.logs(ref), SessionNotFound);
    await rejects(b.client.files.listFiles(ref), SessionNotFound);
    await rejects(b.client.sessions.destroy(ref), SessionNotFound);
  }
  assert.equal((await b.client.sessions.list()).items, []);
  const asAdmin = await ctx.client.request<{ sessionId: string }>('GET', `/session/${s.sessionId}`, { query: { owner_access_key: a.ak } });
  assert.is(asAdmin.sessionId, s.sessionId);
  const forged = await rawRequest(ctx.m.url, b, 'GET', `/session/${s.sessionId}?owner_access_key=${a.ak}`);
  assert.is(forged.status, 403, 'only admins act for another owner');
  assert.is((await statusOf(a.client, s.sessionId)).status, 'RUNNING', 'untouched by the other tenant');
  await a.client.sessions.destroy(s.sessionId);
});

t('max_concurrent_sessions: concurrent creates never exceed it, the refusal names it, an ended session frees its place at once', async (ctx) => {
  const a = await tenant(ctx, { max_concurrent_sessions: 2 });
  const results = await Promise.allSettled([0, 1, 2, 3].map((i) => a.client.sessions.create({ name: `conc-${i}`, image: 'python', resources: SMALL, enqueueOnly: true })));
  const ok = results.filter((r) => r.status === 'fulfilled');
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.is(ok.length, 2);
  assert.is(refused.length, 2);
  for (const r of refused) {
    assert.instance(r.reason, QuotaExceeded);
    assert.is(r.reason.status, 412);
    assert.match(r.reason.message, /max_concurrent_sessions/);
  }
  const live = (await a.client.sessions.list()).items;
  assert.is(live.length, 2);
  await a.client.sessions.destroy(live[0].sessionId);
  const again = await a.client.sessions.create({ name: 'conc-again', image: 'python', resources: SMALL, enqueueOnly: true });
  assert.is(again.status, 'PENDING');
  for (const s of (await a.client.sessions.list({ status: ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING'] })).items) await a.client.sessions.destroy(s.sessionId);
});

t('creates that arrive together are checked as one batch: each counts those before it, a name asked twice is created once', async (ctx) => {
  const a = await tenant(ctx, { max_concurrent_sessions: 2, total_resource_slots: { cpu: 1, mem: '4g' } });
  const request = (name: string, cpu: string): CreateRequest => ({
    name, image: 'python', type: 'interactive', clusterSize: 1, clusterMode: 'single-node', resources: { cpu, mem: '128m' },
    environ: {}, mounts: [], mountMap: {}, resourceGroup: 'default', enqueueOnly: true, maxWaitSeconds: 0, reuseIfExists: false,
  });
  // Issued in one turn of the event loop, so they go into one creating transaction.
  const results = await Promise.allSettled([
    ctx.m.sessions.create(a.ak, request('batch-1', '0.5')),
    ctx.m.sessions.create(a.ak, request('batch-1', '0.25')), // the same name: refused
    ctx.m.sessions.create(a.ak, request('batch-2', '0.75')), // 0.5 + 0.75 > 1: refused
    ctx.m.sessions.create(a.ak, request('batch-3', '0.5')),
    ctx.m.sessions.create(a.ak, request('batch-4', '0.01')), // the third live one: refused (the least cpu session.min_resources allows)
  ]);
  const outcome = results.map((r) => (r.status === 'fulfilled' ? r.value.status : (r.reason as Error).message));
  assert.is(outcome[0], 'PENDING');
  assert.match(outcome[1], /a live session named "batch-1" exists/);
  assert.match(outcome[2], /total_resource_slots: cpu \(in use 0\.5 \+ requested 0\.75 > 1\)/);
  assert.is(outcome[3], 'PENDING');
  assert.match(outcome[4], /max_concurrent_sessions: 2 sessions are live/);
  const live = (await a.client.sessions.list()).items.map((s) => s.sessionName).sort();
  assert.equal(live, ['batch-1', 'batch-3']);
  const created = await ctx.stores.db.query(`SELECT DISTINCT created_at FROM sessions WHERE access_key = $1`, [a.ak]);
  assert.is(created.rowCount, 1, 'one creating transaction (now() is its start) for the whole batch');
  for (const s of (await a.client.sessions.list()).items) await a.client.sessions.destroy(s.sessionId);
});

t('a create whose rows break the batch\'s transaction fails alone: the others of its batch are created', async (ctx) => {
  const a = await tenant(ctx);
  // A constraint no check of the manager knows, as an unforeseen integrity error would be.
  await ctx.stores.db.query(`ALTER TABLE sessions ADD CONSTRAINT test_no_poison CHECK (tag IS DISTINCT FROM 'poison')`);
  try {
    const request = (name: string, tag?: string): CreateRequest => ({
      name, image: 'python', type: 'interactive', clusterSize: 1, clusterMode: 'single-node', resources: SMALL, tag,
      environ: {}, mounts: [], mountMap: {}, resourceGroup: 'default', enqueueOnly: true, maxWaitSeconds: 0, reuseIfExists: false,
    });
    const results = await Promise.allSettled([
      ctx.m.sessions.create(a.ak, request('poison-1')),
      ctx.m.sessions.create(a.ak, request('poison-2', 'poison')),
      ctx.m.sessions.create(a.ak, request('poison-3')),
    ]);
    assert.equal(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
    assert.match(((results[1] as PromiseRejectedResult).reason as Error).message, /test_no_poison/);
    assert.equal((await a.client.sessions.list()).items.map((s) => s.sessionName).sort(), ['poison-1', 'poison-3']);
  } finally {
    await ctx.stores.db.query(`ALTER TABLE sessions DROP CONSTRAINT test_no_poison`);
  }
  for (const s of (await a.client.sessions.list()).items) await a.client.sessions.destroy(s.sessionId);
});

t('total_resource_slots, max_pending_session_count and max_containers_per_session are each refused with a 4xx naming them', async (ctx) => {
  const a = await tenant(ctx, { total_resource_slots: { cpu: 1, mem: '1g' } });
  const first = await a.client.sessions.create({ name: 'slots-1', image: 'python', resources: { cpu: '0.75', mem: '256m' } });
  assert.is(first.status, 'RUNNING');
  const over = await rejects(a.client.sessions.create({ name: 'slots-2', image: 'python', resources: { cpu: '0.5', mem: '256m' } }), QuotaExceeded);
  assert.match(over.message, /total_resource_slots: cpu \(in use 0\.75 \+ requested 0\.5 > 1\)/);
  await a.client.sessions.destroy(first.sessionId);
  const fits = await a.client.sessions.create({ name: 'slots-3', image: 'python', resources: { cpu: '1', mem: '256m' }, enqueueOnly: true });
  await a.client.sessions.destroy(fits.sessionId);

  // A resource group without agents keeps sessions PENDING.
  await ctx.client.admin.createResourceGroup(`empty-${ctx.tag}`);
  const p = await tenant(ctx, { max_pending_session_count: 1 });
  await ctx.client.admin.allowResourceGroup(`empty-${ctx.tag}`, [p.ak]);
  const pending = await p.client.sessions.create({ name: 'pend-1', image: 'python', resources: SMALL, resourceGroup: `empty-${ctx.tag}`, enqueueOnly: true });
  await eventually(async () => (await statusOf(p.client, pending.sessionId)).status === 'PENDING', 5000, 'stays PENDING');
  const tooMany = await rejects(p.client.sessions.create({ name: 'pend-2', image: 'python', resources: SMALL, resourceGroup: `empty-${ctx.tag}`, enqueueOnly: true }), QuotaExceeded);
  assert.match(tooMany.message, /max_pending_session_count/);
  await p.client.sessions.destroy(pending.sessionId);

  const cluster = await rejects(a.client.sessions.create({ name: 'clu-1', image: 'python', clusterSize: 3, resources: SMALL }), QuotaExceeded);
  assert.match(cluster.message, /max_containers_per_session: the session asks for 3 kernels/);
  const count = await ctx.stores.db.query(`SELECT count(*)::int AS n FROM sessions WHERE access_key = $1 AND status NOT IN ('TERMINATED', 'CANCELLED', 'ERROR')`, [a.ak]);
  assert.is(count.rows[0].n, 0, 'a refused create leaves nothing behind');
});

t('rate limit: X-RateLimit headers on every answer, 429 past the keypair\'s limit', async (ctx) => {
  const a = await tenant(ctx, undefined, { rate_limit: 5 });
  const remaining: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await rawRequest(ctx.m.url, a, 'GET', '/session');
    assert.is(r.status, 200);
    assert.is(r.headers['x-ratelimit-limit'], '5');
    remaining.push(String(r.headers['x-ratelimit-remaining']));
  }
  assert.equal(remaining, ['4', '3', '2', '1', '0']);
  const refused = await rawRequest(ctx.m.url, a, 'GET', '/session');
  assert.is(refused.status, 429);
  assert.is(refused.body.type, 'https://api.backend.ai/probs/rate-limit-exceeded');
  assert.is(refused.headers['x-ratelimit-remaining'], '0');
  const other = await rawRequest(ctx.m.url, { ak: ctx.ak, sk: ctx.sk }, 'GET', '/session');
  assert.is(other.status, 200, 'another keypair is not limited by it');
});

t('an idle session is terminated at its idle_timeout, an active one is not; a lifetime cap ends a busy one', async (ctx) => {
  const a = await tenant(ctx, { idle_timeout: 3 });
  const idle = await a.client.sessions.create({ name: 'idle-1', image: 'python', resources: SMALL });
  const busy = await a.client.sessions.create({ name: 'busy-1', image: 'python', resources: SMALL });
  const started = Date.now();
  let ended = false;
  const keepBusy = (async () => { while (!ended) { await a.client.sessions.run(busy.sessionId, 'x = 1'); await new Promise((r) => setTimeout(r, 500)); } })();
  await eventually(async () => (await statusOf(a.client, idle.sessionId)).status === 'TERMINATED', 20_000, 'the idle session ends');
  assert.ok(Date.now() - started >= 2500, 'not before its idle_timeout');
  assert.is((await statusOf(a.client, idle.sessionId)).statusInfo, 'idle-timeout');
  await new Promise((r) => setTimeout(r, 2000));
  assert.is((await statusOf(a.client, busy.sessionId)).status, 'RUNNING', 'the active session lives on');
  ended = true;
  await keepBusy;
  await a.client.sessions.destroy(busy.sessionId);

  const l = await tenant(ctx, { max_session_lifetime: 4 });
  const long = await l.client.sessions.create({ name: 'life-1', image: 'python', resources: SMALL });
  const run = l.client.sessions.run(long.sessionId, 'import time\nwhile True: time.sleep(0.1)').catch((e: Error) => e);
  await eventually(async () => (await statusOf(l.client, long.sessionId)).status === 'TERMINATED', 20_000, 'the busy session ends at its lifetime');
  assert.is((await statusOf(l.client, long.sessionId)).statusInfo, 'session-lifetime');
  await run;
  const jobs = await ctx.client.admin.jobs();
  for (const name of ['idle-sessions', 'session-lifetime']) {
    const j = jobs.find((x) => x.name === name)!;
    assert.is(j.lastOutcome, 'ok');
    assert.ok(j.runs > 0);
    assert.is(j.schedule, '* * * * * *');
  }
});

t('usage is sampled from Docker stats and rolled up per keypair and hour; each tenant sees only its own', async (ctx) => {
  const a = await tenant(ctx);
  const b = await tenant(ctx);
  const s = await a.client.sessions.create({ name: 'usage-1', image: 'python', resources: SMALL });
  await a.client.sessions.run(s.sessionId, 'sum(i * i for i in range(3_000_000))');
  const first = await ctx.client.admin.runJob('usage-sample');
  assert.ok((first.result as { samples: number }).samples >= 1);
  await a.client.sessions.run(s.sessionId, 'sum(i * i for i in range(3_000_000))');
  await ctx.client.admin.runJob('usage-sample');
  await ctx.client.admin.runJob('usage-aggregate');
  const range = { start: new Date(Date.now() - 3600_000), end: new Date(Date.now() + 3600_000) };
  const mine = await a.client.usage(range);
  assert.is(mine.access_key, a.ak);
  assert.is(mine.hours.reduce((x, h) => x + h.session_count, 0) >= 1, true);
  assert.ok(mine.total.cpu_used_ms > 100, `the CPU the queries burnt is counted (${mine.total.cpu_used_ms} ms)`);
  assert.ok(mine.total.mem_byte_hours > 0);
  assert.equal((await b.client.usage(range)).hours, []);
  const byAdmin = await ctx.client.usage({ ...range, ownerAccessKey: a.ak });
  assert.equal(byAdmin.total, mine.total);
  const jobs = await ctx.client.admin.jobs();
  assert.is(jobs.find((j) => j.name === 'usage-aggregate')!.lastOutcome, 'ok');
  await a.client.sessions.destroy(s.sessionId);
});

t('the retention prune removes ended sessions past the retention and keeps their events', async (ctx) => {
  const a = await tenant(ctx);
  const s = await a.client.sessions.create({ name: 'old-1', image: 'python', resources: SMALL });
  await a.client.sessions.destroy(s.sessionId);
  const live = await a.client.sessions.create({ name: 'live-1', image: 'python', resources: SMALL, enqueueOnly: true });
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}jobs.session_retention`, '0');
  await eventually(() => ctx.m.config.get('jobs.session_retention') === 0, 5000, 'config picked up');
  const r = await ctx.client.admin.runJob('retention-prune');
  assert.ok((r.result as { sessions: number }).sessions >= 1);
  await rejects(a.client.sessions.get(s.sessionId), SessionNotFound);
  assert.ok((await a.client.sessions.get(live.sessionId)).sessionId, 'a live session is never pruned');
  const events = await ctx.stores.db.query(`SELECT count(*)::int AS n FROM session_events WHERE session_id = $1`, [s.sessionId]);
  assert.ok(events.rows[0].n > 0, 'events are kept (jobs.prune_events is false)');
  await a.client.sessions.destroy(live.sessionId);
  await ctx.stores.config.put(`${CLUSTER_CONFIG_PREFIX}jobs.session_retention`, String(30 * 86400));
});

t.run();
