// Usage accounting: kernels' CPU time and memory sampled from Docker stats through their agents,
// rolled up per keypair and hour, and reported at GET /resource/usage. Samples keep Docker's
// cumulative CPU counter; the roll-up takes differences between a kernel's consecutive samples
// (a counter that went down means the container restarted: the new value is all new usage), and
// memory as byte-hours over the time between samples.
import { checkKernelUsageList, type KernelUsage } from '../../schema/agent-rpc.ts';
import { UUID } from '../../schema/ids.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import type { AgentRegistry } from './agents.ts';

const SAMPLE_RPC_TIMEOUT_MS = 20_000;
/** Agents asked at once: with 1,000 agents, one at a time took a round trip each (and 20 s for each that had gone). */
const SAMPLE_CONCURRENCY = 16;
const SAMPLE_INSERT_ROWS = 2000;

/**
 * Ask every connected ALIVE agent for its kernels' usage; store one sample per known kernel.
 * An agent that is not connected when its turn comes is skipped (the next round samples it),
 * not waited for. Once `signal` aborts (the manager stops) no agent is asked any more and
 * answers still on their way are not waited for; what was gathered is stored.
 */
export async function sampleKernelUsage(
  d: { db: Database; agents: AgentRegistry; log: Logger }, signal?: AbortSignal,
): Promise<{ agents: number; samples: number; failed: string[] }> {
  const agents = d.agents.list().filter((a) => a.status === 'ALIVE' && a.connected);
  const failed: string[] = [];
  let samples = 0;
  const aborted = new Promise<never>((_resolve, reject) => {
    if (signal?.aborted) reject(new Error('usage sample stopped'));
    signal?.addEventListener('abort', () => reject(new Error('usage sample stopped')), { once: true });
  });
  aborted.catch(() => undefined);
  // Agents' answers go in together, SAMPLE_INSERT_ROWS at a time: one statement per agent was
  // a round trip each, 1,000 of them every round.
  let rows: KernelUsage[] = [];
  const store = async (): Promise<void> => {
    const batch = rows;
    rows = [];
    if (!batch.length) return;
    // Only kernels this cluster knows, with their owner from the kernels table (not the agent's
    // word); matched by the primary key (ids that are no UUID name nothing, and are left out so the cast cannot fail).
    const r = await d.db.query(
      `INSERT INTO usage_records (kernel_id, session_id, access_key, cpu_used_ms, mem_bytes)
       SELECT k.id, k.session_id, k.access_key, u.cpu, u.mem
       FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(kernel_id, cpu, mem)
       JOIN kernels k ON k.id = u.kernel_id`,
      [batch.map((u) => u.kernelId), batch.map((u) => u.cpuUsedMs), batch.map((u) => u.memBytes)]);
    samples += r.rowCount ?? 0;
  };
  let next = 0;
  let broken: unknown; // a store failed: the other workers stop too, and the run fails with it
  const sampleNext = async (): Promise<void> => {
    while (next < agents.length && !signal?.aborted && broken === undefined) {
      const a = agents[next++];
      if (!d.agents.get(a.agentId)?.connected) { failed.push(a.agentId); continue; }
      let usage: unknown;
      try {
        usage = await Promise.race([d.agents.call(a.agentId, 'kernelUsage', {}, SAMPLE_RPC_TIMEOUT_MS), aborted]);
      } catch (err) {
        if (signal?.aborted) return;
        d.log.warn({ agentId: a.agentId, err: (err as Error).message }, 'usage not sampled');
        failed.push(a.agentId);
        continue;
      }
      if (!checkKernelUsageList.Check(usage)) continue;
      for (const u of usage) if (UUID.test(u.kernelId)) rows.push(u);
      if (rows.length >= SAMPLE_INSERT_ROWS) await store().catch((err) => { broken ??= err; });
    }
  };
  await Promise.all(Array.from({ length: Math.min(SAMPLE_CONCURRENCY, agents.length) }, sampleNext));
  if (broken !== undefined) throw broken;
  await store();
  // Recorded as a failed run, so /admin/jobs does not show a partial sample as a whole one.
  if (signal?.aborted) throw new Error(`stopped with ${samples} kernel samples stored, before every agent answered`);
  return { agents: agents.length, samples, failed };
}

/** Recompute usage_hourly from the last hour already rolled up (it may have been partial) onwards. */
export async function aggregateUsage(d: { db: Database }): Promise<{ from: string | null; rows: number }> {
  return d.db.tx(async (c) => {
    const from = (await c.query<{ from: Date | null }>(
      `SELECT date_trunc('hour', COALESCE((SELECT max(hour) FROM usage_hourly), (SELECT min(sampled_at) FROM usage_records))) AS from`)).rows[0].from;
    if (!from) return { from: null, rows: 0 };
    const r = await c.query(
      `WITH s AS (
         SELECT access_key, session_id, sampled_at, cpu_used_ms, mem_bytes,
                lag(cpu_used_ms) OVER w AS prev_cpu, lag(sampled_at) OVER w AS prev_at
         FROM usage_records WHERE sampled_at >= $1::timestamptz - interval '1 hour'
         WINDOW w AS (PARTITION BY kernel_id ORDER BY sampled_at)
       ), d AS (
         SELECT access_key, session_id, date_trunc('hour', sampled_at) AS hour,
                CASE WHEN prev_cpu IS NULL OR cpu_used_ms < prev_cpu THEN cpu_used_ms ELSE cpu_used_ms - prev_cpu END AS cpu,
                mem_bytes * COALESCE(EXTRACT(EPOCH FROM sampled_at - prev_at), 0) / 3600.0 AS mem_bh
         FROM s WHERE sampled_at >= $1
       )
       INSERT INTO usage_hourly (access_key, hour, cpu_used_ms, mem_byte_hours, session_count)
       SELECT access_key, hour, sum(cpu), sum(mem_bh), count(DISTINCT session_id) FROM d GROUP BY access_key, hour
       ON CONFLICT (access_key, hour) DO UPDATE SET cpu_used_ms = EXCLUDED.cpu_used_ms, mem_byte_hours = EXCLUDED.mem_byte_hours, session_count = EXCLUDED.session_count`,
      [from]);
    return { from: from.toISOString(), rows: r.rowCount ?? 0 };
  });
}

export interface UsageHour { hour: string; cpu_used_ms: number; mem_byte_hours: number; session_count: number }
export interface UsageReport { access_key: string; start: string; end: string; hours: UsageHour[]; total: { cpu_used_ms: number; mem_byte_hours: number } }

/** The rolled-up usage of one keypair for the hours starting in [start, end). */
export async function usageReport(db: Database, accessKey: string, start: Date, end: Date): Promise<UsageReport> {
  const rows = (await db.query<{ hour: Date; cpu_used_ms: string; mem_byte_hours: string; session_count: number }>(
    `SELECT hour, cpu_used_ms, mem_byte_hours, session_count FROM usage_hourly WHERE access_key = $1 AND hour >= $2 AND hour < $3 ORDER BY hour`,
    [accessKey, start, end])).rows;
  const hours = rows.map((r) => ({ hour: r.hour.toISOString(), cpu_used_ms: Number(r.cpu_used_ms), mem_byte_hours: Number(r.mem_byte_hours), session_count: r.session_count }));
  return {
    access_key: accessKey, start: start.toISOString(), end: end.toISOString(), hours,
    total: { cpu_used_ms: hours.reduce((a, h) => a + h.cpu_used_ms, 0), mem_byte_hours: hours.reduce((a, h) => a + h.mem_byte_hours, 0) },
  };
}
