// One small interface per store (DESIGN.md §4). Each has a real implementation and an
// in-process stand-in for the all-in-one mode; test/integration/stores/*.conformance.ts runs
// the same suite against both.
import type { QueryResult, QueryResultRow } from 'pg';

/** Durable state: PostgreSQL, or PGlite behind the same wire protocol in the all-in-one mode. */
export interface Database {
  readonly kind: 'postgres' | 'pglite';
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
  /** Run fn in one transaction (BEGIN/COMMIT, ROLLBACK on throw). */
  tx<T>(fn: (client: DbClient) => Promise<T>): Promise<T>;
  /** Hold one connection for fn (for session-level things such as advisory locks). */
  withClient<T>(fn: (client: DbClient) => Promise<T>): Promise<T>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
export interface DbClient {
  query<R extends QueryResultRow = QueryResultRow>(sql: string, params?: unknown[]): Promise<QueryResult<R>>;
}

/** Liveness, counters and fan-out: Redis. Losing it loses no data (it is rebuilt from heartbeats). */
export interface LivenessStore {
  readonly kind: 'redis' | 'memory';
  /** Mark key alive for ttlMs (a heartbeat renews it). */
  setAlive(key: string, ttlMs: number, value?: string): Promise<void>;
  isAlive(key: string): Promise<boolean>;
  /** Keys alive now under a prefix. */
  listAlive(prefix: string): Promise<string[]>;
  clear(key: string): Promise<void>;
  /** Add to a counter, returning the new value. */
  incr(key: string, by?: number): Promise<number>;
  getCounter(key: string): Promise<number>;
  /** Record `hits` (default 1) now in a rolling window of windowMs; returns the hits inside the window, these included. */
  hitWindow(key: string, windowMs: number, hits?: number): Promise<number>;
  publish(channel: string, message: string): Promise<void>;
  /** Returns the unsubscribe function. */
  subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Shared cluster config and leader election: etcd. */
export interface ConfigStore {
  readonly kind: 'etcd' | 'memory';
  get(key: string): Promise<string | undefined>;
  getPrefix(prefix: string): Promise<Record<string, string>>;
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  /** Calls onChange(key, value | undefined on delete) for every change under prefix; returns the stop function. */
  watchPrefix(prefix: string, onChange: (key: string, value: string | undefined) => void): Promise<() => Promise<void>>;
  /** Stand for election `name` as `candidate`; leadership is kept alive by a lease of ttlSeconds. */
  campaign(name: string, candidate: string, ttlSeconds: number): Leadership;
  /** The current leader's candidate value, if any. */
  leader(name: string): Promise<string | undefined>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

export interface Leadership {
  /** Resolves when this candidate is elected. */
  readonly elected: Promise<void>;
  readonly isLeader: boolean;
  /** Called once if leadership is lost (lease lapsed, store gone). */
  onLost(cb: (err: Error) => void): void;
  resign(): Promise<void>;
}

export interface Stores {
  db: Database;
  liveness: LivenessStore;
  config: ConfigStore;
  close(): Promise<void>;
}
