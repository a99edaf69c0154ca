// Durable writes of actor transitions (DESIGN.md §2 rule 1). Transitions from many actors are
// batched into one transaction (sessions, kernels, session_events), so the
// cost of a commit is shared; each caller's promise resolves only after its transition commits.
import type { Database, DbClient } from '../stores/types.ts';
import type { StatusChange } from '../../actors/history.ts';
import type { Logger } from '../log.ts';

export interface KernelWrite {
  kernelId: string;
  status: string;
  statusInfo?: string;
  statusData?: unknown;
  newHistory: StatusChange[];
  agentId?: string;
  containerId?: string;
  exitCode?: number;
}

export interface EventRow {
  sessionId: string;
  /** The session's name, for watchers (not a column of session_events: joined from sessions on replay). */
  sessionName?: string;
  kernelId?: string;
  accessKey: string;
  name: string;
  status: string;
  reason?: string;
  data?: unknown;
  at: string;
}

export interface SessionWrite {
  sessionId: string;
  status: string;
  statusInfo?: string;
  statusData?: unknown;
  newHistory: StatusChange[];
  /**
   * The actor's persisted snapshot, or a function that returns it, called once when the batch
   * is taken (in that tick, so it matches the write's history and statuses): writes of one
   * session merged in a batch persist only the last snapshot, so an actor that transitions
   * several times before its commit is serialised once, not at each transition.
   */
  snapshot: unknown;
  kernels: KernelWrite[];
  events: EventRow[];
}

export interface CommittedEvent extends EventRow { seq: number }

const FINAL = new Set(['TERMINATED', 'ERROR', 'CANCELLED']);

/** Merge two writes of one session in a batch: histories and events add up, the last state wins. */
function merge(a: SessionWrite, b: SessionWrite): SessionWrite {
  const kernels = new Map(a.kernels.map((k) => [k.kernelId, k]));
  for (const k of b.kernels) {
    const prev = kernels.get(k.kernelId);
    kernels.set(k.kernelId, prev ? { ...k, newHistory: [...prev.newHistory, ...k.newHistory] } : k);
  }
  return { ...b, newHistory: [...a.newHistory, ...b.newHistory], kernels: [...kernels.values()], events: [...a.events, ...b.events] };
}

interface Pending { write: SessionWrite; waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> }

export class TransitionWriter {
  private queue = new Map<string, Pending>();
  private flushing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly db: Database,
    private readonly opts: { log?: Logger; maxBatch?: number; onCommitted?: (events: CommittedEvent[], writes: SessionWrite[]) => void } = {},
  ) {}

  /** Queue a transition; resolves once it is committed. */
  write(w: SessionWrite): Promise<void> {
    if (this.closed) return Promise.reject(new Error('transition writer is closed'));
    return new Promise<void>((resolve, reject) => {
      this.enqueue({ write: w, waiters: [{ resolve, reject }] });
      if (!this.flushing) this.flushing = this.flushLoop();
    });
  }

  /** Resolves when everything queued so far is committed. */
  async idle(): Promise<void> { while (this.flushing) await this.flushing; }

  async close(): Promise<void> { await this.idle(); this.closed = true; }

  private enqueue(p: Pending, before = false): void {
    const prev = this.queue.get(p.write.sessionId);
    if (!prev) { this.queue.set(p.write.sessionId, p); return; }
    const [first, second] = before ? [p, prev] : [prev, p];
    this.queue.set(p.write.sessionId, { write: merge(first.write, second.write), waiters: [...first.waiters, ...second.waiters] });
  }

  private async flushLoop(): Promise<void> {
    // Let every actor that transitions in this tick join the batch.
    await new Promise((r) => setImmediate(r));
    let delay = 50;
    while (this.queue.size > 0) {
      const batch = [...this.queue.values()].slice(0, this.opts.maxBatch ?? 2000);
      for (const p of batch) {
        this.queue.delete(p.write.sessionId);
        // Now, in the tick the batch is taken: the snapshot then matches the history and
        // statuses gathered in the write (a transition after this point is a write of its own).
        if (typeof p.write.snapshot === 'function') p.write.snapshot = (p.write.snapshot as () => unknown)();
      }
      const writes = batch.map((p) => p.write);
      try {
        const committed = await this.commit(writes);
        delay = 50;
        for (const p of batch) for (const w of p.waiters) w.resolve();
        this.opts.onCommitted?.(committed, writes);
      } catch (err) {
        // The store is down or refused: nothing is acknowledged; retry the same batch (effects
        // wait on it, so none runs before its transition is durable).
        this.opts.log?.warn({ err: (err as Error).message, batch: batch.length }, 'persisting transitions failed, retrying');
        for (const p of batch) this.enqueue(p, true);
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2000);
      }
    }
    this.flushing = undefined;
  }

  private async commit(batch: SessionWrite[]): Promise<CommittedEvent[]> {
    const kernels = batch.flatMap((w) => w.kernels);
    const events = batch.flatMap((w) => w.events);
    return this.db.tx(async (c) => {
      // Each statement's rows travel as one JSON document: one stringify for the batch, and
      // no escaping of every snapshot into an array literal (which cost more than the commit).
      await c.query(
        `UPDATE sessions s SET
           status = u.status, status_info = u.status_info, status_data = u.status_data,
           status_changed = CASE WHEN u.status <> s.status THEN now() ELSE s.status_changed END,
           status_history = s.status_history || u.history, snapshot = u.snapshot,
           terminated_at = CASE WHEN u.final AND s.terminated_at IS NULL THEN now() ELSE s.terminated_at END
         FROM jsonb_to_recordset($1::jsonb)
           AS u(id uuid, status text, status_info text, status_data jsonb, history jsonb, snapshot jsonb, final bool)
         WHERE s.id = u.id`,
        [JSON.stringify(batch.map((w) => ({
          id: w.sessionId, status: w.status, status_info: w.statusInfo ?? null, status_data: w.statusData ?? null,
          history: w.newHistory, snapshot: w.snapshot, final: FINAL.has(w.status),
        })))],
      );
      if (kernels.length) {
        await c.query(
          `UPDATE kernels k SET
             status = u.status, status_info = u.status_info, status_data = u.status_data,
             status_changed = CASE WHEN u.status <> k.status THEN now() ELSE k.status_changed END,
             status_history = k.status_history || u.history,
             agent_id = COALESCE(u.agent_id, k.agent_id), container_id = COALESCE(u.container_id, k.container_id),
             exit_code = COALESCE(u.exit_code, k.exit_code),
             terminated_at = CASE WHEN u.final AND k.terminated_at IS NULL THEN now() ELSE k.terminated_at END
           FROM jsonb_to_recordset($1::jsonb)
             AS u(id uuid, status text, status_info text, status_data jsonb, history jsonb, agent_id text, container_id text, exit_code int, final bool)
           WHERE k.id = u.id`,
          [JSON.stringify(kernels.map((k) => ({
            id: k.kernelId, status: k.status, status_info: k.statusInfo ?? null, status_data: k.statusData ?? null, history: k.newHistory,
            agent_id: k.agentId ?? null, container_id: k.containerId ?? null, exit_code: k.exitCode ?? null, final: FINAL.has(k.status),
          })))],
        );
      }
      return insertEvents(c, events);
    });
  }
}

/**
 * Append session events in one statement (inside the caller's transaction); each comes back with
 * its seq. Events commit in seq order: the transaction first takes a lock that it holds until it
 * ends (its inserts of events are its last statements), so another cannot insert a higher seq and
 * commit it while this one's lower seqs may still commit. Without it, a watcher could see a
 * higher seq, resume from it and never get the lower one. The lock is PostgreSQL's, so it also
 * orders the transactions of several managers.
 */
export async function insertEvents(c: DbClient, events: EventRow[]): Promise<CommittedEvent[]> {
  if (!events.length) return [];
  await c.query(`SELECT pg_advisory_xact_lock(hashtext('flotilla.session_events'))`);
  const r = await c.query<{ seq: string }>(
    `INSERT INTO session_events (session_id, kernel_id, access_key, name, status, reason, data, created_at)
     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::timestamptz[])
     RETURNING seq`,
    [
      events.map((e) => e.sessionId), events.map((e) => e.kernelId ?? null), events.map((e) => e.accessKey),
      events.map((e) => e.name), events.map((e) => e.status), events.map((e) => e.reason ?? null),
      events.map((e) => (e.data === undefined ? null : JSON.stringify(e.data))), events.map((e) => e.at),
    ],
  );
  // INSERT ... SELECT FROM unnest keeps the array order, and bigserial follows it.
  return events.map((e, i) => ({ ...e, seq: Number(r.rows[i].seq) }));
}
