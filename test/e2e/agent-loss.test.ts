// Agent loss on real processes and real Docker (issue 7): an agent killed with -9 goes LOST
// within heartbeat.timeout, or within agent.reconnect_timeout of its connection closing; back within agent.lost_grace its kernels stay RUNNING with their
// interpreter state; gone past the grace its kernels end in ERROR (`agent-lost`) and, when it
// comes back after all, its leftover container is removed as an orphan; a container removed
// behind flotilla's back (docker rm -f) is noticed and reported.
import * as assert from 'uvu/assert';
import Docker from 'dockerode';
import pg from 'pg';
import { LABEL } from '../../runtime/agent/docker.ts';
import { startCluster, type TestCluster } from '../helpers/processes.ts';
import { eventually, suite } from '../helpers/suite.ts';

const docker = new Docker();
interface Ctx { c: TestCluster; db: pg.Pool; ids: string[] }
const t = suite<Ctx>('agent loss (real processes)', { timeoutMs: 180_000 });

const agentStatus = async (db: pg.Pool, id: string) => (await db.query<{ status: string }>(`SELECT status FROM agents WHERE id = $1`, [id])).rows[0]?.status;
async function stdoutOf(c: TestCluster, id: string, code: string): Promise<string> {
  let out = '';
  await c.client.sessions.run(id, code, { onOutput: (stream, data) => { if (stream === 'stdout') out += data; } });
  return out;
}
const containersOf = (agentId: string) => docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.agentId}=${agentId}`] }) });

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'heartbeat.interval': 300, 'heartbeat.timeout': 1500, 'agent.lost_grace': 20_000, 'session.stop_grace': 1 } });
  ctx.db = new pg.Pool({ connectionString: ctx.c.databaseUrl, max: 2 });
  ctx.db.on('error', () => undefined);
  ctx.ids = [];
});

t.after(async (ctx) => {
  await ctx.db?.end();
  await ctx.c?.stop();
  for (const id of ctx.ids ?? []) for (const c of await containersOf(id)) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
});

t('kill -9 of an agent, back within the grace: LOST then ALIVE, the kernel stays RUNNING and its variables are still there', async (ctx) => {
  const id = `i-loss-a-${Math.random().toString(36).slice(2, 8)}`;
  ctx.ids.push(id);
  let agent = await ctx.c.startAgent(id);
  const s = await ctx.c.client.sessions.create({ image: 'python', resources: { cpu: 0.5, mem: '256m' } });
  assert.is(s.status, 'RUNNING');
  await stdoutOf(ctx.c, s.sessionId, 'x = 41');
  const killedAt = Date.now();
  agent.child.kill('SIGKILL');
  await agent.exited;
  await eventually(async () => (await agentStatus(ctx.db, id)) === 'LOST', 10_000, 'agent LOST');
  const detected = Date.now() - killedAt;
  assert.ok(detected <= 3000, `LOST after ${detected} ms (heartbeat.timeout 1500)`);
  assert.is((await ctx.c.client.sessions.get(s.sessionId)).status, 'RUNNING', 'the session waits out the grace');

  agent = await ctx.c.startAgent(id);
  await eventually(async () => (await agentStatus(ctx.db, id)) === 'ALIVE', 20_000, 'agent ALIVE again');
  assert.is((await ctx.c.client.sessions.get(s.sessionId)).status, 'RUNNING');
  assert.is((await stdoutOf(ctx.c, s.sessionId, 'print(x + 1)')).trim(), '42');
  assert.is((await containersOf(id)).length, 1, 'the same container, not a second one');
  await ctx.c.client.sessions.destroy(s.sessionId);
  // Out of the way of the next tests' sessions (one agent each).
  agent.child.kill('SIGTERM');
  await agent.exited;
});

t('an agent gone past the grace: its kernel ends in ERROR (agent-lost); when it returns after all, the leftover container is removed', async (ctx) => {
  await ctx.c.setConfig({ 'agent.lost_grace': 2000 });
  const id = `i-loss-b-${Math.random().toString(36).slice(2, 8)}`;
  ctx.ids.push(id);
  const agent = await ctx.c.startAgent(id);
  const s = await ctx.c.client.sessions.create({ image: 'shell', resources: { cpu: 0.5, mem: '64m' } });
  assert.is(s.status, 'RUNNING');
  agent.child.kill('SIGKILL');
  await agent.exited;
  await eventually(async () => (await ctx.c.client.sessions.get(s.sessionId)).status === 'ERROR', 30_000, 'session ERROR');
  const info = await ctx.c.client.sessions.get(s.sessionId);
  assert.is(info.statusInfo, 'agent-lost');
  assert.is(info.kernels[0].status, 'ERROR');
  assert.is((await containersOf(id)).length, 1, 'the container outlived its agent');

  await ctx.c.startAgent(id);
  const back = ctx.c.agents.get(id)!;
  await eventually(async () => (await containersOf(id)).length === 0, 30_000, 'orphan removed on return');
  await ctx.c.setConfig({ 'agent.lost_grace': 20_000 });
  back.child.kill('SIGTERM');
  await back.exited;
});

t('a container removed behind flotilla\'s back (docker rm -f) is noticed: the session ends in ERROR with the reason', async (ctx) => {
  const id = `i-loss-c-${Math.random().toString(36).slice(2, 8)}`;
  ctx.ids.push(id);
  await ctx.c.startAgent(id);
  const s = await ctx.c.client.sessions.create({ image: 'shell', resources: { cpu: 0.5, mem: '64m' } });
  assert.is(s.status, 'RUNNING');
  const containerId = (await ctx.c.client.sessions.get(s.sessionId)).kernels[0].containerId!;
  await docker.getContainer(containerId).remove({ force: true });
  await eventually(async () => (await ctx.c.client.sessions.get(s.sessionId)).status === 'ERROR', 30_000, 'session ERROR');
  const info = await ctx.c.client.sessions.get(s.sessionId);
  assert.match(info.statusInfo ?? '', /exit code 137|container-vanished/);
  assert.is(info.kernels[0].status, 'ERROR');
});

t('kill -9 of an agent is noticed by its closed connection: LOST after agent.reconnect_timeout, long before heartbeat.timeout', async (ctx) => {
  await ctx.c.setConfig({ 'heartbeat.timeout': 20_000, 'agent.reconnect_timeout': 1000 });
  try {
    const id = `i-loss-d-${Math.random().toString(36).slice(2, 8)}`;
    ctx.ids.push(id);
    const agent = await ctx.c.startAgent(id);
    const killedAt = Date.now();
    agent.child.kill('SIGKILL');
    await agent.exited;
    await eventually(async () => (await agentStatus(ctx.db, id)) === 'LOST', 10_000, 'agent LOST');
    const detected = Date.now() - killedAt;
    assert.ok(detected >= 1000 && detected <= 3000, `LOST after ${detected} ms (reconnect_timeout 1000, heartbeat.timeout 20000)`);
  } finally {
    await ctx.c.setConfig({ 'heartbeat.timeout': 1500, 'agent.reconnect_timeout': 2000 });
  }
});

// Guards the grace after a takeover: a new leader used to give every LOST agent a full grace
// from its own start, so a leader that died late in a grace more than doubled it.
t('a manager that takes over gives a LOST agent what is left of its grace, not a full one', async (ctx) => {
  const grace = 10_000;
  await ctx.c.setConfig({ 'agent.lost_grace': grace });
  try {
    // The earlier tests' agents still running go, so the session lands on this one.
    for (const p of ctx.c.agents.values()) if (p.child.exitCode === null && p.child.signalCode === null) { p.child.kill('SIGTERM'); await p.exited; }
    const id = `i-loss-e-${Math.random().toString(36).slice(2, 8)}`;
    ctx.ids.push(id);
    const agent = await ctx.c.startAgent(id);
    const s = await ctx.c.client.sessions.create({ image: 'shell', resources: { cpu: 0.5, mem: '64m' } });
    assert.is(s.status, 'RUNNING');
    assert.is((await ctx.c.client.sessions.get(s.sessionId)).kernels[0].agentId, id);
    agent.child.kill('SIGKILL');
    await agent.exited;
    await eventually(async () => (await agentStatus(ctx.db, id)) === 'LOST', 10_000, 'agent LOST');
    const lostAt = Date.now();
    await new Promise((r) => setTimeout(r, 2000));
    // The leader dies 2 s into the grace; a new manager process takes over once its lease lapses.
    ctx.c.manager.child.kill('SIGKILL');
    await ctx.c.manager.exited;
    await ctx.c.startManager();
    await eventually(async () => (await ctx.c.client.sessions.get(s.sessionId)).status === 'ERROR', 30_000, 'session ERROR');
    const after = Date.now() - lostAt;
    assert.ok(after >= grace - 500, `ERROR ${after} ms after the agent went LOST: the grace (${grace} ms) was waited out`);
    assert.ok(after < grace + 3000, `ERROR ${after} ms after the agent went LOST: the new leader counted the grace (${grace} ms) from the loss, not from its takeover`);
    assert.is((await ctx.c.client.sessions.get(s.sessionId)).statusInfo, 'agent-lost');
  } finally {
    await ctx.c.setConfig({ 'agent.lost_grace': 20_000 });
  }
});

t.run();
