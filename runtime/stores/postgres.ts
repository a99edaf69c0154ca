// The durable store over `pg`: the same code talks to PostgreSQL and, in the all-in-one mode,
// to PGlite through its socket server (see pglite.ts).
import pg from 'pg';
import { ServiceUnavailable } from '../../schema/errors.ts';
import type { Database, DbClient } from './types.ts';

export interface PostgresOptions {
  url: string;
  kind?: Database['kind'];
  /** Pool size. PGlite has one session behind its socket server, so it gets 1. */
  max?: number;
  connectTimeoutMs?: number;
  queryTimeoutMs?: number;
  onError?: (err: Error) => void;
}

// Errors that mean "the store is not there", as opposed to a bad query.
const UNAVAILABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', '57P01', '57P02', '57P03', '08000', '08003', '08006', '08001', '08004']);
export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return UNAVAILABLE.has(e?.code ?? '') || /timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED|Query read timeout/i.test(e?.message ?? '');
}

export function openPostgres(opts: PostgresOptions): Database {
  const kind = opts.kind ?? 'postgres';
  const name = kind === 'pglite' ? 'embedded PostgreSQL (PGlite)' : 'PostgreSQL';
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    query_timeout: opts.queryTimeoutMs ?? 30_000,
    idleTimeoutMillis: 30_000,
    // The manager's statements are short OLTP ones; PostgreSQL's JIT (on past jit_above_cost)
    // only adds compile time to them, e.g. ~13 ms to the scheduler's occupancy sum over 10,000
    // live kernels (40 → 27 ms in psql). PGlite takes no startup options.
    ...(kind === 'postgres' ? { options: '-c jit=off' } : {}),
  });
  // An idle client's error (server restart) is emitted on the pool; unhandled it kills the process.
  pool.on('error', (err) => opts.onError?.(err));

  const wrap = async <T>(what: () => Promise<T>): Promise<T> => {
    try {
      return await what();
    } catch (err) {
      if (isUnavailable(err)) throw new ServiceUnavailable(`${name} is unavailable: ${(err as Error).message}`);
      throw err;
    }
  };

  const withClient = <T>(fn: (c: DbClient) => Promise<T>): Promise<T> => wrap(async () => {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      return await fn(client);
    } catch (e) {
      if (isUnavailable(e)) broken = e as Error;
      throw e;
    } finally {
      client.release(broken);
    }
  });

  return {
    kind,
    query: (sql, params) => wrap(() => pool.query(sql, params as unknown[])),
    withClient,
    tx: (fn) => withClient(async (c) => {
      await c.query('BEGIN');
      try {
        const out = await fn(c);
        await c.query('COMMIT');
        return out;
      } catch (e) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw e;
      }
    }),
    ping: async () => { await wrap(() => pool.query('SELECT 1')); },
    close: () => pool.end(),
  };
}
