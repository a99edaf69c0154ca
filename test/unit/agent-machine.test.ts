// The agent statechart (actors/agent.ts): ALIVE ⇄ LOST → TERMINATED, heartbeat deadlines kept
// as timestamps in context, every other event ignored.
import * as assert from 'uvu/assert';
import { createActor, type ActorRefFrom } from 'xstate';
import { AGENT_ACCEPTS, agentMachine, type AgentEvent, type AgentInput } from '../../actors/agent.ts';
import { AGENT_STATUSES, type AgentStatus } from '../../schema/status.ts';
import { suite } from '../helpers/suite.ts';
import { statuses } from '../helpers/machines.ts';

const test = suite('agent machine', { timeoutMs: 5_000 });

type AgentRef = ActorRefFrom<typeof agentMachine>;
const started: AgentRef[] = [];
test.after(() => { for (const a of started) a.stop(); });

const input = (over: Partial<AgentInput> = {}): AgentInput => ({
  agentId: 'agent-1',
  resourceGroup: 'default',
  addr: 'tcp://10.0.0.1:6001',
  availableSlots: { cpu: '8', mem: '17179869184' },
  images: ['cr.example/python:3.12'],
  heartbeatTimeoutMs: 50,
  ...over,
});

function startAgent(over: Partial<AgentInput> = {}): AgentRef {
  const agent = createActor(agentMachine, { input: input(over) });
  agent.subscribe({ error: () => {} });
  agent.start();
  started.push(agent);
  return agent;
}

const fingerprint = (agent: AgentRef) => {
  const s = agent.getSnapshot();
  return JSON.parse(JSON.stringify({ value: s.value, status: s.status, context: s.context }));
};

async function lost(over: Partial<AgentInput> = {}) {
  const agent = startAgent(over);
  agent.send({ type: 'DEADLINE', now: agent.getSnapshot().context.deadlineAt });
  assert.is(agent.getSnapshot().value, 'LOST');
  return agent;
}

// ---- transitions -------------------------------------------------------------------------------

test('starts ALIVE with its deadline one heartbeat timeout from now', () => {
  const t0 = Date.now();
  const agent = startAgent();
  const c = agent.getSnapshot().context;
  assert.is(agent.getSnapshot().value, 'ALIVE');
  assert.ok(c.lastHeartbeatAt >= t0 && c.lastHeartbeatAt <= Date.now());
  assert.is(c.deadlineAt, c.lastHeartbeatAt + 50);
  assert.equal(statuses(c.history), ['ALIVE']);
});

test('a restored agent gets firstDeadlineMs to dial the new leader; its first heartbeat brings back the usual timeout', () => {
  const agent = startAgent({ firstDeadlineMs: 200 });
  const c = agent.getSnapshot().context;
  assert.is(c.deadlineAt, c.lastHeartbeatAt + 200);
  agent.send({ type: 'DEADLINE', now: c.lastHeartbeatAt + 50 });
  assert.is(agent.getSnapshot().value, 'ALIVE', 'not LOST after the usual timeout while it finds the leader');
  const now = c.lastHeartbeatAt + 150;
  agent.send({ type: 'HEARTBEAT', now });
  assert.is(agent.getSnapshot().context.deadlineAt, now + 50);
  const short = startAgent({ firstDeadlineMs: 10 }).getSnapshot().context;
  assert.is(short.deadlineAt, short.lastHeartbeatAt + 50, 'never shorter than the timeout');
});

test('a heartbeat.timeout changed before a restored agent\'s first heartbeat keeps its longer first deadline', () => {
  const agent = startAgent({ firstDeadlineMs: 200 });
  const c = agent.getSnapshot().context;
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 60 });
  assert.is(agent.getSnapshot().context.deadlineAt, c.lastHeartbeatAt + 200);
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 300 });
  assert.is(agent.getSnapshot().context.deadlineAt, c.lastHeartbeatAt + 300, 'a timeout longer than the first deadline wins');
  agent.send({ type: 'HEARTBEAT', now: c.lastHeartbeatAt + 10 });
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 60 });
  assert.is(agent.getSnapshot().context.deadlineAt, c.lastHeartbeatAt + 70, 'after its first heartbeat, the usual timeout');
});

test('ALIVE → LOST on a DEADLINE at (or past) deadlineAt', () => {
  const a = startAgent();
  a.send({ type: 'DEADLINE', now: a.getSnapshot().context.deadlineAt });
  assert.is(a.getSnapshot().value, 'LOST');
  const b = startAgent();
  b.send({ type: 'DEADLINE', now: b.getSnapshot().context.deadlineAt + 10_000 });
  assert.is(b.getSnapshot().value, 'LOST');
  assert.equal(statuses(b.getSnapshot().context.history), ['ALIVE', 'LOST']);
});

test('a stale DEADLINE (now < deadlineAt) is ignored', () => {
  const agent = startAgent();
  const before = fingerprint(agent);
  agent.send({ type: 'DEADLINE', now: before.context.deadlineAt - 1 });
  assert.equal(fingerprint(agent), before);
});

test('a HEARTBEAT pushes the deadline to now + timeout, so the old deadline is stale', () => {
  const agent = startAgent();
  const oldDeadline = agent.getSnapshot().context.deadlineAt;
  const now = oldDeadline - 10;
  agent.send({ type: 'HEARTBEAT', now });
  assert.is(agent.getSnapshot().context.lastHeartbeatAt, now);
  assert.is(agent.getSnapshot().context.deadlineAt, now + 50);
  agent.send({ type: 'DEADLINE', now: oldDeadline });
  assert.is(agent.getSnapshot().value, 'ALIVE', 'the deadline the heartbeat replaced no longer fires');
  agent.send({ type: 'DEADLINE', now: now + 50 });
  assert.is(agent.getSnapshot().value, 'LOST');
});

test('a HEARTBEAT updates what the agent reports and keeps what it leaves out', () => {
  const agent = startAgent();
  agent.send({ type: 'HEARTBEAT', now: Date.now(), availableSlots: { cpu: '4' }, images: ['img:a', 'img:b'] });
  let c = agent.getSnapshot().context;
  assert.equal(c.availableSlots, { cpu: '4' });
  assert.equal(c.images, ['img:a', 'img:b']);
  assert.is(c.addr, 'tcp://10.0.0.1:6001');
  assert.is(c.resourceGroup, 'default');
  agent.send({ type: 'HEARTBEAT', now: Date.now(), addr: 'tcp://10.0.0.2:6001', resourceGroup: 'gpu' });
  c = agent.getSnapshot().context;
  assert.is(c.addr, 'tcp://10.0.0.2:6001');
  assert.is(c.resourceGroup, 'gpu');
  assert.equal(c.availableSlots, { cpu: '4' });
  assert.equal(statuses(c.history), ['ALIVE'], 'heartbeats while ALIVE add no status');
});

test('LOST → ALIVE on a HEARTBEAT, with a fresh deadline', async () => {
  const agent = await lost();
  const now = Date.now() + 1_000;
  agent.send({ type: 'HEARTBEAT', now, availableSlots: { cpu: '2' } });
  const c = agent.getSnapshot().context;
  assert.is(agent.getSnapshot().value, 'ALIVE');
  assert.is(c.deadlineAt, now + 50);
  assert.equal(c.availableSlots, { cpu: '2' });
  assert.equal(statuses(c.history), ['ALIVE', 'LOST', 'ALIVE']);
});

test('TIMEOUT_CHANGED re-times the deadline from the last heartbeat (ALIVE)', () => {
  const agent = startAgent();
  const hb = Date.now();
  agent.send({ type: 'HEARTBEAT', now: hb });
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 5_000 });
  assert.is(agent.getSnapshot().context.heartbeatTimeoutMs, 5_000);
  assert.is(agent.getSnapshot().context.deadlineAt, hb + 5_000);
  agent.send({ type: 'DEADLINE', now: hb + 50 });
  assert.is(agent.getSnapshot().value, 'ALIVE', 'the longer timeout applies');
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 20 });
  assert.is(agent.getSnapshot().context.deadlineAt, hb + 20);
  agent.send({ type: 'DEADLINE', now: hb + 20 });
  assert.is(agent.getSnapshot().value, 'LOST', 'the shorter timeout applies');
  agent.send({ type: 'HEARTBEAT', now: hb + 100 });
  assert.is(agent.getSnapshot().context.deadlineAt, hb + 120, 'later heartbeats use the new timeout');
});

test('TIMEOUT_CHANGED while LOST re-times the deadline and stays LOST', async () => {
  const agent = await lost();
  const last = agent.getSnapshot().context.lastHeartbeatAt;
  agent.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 60_000 });
  assert.is(agent.getSnapshot().value, 'LOST', 'only a heartbeat revives an agent');
  assert.is(agent.getSnapshot().context.deadlineAt, last + 60_000);
});

test('SHUTDOWN: ALIVE → TERMINATED (final)', () => {
  const agent = startAgent();
  agent.send({ type: 'SHUTDOWN' });
  assert.is(agent.getSnapshot().value, 'TERMINATED');
  assert.is(agent.getSnapshot().status, 'done');
  assert.equal(statuses(agent.getSnapshot().context.history), ['ALIVE', 'TERMINATED']);
});

test('SHUTDOWN: LOST → TERMINATED (final)', async () => {
  const agent = await lost();
  agent.send({ type: 'SHUTDOWN' });
  assert.is(agent.getSnapshot().value, 'TERMINATED');
  assert.is(agent.getSnapshot().status, 'done');
  assert.equal(statuses(agent.getSnapshot().context.history), ['ALIVE', 'LOST', 'TERMINATED']);
});

test('a persisted agent (JSON round-tripped) restores with its deadline and goes on', async () => {
  const agent = await lost();
  const persisted = JSON.parse(JSON.stringify(agent.getPersistedSnapshot()));
  agent.stop();
  const restored = createActor(agentMachine, { snapshot: persisted, input: input() });
  restored.start();
  started.push(restored);
  assert.is(restored.getSnapshot().value, 'LOST');
  assert.equal(restored.getSnapshot().context, persisted.context);
  restored.send({ type: 'HEARTBEAT', now: Date.now() });
  assert.is(restored.getSnapshot().value, 'ALIVE');
  assert.equal(statuses(restored.getSnapshot().context.history), ['ALIVE', 'LOST', 'ALIVE']);
});

test('a closed connection brings the deadline forward to reconnectWithinMs, never back; registering again restores the heartbeat timeout', () => {
  const agent = startAgent({ heartbeatTimeoutMs: 3000 });
  const c0 = agent.getSnapshot().context;
  agent.send({ type: 'DISCONNECTED', now: c0.lastHeartbeatAt + 100, reconnectWithinMs: 1000 });
  assert.is(agent.getSnapshot().context.deadlineAt, c0.lastHeartbeatAt + 1100);
  // A later close (or a longer window) does not push the deadline back out.
  agent.send({ type: 'DISCONNECTED', now: c0.lastHeartbeatAt + 200, reconnectWithinMs: 5000 });
  assert.is(agent.getSnapshot().context.deadlineAt, c0.lastHeartbeatAt + 1100);
  agent.send({ type: 'DEADLINE', now: c0.lastHeartbeatAt + 1099 });
  assert.is(agent.getSnapshot().value, 'ALIVE');
  agent.send({ type: 'HEARTBEAT', now: c0.lastHeartbeatAt + 1050 });
  assert.is(agent.getSnapshot().context.deadlineAt, c0.lastHeartbeatAt + 4050);
  agent.send({ type: 'DISCONNECTED', now: c0.lastHeartbeatAt + 1060, reconnectWithinMs: 1000 });
  agent.send({ type: 'DEADLINE', now: c0.lastHeartbeatAt + 2060 });
  assert.is(agent.getSnapshot().value, 'LOST');
});

// ---- every other event is ignored ----------------------------------------------------------------

const AGENT_EVENT_SAMPLES = {
  HEARTBEAT: { type: 'HEARTBEAT', now: Number.MAX_SAFE_INTEGER - 1, availableSlots: { cpu: '0' }, images: [], addr: 'x', resourceGroup: 'y' },
  // Long past any deadline: a state that took DEADLINE would act on it.
  DEADLINE: { type: 'DEADLINE', now: Number.MAX_SAFE_INTEGER },
  TIMEOUT_CHANGED: { type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: 1 },
  DISCONNECTED: { type: 'DISCONNECTED', now: 0, reconnectWithinMs: 0 },
  SHUTDOWN: { type: 'SHUTDOWN' },
} satisfies { [T in AgentEvent['type']]: Extract<AgentEvent, { type: T }> };
const AGENT_EVENT_TYPES = Object.keys(AGENT_EVENT_SAMPLES) as AgentEvent['type'][];

test("the chart's `on` config is AGENT_ACCEPTS; a status with no state in the chart accepts nothing", () => {
  const states = agentMachine.root.states;
  assert.equal(Object.keys(agentMachine.root.config.on ?? {}), [], 'nothing is taken at the root');
  for (const status of AGENT_STATUSES) {
    const node = states[status as keyof typeof states] as (typeof states)[keyof typeof states] | undefined;
    if (!node) {
      assert.equal(AGENT_ACCEPTS[status], [], `${status} is not a state of the chart, so it accepts nothing`);
      continue;
    }
    assert.equal(Object.keys(node.config.on ?? {}).sort(), [...AGENT_ACCEPTS[status]].sort(), status);
  }
  assert.is(states.TERMINATED.type, 'final');
  assert.equal(Object.keys(states).filter((s) => !(AGENT_STATUSES as readonly string[]).includes(s)), [], 'every state is an AgentStatus');
});

const reachAgent: Partial<Record<AgentStatus, () => Promise<AgentRef>>> = {
  ALIVE: async () => startAgent(),
  LOST: () => lost(),
  TERMINATED: async () => { const a = startAgent(); a.send({ type: 'SHUTDOWN' }); return a; },
};

for (const status of AGENT_STATUSES) {
  const reach = reachAgent[status];
  if (!reach) continue; // not a state of the chart (see the test above)
  const refused = AGENT_EVENT_TYPES.filter((t) => !AGENT_ACCEPTS[status].includes(t));
  test(`${status} ignores ${refused.join(', ') || 'nothing'}: value and context unchanged`, async () => {
    const agent = await reach();
    assert.is(agent.getSnapshot().value, status);
    const before = fingerprint(agent);
    for (const type of refused) {
      agent.send(AGENT_EVENT_SAMPLES[type]);
      assert.equal(fingerprint(agent), before, `${status} changed on ${type}`);
    }
  });
}

test.run();
