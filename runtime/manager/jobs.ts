// Periodic jobs (node-cron): run only while this manager leads, never overlapping themselves,
// each run's start, end and outcome kept in `periodic_jobs` so /admin/jobs shows them after a
// change of leader too. Schedules are cluster config keys and follow changes live.
import { createTask, validate, type ScheduledTask } from 'node-cron';
import type { LiveClusterConfig } from '../../config/live.ts';
import type { ClusterKey } from '../../config/cluster.ts';
import { NotFound } from '../../schema/errors.ts';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';

export interface JobStatus {
  name: string; schedule: string; running: boolean; nextRun: string | null;
  lastStarted: string | null; lastFinished: string | null; lastOutcome: 'ok' | 'failed' | null;
  lastResult: unknown; lastError: string | null; runs: number; failures: number;
}

/** A job's work; `signal` aborts when the manager stops, so a long run ends instead of holding the stop. */
export type JobRun = (signal: AbortSignal) => Promise<unknown>;

interface Job { name: string; scheduleKey: ClusterKey; run: JobRun; task?: ScheduledTask; schedule?: string; running?: Promise<unknown>; abort?: AbortController }

export class PeriodicJobs {
  private readonly jobs = new Map<string, Job>();
  private started = false;

  constructor(private readonly deps: { db: Database; config: LiveClusterConfig; log: Logger; isLeader: () => boolean }) {
    deps.config.onChange((key) => {
      for (const j of this.jobs.values()) if (j.scheduleKey === key && this.started) this.schedule(j);
    });
  }

  /** Register a job; its schedule is the cron expression (with seconds) at `scheduleKey`. */
  add(name: string, scheduleKey: ClusterKey, run: JobRun): void {
    this.jobs.set(name, { name, scheduleKey, run });
  }

  start(): void {
    this.started = true;
    for (const j of this.jobs.values()) this.schedule(j);
  }

  async stop(): Promise<void> {
    this.started = false;
    for (const j of this.jobs.values()) { await j.task?.destroy(); j.task = undefined; j.abort?.abort(); }
    await Promise.all([...this.jobs.values()].map((j) => j.running?.catch(() => undefined)));
  }

  /**
   * Run a job now (the admin route, tests); joins a run already in progress instead of
   * starting a second one. Resolves with the run's result, rejects with its error.
   */
  runNow(name: string): Promise<unknown> {
    const j = this.jobs.get(name);
    if (!j) throw new NotFound(`no job ${JSON.stringify(name)}`);
    return this.execute(j);
  }

  async list(): Promise<JobStatus[]> {
    const rows = (await this.deps.db.query<{ name: string; last_started: Date | null; last_finished: Date | null; last_outcome: 'ok' | 'failed' | null; last_result: unknown; last_error: string | null; runs: string; failures: string }>(
      `SELECT * FROM periodic_jobs`)).rows;
    const byName = new Map(rows.map((r) => [r.name, r]));
    return [...this.jobs.values()].map((j) => {
      const r = byName.get(j.name);
      return {
        name: j.name, schedule: this.deps.config.get(j.scheduleKey) as string, running: !!j.running,
        nextRun: j.task?.getNextRun()?.toISOString() ?? null,
        lastStarted: r?.last_started?.toISOString() ?? null, lastFinished: r?.last_finished?.toISOString() ?? null,
        lastOutcome: r?.last_outcome ?? null, lastResult: r?.last_result ?? null, lastError: r?.last_error ?? null,
        runs: Number(r?.runs ?? 0), failures: Number(r?.failures ?? 0),
      };
    });
  }

  private schedule(j: Job): void {
    const expr = this.deps.config.get(j.scheduleKey) as string;
    if (j.task && j.schedule === expr) return;
    void j.task?.destroy();
    j.task = undefined;
    if (!validate(expr)) {
      this.deps.log.error({ job: j.name, schedule: expr, key: j.scheduleKey }, 'invalid cron expression: job not scheduled');
      return;
    }
    j.schedule = expr;
    j.task = createTask(expr, async () => {
      if (!this.deps.isLeader()) return;
      await this.execute(j).catch(() => undefined); // recorded by execute
    }, { name: j.name, noOverlap: true, suppressMissedWarning: true });
    void j.task.start();
  }

  private execute(j: Job): Promise<unknown> {
    if (j.running) return j.running;
    const abort = new AbortController();
    j.abort = abort;
    const p = (async () => {
      const log = this.deps.log.child({ job: j.name });
      const startedAt = new Date();
      await this.record(`INSERT INTO periodic_jobs (name, schedule, last_started) VALUES ($1, $2, $3)
        ON CONFLICT (name) DO UPDATE SET schedule = EXCLUDED.schedule, last_started = EXCLUDED.last_started`,
      [j.name, this.deps.config.get(j.scheduleKey), startedAt]);
      try {
        const result = await j.run(abort.signal);
        await this.record(`UPDATE periodic_jobs SET last_finished = now(), last_outcome = 'ok', last_result = $2, last_error = NULL, runs = runs + 1 WHERE name = $1`,
          [j.name, JSON.stringify(result ?? null)]);
        log.debug({ result, ms: Date.now() - startedAt.getTime() }, 'job done');
        return result;
      } catch (err) {
        await this.record(`UPDATE periodic_jobs SET last_finished = now(), last_outcome = 'failed', last_error = $2, runs = runs + 1, failures = failures + 1 WHERE name = $1`,
          [j.name, (err as Error).message]);
        log.warn({ err: (err as Error).message }, 'job failed');
        throw err;
      }
    })();
    j.running = p;
    void p.finally(() => { j.running = undefined; if (j.abort === abort) j.abort = undefined; }).catch(() => undefined);
    return p;
  }

  private async record(sql: string, params: unknown[]): Promise<void> {
    await this.deps.db.query(sql, params).catch((err: Error) => this.deps.log.warn({ err: err.message }, 'job run not recorded'));
  }
}
