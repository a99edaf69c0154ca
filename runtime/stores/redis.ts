// Liveness, counters, rolling windows and pub/sub on Redis (ioredis, RESP2: the replies the
// code expects, and what Redis Sentinel/Cluster proxies speak).
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { ServiceUnavailable } from '../../schema/errors.ts';
import type { LivenessStore } from './types.ts';

/** How long a liveness renewal waits for others to share its write. */
const SET_ALIVE_WINDOW_MS = 20;

export interface RedisOptions { url: string; connectTimeoutMs?: number; onError?: (err: Error) => void }

export function openRedis(opts: RedisOptions): LivenessStore {
  const common = {
    protocol: 2 as const,
    connectTimeout: opts.connectTimeoutMs ?? 3000,
    // Fail a command fast while Redis is down instead of queueing it forever; callers treat
    // liveness as a cache and carry on.
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    retryStrategy: (n: number) => Math.min(100 * n, 1000),
  };
  const client = new Redis(opts.url, common);
  let subscriber: Redis | undefined;
  const handlers = new Map<string, Set<(m: string) => void>>();
  // ioredis emits 'error' on every failed reconnect; unhandled it would crash the process.
  client.on('error', (e) => opts.onError?.(e));

  const wrap = async <T>(what: () => Promise<T>): Promise<T> => {
    try {
      return await what();
    } catch (e) {
      const msg = (e as Error).message;
      if (/ECONNREFUSED|Connection is closed|MaxRetriesPerRequest|ETIMEDOUT|connect/i.test(msg)) {
        throw new ServiceUnavailable(`Redis is unavailable: ${msg}`);
      }
      throw e;
    }
  };

  // Liveness renewals wait up to SET_ALIVE_WINDOW_MS and go as one pipeline (one write): a
  // leader with 1,000 agents renews 1,000 keys a second, and a write each was the largest part
  // of a heartbeat's cost. A TTL is seconds long; the wait is nothing to it.
  const renewals = new Map<string, { value: string; ttlMs: number; waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> }>();
  let renewTimer: NodeJS.Timeout | undefined;
  const flushRenewals = () => {
    renewTimer = undefined;
    const batch = [...renewals];
    renewals.clear();
    if (!batch.length) return; // every waiting renewal was cleared meanwhile
    const pipeline = client.pipeline();
    for (const [key, r] of batch) pipeline.set(key, r.value, 'PX', r.ttlMs);
    wrap(async () => {
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err)?.[0];
      if (failed) throw failed;
    }).then(
      () => { for (const [, r] of batch) for (const w of r.waiters) w.resolve(); },
      (err: Error) => { for (const [, r] of batch) for (const w of r.waiters) w.reject(err); },
    );
  };

  const sub = (): Redis => {
    if (subscriber) return subscriber;
    subscriber = new Redis(opts.url, { ...common, maxRetriesPerRequest: null });
    subscriber.on('error', (e) => opts.onError?.(e));
    subscriber.on('message', (channel: string, message: string) => {
      for (const h of handlers.get(channel) ?? []) h(message);
    });
    return subscriber;
  };

  return {
    kind: 'redis',
    setAlive: (key, ttlMs, value = '1') => new Promise<void>((resolve, reject) => {
      const waiters = renewals.get(key)?.waiters ?? [];
      waiters.push({ resolve, reject });
      renewals.set(key, { value, ttlMs: Math.max(1, Math.round(ttlMs)), waiters });
      renewTimer ??= setTimeout(flushRenewals, SET_ALIVE_WINDOW_MS);
    }),
    isAlive: (key) => wrap(async () => (await client.exists(key)) === 1),
    listAlive: (prefix) => wrap(async () => {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await client.scan(cursor, 'MATCH', `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 500);
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
      return keys.sort();
    }),
    clear: (key) => wrap(async () => {
      // A renewal still waiting would bring the key back after the delete.
      for (const w of renewals.get(key)?.waiters ?? []) w.resolve();
      renewals.delete(key);
      await client.del(key);
    }),
    incr: (key, by = 1) => wrap(() => client.incrby(key, by)),
    getCounter: (key) => wrap(async () => Number((await client.get(key)) ?? 0)),
    hitWindow: (key, windowMs, n = 1) => wrap(async () => {
      const now = Date.now();
      const id = randomUUID();
      const members: Array<number | string> = [];
      for (let i = 0; i < n; i++) members.push(now, `${now}:${id}:${i}`);
      const res = await client.multi()
        .zremrangebyscore(key, 0, now - windowMs)
        .zadd(key, ...members)
        .zcard(key)
        .pexpire(key, windowMs)
        .exec();
      return Number(res?.[2]?.[1] ?? 0);
    }),
    publish: (channel, message) => wrap(async () => { await client.publish(channel, message); }),
    subscribe: (channel, onMessage) => wrap(async () => {
      let set = handlers.get(channel);
      if (!set) {
        set = new Set();
        handlers.set(channel, set);
        await sub().subscribe(channel);
      }
      set.add(onMessage);
      return async () => {
        set!.delete(onMessage);
        if (set!.size === 0) {
          handlers.delete(channel);
          await subscriber?.unsubscribe(channel).catch(() => undefined);
        }
      };
    }),
    ping: () => wrap(async () => { await client.ping(); }),
    close: async () => {
      if (renewTimer) { clearTimeout(renewTimer); flushRenewals(); }
      client.disconnect();
      subscriber?.disconnect();
    },
  };
}
