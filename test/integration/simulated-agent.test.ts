// The simulated agent (runtime/agent/simulated.ts): a real agent process and protocol whose
// kernels only pretend, for scale tests and benchmarks. Here, against a real in-process manager
// on the real PostgreSQL, Redis and etcd: sessions live and end on simulated agents, the
// manager's reconciliation sees the simulated containers, many agents share one process, code
// execution is refused with a problem (not a crash), and `flotilla agent --simulated` registers.
// No test of container behaviour uses a simulated agent.
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { CLUSTER_CONFIG_PREFIX } from '../../config/cluster.ts';
import { loadProcessSettings } from '../../config/settings.ts';
import { startAgent, type RunningAgent } from '../../runtime/agent/index.ts';
import { defaultSimulatedImages, SimulatedBackend, SIMULATED_NO_CODE } from '../../runtime/agent/simulated.ts';
import { createLogger } from '../../runtime/log.ts';
import { RpcError } from '../../runtime/manager/agents.ts';
import { startManager, type RunningManager } from '../../runtime/manager/index.ts';
import { io } from 'socket.io-client';
import { Client } from '../../runtime/sdk/index.ts';
import { openStores } from '../../runtime/stores/index.ts';
import type { Stores } from '../../runtime/stores/types.ts';
import { isFinalSessionStatus } from '../../schema/status.ts';
import { rawRequest } from '../helpers/http.ts';
import { freshDatabase, realServices } from '../helpers/services.ts';
import { eventually, suite } from '../helpers/suite.ts';

const BIN = fileURLToPath(new URL('../../bin/flotilla.js', import.meta.url));
const log = createLogger('test', 'silent');

interface Ctx {
  tag: string; ak: string; sk: string;
  drop: () => Promise<void>;
  stores: Stores; m: RunningManager; client: Client;
  /** The manager's process settings (a restarted manager gets the same, on the same port). */
  env: NodeJS.ProcessEnv;
  /** Every simulated agent this test started, by id. */
  agents: Map<string, RunningAgent<SimulatedBackend>>;
  main: RunningAgent<SimulatedBackend>;
}
const t = suite<Ctx>('simulated agent', { timeoutMs: 90_000 });

async function simulatedAgent(ctx: Ctx, agentId: string, slots = 'cpu=8,mem=16g', backend?: SimulatedBackend, resourceGroup = 'default'): Promise<RunningAgent<SimulatedBackend>> {
  const agent = await startAgent({
    agentId, managerUrls: [ctx.m.url], token: ctx.m.agentToken, resourceGroup, slots, log,
    backend: backend ?? new SimulatedBackend(agentId, log, { delayMs: 3 }),
  });
  ctx.agents.set(agentId, agent);
  return agent;
}

type AgentRow = { agentId: string; connected: boolean; status: string; availableSlots: Record<string, string>; occupiedSlots: Record<string, string>; images: string[] };
const adminAgents = (ctx: Ctx) => ctx.client.request<AgentRow[]>('GET', '/admin/agents');

/** The simulated backend that holds the session's main kernel, and that kernel. */
async function placed(ctx: Ctx, sessionId: string) {
  const info = await ctx.client.sessions.get(sessionId);
  const k = info.kernels[0];
  const agent = ctx.agents.get(k.agentId!);
  assert.ok(agent, `kernel placed on an agent this test started (${k.agentId})`);
  return { info, kernel: k, backend: agent.backend };
}

t.before(async (ctx) => {
  const fresh = await freshDatabase();
  ctx.drop = () => fresh.drop();
  ctx.tag = randomBytes(4).toString('hex');
  ctx.ak = `AK${randomBytes(9).toString('hex').toUpperCase()}`;
  ctx.sk = randomBytes(20).toString('base64');
  ctx.env = {
    ...process.env, FLOTILLA_DATABASE_URL: fresh.url, FLOTILLA_REDIS_URL: realServices.redisUrl,
    FLOTILLA_ETCD_ENDPOINTS: realServices.etcdEndpoints.join(','), FLOTILLA_ETCD_NAMESPACE: `test/simulated-${ctx.tag}/`,
    FLOTILLA_MANAGER_PORT: '0', FLOTILLA_ADMIN_ACCESS_KEY: ctx.ak, FLOTILLA_ADMIN_SECRET_KEY: ctx.sk,
  };
  const settings = loadProcessSettings(ctx.env);
  ctx.stores = await openStores(settings);
  ctx.m = await startManager({ settings, stores: ctx.stores, log });
  ctx.client = new Client({ endpoint: ctx.m.url, accessKey: ctx.ak, secretKey: ctx.sk });
  ctx.agents = new Map();
  ctx.main = await simulatedAgent(ctx, `i-sim-main-${ctx.tag}`);
  await ctx.main.registered;
});

t.after(async (ctx) => {
  const m = ctx.m;
  if (m) {
    for (const id of m.supervisor.liveSessionIds()) m.supervisor.send(id, { type: 'TERMINATE', reason: 'test-cleanup', forced: true });
    const until = Date.now() + 15_000;
    while (m.supervisor.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  }
  for (const a of ctx.agents?.values() ?? []) await a.close();
  await m?.close();
  await ctx.stores?.close();
  await ctx.drop?.();
});

t('an RPC to an agent that disconnects before answering fails at the disconnection, not at its timeout', async (ctx) => {
  // An agent that registers and then answers nothing.
  const mute = io(`${ctx.m.url}/agent`, { transports: ['websocket'], reconnection: false, auth: { token: ctx.m.agentToken, agentId: 'mute-agent' } });
  await new Promise<void>((resolve, reject) => { mute.on('connect', resolve); mute.on('connect_error', reject); });
  const reg = await mute.timeout(10_000).emitWithAck('register', { agentId: 'mute-agent', resourceGroup: 'default', addr: 'mute', version: 'test', availableSlots: { cpu: '1', mem: '1073741824' }, images: [], containers: [] }) as { ok: boolean };
  assert.ok(reg.ok, JSON.stringify(reg));
  const started = Date.now();
  const call = ctx.m.agents.call('mute-agent', 'interrupt', { kernelId: '00000000-0000-0000-0000-000000000001' }, 30_000);
  setTimeout(() => mute.disconnect(), 300);
  try { await call; assert.unreachable('answered'); } catch (e) {
    assert.instance(e, RpcError);
    assert.is((e as RpcError).code, 'disconnected');
  }
  assert.ok(Date.now() - started < 5000, `failed after ${Date.now() - started} ms, not at the 30 s timeout`);
});

t('the simulated agent registers with the capacity it was given and the default aliases\' images', async (ctx) => {
  const row = (await adminAgents(ctx)).find((a) => a.agentId === ctx.main.agentId);
  assert.ok(row);
  assert.is(row.status, 'ALIVE');
  assert.ok(row.connected);
  assert.equal(row.availableSlots, { cpu: '8', mem: String(16 * 1024 ** 3) });
  assert.equal([...row.images].sort(), defaultSimulatedImages());
  assert.ok(defaultSimulatedImages().includes('flotilla/python:3.11'));
});

t('a session on a simulated agent goes PENDING → RUNNING, and DELETE takes it to TERMINATED with its pretend container gone', async (ctx) => {
  const created = await ctx.client.sessions.create({ name: 'sim-life-1', image: 'python', resources: { cpu: 2, mem: '1g' } });
  assert.is(created.status, 'RUNNING');
  const { info, kernel, backend } = await placed(ctx, created.sessionId);
  assert.is(info.status, 'RUNNING');
  assert.equal(info.statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING']);
  assert.is(kernel.agentId, ctx.main.agentId);
  assert.match(kernel.containerId ?? '', /^[0-9a-f]{64}$/);
  const listed = (await backend.listContainers()).find((c) => c.kernelId === kernel.kernelId);
  assert.equal(listed, { kernelId: kernel.kernelId, sessionId: created.sessionId, containerId: kernel.containerId!, running: true, exitCode: null });
  // The heartbeat's occupied slots come from the simulated kernels.
  assert.equal(await backend.occupiedSlots(), [{ cpu: '2', mem: String(1024 ** 3) }]);
  await eventually(async () => (await adminAgents(ctx)).find((a) => a.agentId === ctx.main.agentId)?.occupiedSlots.cpu === '2', 10_000, 'occupied slots reported');
  // Usage sampling answers plausible numbers for it.
  const usage = await backend.kernelUsage();
  assert.is(usage.length, 1);
  assert.is(usage[0].kernelId, kernel.kernelId);
  assert.ok(usage[0].cpuUsedMs >= 0 && usage[0].memBytes > 0);

  await ctx.client.sessions.destroy(created.sessionId);
  const after = await ctx.client.sessions.get(created.sessionId);
  assert.is(after.status, 'TERMINATED');
  assert.equal(after.statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED']);
  assert.is(after.kernels[0].status, 'TERMINATED');
  assert.not.ok(backend.has(kernel.kernelId));
  assert.equal(await backend.occupiedSlots(), [{ cpu: '0', mem: '0' }]);
  // Idempotent by kernel id, as the Docker backend: a repeated destroy of a gone kernel succeeds.
  assert.equal(await backend.destroyKernel(kernel.kernelId), { existed: false });
});

t('create, destroy and restart are idempotent by kernel id and serialized per kernel', async (ctx) => {
  const b = new SimulatedBackend('i-unit', log, { delayMs: 5 });
  const req = { kernelId: 'k-1', sessionId: 's-1', owner: ctx.ak, image: 'flotilla/python:3.11', role: 'main' as const, hostname: 'main1', slots: { cpu: '1', mem: '1024' }, environ: {}, stopGraceSeconds: 0 };
  const [a, again] = await Promise.all([b.createKernel(req), b.createKernel(req)]);
  assert.is(a.containerId, again.containerId);
  assert.is(b.size, 1);
  // A destroy sent while a create is in flight waits for it; then the create is not undone by accident.
  const created = b.createKernel({ ...req, kernelId: 'k-2' });
  const destroyed = b.destroyKernel('k-2');
  assert.ok((await created).containerId);
  assert.equal(await destroyed, { existed: true });
  assert.not.ok(b.has('k-2'));
  assert.equal(await b.restartKernel('k-1'), a);
  let missing = '';
  await b.restartKernel('k-2').catch((e: Error) => { missing = e.message; });
  assert.match(missing, /has no container here/);
  assert.equal(await b.occupiedSlots(), [{ cpu: '1', mem: '1024' }]);
  // An exited kernel is not brought back by a repeated create (as with Docker).
  b.simulateExit('k-1', 3, { unobserved: true });
  assert.equal(await b.listContainers(), [{ kernelId: 'k-1', sessionId: 's-1', containerId: a.containerId, running: false, exitCode: 3 }]);
  let refused = '';
  await b.createKernel(req).catch((e: Error) => { refused = e.message; });
  assert.match(refused, /already exited \(exit code 3\)/);
  assert.equal(await b.occupiedSlots(), [{ cpu: '0', mem: '0' }]);
});

t('execute, interrupt, logs and files on a simulated kernel answer a problem naming the simulated agent, and the session lives on', async (ctx) => {
  const created = await ctx.client.sessions.create({ name: 'sim-exec-1', image: 'python' });
  assert.is(created.status, 'RUNNING');
  const keys = { ak: ctx.ak, sk: ctx.sk };
  const checkProblem = (r: { status: number; body: { type?: string; title?: string; msg?: string } }, what: string) => {
    assert.ok(r.status >= 400 && r.status < 600, `${what}: ${r.status} ${JSON.stringify(r.body)}`);
    assert.match(r.body.type ?? '', /^https:\/\/api\.backend\.ai\/probs\//, what);
    assert.ok(JSON.stringify(r.body).includes(SIMULATED_NO_CODE), `${what}: ${JSON.stringify(r.body)}`);
    assert.not.match(JSON.stringify(r.body), /at .*\.ts:\d+/);
  };
  const exec = await rawRequest(ctx.m.url, keys, 'POST', '/session/sim-exec-1', { contentType: 'application/json', body: JSON.stringify({ mode: 'query', code: 'print(1)', runId: null, options: {} }) });
  checkProblem(exec, 'execute');
  assert.is(exec.status, 503);
  checkProblem(await rawRequest(ctx.m.url, keys, 'POST', '/session/sim-exec-1/interrupt'), 'interrupt');
  checkProblem(await rawRequest(ctx.m.url, keys, 'GET', '/session/sim-exec-1/logs'), 'logs');
  checkProblem(await rawRequest(ctx.m.url, keys, 'GET', '/session/sim-exec-1/files?path=.'), 'files');
  // The SDK sees it as an error too, not a hang or a crash.
  let sdkError: Error | undefined;
  await ctx.client.sessions.execute('sim-exec-1', { mode: 'query', code: 'print(1)' }).catch((e: Error) => { sdkError = e; });
  assert.match(sdkError?.message ?? '', SIMULATED_NO_CODE);
  assert.is((await ctx.client.sessions.get(created.sessionId)).status, 'RUNNING');
  await ctx.client.sessions.destroy(created.sessionId);
});

t('reconciliation on re-registration sees the simulated containers: running ones kept, vanished and exited ones end their sessions, orphans removed', async (ctx) => {
  const [keep, vanish, exited] = await Promise.all(['sim-keep', 'sim-vanish', 'sim-exited'].map((name) => ctx.client.sessions.create({ name, image: 'python' })));
  for (const s of [keep, vanish, exited]) assert.is(s.status, 'RUNNING');
  const backend = ctx.main.backend;
  const kernelOf = async (sessionId: string) => (await placed(ctx, sessionId)).kernel.kernelId;
  const [kKeep, kVanish, kExited] = [await kernelOf(keep.sessionId), await kernelOf(vanish.sessionId), await kernelOf(exited.sessionId)];

  // While the agent is away: one container vanishes, one exits unobserved, one appears that no session owns.
  const agentId = ctx.main.agentId;
  await ctx.main.close();
  assert.ok(backend.simulateVanish(kVanish));
  assert.ok(backend.simulateExit(kExited, 7, { unobserved: true }));
  const orphan = `k-orphan-${ctx.tag}`;
  backend.simulateOrphan(orphan, `s-orphan-${ctx.tag}`, { cpu: '1' });

  // The agent comes back on the same backend and reports what it has.
  ctx.main = await simulatedAgent(ctx, agentId, 'cpu=8,mem=16g', backend);
  await ctx.main.registered;

  await eventually(() => !backend.has(orphan), 10_000, 'orphan container removed');
  const ended = async (sessionId: string) => {
    const s = await ctx.client.sessions.get(sessionId);
    return isFinalSessionStatus(s.status) ? s : undefined;
  };
  const v = await eventually(() => ended(vanish.sessionId), 15_000, 'session with a vanished container ended');
  const e = await eventually(() => ended(exited.sessionId), 15_000, 'session with an exited container ended');
  assert.is(v.status, 'ERROR', 'a vanished container is not a clean end');
  assert.match(v.statusInfo ?? '', /container-vanished/);
  assert.is(e.status, 'ERROR', 'exit code 7 is not a clean end');
  // The exited container is removed once its session ended.
  await eventually(() => !backend.has(kExited), 10_000, 'exited container removed');
  assert.is((await ctx.client.sessions.get(keep.sessionId)).status, 'RUNNING');
  assert.ok(backend.has(kKeep));

  // A kernel that exits on its own while the agent watches is reported at once.
  assert.ok(backend.simulateExit(kKeep, 1));
  assert.is((await eventually(() => ended(keep.sessionId), 15_000, 'session of an exited kernel ended')).status, 'ERROR');
  await eventually(() => !backend.has(kKeep), 10_000, 'its container removed');
});

t('50 simulated agents in one process register, and sessions spread over them run and end', async (ctx) => {
  const ids = Array.from({ length: 50 }, (_, i) => `i-sim-many-${ctx.tag}-${i}`);
  const started = await Promise.all(ids.map((id) => simulatedAgent(ctx, id, 'cpu=4,mem=8g')));
  await Promise.all(started.map((a) => a.registered));
  const rows = await eventually(async () => {
    const list = (await adminAgents(ctx)).filter((a) => ids.includes(a.agentId) && a.connected && a.status === 'ALIVE');
    return list.length === ids.length ? list : undefined;
  }, 30_000, 'all 50 agents ALIVE');
  for (const r of rows) assert.equal(r.availableSlots, { cpu: '4', mem: String(8 * 1024 ** 3) });

  const sessions = await Promise.all(Array.from({ length: 20 }, (_, i) => ctx.client.sessions.create({ name: `sim-many-${i}`, image: 'python', maxWaitSeconds: 60 })));
  for (const s of sessions) assert.is(s.status, 'RUNNING');
  for (const s of sessions) {
    const { kernel, backend } = await placed(ctx, s.sessionId);
    assert.ok(ids.includes(kernel.agentId!) || kernel.agentId === ctx.main.agentId);
    assert.ok(backend.has(kernel.kernelId));
  }
  const held = [...ctx.agents.values()].reduce((n, a) => n + a.backend.size, 0);
  assert.is(held, 20, 'one pretend container per session, over all the agents');
  await Promise.all(sessions.map((s) => ctx.client.sessions.destroy(s.sessionId)));
  for (const s of sessions) assert.is((await ctx.client.sessions.get(s.sessionId)).status, 'TERMINATED');
  for (const id of ids) assert.is(ctx.agents.get(id)!.backend.size, 0, `${id} holds no kernel`);
});

t('`flotilla agent --simulated --slots cpu=8,mem=16g` runs as a process and registers with the manager', async (ctx) => {
  const env = { ...process.env, FLOTILLA_MANAGER_URLS: ctx.m.url, FLOTILLA_AGENT_TOKEN: ctx.m.agentToken, FLOTILLA_LOG_LEVEL: 'warn', FLOTILLA_AGENT_ID: '', FLOTILLA_AGENT_SLOTS: '' };
  const runCli = (args: string[]) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { child, out: () => out, exited };
  };

  const p = runCli(['agent', '--simulated', '--slots', 'cpu=8,mem=16g']);
  try {
    const agentId = (await eventually(() => /simulated agent (\S+) dialling/.exec(p.out())?.[1], 30_000, `CLI agent started: ${p.out()}`));
    assert.match(agentId, /^i-sim-/);
    const row = await eventually(async () => (await adminAgents(ctx)).find((a) => a.agentId === agentId && a.connected && a.status === 'ALIVE'), 30_000, 'CLI agent ALIVE');
    assert.equal(row.availableSlots, { cpu: '8', mem: String(16 * 1024 ** 3) });
    assert.equal([...row.images].sort(), defaultSimulatedImages());
  } finally {
    p.child.kill('SIGTERM');
    assert.is(await p.exited, 0, p.out());
  }

  // Several simulated agents in one process, with the images given.
  const many = runCli(['agent', '--simulated', '--slots', 'cpu=2,mem=2g', '--id', `i-sim-cli-${ctx.tag}`, '--count', '3', '--images', 'example/one:1,example/two:2']);
  try {
    const ids = [1, 2, 3].map((i) => `i-sim-cli-${ctx.tag}-${i}`);
    const rows = await eventually(async () => {
      const list = (await adminAgents(ctx)).filter((a) => ids.includes(a.agentId) && a.connected && a.status === 'ALIVE');
      return list.length === 3 ? list : undefined;
    }, 30_000, `3 CLI agents ALIVE: ${many.out()}`);
    for (const r of rows) assert.equal([...r.images].sort(), ['example/one:1', 'example/two:2']);
  } finally {
    many.child.kill('SIGTERM');
    assert.is(await many.exited, 0, many.out());
  }

  // Never a default, and never without a declared capacity.
  const noSlots = runCli(['agent', '--simulated']);
  assert.is(await noSlots.exited, 2);
  assert.match(noSlots.out(), /--slots: is required with --simulated/);
});

t('a placement committed before its actor heard of it is counted once; if the manager dies in between, the restore puts the session back in the queue and it is placed again and runs once', async (ctx) => {
  const info = (id: string) => ctx.client.sessions.get(id);
  // Committed and told, as a pass does it: one SCHEDULED entry and one session_scheduled event.
  const told = await ctx.client.sessions.create({ name: 'sim-placed-1', image: 'python' });
  assert.is(told.status, 'RUNNING');
  assert.equal((await info(told.sessionId)).statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING']);
  const events = await ctx.stores.db.query<{ name: string }>(`SELECT name FROM session_events WHERE session_id = $1 AND kernel_id IS NULL ORDER BY seq`, [told.sessionId]);
  assert.equal(events.rows.map((r) => r.name), ['session_enqueued', 'session_scheduled', 'session_preparing', 'session_creating', 'session_started']);

  // Committed, not told: the pass's commit lands, the manager dies before the actor moves. On
  // an agent the session fills, so a dead placement still holding its slots would keep the
  // session from being placed again.
  const group = `tight-${ctx.tag}`;
  await ctx.client.admin.createResourceGroup(group);
  const tight = await simulatedAgent(ctx, `i-sim-tight-${ctx.tag}`, 'cpu=1,mem=1g', undefined, group);
  await tight.registered;
  ctx.m.scheduler.stop();
  await ctx.m.scheduler.idle();
  const s = await ctx.client.sessions.create({ name: 'sim-placed-2', image: 'python', resourceGroup: group, resources: { cpu: 1, mem: '1g' }, enqueueOnly: true });
  const kernelId = (await info(s.sessionId)).kernels[0].kernelId;
  const committed = await ctx.m.supervisor.commitPlacements([{ sessionId: s.sessionId, placements: { [kernelId]: tight.agentId } }]);
  assert.is(committed.length, 1);
  assert.is((await info(s.sessionId)).status, 'SCHEDULED');
  assert.is(ctx.m.supervisor.snapshot(s.sessionId)?.value, 'PENDING', 'the actor was not told');
  assert.not.ok(tight.backend.has(kernelId), 'nothing reached the agent');
  const port = new URL(ctx.m.url).port;
  await ctx.m.close();
  ctx.m = await startManager({ settings: loadProcessSettings({ ...ctx.env, FLOTILLA_MANAGER_PORT: port }), stores: ctx.stores, log });
  await eventually(async () => (await info(s.sessionId)).status === 'RUNNING', 30_000, 'the restored session placed again and RUNNING');
  const after = await info(s.sessionId);
  // Put back in the queue at the restore (so the dead placement held no agent's slots), then placed afresh.
  assert.equal(after.statusHistory.map((h) => h.status), ['PENDING', 'SCHEDULED', 'PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING']);
  assert.is((after.statusHistory[2] as { info?: string }).info, 'placement-not-started');
  const holders = [...ctx.agents.values()].filter((a) => a.backend.has(kernelId)).map((a) => a.agentId);
  assert.equal(holders, [tight.agentId], 'one pretend container, on the only agent that fits');
  assert.is(after.kernels[0].agentId, tight.agentId);
  await ctx.client.sessions.destroy(s.sessionId);
  await ctx.client.sessions.destroy(told.sessionId);
});

// Guards the occupancy a pass starts from when it does not read the kernels table (an
// enqueue's pass, between the reads): the placements of the passes before it must count, or a
// full agent would be promised again; and a session that ends must make the next pass read the
// table, so the capacity it freed is placed at once rather than at the safety pass (set to a
// minute here, so neither can pass by it).
t('passes between two reads of the kernels table count the placements committed since; a session ending makes the next pass read it again', async (ctx) => {
  const key = `${CLUSTER_CONFIG_PREFIX}scheduler.interval`;
  await ctx.stores.config.put(key, '60000');
  await eventually(() => ctx.m.config.get('scheduler.interval') === 60_000, 10_000, 'the interval followed');
  ctx.m.scheduler.stop();
  await ctx.m.scheduler.idle();
  ctx.m.scheduler.start();
  try {
    const group = `occupancy-${ctx.tag}`;
    await ctx.client.admin.createResourceGroup(group);
    const agent = await simulatedAgent(ctx, `i-sim-occupancy-${ctx.tag}`, 'cpu=2,mem=2g', undefined, group);
    await agent.registered;
    const create = (name: string, enqueueOnly = false) =>
      ctx.client.sessions.create({ name, image: 'python', resourceGroup: group, resources: { cpu: 1, mem: '256m' }, enqueueOnly });
    const a = await create('sim-occ-a');
    const b = await create('sim-occ-b');
    assert.is(a.status, 'RUNNING');
    assert.is(b.status, 'RUNNING');
    const c = await create('sim-occ-c', true);
    const waiting = await eventually(async () => {
      const i = await ctx.client.sessions.get(c.sessionId);
      return (i.statusData as { scheduler?: { reason: string } } | null)?.scheduler?.reason ? i : undefined;
    }, 15_000, 'the third session tried');
    assert.is(waiting.status, 'PENDING');
    assert.is((waiting.statusData as { scheduler: { reason: string } }).scheduler.reason, 'insufficient-resources');
    assert.is(agent.backend.size, 2, 'the agent holds the two kernels it has room for, no third');

    await ctx.client.sessions.destroy(a.sessionId);
    await eventually(async () => (await ctx.client.sessions.get(c.sessionId)).status === 'RUNNING', 15_000, 'the freed cpu placed without waiting for the safety pass');
    assert.is((await ctx.client.sessions.get(c.sessionId)).kernels[0].agentId, agent.agentId);
    await ctx.client.sessions.destroy(b.sessionId);
    await ctx.client.sessions.destroy(c.sessionId);
  } finally {
    await ctx.stores.config.delete(key);
    await eventually(() => ctx.m.config.get('scheduler.interval') !== 60_000, 10_000, 'the interval back to its default');
    ctx.m.scheduler.stop();
    await ctx.m.scheduler.idle();
    ctx.m.scheduler.start();
  }
});

// Guards the usage sample against agents that do not answer: it asked one agent at a time,
// waiting out each one's 20 s RPC timeout, and the manager's stop waited for the whole run, so
// with many agents gone a stop hung for minutes. A Docker whose stats never come back is such an agent.
t('the usage sample asks agents side by side and a stop does not wait for agents that never answer', async (ctx) => {
  class HungUsage extends SimulatedBackend {
    release!: () => void;
    readonly hung = new Promise<never[]>((r) => { this.release = () => r([]); });
    override kernelUsage() { return this.hung; }
  }
  // Each in a resource group of its own, so the session lands on the agent that answers, which
  // registers after the hung ones (asked in that order, it waited for each of them before).
  const hungGroup = `hung-${ctx.tag}`;
  const usageGroup = `usage-${ctx.tag}`;
  await ctx.client.admin.createResourceGroup(hungGroup);
  await ctx.client.admin.createResourceGroup(usageGroup);
  const hung = await Promise.all(Array.from({ length: 10 }, async (_, i) => {
    const id = `i-sim-hung-${ctx.tag}-${i}`;
    const backend = new HungUsage(id, log, { delayMs: 3 });
    const agent = await simulatedAgent(ctx, id, 'cpu=1,mem=1g', backend, hungGroup);
    await agent.registered;
    return { agent, backend };
  }));
  class CountedUsage extends SimulatedBackend {
    asked = 0;
    override kernelUsage() { this.asked++; return super.kernelUsage(); }
  }
  const counted = new CountedUsage(`i-sim-usage-${ctx.tag}`, log, { delayMs: 3 });
  const answering = await simulatedAgent(ctx, counted.agentId, 'cpu=2,mem=2g', counted, usageGroup);
  await answering.registered;
  const s = await ctx.client.sessions.create({ name: 'sim-usage', image: 'python', resourceGroup: usageGroup });
  assert.is(s.status, 'RUNNING');
  const { kernel } = await placed(ctx, s.sessionId);
  assert.is(kernel.agentId, answering.agentId);
  const samplesOf = async () => Number((await ctx.stores.db.query<{ n: string }>(`SELECT count(*) AS n FROM usage_records WHERE kernel_id = $1`, [kernel.kernelId])).rows[0].n);

  await ctx.m.jobs.stop(); // no cron run in the way: this test's run is the only one
  const before = await samplesOf();
  const run = ctx.m.jobs.runNow('usage-sample');
  let settled = false;
  void run.finally(() => { settled = true; }).catch(() => undefined);
  // The answering agent is asked and answers while the hung agents, asked before it, still have not.
  await eventually(() => counted.asked > 0, 15_000, 'the answering agent asked');
  assert.not.ok(settled, 'the run is still waiting on the hung agents');

  const stopped = ctx.m.jobs.stop().then(() => 'stopped');
  const verdict = await Promise.race([stopped, new Promise((r) => setTimeout(() => r('still waiting'), 10_000))]);
  assert.is(verdict, 'stopped', 'the stop did not wait for the agents that never answer');
  const err = await run.then(() => undefined, (e: Error) => e);
  assert.match(err?.message ?? '', /stopped with \d+ kernel samples stored/);
  assert.is(await samplesOf(), before + 1, 'what the answering agent said was stored at the stop');
  const job = (await ctx.m.jobs.list()).find((j) => j.name === 'usage-sample');
  assert.is(job?.lastOutcome, 'failed', 'a stopped run is not recorded as a whole sample');
  assert.match(job?.lastError ?? '', /before every agent answered/);

  ctx.m.jobs.start();
  for (const h of hung) { h.backend.release(); await h.agent.close(); ctx.agents.delete(h.agent.agentId); }
  await ctx.client.sessions.destroy(s.sessionId);
});

t.run();
