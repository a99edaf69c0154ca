// The live actor graph as operators see it: GET /admin/actors (filtered), the chart as API at
// GET /admin/actors/{id}, and socket.io /inspect (a snapshot, then deltas); admins only.
import * as assert from 'uvu/assert';
import { io, type Socket } from 'socket.io-client';
import type { ActorGraphDelta, ActorNode } from '../../runtime/manager/actor-graph.ts';
import { Client, Forbidden } from '../../runtime/sdk/index.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';
import { startInProcess, type InProcessCluster } from '../helpers/in-process.ts';
import { eventually, suite } from '../helpers/suite.ts';

type Ctx = InProcessCluster & { user: Client; userKeys: { ak: string; sk: string } };
const t = suite<Ctx>('actor graph', { timeoutMs: 90_000 });

t.before(async (ctx) => {
  Object.assign(ctx, await startInProcess('actors'));
  const kp = await ctx.client.admin.createKeypair({ email: `u-${ctx.tag}@example.com` });
  ctx.userKeys = { ak: kp.access_key, sk: kp.secret_key };
  ctx.user = new Client({ endpoint: ctx.m.url, accessKey: kp.access_key, secretKey: kp.secret_key });
});
t.after(async (ctx) => { await ctx.stop?.(); });

type Graph = { managerId: string; nodes: ActorNode[] };

function inspector(url: string, keys: { ak: string; sk: string }): Socket {
  const u = new URL(url);
  const date = new Date().toISOString();
  const { authorization } = signRequest({ method: 'GET', pathWithQuery: '/socket.io', date, host: u.host, version: API_VERSION, accessKey: keys.ak, secretKey: keys.sk });
  return io(`${url}/inspect`, { transports: ['websocket'], reconnection: false, auth: { Date: date, 'X-BackendAI-Version': API_VERSION, Authorization: authorization } });
}

t('sessions, their kernels and the agents appear with states, supervision and placement; the chart says what each accepts', async (ctx) => {
  const s = await ctx.user.sessions.create({ name: 'graph-1', image: 'python', resources: { cpu: '0.5', mem: '256m' } });
  const info = await ctx.user.sessions.get(s.sessionId);
  const kernelId = info.kernels[0].kernelId;
  const all = await ctx.client.request<Graph>('GET', '/admin/actors');
  const byId = new Map(all.nodes.map((n) => [n.id, n]));
  const manager = byId.get(all.managerId)!;
  assert.is(manager.kind, 'manager');
  const agent = byId.get(ctx.agent.agentId)!;
  assert.is(agent.kind, 'agent');
  assert.is(agent.status, 'ALIVE');
  assert.is(agent.parent, all.managerId);
  const session = byId.get(s.sessionId)!;
  assert.is(session.kind, 'session');
  assert.is(session.status, 'RUNNING');
  assert.is(session.parent, all.managerId);
  assert.is(session.summary.name, 'graph-1');
  assert.ok(session.events.some((e) => e.type === 'SCHEDULE'), 'the events it received, with times');
  const kernel = byId.get(kernelId)!;
  assert.is(kernel.kind, 'kernel');
  assert.is(kernel.parent, s.sessionId);
  assert.is(kernel.status, 'RUNNING');
  assert.is(kernel.agentId, ctx.agent.agentId, 'placement edge');

  // By id, by the short id the CLI's tree shows, and by name: the session with its kernel.
  for (const session of [s.sessionId, s.sessionId.slice(0, 8), 'graph-1']) {
    const filtered = await ctx.client.request<Graph>('GET', '/admin/actors', { query: { session } });
    assert.equal(filtered.nodes.map((n) => n.id).sort(), [s.sessionId, kernelId].sort(), session);
  }
  assert.equal((await ctx.client.request<Graph>('GET', '/admin/actors', { query: { session: s.sessionId.slice(0, 4) } })).nodes, [], 'a prefix under 8 characters names nothing');
  const onAgent = await ctx.client.request<Graph>('GET', '/admin/actors', { query: { agent: ctx.agent.agentId } });
  assert.ok(onAgent.nodes.some((n) => n.id === kernelId));
  const running = await ctx.client.request<Graph>('GET', '/admin/actors', { query: { state: 'RUNNING', kind: 'session' } });
  assert.ok(running.nodes.every((n) => n.kind === 'session' && n.status === 'RUNNING'));

  const one = await ctx.client.request<ActorNode & { children: string[] }>('GET', `/admin/actors/${s.sessionId}`);
  assert.ok(one.accepts.includes('TERMINATE'), `a RUNNING session accepts TERMINATE (${one.accepts.join(', ')})`);
  assert.not.ok(one.accepts.includes('SCHEDULE'));
  assert.equal(one.children, [kernelId]);
  const agentNode = await ctx.client.request<ActorNode>('GET', `/admin/actors/${ctx.agent.agentId}`);
  assert.ok(typeof agentNode.deadlineAt === 'number' && agentNode.deadlineAt > Date.now() - 60_000, 'an agent shows its heartbeat deadline');

  await assertRejects(ctx.user.request('GET', '/admin/actors'), Forbidden);
  await ctx.user.sessions.destroy(s.sessionId);
});

t('/inspect sends the graph, then deltas as a session moves; a user keypair is refused', async (ctx) => {
  const sock = inspector(ctx.m.url, { ak: ctx.ak, sk: ctx.sk });
  const first = await new Promise<Graph>((resolve, reject) => { sock.once('graph', resolve); sock.once('connect_error', reject); });
  assert.ok(first.nodes.some((n) => n.kind === 'agent'));
  const deltas: ActorGraphDelta[] = [];
  sock.on('delta', (d: ActorGraphDelta) => deltas.push(d));
  const s = await ctx.user.sessions.create({ name: 'graph-2', image: 'python', resources: { cpu: '0.5', mem: '256m' } });
  await ctx.user.sessions.destroy(s.sessionId);
  await eventually(() => deltas.some((d) => d.upserts.some((n) => n.id === s.sessionId && n.status === 'TERMINATED')), 10_000, 'TERMINATED seen');
  const seen = deltas.flatMap((d) => d.upserts).filter((n) => n.id === s.sessionId).map((n) => n.status);
  assert.ok(seen.includes('RUNNING') || seen.includes('PREPARING'), `intermediate states are streamed (${[...new Set(seen)].join(', ')})`);
  sock.disconnect();

  const u = inspector(ctx.m.url, ctx.userKeys);
  const err = await new Promise<Error>((resolve) => u.once('connect_error', resolve));
  assert.match(err.message, /admin only/);
  u.disconnect();
});

async function assertRejects(p: Promise<unknown>, cls: new (...a: any[]) => Error): Promise<void> {
  try { await p; } catch (e) { assert.instance(e, cls); return; }
  assert.unreachable(`expected ${cls.name}`);
}

t.run();
