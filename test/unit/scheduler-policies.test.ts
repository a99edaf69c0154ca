// The scheduler's pure parts: sequencers (fifo, lifo, drf), agent selectors (dispersed,
// concentrated, roundrobin, spreading a multi-node session) and the integer slot units they
// compare. Named after what each guards; the real-Docker behaviour is in
// test/integration/scheduler.test.ts.
import * as assert from 'uvu/assert';
import { fits, selectAgent, type PlacementAgent } from '../../runtime/manager/agent-selectors.ts';
import { dominantShare, sequence, type QueuedSession, type SequencerName } from '../../runtime/manager/sequencers.ts';
import { fromSlotUnits, slotUnits } from '../../schema/slots.ts';
import { suite } from '../helpers/suite.ts';

const t = suite('scheduler policies');

// Slot vectors here: [cpu, mem].
const vec = (...v: number[]) => Float64Array.from(v);
const agent = (agentId: string, cap: number[], free = cap, images = ['img']): PlacementAgent =>
  ({ agentId, images: new Set(images), capacity: vec(...cap), free: vec(...free) });
const queued = (sessionId: string, accessKey: string, createdAt: number, need: number[]): QueuedSession => ({ sessionId, accessKey, createdAt, need: vec(...need) });

/** Run a sequencer, answering "placed" for every session (DRF then updates the shares). */
function order(name: SequencerName, qs: QueuedSession[], total = vec(10, 10), placed = () => true): string[] {
  const out: string[] = [];
  const it = sequence(name, qs, new Map(), total);
  let step = it.next();
  while (!step.done) { out.push(step.value.sessionId); step = it.next(placed()); }
  return out;
}

t('fifo offers the oldest first and lifo the newest; equal times keep the id order', () => {
  const qs = [queued('b', 'k', 2, [1, 1]), queued('a', 'k', 1, [1, 1]), queued('d', 'k', 3, [1, 1]), queued('c', 'k', 2, [1, 1])];
  assert.equal(order('fifo', qs), ['a', 'b', 'c', 'd']);
  assert.equal(order('lifo', qs), ['d', 'c', 'b', 'a']);
});

t('drf offers the session of the keypair with the smallest dominant share, recomputed after each placement', () => {
  // x asks cpu-heavy (2 of 10 cpu), y mem-heavy (1 of 10 mem): y gets two turns for each of x's.
  const qs = [
    ...[1, 2, 3].map((i) => queued(`x${i}`, 'x', i, [2, 0])),
    ...[1, 2, 3, 4, 5, 6].map((i) => queued(`y${i}`, 'y', 10 + i, [0, 1])),
  ];
  assert.equal(order('drf', qs), ['x1', 'y1', 'y2', 'x2', 'y3', 'y4', 'x3', 'y5', 'y6']);
});

t('drf does not count a session that was not placed toward its keypair\'s share', () => {
  const qs = [queued('x1', 'x', 1, [5, 0]), queued('x2', 'x', 2, [5, 0]), queued('y1', 'y', 3, [0, 5])];
  assert.equal(order('drf', qs), ['x1', 'y1', 'x2'], 'x1 placed: x holds half the cpu, y goes next');
  assert.equal(order('drf', qs, vec(10, 10), () => false), ['x1', 'x2', 'y1'], 'nothing placed: shares stay 0, age decides');
});

t('dominantShare is the largest fraction of any slot, ignoring slots the group lacks', () => {
  assert.is(dominantShare(vec(2, 5), vec(10, 10)), 0.5);
  assert.is(dominantShare(vec(3, 0), vec(0, 10)), 0);
  assert.is(dominantShare(undefined, vec(10, 10)), 0);
});

t('a request fits only where every slot it names is free, a slot the agent lacks included', () => {
  assert.ok(fits(vec(1, 1), vec(1, 1)));
  assert.not.ok(fits(vec(1, 2), vec(4, 1)));
  assert.not.ok(fits(vec(0, 0, 1), vec(8, 8, 0)), 'an accelerator slot the agent does not declare');
  assert.ok(fits(vec(1, 1, 0), vec(1, 1, 0)), 'a slot asked as 0 fits anywhere');
});

t('dispersed picks the most headroom, concentrated the least; both only among agents with the image that fit', () => {
  const agents = [agent('a', [8, 8], [2, 2]), agent('b', [8, 8], [6, 6]), agent('c', [8, 8], [8, 8], ['other']), agent('d', [8, 8], [0.5, 8])];
  const need = vec(1, 1);
  assert.is(selectAgent('dispersed', agents, need, 'img', { cursor: 0 })?.agentId, 'b');
  assert.is(selectAgent('concentrated', agents, need, 'img', { cursor: 0 })?.agentId, 'a');
  assert.is(selectAgent('dispersed', agents, vec(7, 1), 'img', { cursor: 0 }), undefined, 'nothing fits');
});

t('roundrobin takes the next fitting agent after the last one it chose, wrapping round', () => {
  const agents = [agent('a', [4, 4]), agent('b', [4, 4], [0, 4]), agent('c', [4, 4])];
  const state = { cursor: 0 };
  const picks = [1, 2, 3, 4].map(() => selectAgent('roundrobin', agents, vec(1, 1), 'img', state)?.agentId);
  assert.equal(picks, ['a', 'c', 'a', 'c'], 'b is full and skipped');
});

t('a multi-node session spreads: agents it already uses are taken only when no other fits', () => {
  const agents = [agent('a', [8, 8]), agent('b', [8, 8], [1, 1])];
  assert.is(selectAgent('concentrated', agents, vec(1, 1), 'img', { cursor: 0 }, new Set(['b']))?.agentId, 'a');
  assert.is(selectAgent('dispersed', agents, vec(1, 1), 'img', { cursor: 0 }, new Set(['a']))?.agentId, 'b');
  assert.is(selectAgent('dispersed', agents, vec(2, 2), 'img', { cursor: 0 }, new Set(['a']))?.agentId, 'a', 'falls back to a used agent');
});

t('slot units are exact integers: tenths of a core add up without float drift, memory stays in bytes', () => {
  const tenth = slotUnits('cpu', '0.1');
  assert.is(tenth + slotUnits('cpu', '0.2'), slotUnits('cpu', '0.3'));
  assert.is(fromSlotUnits('cpu', tenth * 3), '0.3');
  assert.is(slotUnits('mem', String(256 * 1024 ** 3)), 256 * 1024 ** 3);
  assert.is(fromSlotUnits('mem', 1024), '1024');
  assert.is(slotUnits('cuda.device', undefined), 0);
});

t.run();
