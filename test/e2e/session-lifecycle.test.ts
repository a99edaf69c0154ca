// Session lifecycle on real processes (manager, two agents), real PostgreSQL, Redis, etcd and
// Docker: a session from PENDING to RUNNING with a real container and back to TERMINATED,
// agent loss and return, a manager restart mid-life, a container killed behind flotilla's back.
import * as assert from 'uvu/assert';
import Docker from 'dockerode';
import pg from 'pg';
import { containerName } from '../../runtime/agent/docker.ts';
import { SessionNotFound } from '../../schema/errors.ts';
import { startCluster, type TestCluster } from '../helpers/processes.ts';
import { eventually, suite } from '../helpers/suite.ts';

const docker = new Docker();
const t = suite<{ c: TestCluster; db: pg.Pool; a: string; b: string }>('session lifecycle (real processes)', { timeoutMs: 120_000 });

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'heartbeat.interval': 300, 'heartbeat.timeout': 1500, 'session.stop_grace': 1 } });
  ctx.db = new pg.Pool({ connectionString: ctx.c.databaseUrl, max: 2 });
  ctx.db.on('error', () => undefined);
  const tag = Math.random().toString(36).slice(2, 8);
  ctx.a = `i-e2e-a-${tag}`;
  ctx.b = `i-e2e-b-${tag}`;
  await ctx.c.startAgent(ctx.a);
  await ctx.c.startAgent(ctx.b);
  await eventually(async () => (await ctx.db.query(`SELECT count(*)::int AS n FROM agents WHERE status = 'ALIVE'`)).rows[0].n === 2, 20_000, 'two agents ALIVE');
});
t.after(async (ctx) => {
  await ctx.db?.end();
  await ctx.c?.stop();
  // Whatever a failed test left behind.
  // (Docker ANDs the labels of one filter: one listing per agent.)
  for (const agentId of [ctx.a, ctx.b]) {
    const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${agentId}`] }) });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
});

const statuses = async (db: pg.Pool, sessionId: string) => (await db.query<{ name: string }>(
  `SELECT name FROM session_events WHERE session_id = $1 AND kernel_id IS NULL ORDER BY seq`, [sessionId])).rows.map((r) => r.name);

t('a session goes PENDING → RUNNING with a real, hardened container and DELETE takes it to TERMINATED with the container gone', async ({ c, db }) => {
  const created = await c.client.sessions.create({ name: 'lifecycle-1', image: 'python', resources: { cpu: 1, mem: '512m' } });
  assert.is(created.status, 'RUNNING');
  assert.ok(created.created);
  const info = await c.client.sessions.get(created.sessionId);
  assert.is(info.status, 'RUNNING');
  assert.equal(info.statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING']);
  const k = info.kernels[0];
  const ci = await docker.getContainer(containerName(k.kernelId)).inspect();
  assert.is(ci.Id, k.containerId);
  assert.ok(ci.State.Running);
  assert.is(ci.Name, `/kernel.${k.kernelId}`);
  assert.is(ci.Config.Labels['ai.flotilla.kernel-id'], k.kernelId);
  assert.is(ci.Config.Labels['ai.flotilla.session-id'], created.sessionId);
  assert.is(ci.Config.Labels['ai.flotilla.agent-id'], k.agentId);
  assert.is(ci.Config.Labels['ai.flotilla.owner'], c.accessKey);
  assert.is(ci.HostConfig.NanoCpus, 1e9);
  assert.is(ci.HostConfig.Memory, 512 * 1024 * 1024);
  assert.is(ci.HostConfig.PidsLimit, 1024);
  assert.equal(ci.HostConfig.CapDrop, ['ALL']);
  assert.ok(ci.HostConfig.SecurityOpt?.includes('no-new-privileges'));
  assert.is(ci.HostConfig.Privileged, false);
  assert.is.not(ci.HostConfig.NetworkMode, 'host');

  const gone = await c.client.sessions.destroy(created.sessionId);
  assert.ok(gone);
  const after = await c.client.sessions.get(created.sessionId);
  assert.is(after.status, 'TERMINATED');
  assert.equal(after.statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  assert.is(after.kernels[0].status, 'TERMINATED');
  await eventually(async () => !(await docker.listContainers({ all: true, filters: JSON.stringify({ name: [containerName(k.kernelId)] }) })).length, 5000, 'container removed');
  assert.equal(await statuses(db, created.sessionId),
    ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_creating', 'session_started', 'session_terminating', 'session_terminated']);
  // Each step's kernel event comes before its session's (Backend.AI's order): a client that stops at session_terminated saw the kernel end.
  const all = (await db.query<{ name: string }>(`SELECT name FROM session_events WHERE session_id = $1 ORDER BY seq`, [created.sessionId])).rows.map((r) => r.name);
  for (const step of ['scheduled', 'preparing', 'started', 'terminating', 'terminated']) {
    assert.ok(all.indexOf(`kernel_${step}`) < all.indexOf(`session_${step}`), `kernel_${step} before session_${step}: ${all.join(', ')}`);
  }
  assert.ok(all.indexOf('session_preparing') < all.indexOf('session_creating'), all.join(', '));
  const kernelEvents = (await db.query<{ name: string }>(`SELECT name FROM session_events WHERE kernel_id = $1 ORDER BY seq`, [k.kernelId])).rows.map((r) => r.name);
  assert.equal(kernelEvents, ['kernel_enqueued', 'kernel_scheduled', 'kernel_preparing', 'kernel_creating', 'kernel_started', 'kernel_terminating', 'kernel_terminated']);
  // DELETE is idempotent.
  await c.client.sessions.destroy(created.sessionId);
});

t('an agent whose heartbeats stop is LOST within heartbeat.timeout and ALIVE again on its next heartbeat', async ({ c, db, b }) => {
  const agentB = c.agents.get(b)!;
  const status = async () => (await db.query<{ status: string }>(`SELECT status FROM agents WHERE id = $1`, [b])).rows[0]?.status;
  assert.is(await status(), 'ALIVE');
  agentB.child.kill('SIGSTOP');
  const stopped = Date.now();
  try {
    await eventually(async () => (await status()) === 'LOST', 5000, 'agent LOST');
    const took = Date.now() - stopped;
    assert.ok(took <= 1500 + 1000, `LOST after ${took} ms (timeout 1500 ms)`);
  } finally {
    agentB.child.kill('SIGCONT');
  }
  await eventually(async () => (await status()) === 'ALIVE', 5000, 'agent ALIVE again');
  const admin = await c.client.request<Array<{ agentId: string; status: string }>>('GET', '/admin/agents');
  assert.is(admin.find((x) => x.agentId === b)?.status, 'ALIVE');
});

t('a manager restarted mid-life (kill -9) restores every session with the same status and creates no second container', async ({ c, db, a, b }) => {
  const running = await c.client.sessions.create({ name: 'survivor-1', image: 'python' });
  assert.is(running.status, 'RUNNING');
  // Several more accepted without waiting, so some are mid-creation when the manager dies.
  const inflight = await Promise.all([1, 2, 3].map((i) => c.client.sessions.create({ name: `inflight-${i}`, image: 'python', enqueueOnly: true })));
  c.manager.child.kill('SIGKILL');
  await c.manager.exited;
  const before = (await db.query<{ id: string; status: string }>(`SELECT id, status FROM sessions WHERE name LIKE 'survivor-%' OR name LIKE 'inflight-%'`)).rows;
  await c.startManager();
  // Same status for the one that was RUNNING, at once after restore.
  assert.is((await c.client.sessions.get(running.sessionId)).status, 'RUNNING');
  for (const s of inflight) {
    await eventually(async () => (await c.client.sessions.get(s.sessionId)).status === 'RUNNING', 60_000, `${s.sessionName} RUNNING after restart`);
  }
  assert.is(before.length, 4);
  // One container per kernel, and the one recorded.
  for (const s of [running, ...inflight]) {
    const info = await c.client.sessions.get(s.sessionId);
    const k = info.kernels[0];
    const list = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.kernel-id=${k.kernelId}`] }) });
    assert.is(list.length, 1, `one container for kernel ${k.kernelId}`);
    assert.is(list[0].Id, k.containerId);
  }
  const all = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${a}`] }) });
  const allB = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.agent-id=${b}`] }) });
  assert.is(all.length + allB.length, 4);
  for (const s of [running, ...inflight]) await c.client.sessions.destroy(s.sessionId);
});

t('code that outgrows the memory limit ends the session in ERROR saying out-of-memory, with exit code 137 (128 + SIGKILL)', async ({ c }) => {
  const s = await c.client.sessions.create({ name: 'oom-1', image: 'python', resources: { cpu: 1, mem: '64m' } });
  assert.is(s.status, 'RUNNING');
  await c.client.sessions.execute(s.sessionId, { mode: 'query', code: 'x = []\nwhile True:\n    x.append(bytearray(8 * 1024 * 1024))' }).catch(() => undefined);
  const info = await eventually(async () => {
    const i = await c.client.sessions.get(s.sessionId);
    return i.status === 'ERROR' ? i : undefined;
  }, 30_000, 'session ERROR');
  assert.is(info.statusInfo, 'out-of-memory (exit code 137)');
  assert.equal(info.statusData, { kernelId: info.kernels[0].kernelId, exitCode: 137 });
});

t('a container killed behind flotilla\'s back ends its kernel and session in ERROR with the exit code in statusInfo', async ({ c, db }) => {
  const s = await c.client.sessions.create({ name: 'victim-1', image: 'python' });
  assert.is(s.status, 'RUNNING');
  const k = (await c.client.sessions.get(s.sessionId)).kernels[0];
  await docker.getContainer(k.containerId!).kill();
  const info = await eventually(async () => {
    const i = await c.client.sessions.get(s.sessionId);
    return i.status === 'ERROR' ? i : undefined;
  }, 15_000, 'session ERROR');
  assert.match(info.statusInfo ?? '', /exit code 137/);
  assert.equal(info.statusData, { kernelId: k.kernelId, exitCode: 137 });
  assert.is(info.kernels[0].status, 'ERROR');
  const row = (await db.query<{ exit_code: number; status_info: string }>(`SELECT exit_code, status_info FROM kernels WHERE id = $1`, [k.kernelId])).rows[0];
  assert.is(row.exit_code, 137);
  assert.match(row.status_info, /self-terminated \(exit code 137\)/);
  await eventually(async () => !(await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`ai.flotilla.kernel-id=${k.kernelId}`] }) })).length, 10_000, 'dead container cleaned up');
  // The name is free again once the session ended.
  const again = await c.client.sessions.create({ name: 'victim-1', image: 'python', enqueueOnly: true });
  assert.ok(again.created);
  await c.client.sessions.destroy(again.sessionId);
});

t('an unknown session is 404 for every route', async ({ c }) => {
  for (const call of [() => c.client.sessions.get('no-such-session'), () => c.client.sessions.destroy('no-such-session'), () => c.client.sessions.logs('no-such-session')]) {
    try { await call(); assert.unreachable('should fail'); } catch (e) { assert.instance(e, SessionNotFound); }
  }
});

t.run();
