// Durable writes (issue 2): how many session transitions per second the manager can make durable
// (DESIGN.md §2 rule 1: status, status history, kernel rows, event row and the actor's snapshot
// in one transaction, committed before any effect runs), against a bare single-row INSERT loop
// on the same server in the same process.
//
//   node --import tsx bench/durable-writes.ts [--sessions 2000] [--rounds 3]
//        [--unbatched-sessions 500] [--baseline-rows 5000] [--explain] [--no-results]
//
// A "transition" is one session status entered and persisted: one TransitionWriter.write()
// whose promise resolved (= committed). Each session enters PENDING, SCHEDULED, PREPARING,
// RUNNING, TERMINATING, TERMINATED: 6 writes, 6 status-history entries, 6 event rows.
import { randomUUID } from 'node:crypto';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import pg, { type QueryResultRow } from 'pg';
import { createActor, fromPromise, waitFor } from 'xstate';
import { kernelMachine, type CreatedKernel, type KernelEffectInput } from '../actors/kernel.ts';
import { sessionMachine } from '../actors/session.ts';
import { TransitionWriter, type SessionWrite } from '../runtime/manager/persistence.ts';
import type { Database, DbClient } from '../runtime/stores/types.ts';
import type { KernelStatus, SessionStatus } from '../schema/status.ts';
import { lifecycleEventName } from '../schema/status.ts';
import {
  describeMachine, flagArg, fmt, intArg, log, machineInfo, measure, perSecond, postgresInfo, progress,
  summarize, withBenchDatabase, writeResultsSection, type Summary,
} from './lib.ts';

const BENCH = 'durable-writes';
const SESSIONS = intArg('sessions', 2000);
const ROUNDS = intArg('rounds', 3);
const UNBATCHED_SESSIONS = intArg('unbatched-sessions', 500);
const BASELINE_ROWS = intArg('baseline-rows', 5000);
const TARGET = 5000; // persisted transitions/s on the 2-core reference machine
if (BASELINE_ROWS < 5000) throw new Error('--baseline-rows must be at least 5000');

const SESSION_PATH: readonly SessionStatus[] = ['PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'TERMINATING', 'TERMINATED'];
// What the kernel enters at each session step (the session is RUNNING once its kernel passed CREATING).
const KERNEL_STEPS: readonly (readonly KernelStatus[])[] = [['PENDING'], ['SCHEDULED'], ['PREPARING'], ['CREATING', 'RUNNING'], ['TERMINATING'], ['TERMINATED']];
const KERNEL_PATH = KERNEL_STEPS.flat();
const IMAGE = 'cr.backend.ai/stable/python:3.11-ubuntu22.04';
const SLOTS = { cpu: '1', mem: '1073741824' };
const KEYPAIRS = 16;
const AGENTS = ['i-bench-agent-0', 'i-bench-agent-1'];

// ---- snapshots: the real session chart's persisted snapshots, one per status on the path

const TEMPLATE_SESSION = '5e55105e-0000-4000-8000-000000000001';
const TEMPLATE_KERNEL = 'ce44e100-0000-4000-8000-000000000002';
const TEMPLATE_KEY = 'AKTEMPLATE0000000000';
const TEMPLATE_CONTAINER = 'c0ffee'.padEnd(64, '0');

/**
 * Drive one real session actor (effects answer at once) along the path and keep its persisted
 * snapshot as it enters each status, so the bench writes what the runtime writes, with ids to
 * substitute per session.
 */
async function snapshotTemplates(): Promise<string[]> {
  const ok = fromPromise<void, KernelEffectInput>(async () => undefined);
  const kernel = kernelMachine.provide({
    actors: {
      awaitDurable: ok, prepareKernel: ok, restartKernel: ok, destroyKernel: ok,
      createKernel: fromPromise<CreatedKernel, KernelEffectInput>(async () => ({ containerId: TEMPLATE_CONTAINER })),
    },
  });
  const machine = sessionMachine.provide({ actors: { kernel } });
  const actor = createActor(machine, {
    input: {
      sessionId: TEMPLATE_SESSION, name: 'bench-template', accessKey: TEMPLATE_KEY, image: IMAGE, type: 'interactive',
      clusterMode: 'single-node', resourceGroup: 'default', requestedSlots: SLOTS,
      kernels: [{
        kernelId: TEMPLATE_KERNEL, sessionId: TEMPLATE_SESSION, role: 'main', idx: 1, hostname: 'main1', image: IMAGE,
        requestedSlots: SLOTS, deadlines: { preparingMs: 900_000, creatingMs: 600_000, terminatingMs: 60_000 },
      }],
    },
  });
  const seen = new Map<string, string>();
  actor.subscribe((s) => {
    const v = String(s.value);
    if (!seen.has(v)) seen.set(v, JSON.stringify(actor.getPersistedSnapshot()));
  });
  actor.start();
  actor.send({ type: 'SCHEDULE', placements: { [TEMPLATE_KERNEL]: AGENTS[0] } });
  await waitFor(actor, (s) => s.value === 'RUNNING', { timeout: 5000 });
  actor.send({ type: 'TERMINATE', reason: 'user-requested' });
  await waitFor(actor, (s) => s.status === 'done', { timeout: 5000 });
  actor.stop();
  return SESSION_PATH.map((status) => {
    const t = seen.get(status);
    if (!t) throw new Error(`the session chart never entered ${status}; the bench's path no longer matches actors/session.ts`);
    return t;
  });
}

// ---- the sessions a round drives

interface Planned {
  sessionId: string;
  kernelId: string;
  accessKey: string;
  /** Parsed ahead of time (building them is the actor's work, not the writer's); emptied after the round. */
  snapshots: unknown[];
}

const accessKey = (i: number) => `AKBENCH${String(i).padStart(13, '0')}`;
// Docker-style 64 hex digits, derived from the kernel id so snapshot and row agree.
const containerIdOf = (kernelId: string) => kernelId.replace(/-/g, '').padEnd(64, 'f');

function plan(count: number, templates: string[], offset: number): Planned[] {
  return Array.from({ length: count }, (_, i) => {
    const sessionId = randomUUID();
    const kernelId = randomUUID();
    const key = accessKey((offset + i) % KEYPAIRS);
    const containerId = containerIdOf(kernelId);
    return {
      sessionId, kernelId, accessKey: key,
      snapshots: templates.map((t) => JSON.parse(t.replaceAll(TEMPLATE_SESSION, sessionId).replaceAll(TEMPLATE_KERNEL, kernelId)
        .replaceAll(TEMPLATE_KEY, key).replaceAll(TEMPLATE_CONTAINER, containerId).replace('"bench-template"', `"bench-${offset + i}"`))),
    };
  });
}

/** The write the runtime makes when the session enters SESSION_PATH[step]. */
function transition(p: Planned, step: number): SessionWrite {
  const status = SESSION_PATH[step];
  const at = new Date().toISOString();
  const ending = status === 'TERMINATING' || status === 'TERMINATED';
  const statusInfo = ending ? 'user-requested' : undefined;
  const kernelStatuses = KERNEL_STEPS[step];
  return {
    sessionId: p.sessionId,
    status,
    statusInfo,
    newHistory: [statusInfo ? { status, at, info: statusInfo } : { status, at }],
    snapshot: p.snapshots[step],
    kernels: [{
      kernelId: p.kernelId,
      status: kernelStatuses[kernelStatuses.length - 1],
      statusInfo,
      newHistory: kernelStatuses.map((s) => (statusInfo ? { status: s, at, info: statusInfo } : { status: s, at })),
      agentId: step === 1 ? AGENTS[p.sessionId.charCodeAt(0) % AGENTS.length] : undefined,
      containerId: step === 3 ? containerIdOf(p.kernelId) : undefined,
      exitCode: status === 'TERMINATED' ? 0 : undefined,
    }],
    events: [{
      sessionId: p.sessionId, kernelId: p.kernelId, accessKey: p.accessKey,
      name: lifecycleEventName('session', status)!, status, reason: statusInfo, at,
      data: ending ? { reason: statusInfo } : undefined,
    }],
  };
}

// ---- seeding: the rows a session has before its actor's first write

async function seedOwners(db: Database): Promise<void> {
  const users = Array.from({ length: KEYPAIRS }, () => randomUUID());
  await db.query(`INSERT INTO users (id, email) SELECT id, 'bench-' || n || '@flotilla.test' FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n)`, [users]);
  await db.query(
    `INSERT INTO keypairs (access_key, secret_key_enc, user_id) SELECT k, 'bench-not-a-secret', u FROM unnest($1::text[], $2::uuid[]) AS x(k, u)`,
    [users.map((_, i) => accessKey(i)), users],
  );
  await db.query(`INSERT INTO agents (id, status, resource_group, addr) SELECT id, 'ALIVE', 'default', 'tcp://127.0.0.1:6001' FROM unnest($1::text[]) AS a(id)`, [AGENTS]);
}

async function seedSessions(db: Database, sessions: Planned[], phase: string): Promise<void> {
  const bar = progress(BENCH, `${phase}: seeding ${sessions.length} sessions`, sessions.length);
  for (let i = 0; i < sessions.length; i += 1000) {
    const chunk = sessions.slice(i, i + 1000);
    await db.tx(async (c) => {
      await c.query(
        `INSERT INTO sessions (id, name, access_key, image, resource_group, status, requested_slots)
         SELECT id, 'bench-' || replace(id::text, '-', ''), key, $3, 'default', 'PENDING', $4::jsonb FROM unnest($1::uuid[], $2::text[]) AS s(id, key)`,
        [chunk.map((s) => s.sessionId), chunk.map((s) => s.accessKey), IMAGE, JSON.stringify(SLOTS)],
      );
      await c.query(
        `INSERT INTO kernels (id, session_id, access_key, image, status, requested_slots)
         SELECT id, sid, key, $4, 'PENDING', $5::jsonb FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS k(id, sid, key)`,
        [chunk.map((s) => s.kernelId), chunk.map((s) => s.sessionId), chunk.map((s) => s.accessKey), IMAGE, JSON.stringify(SLOTS)],
      );
    });
    bar.tick(chunk.length);
  }
  bar.done();
  await db.query('ANALYZE sessions; ANALYZE kernels');
}

// ---- where a transaction's time goes: the store, wrapped (the writer itself is untouched)

class TxProfile {
  readonly statements = new Map<string, number[]>();
  readonly transactions: number[] = [];
  readonly batchSizes: number[] = [];
  add(label: string, ms: number) {
    const list = this.statements.get(label) ?? [];
    list.push(ms);
    this.statements.set(label, list);
  }
}

const statementLabel = (sql: string) => sql.trim().split(/\s+/).slice(0, 3).join(' ').replace(/ (s|k|SET)$/, '');

function profiled(db: Database, prof: TxProfile): Database {
  const wrap = (c: DbClient): DbClient => ({
    query: async <R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]) => {
      const start = performance.now();
      try { return await c.query<R>(sql, params); } finally { prof.add(statementLabel(sql), performance.now() - start); }
    },
  });
  return {
    ...db,
    tx: async <T>(fn: (c: DbClient) => Promise<T>) => {
      const start = performance.now();
      try { return await db.tx((c) => fn(wrap(c))); } finally { prof.transactions.push(performance.now() - start); }
    },
  };
}

// ---- the phases

interface RoundResult {
  transitions: number; ms: number; perSecond: number; latency: Summary; profile: TxProfile;
  /** This process's CPU and its garbage collector's pauses during the round: the writer's JS side. */
  nodeCpuMs: number; gcMs: number;
}

/** Node CPU and GC time spent while fn runs. */
async function withCpu<T>(fn: () => Promise<T>): Promise<{ value: T; nodeCpuMs: number; gcMs: number }> {
  let gcMs = 0;
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcMs += e.duration; });
  obs.observe({ entryTypes: ['gc'] });
  const cpu0 = process.cpuUsage();
  try {
    const value = await fn();
    const cpu = process.cpuUsage(cpu0);
    // Let the observer deliver the last entries (they are queued, not synchronous).
    await new Promise((r) => setImmediate(r));
    return { value, nodeCpuMs: (cpu.user + cpu.system) / 1000, gcMs };
  } finally {
    obs.disconnect();
  }
}

/** Every session's actor persists its 6 transitions in turn, all sessions at once. */
async function batchedRound(db: Database, sessions: Planned[], phase: string): Promise<RoundResult> {
  const prof = new TxProfile();
  const writer = new TransitionWriter(profiled(db, prof), { onCommitted: (_events, writes) => prof.batchSizes.push(writes.length) });
  const total = sessions.length * SESSION_PATH.length;
  const latencies: number[] = [];
  const bar = progress(BENCH, phase, total);
  const start = performance.now();
  const { nodeCpuMs, gcMs } = await withCpu(() => Promise.all(sessions.map(async (p) => {
    for (let step = 0; step < SESSION_PATH.length; step++) {
      const t0 = performance.now();
      await writer.write(transition(p, step));
      latencies.push(performance.now() - t0);
      bar.tick();
    }
  })));
  const ms = performance.now() - start;
  bar.done();
  await writer.close();
  return { transitions: total, ms, perSecond: perSecond(total, ms), latency: summarize(latencies), profile: prof, nodeCpuMs, gcMs };
}

/** The same transitions, one write at a time: every commit is paid alone. */
async function unbatchedRun(db: Database, sessions: Planned[]): Promise<RoundResult> {
  const prof = new TxProfile();
  const writer = new TransitionWriter(profiled(db, prof), { onCommitted: (_events, writes) => prof.batchSizes.push(writes.length) });
  const total = sessions.length * SESSION_PATH.length;
  const latencies: number[] = [];
  const bar = progress(BENCH, 'unbatched', total);
  const start = performance.now();
  const { nodeCpuMs, gcMs } = await withCpu(async () => {
    for (const p of sessions) {
      for (let step = 0; step < SESSION_PATH.length; step++) {
        const t0 = performance.now();
        await writer.write(transition(p, step));
        latencies.push(performance.now() - t0);
        bar.tick();
      }
    }
  });
  const ms = performance.now() - start;
  bar.done();
  await writer.close();
  return { transitions: total, ms, perSecond: perSecond(total, ms), latency: summarize(latencies), profile: prof, nodeCpuMs, gcMs };
}

/** The floor every durable write stands on: one autocommitted single-row INSERT after another. */
async function baseline(url: string): Promise<{ rows: number; ms: number; perSecond: number; latency: Summary }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('CREATE TABLE bench_rows (id integer PRIMARY KEY, v text NOT NULL)');
    const latencies: number[] = [];
    const bar = progress(BENCH, 'baseline single-row INSERT', BASELINE_ROWS);
    const start = performance.now();
    for (let i = 0; i < BASELINE_ROWS; i++) {
      const t0 = performance.now();
      await c.query('INSERT INTO bench_rows (id, v) VALUES ($1, $2)', [i, `value-${i}`]);
      latencies.push(performance.now() - t0);
      bar.tick();
    }
    const ms = performance.now() - start;
    bar.done();
    const n = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM bench_rows')).rows[0].n);
    if (n !== BASELINE_ROWS) throw new Error(`baseline: ${n} rows in bench_rows, expected ${BASELINE_ROWS}`);
    return { rows: BASELINE_ROWS, ms, perSecond: perSecond(BASELINE_ROWS, ms), latency: summarize(latencies) };
  } finally {
    await c.end();
  }
}

// ---- verification: what was acknowledged is what is in the database

async function verify(db: Database, sessions: Planned[]): Promise<void> {
  const problems: string[] = [];
  const fail = (msg: string) => { if (problems.length < 20) problems.push(msg); else if (problems.length === 20) problems.push('…'); };
  const want = SESSION_PATH.join(',');
  const wantKernel = KERNEL_PATH.join(',');
  const ids = sessions.map((s) => s.sessionId);

  const srows = await db.query<{ id: string; status: string; ended: boolean; hist: string | null; snap: string | null }>(
    `SELECT id, status, terminated_at IS NOT NULL AS ended, snapshot->>'value' AS snap,
            (SELECT string_agg(e->>'status', ',' ORDER BY n) FROM jsonb_array_elements(status_history) WITH ORDINALITY AS h(e, n)) AS hist
       FROM sessions WHERE id = ANY($1::uuid[])`, [ids]);
  if (srows.rowCount !== sessions.length) fail(`${srows.rowCount} session rows, expected ${sessions.length}`);
  for (const r of srows.rows) {
    if (r.hist !== want) fail(`session ${r.id}: status_history ${r.hist}, expected ${want}`);
    if (r.status !== 'TERMINATED' || !r.ended) fail(`session ${r.id}: status ${r.status}, terminated_at set: ${r.ended}`);
    if (r.snap !== 'TERMINATED') fail(`session ${r.id}: snapshot value ${r.snap}`);
  }

  const erows = await db.query<{ session_id: string; statuses: string }>(
    `SELECT session_id, string_agg(status, ',' ORDER BY seq) AS statuses FROM session_events WHERE session_id = ANY($1::uuid[]) GROUP BY session_id`, [ids]);
  let events = 0;
  for (const r of erows.rows) {
    events += r.statuses.split(',').length;
    if (r.statuses !== want) fail(`session ${r.session_id}: events ${r.statuses} (by seq), expected ${want}`);
  }
  const transitions = sessions.length * SESSION_PATH.length;
  const totalEvents = Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM session_events')).rows[0].n);
  if (events !== transitions || totalEvents !== transitions) fail(`session_events: ${totalEvents} rows, expected one per transition: ${transitions}`);

  const krows = await db.query<{ id: string; status: string; ended: boolean; agent_id: string | null; container_id: string | null; exit_code: number | null; hist: string | null }>(
    `SELECT id, status, terminated_at IS NOT NULL AS ended, agent_id, container_id, exit_code,
            (SELECT string_agg(e->>'status', ',' ORDER BY n) FROM jsonb_array_elements(status_history) WITH ORDINALITY AS h(e, n)) AS hist
       FROM kernels WHERE session_id = ANY($1::uuid[])`, [ids]);
  if (krows.rowCount !== sessions.length) fail(`${krows.rowCount} kernel rows, expected ${sessions.length}`);
  for (const r of krows.rows) {
    if (r.status !== 'TERMINATED' || !r.ended || r.exit_code !== 0) fail(`kernel ${r.id}: status ${r.status}, terminated_at set: ${r.ended}, exit code ${r.exit_code}`);
    if (!r.agent_id || !r.container_id) fail(`kernel ${r.id}: agent ${r.agent_id}, container ${r.container_id}`);
    if (r.hist !== wantKernel) fail(`kernel ${r.id}: status_history ${r.hist}, expected ${wantKernel}`);
  }
  if (problems.length) throw new Error(`verification failed:\n  ${problems.join('\n  ')}`);
  log(BENCH, `verified ${fmt(sessions.length, 0)} sessions: 6 history entries in order, ${fmt(transitions, 0)} events = transitions, kernels TERMINATED`);
}

// ---- profiling aids: where the batch's time goes on the server

async function explainBatch(db: Database, templates: string[]): Promise<string[]> {
  // A batch shaped like a full one, run inside a transaction that is rolled back.
  const sessions = plan(SESSIONS, templates, 900_000);
  await seedSessions(db, sessions, 'explain');
  const writes = sessions.map((p) => transition(p, 1));
  return db.withClient(async (c) => {
    await c.query('BEGIN');
    try {
      const r = await c.query<{ 'QUERY PLAN': string }>(
        `EXPLAIN (ANALYZE, BUFFERS, WAL)
         UPDATE sessions s SET status = u.status, status_history = s.status_history || u.history, snapshot = u.snapshot
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[]) AS u(id, status, history, snapshot) WHERE s.id = u.id`,
        [writes.map((w) => w.sessionId), writes.map((w) => w.status), writes.map((w) => JSON.stringify(w.newHistory)), writes.map((w) => JSON.stringify(w.snapshot))],
      );
      return r.rows.map((x) => x['QUERY PLAN']);
    } finally {
      await c.query('ROLLBACK');
    }
  });
}

// ---- main

const fmtMs = (n: number) => `${fmt(n, 1)} ms`;
const median = (xs: number[]) => summarize(xs).p50;

async function main(): Promise<void> {
  const machine = machineInfo();
  log(BENCH, `${describeMachine(machine)}; ${SESSIONS} sessions × ${ROUNDS} rounds batched, ${UNBATCHED_SESSIONS} unbatched, ${BASELINE_ROWS} baseline rows`);
  const templates = await snapshotTemplates();
  const snapshotBytes = summarize(templates.map((t) => Buffer.byteLength(t)));

  await withBenchDatabase(async ({ db, url, name }) => {
    log(BENCH, `database ${name}`);
    const pgInfo = await postgresInfo(db);
    await seedOwners(db);

    const base = await baseline(url);
    log(BENCH, `baseline: ${fmt(base.perSecond)} rows/s`);

    const rounds: RoundResult[] = [];
    const everyone: Planned[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const sessions = plan(SESSIONS, templates, r * SESSIONS);
      await seedSessions(db, sessions, `batched round ${r + 1}/${ROUNDS}`);
      const res = await batchedRound(db, sessions, `batched round ${r + 1}/${ROUNDS}`);
      log(BENCH, `batched round ${r + 1}: ${fmt(res.perSecond)} transitions/s, commit p50 ${fmtMs(res.latency.p50)} p99 ${fmtMs(res.latency.p99)}`);
      rounds.push(res);
      // Only the ids are needed from here on (verification); keep the heap to one round's worth.
      for (const p of sessions) p.snapshots = [];
      everyone.push(...sessions);
    }

    const lone = plan(UNBATCHED_SESSIONS, templates, ROUNDS * SESSIONS);
    await seedSessions(db, lone, 'unbatched');
    const unbatched = await unbatchedRun(db, lone);
    log(BENCH, `unbatched: ${fmt(unbatched.perSecond)} transitions/s`);
    everyone.push(...lone);

    await measure('verification', () => verify(db, everyone), BENCH);

    const explain = flagArg('explain') ? await explainBatch(db, templates) : [];

    // ---- figures
    const batchedRate = median(rounds.map((r) => r.perSecond));
    const p50 = median(rounds.map((r) => r.latency.p50));
    const p99 = median(rounds.map((r) => r.latency.p99));
    const batches = rounds.flatMap((r) => r.profile.batchSizes);
    const txMs = rounds.flatMap((r) => r.profile.transactions);
    const totalMs = rounds.reduce((s, r) => s + r.ms, 0);
    const inTx = txMs.reduce((s, v) => s + v, 0);
    const statementRows = [...rounds[0].profile.statements.keys()].map((label) => {
      const all = rounds.flatMap((r) => r.profile.statements.get(label) ?? []);
      return `${label}: mean ${fmtMs(summarize(all).mean)}`;
    });
    const stmtSum = rounds.reduce((s, r) => s + [...r.profile.statements.values()].flat().reduce((a, b) => a + b, 0), 0);
    const nodeCpu = rounds.reduce((s, r) => s + r.nodeCpuMs, 0);
    const gc = rounds.reduce((s, r) => s + r.gcMs, 0);
    const ratio = batchedRate / base.perSecond;
    const met = batchedRate >= TARGET;

    const rows: Array<[string, string]> = [
      ['persisted session transitions/s, batched (median of rounds)', `**${fmt(batchedRate)}**`],
      ['… each round', rounds.map((r) => fmt(r.perSecond)).join(' / ')],
      ['commit latency p50 / p99, batched (write() → committed)', `${fmtMs(p50)} / ${fmtMs(p99)}`],
      ['persisted session transitions/s, unbatched (one write at a time)', fmt(unbatched.perSecond)],
      ['commit latency p50 / p99, unbatched', `${fmtMs(unbatched.latency.p50)} / ${fmtMs(unbatched.latency.p99)}`],
      ['baseline: single-row INSERT rows/s (one client, sequential, autocommit)', fmt(base.perSecond)],
      ['baseline INSERT latency p50 / p99', `${fmtMs(base.latency.p50)} / ${fmtMs(base.latency.p99)}`],
      ['target ≥ 5,000 transitions/s batched', met ? 'met' : '**not met**'],
    ];
    const notes = [
      `Transition = one session status entered and committed: session row (status, +1 status_history entry, snapshot), its kernel row (status, +1–2 history entries, agent/container/exit code), one session_events row, in one transaction; counted when write()'s promise resolved. Each session: ${SESSION_PATH.join(' → ')} (6 transitions). (The supervisor also writes a kernel_* event beside the session_* one; this bench writes one event row per transition.)`,
      `Batched: ${SESSIONS} sessions per round, each driven by its own async loop (write, await commit, next status), all at once, like ${SESSIONS} actors persisting; ${ROUNDS} rounds of ${fmt(SESSIONS * 6, 0)} transitions, each on newly seeded sessions. Unbatched: ${UNBATCHED_SESSIONS} sessions, ${fmt(unbatched.transitions, 0)} transitions, each write awaited before the next (a batch of one per transaction).`,
      `Batches reached (batched rounds): ${batches.length} transactions, size mean ${fmt(summarize(batches).mean, 0)}, max ${summarize(batches).max} (the writer's maxBatch is 2000); transaction time mean ${fmtMs(summarize(txMs).mean)}, p99 ${fmtMs(summarize(txMs).p99)}.`,
      `Where the batched time goes: ${fmt((inTx / totalMs) * 100, 0)} % inside transactions (statements ${fmt((stmtSum / totalMs) * 100, 0)} %: ${statementRows.join('; ')}; the rest is pool checkout, BEGIN/COMMIT and building the parameter arrays and JSON), ${fmt(100 - (inTx / totalMs) * 100, 0)} % outside (resolving waiters, the actors building their next writes, the writer's setImmediate). This process used ${fmt(nodeCpu / 1000, 1)} s of CPU in ${fmt(totalMs / 1000, 1)} s of batched rounds (${fmt((nodeCpu / totalMs) * 100, 0)} % of a core; garbage collection ${fmt(gc / 1000, 1)} s): the JS side of a batch (building the parameters) runs while PostgreSQL waits for them.`,
      `Snapshots are the real session chart's persisted snapshots (actors/session.ts with its kernel child, ids substituted): ${fmt(snapshotBytes.min, 0)}–${fmt(snapshotBytes.max, 0)} bytes of JSON, mean ${fmt(snapshotBytes.mean, 0)}.`,
      'Verified after the run (the bench fails otherwise): every session has 6 status_history entries in order, TERMINATED with terminated_at and a TERMINATED snapshot; session_events holds exactly one row per transition, in order by seq; every kernel is TERMINATED with exit code 0, agent, container and its 7 history entries in order.',
      `${pgInfo}; all three phases in one process against one throwaway database (CREATE DATABASE flotilla_bench_…, migrated, dropped at the end).`,
      ...(met ? [] : [`Below the ${fmt(TARGET)}/s target: a ${fmt(SESSIONS, 0)}-write batch took ${fmtMs(summarize(txMs).mean)} on average, ${fmtMs(summarize(rounds.flatMap((r) => r.profile.statements.get('UPDATE sessions') ?? [])).mean)} of it in UPDATE sessions (the statement carrying the jsonb snapshots); this process was busy ${fmt((nodeCpu / totalMs) * 100, 0)} % of the batched wall time (GC ${fmt(gc / 1000, 1)} s), and its JS work on a batch (building the statement's parameters) happens while PostgreSQL waits for them.`]),
      ...(explain.length ? [`EXPLAIN ANALYZE of a ${SESSIONS}-row UPDATE sessions … FROM unnest (rolled back): ${explain.map((l) => l.trim()).join(' ⏎ ')}`] : []),
    ];

    process.stdout.write(`\nDurable writes (issue 2) — ${describeMachine(machine)}\n`);
    for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(74)} ${v.replace(/\*/g, '')}\n`);
    process.stdout.write(`  ratio batched / baseline: ${fmt(ratio, 2)}×   unbatched / baseline: ${fmt(unbatched.perSecond / base.perSecond, 2)}×\n`);
    for (const n of notes.slice(2, 4)) process.stdout.write(`  ${n}\n`);
    if (explain.length) process.stdout.write(`\n${explain.join('\n')}\n`);
    if (!met) log(BENCH, `WARNING: batched ${fmt(batchedRate)} transitions/s is below the target of ${fmt(TARGET)}/s`);

    if (!flagArg('no-results')) {
      writeResultsSection({
        title: 'Durable writes (issue 2)',
        machine: describeMachine(machine),
        table: { headers: ['figure', 'value'], rows },
        ratio: `batched / baseline = **${fmt(ratio, 2)}×** (${fmt(batchedRate)} persisted transitions/s vs ${fmt(base.perSecond)} single-row INSERTs/s); unbatched / baseline = ${fmt(unbatched.perSecond / base.perSecond, 2)}×; batched / unbatched = ${fmt(batchedRate / unbatched.perSecond, 1)}×`,
        notes,
      });
      log(BENCH, 'wrote section "Durable writes (issue 2)" of bench/RESULTS.md');
    }
  }, { poolMax: 4 });
}

main().catch((err) => {
  process.stderr.write(`[bench] ${BENCH}: FAILED: ${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
