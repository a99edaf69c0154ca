// The inspect hook's cost (issue 8): session transitions per second through the real Supervisor
// (actors, durable writes to PostgreSQL, deadlines) with the live actor graph fed by XState's
// inspect on every actor, against the same supervisor without it, alternating in one run.
// Effects answer at once (no Docker): the supervisor's own work is what is measured.
//
//   node --import tsx bench/inspect.ts [--sessions 300] [--rounds 5]
import { randomUUID } from 'node:crypto';
import { createLogger } from '../runtime/log.ts';
import { ActorGraph } from '../runtime/manager/actor-graph.ts';
import { Supervisor } from '../runtime/manager/supervisor.ts';
import { isFinalSessionStatus } from '../schema/status.ts';
import { fmt, freshBenchDatabase, intArg, log, perSecond, progress, writeResultsSection } from './lib.ts';

const BENCH = 'inspect';
const SESSIONS = intArg('sessions', 300);
const ROUNDS = intArg('rounds', 5);
const TARGET = 0.9;
const AK = 'AKBENCHINSPECT000000';
const AGENT = 'i-bench-inspect';

const b = await freshBenchDatabase({ poolMax: 10 });
const logger = createLogger('bench', 'error');
try {
  await b.db.query(`INSERT INTO users (id, email) VALUES ($1, 'inspect@flotilla.test')`, [randomUUID()]);
  await b.db.query(`INSERT INTO keypairs (access_key, secret_key_enc, user_id) SELECT $1, 'bench-not-a-secret', id FROM users`, [AK]);
  await b.db.query(`INSERT INTO agents (id, status, resource_group, addr) VALUES ($1, 'ALIVE', 'default', 'tcp://127.0.0.1:6001')`, [AGENT]);
  const effects = {
    prepare: async () => {},
    create: async () => ({ containerId: randomUUID().replace(/-/g, '') }),
    restart: async () => {},
    destroy: async () => {},
  };
  const graph = new ActorGraph({ managerId: 'manager:bench' });
  // Someone follows the graph, as /inspect would: deltas are built and sent.
  let deltas = 0;
  graph.subscribe((d) => { deltas += d.upserts.length; });
  const withGraph = new Supervisor({ db: b.db, log: logger, effects, graph });
  const without = new Supervisor({ db: b.db, log: logger, effects });

  /** SESSIONS sessions from PENDING to TERMINATED at once; transitions/s of the session statuses. */
  const round = async (sup: Supervisor): Promise<number> => {
    const ids: string[] = [];
    let transitions = 0;
    const onStatus = () => { transitions++; };
    sup.on('status', onStatus);
    const done = new Set<string>();
    const allDone = new Promise<void>((resolve) => {
      const l = (id: string, s: string) => { if (isFinalSessionStatus(s)) { done.add(id); if (done.size === SESSIONS) { sup.off('status', l); resolve(); } } };
      sup.on('status', l);
    });
    const t0 = performance.now();
    await Promise.all(Array.from({ length: SESSIONS }, async (_, i) => {
      const sessionId = randomUUID();
      const kernelId = randomUUID();
      ids.push(sessionId);
      await sup.create({
        sessionId, name: `ins-${i}`, accessKey: AK, image: 'flotilla/python:3.11', type: 'interactive', clusterMode: 'single-node', clusterSize: 1,
        resourceGroup: 'default', requestedSlots: { cpu: '1', mem: '268435456' }, environ: {}, mounts: [],
        kernels: [{ kernelId, sessionId, role: 'main', idx: 1, hostname: 'main1', image: 'flotilla/python:3.11', requestedSlots: { cpu: '1', mem: '268435456' }, deadlines: sup.kernelDeadlines() }],
      });
      sup.send(sessionId, { type: 'SCHEDULE', placements: { [kernelId]: AGENT } });
    }));
    // Terminate each as it runs.
    const running = (id: string, s: string) => { if (s === 'RUNNING') sup.send(id, { type: 'TERMINATE', reason: 'bench' }); };
    sup.on('status', running);
    for (const id of ids) if (sup.snapshot(id)?.value === 'RUNNING') sup.send(id, { type: 'TERMINATE', reason: 'bench' });
    await allDone;
    const ms = performance.now() - t0;
    sup.off('status', running);
    sup.off('status', onStatus);
    return perSecond(transitions, ms);
  };

  await round(without); // warm-up
  await round(withGraph);
  const on: number[] = [];
  const off: number[] = [];
  const p = progress(BENCH, 'alternating rounds', ROUNDS * 2);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 ? [withGraph, without] : [without, withGraph];
    for (const sup of order) { (sup === withGraph ? on : off).push(await round(sup)); p.tick(); }
  }
  p.done();
  const median = (v: number[]) => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)];
  const pairs = on.map((x, i) => x / off[i]);
  const ratio = median(pairs);
  log(BENCH, `graph on ${fmt(median(on))} transitions/s, off ${fmt(median(off))}: ${ratio.toFixed(3)}×`);
  const nodes = graph.list().length;
  await withGraph.close();
  await without.close();
  graph.close();
  writeResultsSection({
    title: 'Inspect hook cost (issue 8)',
    table: {
      headers: ['figure', 'value'],
      rows: [
        ['session transitions/s with the actor graph (inspect on every actor), median of rounds', `${fmt(median(on))} (rounds: ${on.map((x) => fmt(x)).join(', ')})`],
        ['the same without inspect, median of rounds', `${fmt(median(off))} (rounds: ${off.map((x) => fmt(x)).join(', ')})`],
        ['paired ratio of each round (on / off)', pairs.map((x) => x.toFixed(3)).join(', ')],
        [`median paired ratio (target ≥ ${TARGET})`, `${ratio.toFixed(2)}×`],
      ],
    },
    ratio: `transitions/s graph on / off = **${ratio.toFixed(2)}×** (target ≥ ${TARGET})`,
    notes: [
      `The real Supervisor on a fresh PostgreSQL database: each round creates ${SESSIONS} sessions at once (insert, actor), schedules them, and terminates each as it reaches RUNNING; kernel effects answer at once, so the figure is the supervisor's own work (actors, batched durable writes, deadlines). A transition is one session status committed (PENDING, SCHEDULED, PREPARING, RUNNING, TERMINATING, TERMINATED).`,
      `With the graph, every session and kernel actor is created with XState's inspect observer feeding runtime/manager/actor-graph.ts, and a subscriber receives the batched deltas as /inspect would (${fmt(deltas)} node updates sent; ${nodes} nodes held at the end, ended ones kept ${60} s).`,
      `${ROUNDS} rounds per side after a warm-up round each, the order alternating between rounds; the figure is the median of the per-round ratios.`,
    ],
  });
  if (ratio < TARGET) process.exitCode = 1;
} finally {
  await b.drop();
}
