// The live actor graph's bookkeeping (runtime/manager/actor-graph.ts), fed XState inspection
// events as the supervisor's actors emit them.
import * as assert from 'uvu/assert';
import { ActorGraph } from '../../runtime/manager/actor-graph.ts';
import { suite } from '../helpers/suite.ts';

const test = suite('actor graph', { timeoutMs: 5_000 });

type Ctx = Record<string, unknown>;
const snapshot = (ref: string, value: string, context: Ctx) =>
  ({ type: '@xstate.snapshot', actorRef: { sessionId: ref }, snapshot: { value, context, status: 'active' } }) as never;
const session = (id: string): Ctx => ({ sessionId: id, kernelViews: [] });
const kernel = (sessionId: string, kernelId: string): Ctx => ({ sessionId, kernelId });

test('ending a session marks it and its own kernels ended, and no other node (indexed, not a scan of every node)', () => {
  const g = new ActorGraph({ managerId: 'manager:test' });
  try {
    g.inspect.next!(snapshot('x:1', 'RUNNING', session('s1')));
    g.inspect.next!(snapshot('x:2', 'RUNNING', kernel('s1', 'k1')));
    g.inspect.next!(snapshot('x:3', 'RUNNING', kernel('s1', 'k2')));
    g.inspect.next!(snapshot('x:4', 'RUNNING', session('s2')));
    g.inspect.next!(snapshot('x:5', 'RUNNING', kernel('s2', 'k3')));
    g.ended('s1');
    const ended = (id: string) => g.get(id)?.endedAt !== undefined;
    assert.equal(['s1', 'k1', 'k2'].map(ended), [true, true, true]);
    assert.equal(['s2', 'k3', 'manager:test'].map(ended), [false, false, false]);
    assert.equal(g.list({ session: 's1' }).map((n) => n.id).sort(), ['k1', 'k2', 's1']);
  } finally {
    g.close();
  }
});

test('a subscriber gets deltas of what changed after it subscribed, not of the changes before (it starts from the whole graph); none are kept without one', async () => {
  const g = new ActorGraph({ managerId: 'manager:test' });
  try {
    for (let i = 0; i < 50; i++) g.inspect.next!(snapshot(`x:${i}`, 'RUNNING', session(`s${i}`)));
    const deltas: Array<{ upserts: Array<{ id: string }>; removes: string[] }> = [];
    const stop = g.subscribe((d) => deltas.push(d));
    g.inspect.next!(snapshot('x:7', 'TERMINATING', session('s7')));
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(deltas.map((d) => d.upserts.map((n) => n.id)), [['s7']]);
    assert.is(g.get('s7')?.status, 'TERMINATING');
    stop();
    g.inspect.next!(snapshot('x:8', 'TERMINATING', session('s8')));
    await new Promise((r) => setTimeout(r, 250));
    assert.is(deltas.length, 1, 'no delta after the last subscriber left');
    assert.is(g.get('s8')?.status, 'TERMINATING', 'the graph itself still follows');
  } finally { g.close(); }
});

test.run();
