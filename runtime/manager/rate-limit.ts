// Per-keypair rate limit as Backend.AI keeps it: a rolling 15-minute window in Redis, each
// signed request one hit, `X-RateLimit-Limit` / `X-RateLimit-Remaining` on every answer, 429
// past the keypair's `rate_limit` (0: no limit).
//
// A Redis round trip per request cost a sixth of the API's throughput, so far from the limit
// hits are counted locally and written to Redis in batches (every FLUSH_MS); the local estimate
// is the window's count at the last sync plus the hits since, which only over-counts (old hits
// leave the window, none are forgotten). Within SYNC_MARGIN of the limit, or when the last sync
// is older than SYNC_MAX_AGE_MS (another manager may have counted hits meanwhile), each request
// goes to Redis itself, so the refusal boundary is exact. Redis being down lets requests
// through: the limit protects the cluster, and refusing everyone because a cache blinked would not.
import type { FastifyReply } from 'fastify';
import { RateLimitExceeded } from '../../schema/errors.ts';
import type { Logger } from '../log.ts';
import type { LivenessStore } from '../stores/types.ts';
import type { Keypair } from './keypairs.ts';

export const RATE_LIMIT_WINDOW_MS = 15 * 60_000;
const KEY_PREFIX = 'flotilla:ratelimit:';
/** Pending local hits are written to Redis this often. */
const FLUSH_MS = 100;
/** A local estimate is trusted for this long after a sync. */
const SYNC_MAX_AGE_MS = 1000;
/** Requests within this share of the limit (at least 10 requests) go to Redis one by one. */
const SYNC_MARGIN = 0.1;

export type RateLimiter = ((kp: Keypair, reply: FastifyReply) => Promise<void>) & { close(): Promise<void> };

interface Count { known: number; at: number; pending: number }

export function rateLimiter(liveness: LivenessStore, log: Logger): RateLimiter {
  const counts = new Map<string, Count>();
  let warnedAt = 0;
  const unavailable = (err: unknown) => {
    if (Date.now() - warnedAt > 60_000) { warnedAt = Date.now(); log.warn({ err: (err as Error).message }, 'rate limit not counted: Redis unavailable'); }
  };

  /** Write a keypair's pending hits (plus `extra` now) and learn the window's count. */
  const sync = async (accessKey: string, c: Count, extra: number): Promise<number> => {
    const n = c.pending + extra;
    c.pending = 0;
    const total = await liveness.hitWindow(KEY_PREFIX + accessKey, RATE_LIMIT_WINDOW_MS, n);
    c.known = total;
    c.at = Date.now();
    return total;
  };

  const flush = async () => {
    await Promise.all([...counts].map(async ([ak, c]) => {
      if (c.pending > 0) await sync(ak, c, 0).catch(unavailable);
      else if (Date.now() - c.at > RATE_LIMIT_WINDOW_MS) counts.delete(ak);
    }));
  };
  let flushing: Promise<void> = Promise.resolve();
  const timer = setInterval(() => { flushing = flush(); }, FLUSH_MS);
  timer.unref();

  const limiter = (async (kp, reply) => {
    if (kp.rateLimit <= 0) return;
    let c = counts.get(kp.accessKey);
    if (!c) { c = { known: 0, at: 0, pending: 0 }; counts.set(kp.accessKey, c); }
    const margin = Math.max(10, kp.rateLimit * SYNC_MARGIN);
    let hits = c.known + c.pending + 1;
    if (Date.now() - c.at < SYNC_MAX_AGE_MS && hits <= kp.rateLimit - margin) {
      c.pending++;
    } else {
      try {
        hits = await sync(kp.accessKey, c, 1);
      } catch (err) {
        unavailable(err);
        return;
      }
    }
    void reply.header('X-RateLimit-Limit', String(kp.rateLimit)).header('X-RateLimit-Remaining', String(Math.max(0, kp.rateLimit - hits)))
      .header('X-RateLimit-Window', String(RATE_LIMIT_WINDOW_MS / 1000));
    if (hits > kp.rateLimit) throw new RateLimitExceeded(`more than ${kp.rateLimit} requests in 15 minutes from ${kp.accessKey}`);
  }) as RateLimiter;
  limiter.close = async () => {
    clearInterval(timer);
    await flushing;
    await flush();
  };
  return limiter;
}
