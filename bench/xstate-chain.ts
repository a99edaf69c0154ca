// The statecharts' own cost (issue 6's arrival budget): CPU time per 1-kernel session from
// createActor to RUNNING through the real session and kernel charts, with kernel effects that
// answer at once and no I/O, with the live actor graph on XState's inspect (as the manager runs
// them) against the same charts without it, alternating rounds in one process. The persisted
// snapshot is taken where the TransitionWriter takes it (PREPARING and RUNNING committed).
//
//   node --import tsx bench/xstate-chain.ts [--sessions 5000] [--rounds 7] [--no-results]
import { performance } from 'node:perf_hooks';
import { createActor, fromPromise } from 'xstate';
import { kernelMachine, type KernelContext } from '../actors/kernel.ts';
import { sessionMachine, type SessionInput } from '../actors/session.ts';
import { ActorGraph } from '../runtime/manager/actor-graph.ts';
import { flagArg, fmt, intArg, log, progress, summarize, writeResultsSection } from './lib.ts';

const BENCH = 'xstate-chain';
const TITLE = 'Statechart cost per session (issue 6)';
const SESSIONS = intArg('sessions', 5000);
const ROUNDS = intArg('rounds', 7);

const free = fromPromise<void, { kernel: KernelContext }>(async () => {});
const machine = sessionMachine.provide({
  actors: {
    kernel: kernelMachine.provide({
      actors: {
        awaitDurable: free, prepareKernel: free, restartKernel: free, destroyKernel: free,
        createKernel: fromPromise<{ containerId: string }, { kernel: KernelContext }>(async () => ({ containerId: 'c0ffee' })),
      },
    }),
  },
});

const input = (i: number): SessionInput => ({
  sessionId: `s-${i}`, name: `chain-${i}`, accessKey: 'AKBENCHCHAIN', image: 'python', type: 'interactive',
  clusterMode: 'single-node', resourceGroup: 'default', requestedSlots: { cpu: '1', mem: '268435456' },
  kernels: [{
    kernelId: `k-${i}`, sessionId: `s-${i}`, role: 'main', idx: 1, hostname: 'main1', image: 'python',
    requestedSlots: { cpu: '1', mem: '268435456' }, deadlines: { preparingMs: 900_000, creatingMs: 600_000, terminatingMs: 60_000 },
  }],
});

interface Round { wallUs: number; cpuUs: number }

/**
 * SESSIONS sessions created, scheduled and run to RUNNING at once. Per session: the wall time
 * (nothing waits on I/O, so about the main thread's busy time) and the process's CPU time (with
 * the garbage collector's helper threads).
 */
async function round(graph: ActorGraph | undefined): Promise<Round> {
  const actors = [];
  let running = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => { done = r; });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < SESSIONS; i++) {
    const a = createActor(machine, { input: input(i), inspect: graph?.inspect });
    let last: unknown = 'PENDING';
    a.subscribe((s) => {
      if (s.value === last) return;
      last = s.value;
      if (s.value === 'PREPARING' || s.value === 'RUNNING') a.getPersistedSnapshot();
      if (s.value === 'RUNNING' && ++running === SESSIONS) done();
    });
    a.start();
    actors.push(a);
  }
  for (let i = 0; i < SESSIONS; i++) actors[i].send({ type: 'SCHEDULE', placements: { [`k-${i}`]: 'i-bench' } });
  await all;
  const wallUs = ((performance.now() - t0) * 1000) / SESSIONS;
  const cpu = process.cpuUsage(cpu0);
  for (const a of actors) a.stop();
  return { wallUs, cpuUs: (cpu.user + cpu.system) / SESSIONS };
}

const graph = new ActorGraph({ managerId: 'manager:bench', endedKeepMs: 1000 });
const on: Round[] = [];
const off: Round[] = [];
const p = progress(BENCH, `${ROUNDS} rounds of ${SESSIONS} sessions each way`, 2 * ROUNDS);
await round(graph); await round(undefined); // warm-up (JIT)
for (let r = 0; r < ROUNDS; r++) {
  // Alternate which goes first, so drift hits both alike.
  if (r % 2) { off.push(await round(undefined)); p.tick(); on.push(await round(graph)); p.tick(); }
  else { on.push(await round(graph)); p.tick(); off.push(await round(undefined)); p.tick(); }
}
p.done();
graph.close();

const sOn = summarize(on.map((r) => r.wallUs));
const sOff = summarize(off.map((r) => r.wallUs));
const cOn = summarize(on.map((r) => r.cpuUs));
const cOff = summarize(off.map((r) => r.cpuUs));
const paired = summarize(on.map((r, i) => r.wallUs / off[i].wallUs));
const us = (v: number) => `${fmt(v, 0)} µs`;
const list = (rs: Round[], k: keyof Round) => rs.map((r) => fmt(r[k], 0)).join(', ');
const rows: Array<[string, string]> = [
  ['time per session, createActor → RUNNING, with the actor graph on inspect (as the manager runs): median (rounds)', `**${us(sOn.p50)}** (${list(on, 'wallUs')})`],
  ['the same without inspect: median (rounds)', `${us(sOff.p50)} (${list(off, 'wallUs')})`],
  ['paired ratio of each round\'s time (with / without), median', `${fmt(paired.p50, 2)}× (${on.map((r, i) => fmt(r.wallUs / off[i].wallUs, 2)).join(', ')})`],
  ['… at 1,000 sessions/s, the share of the manager\'s thread the charts alone take (with the graph)', `${fmt(sOn.p50 / 10, 0)} %`],
  ['process CPU per session (with the garbage collector\'s helper threads), with the graph / without: medians', `${us(cOn.p50)} / ${us(cOff.p50)} (with: ${list(on, 'cpuUs')}; without: ${list(off, 'cpuUs')})`],
];
process.stdout.write(`\n${TITLE}\n`);
for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(110)} ${v.replace(/\*/g, '')}\n`);
if (!flagArg('no-results')) {
  writeResultsSection({
    title: TITLE,
    table: { headers: ['figure', 'value'], rows },
    ratio: `time per session with the actor graph / without, median of paired rounds = **${fmt(paired.p50, 2)}×** (${us(sOn.p50)} vs ${us(sOff.p50)}); the charts alone at 1,000 sessions/s: **${fmt(sOn.p50 / 10, 0)} %** of the manager's thread`,
    notes: [
      `One process, no I/O: ${fmt(SESSIONS, 0)} session actors (the real charts of actors/session.ts and actors/kernel.ts, each session spawning its kernel) created and started, then all sent SCHEDULE; the kernel effects (awaitDurable, prepareKernel, createKernel) are promise actors that resolve at once, so the chain SCHEDULED → PREPARING → CREATING → RUNNING runs as in the manager with every effect free. The persisted snapshot is taken when the session reaches PREPARING and RUNNING, where the TransitionWriter takes it. Time per session: the round's wall time divided by the sessions (nothing waits on I/O, so it is about the main thread's busy time, collection pauses included); CPU per session: process.cpuUsage over the round (this thread and the garbage collector's helpers, which can run on the other core); ${ROUNDS} rounds each way after a warm-up, alternating which goes first.`,
      'This is the floor the charts set for the scheduler bench\'s arrival phase (bench/scheduler.ts): a manager also persists, schedules, calls the agents and answers their heartbeats on the same thread.',
    ],
  });
  log(BENCH, `wrote section "${TITLE}" of bench/RESULTS.md`);
}
