// The scheduler (issue 6) against a real in-process manager, real Docker agents (several in one
// process, each with the capacity it declares) on the real PostgreSQL, Redis and etcd. Each
// test gets a resource group of its own, set up through the admin API, so their queues never
// meet. Only the accelerator test adds a simulated agent: no host here has a GPU, and what it
// checks is placement, not what a container does.
import * as assert from 'uvu/assert';
import Docker from 'dockerode';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { LABEL, sessionNetworkName } from '../../runtime/agent/docker.ts';
import { startAgent, type RunningAgent } from '../../runtime/agent/index.ts';
import { SimulatedBackend } from '../../runtime/agent/simulated.ts';
import { createLogger } from '../../runtime/log.ts';
import { Client, type ResourceGroup, type ResourceGroupInput } from '../../runtime/sdk/index.ts';
import { Forbidden, InvalidAPIParameters, NotFound } from '../../schema/errors.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

const log = createLogger('test', 'silent');
const docker = new Docker();

interface Ctx { c: InProcessCluster; agents: RunningAgent[]; bulk: Client; bulkKey: string }
const t = suite<Ctx>('scheduler', { timeoutMs: 180_000 });

type Info = Awaited<ReturnType<Client['sessions']['get']>>;
type Pending = { reason: string; retries: number; closestAgents?: Array<{ agentId: string; short: string[] }>; shortSlots?: string[]; blockedBy?: string };
const pendingOf = (info: Info) => (info.statusData as { scheduler?: Pending } | null)?.scheduler;

/** A resource group of this test's own with `n` real Docker agents (ids <group>-a, -b, ...) declaring `slots`. */
async function group(ctx: Ctx, name: string, n: number, slots: string, opts: ResourceGroupInput = {}): Promise<{ name: string; agents: RunningAgent[] }> {
  const g = `${name}-${ctx.c.tag}`;
  await ctx.c.client.admin.createResourceGroup(g, opts);
  await ctx.c.client.admin.allowResourceGroup(g, [ctx.bulkKey]);
  const agents: RunningAgent[] = [];
  for (let i = 0; i < n; i++) agents.push(await agentIn(ctx, g, `${g}-${String.fromCharCode(97 + i)}`, slots));
  return { name: g, agents };
}

async function agentIn(ctx: Ctx, resourceGroup: string, agentId: string, slots: string, backend?: SimulatedBackend): Promise<RunningAgent> {
  const a = await startAgent({ agentId, managerUrls: [ctx.c.m.url], token: ctx.c.m.agentToken, resourceGroup, slots, log, ...(backend ? { backend } : {}) });
  await a.registered;
  ctx.agents.push(a);
  return a;
}

const status = (client: Client, id: string) => client.sessions.get(id).then((i) => i.status);
const until = (client: Client, id: string, want: string, ms = 60_000) =>
  eventually(async () => (await status(client, id)) === want, ms, `session ${id} ${want}`);
/** Run code in the session's main kernel; its stdout. */
async function stdoutOf(client: Client, id: string, code: string): Promise<string> {
  let out = '';
  await client.sessions.run(id, code, { onOutput: (stream, data) => { if (stream === 'stdout') out += data; } });
  return out;
}
const agentOf = async (client: Client, id: string) => (await client.sessions.get(id)).kernels[0].agentId;

/** End the sessions and wait until they are final (their capacity is free again). */
async function destroyAll(client: Client, ids: string[]): Promise<void> {
  await Promise.all(ids.map((id) => client.sessions.destroy(id, { forced: true })));
}

t.before(async (ctx) => {
  ctx.c = await startInProcess('sched');
  ctx.agents = [];
  // Passes come from events; the safety pass every 500 ms keeps the retries of blocked heads moving.
  await ctx.c.stores.config.put(`${CLUSTER_CONFIG_PREFIX}scheduler.interval`, '500');
  // A keypair that may run many sessions and clusters (the default policy allows 30 and 1 kernel).
  await ctx.c.client.admin.createResourcePolicy(`bulk-${ctx.c.tag}`, { max_concurrent_sessions: 1000, max_containers_per_session: 8 });
  const kp = await ctx.c.client.admin.createKeypair({ email: `bulk-${ctx.c.tag}@example.com`, resource_policy: `bulk-${ctx.c.tag}`, rate_limit: 0 });
  ctx.bulkKey = kp.access_key;
  ctx.bulk = new Client({ endpoint: ctx.c.m.url, accessKey: kp.access_key, secretKey: kp.secret_key });
});

t.after(async (ctx) => {
  for (const id of ctx.c?.m.supervisor.liveSessionIds() ?? []) ctx.c.m.supervisor.send(id, { type: 'TERMINATE', reason: 'test-cleanup', forced: true });
  const end = Date.now() + 30_000;
  while ((ctx.c?.m.supervisor.size ?? 0) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  for (const a of ctx.agents ?? []) await a.close();
  await ctx.c?.stop();
});

t('resource groups: created, listed, changed live and refused when bad, through the admin API', async (ctx) => {
  const admin = ctx.c.client.admin;
  const name = `rg-${ctx.c.tag}`;
  const made = await admin.createResourceGroup(name, { description: 'for tests', scheduler: 'lifo', pending_timeout: 30 });
  assert.equal({ ...made, created_at: '' }, {
    name, description: 'for tests', is_active: true, scheduler: 'lifo', agent_selector: 'dispersed', pending_timeout: 30, num_retries_to_skip: 0,
    allowed_keypairs: [], created_at: '',
  } satisfies ResourceGroup);
  const changed = await admin.updateResourceGroup(name, { agent_selector: 'concentrated', num_retries_to_skip: 2 });
  assert.is(changed.scheduler, 'lifo', 'options not named keep their value');
  assert.is(changed.agent_selector, 'concentrated');
  // The options are in etcd, where every manager watches them.
  assert.equal(JSON.parse((await ctx.c.stores.config.get(`flotilla/resource-groups/${name}`))!), { scheduler: 'lifo', pending_timeout: 30, agent_selector: 'concentrated', num_retries_to_skip: 2 });
  assert.ok((await admin.listResourceGroups()).some((g) => g.name === name));

  // Bad values are 400 and change nothing; an unknown group is 404.
  for (const bad of [{ scheduler: 'random' }, { agent_selector: 'best' }, { pending_timeout: -1 }, { num_retries_to_skip: 1.5 }, { colour: 'red' }]) {
    try { await admin.updateResourceGroup(name, bad as ResourceGroupInput); assert.unreachable(`accepted ${JSON.stringify(bad)}`); } catch (e) { assert.instance(e, InvalidAPIParameters, JSON.stringify(bad)); }
  }
  assert.is((await admin.listResourceGroups()).find((g) => g.name === name)?.scheduler, 'lifo');
  try { await admin.updateResourceGroup('no-such-group', { scheduler: 'fifo' }); assert.unreachable(); } catch (e) { assert.instance(e, NotFound); }

  // Every keypair may use `default`; another group is 403 until it is given one; an unknown group is 400.
  const kp = await admin.createKeypair({ email: `rg-${ctx.c.tag}@example.com` });
  const user = new Client({ endpoint: ctx.c.m.url, accessKey: kp.access_key, secretKey: kp.secret_key });
  try { await user.sessions.create({ image: 'shell', resourceGroup: name, enqueueOnly: true }); assert.unreachable(); } catch (e) { assert.instance(e, Forbidden); }
  try { await user.sessions.create({ image: 'shell', resourceGroup: 'no-such-group', enqueueOnly: true }); assert.unreachable(); } catch (e) { assert.instance(e, InvalidAPIParameters); }
  assert.equal((await admin.allowResourceGroup(name, [kp.access_key])).allowed_keypairs, [kp.access_key]);
  const s = await user.sessions.create({ image: 'shell', resourceGroup: name, enqueueOnly: true, resources: { cpu: 0.1, mem: '64m' } });
  assert.is(s.status, 'PENDING');
  await user.sessions.destroy(s.sessionId);
  assert.equal((await admin.disallowResourceGroup(name, [kp.access_key])).allowed_keypairs, []);
  // A keypair that does not exist is named in a 400, by allow and disallow alike (a typo is not "done").
  for (const call of [() => admin.allowResourceGroup(name, [kp.access_key, 'AKNOSUCHKEY000000000']), () => admin.disallowResourceGroup(name, ['AKNOSUCHKEY000000000'])]) {
    try { await call(); assert.unreachable(); } catch (e) { assert.instance(e, InvalidAPIParameters); assert.match((e as Error).message, /AKNOSUCHKEY000000000/); }
  }
  assert.equal((await admin.listResourceGroups()).find((g) => g.name === name)?.allowed_keypairs, [], 'the refused allow gave nothing');
});

t('FIFO: a head that lacks free resources blocks the queue; num_retries_to_skip set live lets a small session pass it', async (ctx) => {
  const g = await group(ctx, 'fifo', 1, 'cpu=2,mem=2g');
  const small = { cpu: 1, mem: '128m' };
  const running = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: small });
  assert.is(running.status, 'RUNNING');
  const big = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: { cpu: 2, mem: '128m' }, enqueueOnly: true });
  const behind = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: small, enqueueOnly: true });

  // The big one waits with the reason and the agent that came closest; the small one waits its turn although it would fit.
  const bigInfo = await eventually(async () => { const i = await ctx.bulk.sessions.get(big.sessionId); return pendingOf(i)?.reason === 'insufficient-resources' ? i : undefined; }, 10_000, 'reason given');
  assert.is(bigInfo.status, 'PENDING');
  assert.match(bigInfo.statusInfo ?? '', /insufficient resources .*cpu/);
  assert.equal(pendingOf(bigInfo)?.shortSlots, ['cpu']);
  assert.equal(pendingOf(bigInfo)?.closestAgents?.map((a) => [a.agentId, a.short]), [[g.agents[0].agentId, ['cpu']]]);
  const behindInfo = await eventually(async () => { const i = await ctx.bulk.sessions.get(behind.sessionId); return pendingOf(i)?.reason === 'queued' ? i : undefined; }, 10_000, 'queued');
  assert.is(behindInfo.status, 'PENDING');
  assert.is(pendingOf(behindInfo)?.blockedBy, big.sessionId);
  await new Promise((r) => setTimeout(r, 1500)); // several passes: strict order holds
  assert.is(await status(ctx.bulk, behind.sessionId), 'PENDING');

  await ctx.c.client.admin.updateResourceGroup(g.name, { num_retries_to_skip: 1 });
  await until(ctx.bulk, behind.sessionId, 'RUNNING');
  assert.is(await status(ctx.bulk, big.sessionId), 'PENDING');
  await destroyAll(ctx.bulk, [running.sessionId, behind.sessionId]);
  await until(ctx.bulk, big.sessionId, 'RUNNING');
  await destroyAll(ctx.bulk, [big.sessionId]);
});

t('LIFO: the newest PENDING session is placed first when capacity frees', async (ctx) => {
  const g = await group(ctx, 'lifo', 1, 'cpu=1,mem=1g', { scheduler: 'lifo' });
  const r = { cpu: 1, mem: '128m' };
  const first = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: r });
  assert.is(first.status, 'RUNNING');
  const older = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: r, enqueueOnly: true });
  const newer = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: r, enqueueOnly: true });
  await destroyAll(ctx.bulk, [first.sessionId]);
  await until(ctx.bulk, newer.sessionId, 'RUNNING');
  assert.is(await status(ctx.bulk, older.sessionId), 'PENDING');
  await destroyAll(ctx.bulk, [newer.sessionId]);
  await until(ctx.bulk, older.sessionId, 'RUNNING');
  await destroyAll(ctx.bulk, [older.sessionId]);
});

t('DRF: two keypairs with different dominant resources converge to equal dominant shares (FIFO would give all to the first)', async (ctx) => {
  const g = `drf-${ctx.c.tag}`;
  await ctx.c.client.admin.createResourceGroup(g, { scheduler: 'drf' });
  const keypairs = await Promise.all(['a', 'b'].map((x) => ctx.c.client.admin.createKeypair({ email: `drf-${x}-${ctx.c.tag}@example.com`, resource_policy: `bulk-${ctx.c.tag}`, rate_limit: 0 })));
  await ctx.c.client.admin.allowResourceGroup(g, keypairs.map((k) => k.access_key));
  const [a, b] = keypairs.map((k) => new Client({ endpoint: ctx.c.m.url, accessKey: k.access_key, secretKey: k.secret_key }));
  // a is CPU-heavy (1 of 4 cores, 256m of 4g), b memory-heavy (0.25 cores, 1g): both 1/4 dominant share per session.
  const aIds: string[] = [];
  const bIds: string[] = [];
  // All of a's first, then all of b's, queued while the group has no agent; the agent's arrival starts one pass.
  for (let i = 0; i < 4; i++) aIds.push((await a.sessions.create({ image: 'shell', resourceGroup: g, resources: { cpu: 1, mem: '256m' }, enqueueOnly: true })).sessionId);
  for (let i = 0; i < 4; i++) bIds.push((await b.sessions.create({ image: 'shell', resourceGroup: g, resources: { cpu: 0.25, mem: '1g' }, enqueueOnly: true })).sessionId);
  const pending = await a.sessions.get(aIds[0]);
  assert.is(pendingOf(pending)?.reason, 'no-agent');
  await agentIn(ctx, g, `${g}-a`, 'cpu=4,mem=4g');

  const running = async (client: Client, ids: string[]) => (await Promise.all(ids.map((id) => status(client, id)))).filter((s) => s === 'RUNNING').length;
  await eventually(async () => (await running(a, aIds)) + (await running(b, bIds)) === 6, 60_000, 'six sessions running');
  await new Promise((r) => setTimeout(r, 1000));
  const [ra, rb] = [await running(a, aIds), await running(b, bIds)];
  // Dominant shares: a's cpu ra/4, b's mem rb·1g/4g; equal here (FIFO would have run a's four and none of b's).
  assert.is(ra, 3, `keypair a runs ${ra}`);
  assert.is(rb, 3, `keypair b runs ${rb}`);
  await destroyAll(a, aIds);
  await destroyAll(b, bIds);
});

t('selectors across three agents: dispersed spreads, concentrated packs, roundrobin cycles (changed live)', async (ctx) => {
  const g = await group(ctx, 'sel', 3, 'cpu=2,mem=2g');
  const place = async (n: number) => {
    const ids: string[] = [];
    for (let i = 0; i < n; i++) ids.push((await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: { cpu: 0.5, mem: '64m' } })).sessionId);
    const where = await Promise.all(ids.map((id) => agentOf(ctx.bulk, id)));
    await destroyAll(ctx.bulk, ids);
    return where;
  };
  const dispersed = await place(3);
  assert.is(new Set(dispersed).size, 3, `dispersed: ${dispersed}`);
  await ctx.c.client.admin.updateResourceGroup(g.name, { agent_selector: 'concentrated' });
  const concentrated = await place(3);
  assert.is(new Set(concentrated).size, 1, `concentrated: ${concentrated}`);
  await ctx.c.client.admin.updateResourceGroup(g.name, { agent_selector: 'roundrobin' });
  const rr = await place(4);
  assert.is(new Set(rr.slice(0, 3)).size, 3, `roundrobin: ${rr}`);
  assert.is(rr[3], rr[0], `roundrobin comes back round: ${rr}`);
});

t('image and accelerator constraints: a kernel goes only where its image is and its accelerator slot exists', async (ctx) => {
  const g = `acc-${ctx.c.tag}`;
  await ctx.c.client.admin.createResourceGroup(g);
  await ctx.c.client.admin.allowResourceGroup(g, [ctx.bulkKey]);
  // A big agent without the shell image (dispersed would prefer it), a small real one with it.
  const noImage = await agentIn(ctx, g, `${g}-noimage`, 'cpu=64,mem=64g', new SimulatedBackend(`${g}-noimage`, log, { images: ['flotilla/other:1'] }));
  const real = await agentIn(ctx, g, `${g}-real`, 'cpu=2,mem=2g');
  const s = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g, resources: { cpu: 0.5, mem: '64m' } });
  assert.is(s.status, 'RUNNING');
  assert.is(await agentOf(ctx.bulk, s.sessionId), real.agentId);
  // Only the simulated agent declares cuda.device (and has the python image).
  const gpu = await agentIn(ctx, g, `${g}-gpu`, 'cpu=8,mem=8g,cuda.device=2', new SimulatedBackend(`${g}-gpu`, log));
  const wants = { cpu: 1, mem: '128m', 'cuda.device': 1 };
  const g1 = await ctx.bulk.sessions.create({ image: 'python', resourceGroup: g, resources: wants });
  const g2 = await ctx.bulk.sessions.create({ image: 'python', resourceGroup: g, resources: wants });
  assert.equal([await agentOf(ctx.bulk, g1.sessionId), await agentOf(ctx.bulk, g2.sessionId)], [gpu.agentId, gpu.agentId]);
  const g3 = await ctx.bulk.sessions.create({ image: 'python', resourceGroup: g, resources: wants, enqueueOnly: true });
  const info = await eventually(async () => { const i = await ctx.bulk.sessions.get(g3.sessionId); return pendingOf(i)?.reason === 'insufficient-resources' ? i : undefined; }, 10_000, 'pending for cuda.device');
  assert.equal(pendingOf(info)?.shortSlots, ['cuda.device']);
  assert.is(pendingOf(info)?.closestAgents?.[0].agentId, gpu.agentId);
  assert.not.ok(noImage.agentId === (await agentOf(ctx.bulk, s.sessionId)));
  await destroyAll(ctx.bulk, [s.sessionId, g1.sessionId, g2.sessionId, g3.sessionId]);
});

t('pending_timeout: a session that waits too long is CANCELLED with reason pending-timeout', async (ctx) => {
  const g = await group(ctx, 'pt', 1, 'cpu=1,mem=1g', { pending_timeout: 2 });
  const blocker = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: { cpu: 1, mem: '64m' } });
  const waiting = await ctx.bulk.sessions.create({ image: 'shell', resourceGroup: g.name, resources: { cpu: 1, mem: '64m' }, enqueueOnly: true });
  await until(ctx.bulk, waiting.sessionId, 'CANCELLED', 15_000);
  const info = await ctx.bulk.sessions.get(waiting.sessionId);
  assert.is(info.statusInfo, 'pending-timeout');
  assert.equal(info.statusHistory.map((h) => h.status), ['PENDING', 'CANCELLED']);
  const waited = Date.parse(info.statusHistory[1].at) - Date.parse(info.statusHistory[0].at);
  assert.ok(waited >= 2000, `cancelled after ${waited} ms`);
  assert.is(await status(ctx.bulk, blocker.sessionId), 'RUNNING');
  await destroyAll(ctx.bulk, [blocker.sessionId]);
});

t('200 concurrent creates across 3 agents: no agent ever holds more than it declared (by its containers\' real limits); each session RUNNING or PENDING with a reason', async (ctx) => {
  const g = await group(ctx, 'crowd', 3, 'cpu=2,mem=1g');
  const capacity = { nanoCpus: 2e9, memory: 1024 ** 3 };
  let worst = { nanoCpus: 0, memory: 0 };
  let sampling = true;
  // Sample the containers Docker really runs for each agent, with the limits Docker enforces.
  const sampler = (async () => {
    while (sampling) {
      const list = await docker.listContainers({ filters: JSON.stringify({ label: [LABEL.agentId] }) });
      const byAgent = new Map<string, { nanoCpus: number; memory: number }>();
      for (const c of list) {
        const agentId = c.Labels[LABEL.agentId];
        if (!g.agents.some((a) => a.agentId === agentId)) continue;
        const hc = (await docker.getContainer(c.Id).inspect().catch(() => undefined))?.HostConfig;
        if (!hc) continue;
        const sum = byAgent.get(agentId) ?? { nanoCpus: 0, memory: 0 };
        sum.nanoCpus += hc.NanoCpus ?? 0;
        sum.memory += hc.Memory ?? 0;
        byAgent.set(agentId, sum);
      }
      for (const s of byAgent.values()) worst = { nanoCpus: Math.max(worst.nanoCpus, s.nanoCpus), memory: Math.max(worst.memory, s.memory) };
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const names = Array.from({ length: 200 }, (_, i) => `crowd-${ctx.c.tag}-${i}`);
  const created = await Promise.all(names.map((name) => ctx.bulk.sessions.create({ name, image: 'shell', resourceGroup: g.name, resources: { cpu: 0.5, mem: '128m' }, enqueueOnly: true })));
  assert.is(created.length, 200);
  // 4 fit on each agent (2 cores / 0.5): 12 run, 188 wait.
  const ids = created.map((c) => c.sessionId);
  const infos = await eventually(async () => {
    const all = await Promise.all(ids.map((id) => ctx.bulk.sessions.get(id)));
    const settled = all.filter((i) => i.status === 'RUNNING').length === 12 && all.every((i) => i.status === 'RUNNING' || (i.status === 'PENDING' && i.statusInfo));
    return settled ? all : undefined;
  }, 120_000, '12 running, the rest pending with a reason');
  await new Promise((r) => setTimeout(r, 1000));
  sampling = false;
  await sampler;
  const perAgent = new Map<string, number>();
  for (const i of infos.filter((x) => x.status === 'RUNNING')) perAgent.set(i.kernels[0].agentId!, (perAgent.get(i.kernels[0].agentId!) ?? 0) + 1);
  assert.equal([...perAgent.values()], [4, 4, 4]);
  assert.ok(worst.nanoCpus > 0, 'the sampler saw the containers');
  assert.ok(worst.nanoCpus <= capacity.nanoCpus, `an agent held ${worst.nanoCpus / 1e9} cpus of 2`);
  assert.ok(worst.memory <= capacity.memory, `an agent held ${worst.memory} bytes of ${capacity.memory}`);
  for (const i of infos.filter((x) => x.status === 'PENDING')) assert.ok(['insufficient-resources', 'queued'].includes(pendingOf(i)?.reason ?? ''), JSON.stringify(i.statusData));
  await destroyAll(ctx.bulk, ids);
});

t('a 3-kernel multi-node session spans three agents on its own network; kernels resolve each other by hostname; a lost sub-kernel degrades it; destroying removes every container and the network', async (ctx) => {
  const g = await group(ctx, 'clu', 3, 'cpu=1,mem=1g');
  const s = await ctx.bulk.sessions.create({ image: 'python', resourceGroup: g.name, clusterSize: 3, clusterMode: 'multi-node', resources: { cpu: 0.5, mem: '256m' } });
  const info = await ctx.bulk.sessions.get(s.sessionId);
  assert.is(s.status, 'RUNNING', `${info.statusInfo} ${JSON.stringify(info.statusData)}`);
  assert.equal(info.kernels.map((k) => k.hostname), ['main1', 'sub1', 'sub2']);
  assert.equal(info.kernels.map((k) => k.role), ['main', 'sub', 'sub']);
  assert.is(new Set(info.kernels.map((k) => k.agentId)).size, 3, 'one kernel per agent');
  const net = await docker.getNetwork(sessionNetworkName(s.sessionId)).inspect();
  assert.is(Object.keys(net.Containers ?? {}).length, 3);

  // From the main kernel (through the execute API): the cluster environment and the others by name.
  const printed = await stdoutOf(ctx.bulk, s.sessionId,
    'import os, socket\nprint(os.environ["BACKENDAI_CLUSTER_HOSTS"], os.environ["BACKENDAI_CLUSTER_SIZE"], os.environ["BACKENDAI_CLUSTER_HOST"])\n'
    + 'print(*[socket.gethostbyname(h) for h in ("sub1", "sub2")])');
  const [envLine, ipLine] = printed.trim().split('\n');
  assert.is(envLine, 'main1,sub1,sub2 3 main1');
  const ipOf = (host: string) => Object.values(net.Containers ?? {}).find((c) => c.Name === `kernel.${info.kernels.find((k) => k.hostname === host)!.kernelId}`)?.IPv4Address.split('/')[0];
  assert.equal(ipLine.split(' '), [ipOf('sub1'), ipOf('sub2')]);
  // From sub1 (docker exec: the API runs code in the main kernel): main1 resolves and answers on TCP.
  await stdoutOf(ctx.bulk, s.sessionId, 'import socket, threading\nsrv = socket.create_server(("0.0.0.0", 7777))\nthreading.Thread(target=lambda: [srv.accept()[0].sendall(b"hello from main1") for _ in range(3)], daemon=True).start()');
  const sub1 = docker.getContainer(info.kernels[1].containerId!);
  const exec = await sub1.exec({ Cmd: ['python3', '-c', 'import socket; s = socket.create_connection(("main1", 7777), timeout=5); print(s.recv(100).decode())'], AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  const out = await new Promise<string>((resolve) => { let b = ''; stream.on('data', (d: Buffer) => { b += d.toString('latin1'); }); stream.on('end', () => resolve(b)); });
  assert.match(out, /hello from main1/);

  // A sub-kernel's container killed: the session goes on degraded, the main kernel still runs code.
  await docker.getContainer(info.kernels[2].containerId!).kill();
  await until(ctx.bulk, s.sessionId, 'RUNNING_DEGRADED', 30_000);
  assert.match(await stdoutOf(ctx.bulk, s.sessionId, 'print(6 * 7)'), /42/);

  await ctx.bulk.sessions.destroy(s.sessionId);
  assert.is(await status(ctx.bulk, s.sessionId), 'TERMINATED');
  const left = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.sessionId}=${s.sessionId}`] }) });
  assert.is(left.length, 0, 'no container of the session is left');
  await eventually(async () => (await docker.listNetworks({ filters: JSON.stringify({ name: [sessionNetworkName(s.sessionId)] }) })).length === 0, 10_000, 'network removed');
});

t.run();
