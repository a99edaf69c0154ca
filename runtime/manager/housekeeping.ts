// The periodic jobs that keep a shared cluster fair: idle sessions and sessions past their
// lifetime are terminated under their owner's policy, and ended sessions' rows are pruned after
// the configured retention. Each returns what it did (shown at /admin/jobs).
import type { LiveClusterConfig } from '../../config/live.ts';
import { FINAL_SESSION_STATUSES } from '../../schema/status.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import type { Supervisor } from './supervisor.ts';

const FINAL = `(${FINAL_SESSION_STATUSES.map((s) => `'${s}'`).join(',')})`;

export interface HousekeepingDeps { db: Database; supervisor: Supervisor; config: LiveClusterConfig; log: Logger; attached: (sessionId: string) => boolean }

/**
 * RUNNING sessions whose owner's policy has an idle_timeout and that saw no execution for that
 * long (counted from when they became RUNNING at the earliest) and have no client attached to an
 * execute stream: terminated with reason `idle-timeout`.
 */
export async function terminateIdleSessions(d: HousekeepingDeps): Promise<{ terminated: string[] }> {
  const rows = (await d.db.query<{ id: string }>(
    `SELECT s.id FROM sessions s JOIN keypairs k ON k.access_key = s.access_key JOIN resource_policies p ON p.name = k.resource_policy
     WHERE s.status IN ('RUNNING', 'RUNNING_DEGRADED') AND p.idle_timeout > 0
       AND GREATEST(s.last_activity_at, (SELECT max((h->>'at')::timestamptz) FROM jsonb_array_elements(s.status_history) h WHERE h->>'status' = 'RUNNING'))
           < now() - make_interval(secs => p.idle_timeout)`)).rows;
  return { terminated: terminate(d, rows.map((r) => r.id).filter((id) => !d.attached(id)), 'idle-timeout') };
}

/** Live sessions older than their owner's max_session_lifetime: terminated with reason `session-lifetime`. */
export async function terminateExpiredSessions(d: HousekeepingDeps): Promise<{ terminated: string[] }> {
  const rows = (await d.db.query<{ id: string }>(
    `SELECT s.id FROM sessions s JOIN keypairs k ON k.access_key = s.access_key JOIN resource_policies p ON p.name = k.resource_policy
     WHERE s.status NOT IN ${FINAL} AND s.status <> 'TERMINATING' AND p.max_session_lifetime > 0
       AND s.created_at < now() - make_interval(secs => p.max_session_lifetime)`)).rows;
  return { terminated: terminate(d, rows.map((r) => r.id), 'session-lifetime') };
}

function terminate(d: HousekeepingDeps, ids: string[], reason: string): string[] {
  const done: string[] = [];
  for (const id of ids) {
    if (d.supervisor.send(id, { type: 'TERMINATE', reason })) {
      d.log.info({ sessionId: id, reason }, 'session terminated by policy');
      done.push(id);
    }
  }
  return done;
}

/**
 * Ended sessions whose end is older than `jobs.session_retention`: their rows (kernels go with
 * them) and usage samples are deleted; their events too only when `jobs.prune_events` is set.
 */
export async function pruneEndedSessions(d: HousekeepingDeps): Promise<{ sessions: number; usageRecords: number; events: number }> {
  const secs = d.config.get('jobs.session_retention');
  const pruneEvents = d.config.get('jobs.prune_events');
  return d.db.tx(async (c) => {
    const gone = (await c.query<{ id: string }>(
      `DELETE FROM sessions WHERE status IN ${FINAL} AND terminated_at < now() - make_interval(secs => $1) RETURNING id`, [secs])).rows.map((r) => r.id);
    const usage = await c.query(`DELETE FROM usage_records WHERE sampled_at < now() - make_interval(secs => $1)`, [secs]);
    const events = pruneEvents && gone.length ? await c.query(`DELETE FROM session_events WHERE session_id = ANY($1::uuid[])`, [gone]) : undefined;
    return { sessions: gone.length, usageRecords: usage.rowCount ?? 0, events: events?.rowCount ?? 0 };
  });
}
