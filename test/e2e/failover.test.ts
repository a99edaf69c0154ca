// Manager active/standby on real processes (issue 7): two managers campaign in the etcd
// election; the standby answers /health with leader: false and 503 naming the leader elsewhere;
// kill -9 of the leader during 50 concurrent session creations: the standby takes over when the
// lease lapses, every session that got a 201 ends RUNNING, no kernel has two containers and no
// container is left without a live kernel. Agents and the SDK are given both addresses. etcd
// stopped for 5 s: the managers keep their config and never two of them lead.
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import pg from 'pg';
import { LABEL } from '../../runtime/agent/docker.ts';
import { Client } from '../../runtime/sdk/index.ts';
import { ServiceUnavailable } from '../../schema/errors.ts';
import { startCluster, type Proc, type TestCluster } from '../helpers/processes.ts';
import { eventually, suite } from '../helpers/suite.ts';

const docker = new Docker();
const SERVICES = fileURLToPath(new URL('../../scripts/services', import.meta.url));
interface Ctx { c: TestCluster; db: pg.Pool; standby: Proc & { url: string }; agents: string[]; warm?: Proc }
const t = suite<Ctx>('manager failover (real processes)', { timeoutMs: 240_000 });

type Health = { leader: boolean; leaderUrl: string | null; parkedAgents: number };
const health = async (url: string) => (await fetch(`${url}/health`)).json() as Promise<Health>;

t.before(async (ctx) => {
  ctx.c = await startCluster({ config: { 'manager.leader_lease_ttl': 2, 'heartbeat.interval': 300, 'heartbeat.timeout': 2000, 'session.stop_grace': 1 } });
  ctx.db = new pg.Pool({ connectionString: ctx.c.databaseUrl, max: 2 });
  ctx.db.on('error', () => undefined);
  ctx.standby = await ctx.c.startStandby();
  ctx.c.agentManagerUrls = [ctx.c.manager.url, ctx.standby.url];
  ctx.c.client = new Client({ endpoints: [ctx.c.manager.url, ctx.standby.url], accessKey: ctx.c.accessKey, secretKey: ctx.c.secretKey });
  const tag = Math.random().toString(36).slice(2, 8);
  ctx.agents = [`i-fo-a-${tag}`, `i-fo-b-${tag}`];
  await ctx.c.startAgent(ctx.agents[0], 'cpu=4,mem=4g');
  // The second agent is given the standby first: the standby sends it to the live leader.
  ctx.c.agentManagerUrls = [ctx.standby.url, ctx.c.manager.url];
  await ctx.c.startAgent(ctx.agents[1], 'cpu=4,mem=4g');
  ctx.c.agentManagerUrls = [ctx.c.manager.url, ctx.standby.url];
});

t.after(async (ctx) => {
  execFileSync(SERVICES, ['start', 'etcd'], { stdio: 'ignore' });
  ctx.standby?.child.kill('SIGKILL');
  ctx.warm?.child.kill('SIGKILL'); // not left running when its test fails before it leads
  await ctx.standby?.exited;
  await ctx.db?.end();
  await ctx.c?.stop();
  for (const agentId of ctx.agents ?? []) {
    const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.agentId}=${agentId}`] }) });
    for (const c of left) await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
});

t('the standby answers /health with leader: false and the leader\'s address, and 503 naming it for API calls', async ({ c, standby }) => {
  const lh = await health(c.manager.url);
  assert.is(lh.leader, true);
  assert.is(lh.leaderUrl, c.manager.url);
  const h = await health(standby.url);
  assert.is(h.leader, false);
  assert.is(h.leaderUrl, c.manager.url);
  const alone = new Client({ endpoint: standby.url, accessKey: c.accessKey, secretKey: c.secretKey });
  try { await alone.sessions.list(); assert.unreachable('a standby served a request'); } catch (e) {
    assert.instance(e, ServiceUnavailable);
    assert.match((e as Error).message, /standby; the leader is http/);
  }
  // Given both addresses (the standby first), the SDK follows the election to the leader.
  const both = new Client({ endpoints: [standby.url, c.manager.url], accessKey: c.accessKey, secretKey: c.secretKey });
  assert.ok(Array.isArray((await both.sessions.list()).items));
  assert.is(both.endpoint, c.manager.url);
});

t('an agent that dials the standby while the leader is alive is sent to the leader, not parked', async ({ c, standby, agents }) => {
  const second = c.agents.get(agents[1])!;
  assert.match(second.output(), new RegExp(`standby manager: the leader is ${c.manager.url}`));
  const listed = await c.client.request<Array<{ agentId: string; connected: boolean; status: string }>>('GET', '/admin/agents');
  assert.ok(listed.some((a) => a.agentId === agents[1] && a.connected && a.status === 'ALIVE'), 'registered with the leader');
  assert.is((await health(standby.url)).parkedAgents, 0);
});

t('kill -9 of the leader during 50 concurrent creations: the standby takes over; every 201 ends RUNNING; no kernel has two containers; no container without a live kernel', async ({ c, db, standby, agents }) => {
  const oldLeader = c.manager;
  const accepted: string[] = [];
  let refused = 0;
  let killed = false;
  const creates = Array.from({ length: 50 }, async (_, i) => {
    await new Promise((r) => setTimeout(r, i * 20)); // spread over ~1 s: some before the kill, some during, some after
    try {
      const s = await c.client.sessions.create({ name: `fo-${i}`, image: 'shell', resources: { cpu: 0.1, mem: '32m' }, enqueueOnly: true });
      accepted.push(s.sessionId);
      if (accepted.length === 15 && !killed) { killed = true; oldLeader.child.kill('SIGKILL'); }
    } catch { refused++; }
  });
  await Promise.all(creates);
  if (!killed) { killed = true; oldLeader.child.kill('SIGKILL'); }
  await oldLeader.exited;
  assert.ok(accepted.length >= 15, `${accepted.length} accepted, ${refused} refused`);

  // The standby wins once the dead leader's lease (2 s) lapses, restores and serves.
  const tookOver = await eventually(async () => (await health(standby.url)).leader, 30_000, 'standby leads');
  assert.ok(tookOver);
  const ids = [...accepted];
  await eventually(async () => {
    const rows = (await db.query<{ status: string }>(`SELECT status FROM sessions WHERE id = ANY($1::uuid[])`, [ids])).rows;
    return rows.length === ids.length && rows.every((r) => r.status === 'RUNNING');
  }, 120_000, 'every accepted session RUNNING');

  // Creations that got no answer may or may not exist; whatever exists must be whole and single.
  const kernels = (await db.query<{ id: string; status: string }>(`SELECT id, status FROM kernels`)).rows;
  await eventually(async () => {
    const live = new Set((await db.query<{ id: string }>(`SELECT id FROM kernels WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED')`)).rows.map((r) => r.id));
    const containers = (await Promise.all(agents.map((a) => docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.agentId}=${a}`] }) })))).flat();
    const perKernel = new Map<string, number>();
    for (const ct of containers) perKernel.set(ct.Labels[LABEL.kernelId], (perKernel.get(ct.Labels[LABEL.kernelId]) ?? 0) + 1);
    const doubled = [...perKernel].filter(([, n]) => n > 1);
    const orphans = [...perKernel.keys()].filter((k) => !live.has(k));
    assert.equal(doubled, [], 'a kernel with two containers');
    return orphans.length === 0;
  }, 30_000, 'no container without a live kernel');
  assert.ok(kernels.length >= ids.length);
  // The old leader's address is dead: the SDK answers through the new leader, which lists them.
  const listed = await c.client.sessions.list({ limit: 100 });
  assert.ok(ids.every((id) => listed.items.some((i) => i.sessionId === id && i.status === 'RUNNING')));
  assert.is(c.client.endpoint, standby.url);
});

t('a standby that prepared its actors long before the takeover restores each session as it is at the takeover: one ended since stays ended, one created since runs; the agents wait parked at it and are registered as it leads', async (ctx) => {
  const { c, db } = ctx;
  const leader = ctx.standby; // it took over in the test before
  const client = new Client({ endpoint: leader.url, accessKey: c.accessKey, secretKey: c.secretKey });
  const statusOf = async (id: string) => (await db.query<{ status: string }>(`SELECT status FROM sessions WHERE id = $1`, [id])).rows[0]?.status;
  const spec = { image: 'shell', resources: { cpu: 0.1, mem: '32m' } } as const;
  const ended = (await client.sessions.create({ name: 'warm-ended', ...spec })).sessionId;
  const kept = (await client.sessions.create({ name: 'warm-kept', ...spec })).sessionId;
  for (const id of [ended, kept]) await eventually(async () => (await statusOf(id)) === 'RUNNING', 60_000, `${id} RUNNING`);

  // A standby on the first manager's address (the agents know it) prepares once, then not again
  // before the takeover: what it built is stale by then.
  await c.setConfig({ 'manager.standby_prepare_interval': 600_000 });
  const warm = ctx.warm = await c.startStandby(Number(new URL(c.manager.url).port));
  await eventually(async () => ((await fetch(`${warm.url}/health`)).json() as Promise<{ prepared: number }>).then((h) => h.prepared >= 2), 30_000, 'the standby prepared its actors');
  await client.sessions.destroy(ended);
  await eventually(async () => (await statusOf(ended)) === 'TERMINATED', 60_000, 'the ended session TERMINATED');
  const created = (await client.sessions.create({ name: 'warm-new', ...spec })).sessionId;
  await eventually(async () => (await statusOf(created)) === 'RUNNING', 60_000, 'the new session RUNNING');
  const exits = (await client.sessions.create({ name: 'warm-exits', ...spec })).sessionId;
  await eventually(async () => (await statusOf(exits)) === 'RUNNING', 60_000, 'the session whose container will exit RUNNING');
  const exitsContainer = (await client.sessions.get(exits)).kernels[0].containerId!;

  leader.child.kill('SIGKILL');
  await leader.exited;
  // Until the dead leader's lease lapses the agents, whose leader no longer answers, wait parked at the standby.
  // A container that exits while its agent is parked (its report already sent, its exit event
  // going to no leader) is noticed once the standby leads.
  let parkedBeforeWin = 0;
  let killed = false;
  await eventually(async () => {
    const h = await health(warm.url);
    if (!h.leader) parkedBeforeWin = Math.max(parkedBeforeWin, h.parkedAgents);
    if (!h.leader && h.parkedAgents === ctx.agents.length && !killed) { killed = true; await docker.getContainer(exitsContainer).kill(); }
    return h.leader;
  }, 30_000, 'the prepared standby leads');
  assert.is(parkedBeforeWin, ctx.agents.length, 'every agent parked at the standby before it led');
  assert.ok(killed, 'the container was killed while the agents were parked');
  c.manager = warm;
  c.client = new Client({ endpoint: warm.url, accessKey: c.accessKey, secretKey: c.secretKey });
  await eventually(async () => {
    const list = await c.client.request<Array<{ agentId: string; connected: boolean; status: string }>>('GET', '/admin/agents');
    return ctx.agents.every((id) => list.some((a) => a.agentId === id && a.connected && a.status === 'ALIVE'));
  }, 2_000, 'the parked agents registered as the standby took the lead');
  await new Promise((r) => setTimeout(r, 2000)); // their reconciliation runs after the registration

  // The stale RUNNING actor of the ended session was not revived (its missing container would have turned it to ERROR).
  assert.is((await c.client.sessions.get(ended)).status, 'TERMINATED');
  assert.is(await statusOf(ended), 'TERMINATED');
  assert.is((await c.client.sessions.get(kept)).status, 'RUNNING');
  assert.is((await c.client.sessions.get(created)).status, 'RUNNING');
  const exited = await eventually(async () => {
    const i = await c.client.sessions.get(exits);
    return i.status === 'ERROR' ? i : undefined;
  }, 15_000, 'the session whose container exited while its agent was parked ERROR');
  assert.match(exited.statusInfo ?? '', /exit code 137/);
  const containers = (await Promise.all(ctx.agents.map((a) => docker.listContainers({ filters: JSON.stringify({ label: [`${LABEL.agentId}=${a}`] }) })))).flat();
  const sessionsWithContainers = containers.map((ct) => ct.Labels[LABEL.sessionId]);
  assert.is(sessionsWithContainers.filter((s) => s === kept).length, 1, 'the kept session has its one container');
  assert.is(sessionsWithContainers.filter((s) => s === created).length, 1, 'the new session has one container');
  assert.is(sessionsWithContainers.filter((s) => s === ended).length, 0, 'the ended session has none');
  await c.setConfig({ 'manager.standby_prepare_interval': 1000 });
});

t('etcd stopped for 5 s: both managers keep their config and answer; never two leaders; one leads again once it is back', async ({ c }) => {
  // Two live managers again: the one leading now and a fresh standby.
  const third = await c.startStandby();
  const urls = [c.manager.url, third.url];
  const leaderUrl = async () => {
    for (const u of urls) { const h = await health(u).catch(() => undefined); if (h?.leader) return u; }
    return undefined;
  };
  const leader = (await leaderUrl())!;
  assert.ok(leader, 'a leader before the outage');
  const admin = new Client({ endpoint: leader, accessKey: c.accessKey, secretKey: c.secretKey });
  const before = await admin.request<Record<string, unknown>>('GET', '/admin/config');
  assert.is(before['heartbeat.timeout'], 2000);
  assert.is(before['agent.token'], '(secret)');

  execFileSync(SERVICES, ['stop', 'etcd'], { stdio: 'ignore' });
  let most = 0;
  try {
    const end = Date.now() + 5000;
    let sawConfig = false;
    while (Date.now() < end) {
      const hs = await Promise.all(urls.map((u) => health(u).catch(() => undefined)));
      assert.ok(hs.every(Boolean), 'every manager answers /health while etcd is away');
      most = Math.max(most, hs.filter((h) => h!.leader).length);
      // Whoever still leads kept the config it had (not the defaults).
      const cfg = await admin.request<Record<string, unknown>>('GET', '/admin/config').catch(() => undefined);
      if (cfg) { sawConfig = true; assert.is(cfg['heartbeat.timeout'], 2000); }
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(sawConfig || most === 0, 'the config was read while etcd was away');
  } finally {
    execFileSync(SERVICES, ['start', 'etcd'], { stdio: 'ignore' });
  }
  assert.ok(most <= 1, `${most} managers said they lead at once`);
  const again = await eventually(leaderUrl, 30_000, 'a leader once etcd is back');
  const both = await Promise.all(urls.map((u) => health(u)));
  assert.is(both.filter((h) => h.leader).length, 1, `exactly one leader (${again})`);
  const after = new Client({ endpoint: again, accessKey: c.accessKey, secretKey: c.secretKey });
  assert.is((await after.request<Record<string, unknown>>('GET', '/admin/config'))['heartbeat.timeout'], 2000);
  third.child.kill('SIGKILL');
  await third.exited;
});

t.run();
