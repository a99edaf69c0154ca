// Store outages on real processes (issue 7): the real Redis, then the real PostgreSQL, stopped
// for 5 s while sessions are being created. Redis down: the manager keeps serving from
// PostgreSQL and no agent is marked lost. PostgreSQL down: creations answer 503 and nothing is
// acknowledged that is not durable; work resumes alone when it returns. Every session that got
// a 201 ends RUNNING.
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import pg from 'pg';
import { LABEL } from '../../runtime/agent/docker.ts';
import { ServiceUnavailable } from '../../schema/errors.ts';
import { startCluster, type TestCluster } from '../helpers/processes.ts';
import { realServices } from '../helpers/services.ts';
import { eventually, suite } from '../helpers/suite.ts';

const SERVICES = fileURLToPath(new URL('../../scripts/services', import.meta.url));
interface Ctx { c: TestCluster; agentId: string }
const t = suite<Ctx>('store outages (real processes)', { timeoutMs: 180_000 });

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'heartbeat.interval': 500, 'heartbeat.timeout': 3000, 'session.stop_grace': 1 } });
  ctx.agentId = `i-outage-${Math.random().toString(36).slice(2, 8)}`;
  await ctx.c.startAgent(ctx.agentId, 'cpu=8,mem=8g');
  // Room for the load (the default policy allows 30 live sessions).
  await ctx.c.client.admin.updateResourcePolicy('default', { max_concurrent_sessions: 500 });
});

t.after(async (ctx) => {
  execFileSync(SERVICES, ['start'], { stdio: 'ignore' }); // whatever a failed test left stopped
  await ctx.c?.stop();
  // The sessions of the PostgreSQL test are not destroyed: their containers go with the agent.
  const docker = new Docker();
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.agentId}=${ctx.agentId}`] }) });
  for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
});

/** Create sessions every 250 ms for `ms`, calling `outage` once at 1 s; the 201s and the refusals. */
async function underLoad(c: TestCluster, tag: string, ms: number, outage: () => Promise<void>) {
  const accepted: string[] = [];
  const refused: Error[] = [];
  const during = (async () => { await new Promise((r) => setTimeout(r, 1000)); await outage(); })();
  const creates: Promise<void>[] = [];
  for (let i = 0, start = Date.now(); Date.now() - start < ms; i++) {
    creates.push(c.client.sessions.create({ name: `${tag}-${i}`, image: 'shell', resources: { cpu: 0.05, mem: '16m' }, enqueueOnly: true })
      .then((s) => { accepted.push(s.sessionId); }, (e: Error) => { refused.push(e); }));
    await new Promise((r) => setTimeout(r, 250));
  }
  await Promise.all(creates);
  await during;
  return { accepted, refused };
}

/** Every agent status the manager reports while fn runs. */
async function agentStatusesDuring<T>(c: TestCluster, agentId: string, fn: () => Promise<T>): Promise<{ result: T; seen: Set<string> }> {
  const seen = new Set<string>();
  let on = true;
  const sampler = (async () => {
    while (on) {
      const list = await c.client.request<Array<{ agentId: string; status: string }>>('GET', '/admin/agents').catch(() => undefined);
      const a = list?.find((x) => x.agentId === agentId);
      if (a) seen.add(a.status);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  try { return { result: await fn(), seen }; } finally { on = false; await sampler; }
}

async function allRunning(c: TestCluster, ids: string[]): Promise<void> {
  const db = new pg.Pool({ connectionString: c.databaseUrl, max: 1 });
  db.on('error', () => undefined);
  try {
    await eventually(async () => {
      const rows = (await db.query<{ status: string }>(`SELECT status FROM sessions WHERE id = ANY($1::uuid[])`, [ids])).rows;
      return rows.length === ids.length && rows.every((r) => r.status === 'RUNNING');
    }, 90_000, `all ${ids.length} accepted sessions RUNNING`);
  } finally { await db.end(); }
}

t('Redis stopped for 5 s under load: creations go on (PostgreSQL serves), no agent is marked lost, every 201 ends RUNNING', async ({ c, agentId }) => {
  const { result: { accepted, refused }, seen } = await agentStatusesDuring(c, agentId, () => underLoad(c, 'redis', 9000, async () => {
    execFileSync('redis-cli', ['-u', realServices.redisUrl, 'shutdown', 'nosave'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 5000));
    execFileSync(SERVICES, ['start', 'redis'], { stdio: 'ignore' });
  }));
  assert.equal(refused.map((e) => e.message), [], 'no creation refused while Redis was down');
  assert.ok(accepted.length >= 30, `${accepted.length} accepted`);
  assert.equal([...seen], ['ALIVE'], 'the agent was never anything but ALIVE');
  await allRunning(c, accepted);
  const after = await c.client.sessions.create({ image: 'shell', resources: { cpu: 0.05, mem: '16m' } });
  assert.is(after.status, 'RUNNING');
  for (const id of [...accepted, after.sessionId]) await c.client.sessions.destroy(id, { forced: true });
});

t('PostgreSQL stopped for 5 s under load: creations then answer 503, every 201 is durable and ends RUNNING, the API recovers without a restart', async ({ c, agentId }) => {
  const { result: { accepted, refused }, seen } = await agentStatusesDuring(c, agentId, () => underLoad(c, 'pg', 14_000, async () => {
    execFileSync('pg_ctlcluster', ['15', 'main', 'stop', '-m', 'fast'], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 5000));
    execFileSync(SERVICES, ['start', 'postgres'], { stdio: 'ignore' });
  }));
  assert.ok(refused.length > 0, 'creations were refused while PostgreSQL was down');
  for (const e of refused) assert.instance(e, ServiceUnavailable, `${e.name}: ${e.message}`);
  // About 4 before the outage and more once it is back (creations go on for 14 s).
  assert.ok(accepted.length >= 8, `${accepted.length} accepted`);
  assert.not.ok(seen.has('LOST'), `agent statuses seen: ${[...seen]}`);
  await allRunning(c, accepted);
  const after = await c.client.sessions.create({ image: 'shell', resources: { cpu: 0.05, mem: '16m' } });
  assert.is(after.status, 'RUNNING');
  for (const id of [...accepted, after.sessionId]) await c.client.sessions.destroy(id, { forced: true });
});

t.run();
