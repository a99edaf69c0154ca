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

test.run();
