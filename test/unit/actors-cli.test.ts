// `flotilla actors`' pure parts: the tree it prints, ages, and the SDK's client-side filter and
// delta application that --watch redraws from.
import * as assert from 'uvu/assert';
import { suite } from '../helpers/suite.ts';
import { formatAge, renderActorTree } from '../../runtime/cli/actors.ts';
import { applyActorDelta, filterActors, type ActorNode } from '../../runtime/sdk/inspect.ts';

const t = suite('flotilla actors rendering');

const NOW = Date.parse('2024-01-01T00:10:00Z');
const M = 'manager:h:1';
const S1 = '3f2a1b4c-0000-4000-8000-000000000001';
const S2 = '9e9e9e9e-0000-4000-8000-000000000002';
const K1 = 'aaaaaaaa-0000-4000-8000-00000000000a';
const K2 = 'bbbbbbbb-0000-4000-8000-00000000000b';
const node = (n: Partial<ActorNode> & Pick<ActorNode, 'id' | 'kind' | 'status' | 'startedAt'>): ActorNode => ({
  parent: M, machine: n.kind, state: n.status, summary: {}, updatedAt: n.startedAt, events: [], accepts: [], ...n,
});
const GRAPH = {
  managerId: M,
  nodes: [
    node({ id: M, kind: 'manager', parent: null, status: 'RUNNING', startedAt: '2024-01-01T00:00:00Z' }),
    node({ id: 'i-b', kind: 'agent', status: 'LOST', startedAt: '2024-01-01T00:01:00Z' }),
    node({ id: 'i-a', kind: 'agent', status: 'ALIVE', startedAt: '2024-01-01T00:01:00Z' }),
    node({ id: S1, kind: 'session', status: 'RUNNING', startedAt: '2024-01-01T00:09:48Z', summary: { name: 'one' } }),
    node({ id: K2, kind: 'kernel', parent: S1, status: 'PREPARING', startedAt: '2024-01-01T00:09:49Z', summary: { hostname: 'sub1', role: 'sub' } }),
    node({ id: K1, kind: 'kernel', parent: S1, status: 'RUNNING', agentId: 'i-a', startedAt: '2024-01-01T00:09:49Z', summary: { hostname: 'main1', role: 'main' } }),
    node({ id: S2, kind: 'session', status: 'TERMINATED', startedAt: '2024-01-01T00:05:00Z', endedAt: '2024-01-01T00:09:30Z', summary: { name: 'two' } }),
  ],
};

t('the tree: manager, agents by id, sessions by start with their kernels (main first), states, placement and ages', () => {
  assert.fixture(renderActorTree(GRAPH, { now: NOW }), [
    'manager:h:1              RUNNING               up 10m',
    '├─ agents (2)',
    '│  ├─ i-a                ALIVE                 9m',
    '│  └─ i-b                LOST                  9m',
    '└─ sessions (2)',
    '   ├─ two 9e9e9e9e       TERMINATED            ended 30s ago',
    '   └─ one 3f2a1b4c       RUNNING               12s',
    '      ├─ main1 aaaaaaaa  RUNNING     on i-a    11s',
    '      └─ sub1 bbbbbbbb   PREPARING   unplaced  11s',
  ].join('\n'));
});

t('a filtered graph: kernels whose session is not shown hang under a placeholder; an empty one says so', () => {
  const onAgent = { managerId: M, nodes: filterActors(GRAPH.nodes, { agent: 'i-a' }) };
  assert.equal(onAgent.nodes.map((n) => n.id).sort(), [K1, 'i-a'].sort());
  const text = renderActorTree(onAgent, { now: NOW });
  assert.match(text, /^manager:h:1$/m, 'the manager line without a state when its node is filtered out');
  assert.match(text, /├─ agents \(1\)\n│  └─ i-a\s+ALIVE/);
  assert.match(text, /└─ \(session 3f2a1b4c\)\n {6}└─ main1 aaaaaaaa\s+RUNNING\s+on i-a\s+11s/);
  assert.fixture(renderActorTree({ managerId: M, nodes: [] }, { now: NOW }), 'manager:h:1\n└─ (no agents or sessions)');
});

t('colours by status only when asked', () => {
  assert.not.match(renderActorTree(GRAPH, { now: NOW }), /\x1b\[/);
  const coloured = renderActorTree(GRAPH, { now: NOW, color: true });
  assert.match(coloured, /\x1b\[32mALIVE/);
  assert.match(coloured, /\x1b\[31mLOST/);
  assert.match(coloured, /\x1b\[90mTERMINATED/);
});

t('ages: the two largest units', () => {
  assert.is(formatAge(0), '0s');
  assert.is(formatAge(-5000), '0s');
  assert.is(formatAge(59_999), '59s');
  assert.is(formatAge(65_000), '1m5s');
  assert.is(formatAge(3600_000), '1h');
  assert.is(formatAge(3600_000 + 61_000), '1h1m');
  assert.is(formatAge(2 * 86400_000 + 3 * 3600_000 + 59_000), '2d3h');
});

t('filters match GET /admin/actors; deltas upsert and remove', () => {
  assert.equal(filterActors(GRAPH.nodes, { session: S1 }).map((n) => n.id).sort(), [S1, K1, K2].sort());
  assert.equal(filterActors(GRAPH.nodes, { state: 'RUNNING', kind: 'session' }).map((n) => n.id), [S1]);
  const nodes = new Map(GRAPH.nodes.map((n) => [n.id, n]));
  applyActorDelta(nodes, { upserts: [{ ...nodes.get(S1)!, status: 'TERMINATING', state: 'TERMINATING.destroying' }], removes: [S2] });
  assert.is(nodes.get(S1)!.status, 'TERMINATING');
  assert.not.ok(nodes.has(S2));
  assert.is(nodes.size, GRAPH.nodes.length - 1);
});

t.run();
