// Per-keypair rate limit as Backend.AI keeps it: a rolling 15-minute window in Redis, each
// signed request one hit, `X-RateLimit-Limit` / `X-RateLimit-Remaining` on every answer, 429
// past the keypair's `rate_limit` (0: no limit). Redis being down lets requests through: the
// limit protects the cluster, and refusing everyone because a cache blinked would not.
import type { FastifyReply } from 'fastify';
import { RateLimitExceeded } from '../../schema/errors.ts';
import type { Logger } from '../log.ts';
import type { LivenessStore } from '../stores/types.ts';
import type { Keypair } from './keypairs.ts';

export const RATE_LIMIT_WINDOW_MS = 15 * 60_000;
const KEY_PREFIX = 'flotilla:ratelimit:';

export type RateLimiter = (kp: Keypair, reply: FastifyReply) => Promise<void>;

export function rateLimiter(liveness: LivenessStore, log: Logger): RateLimiter {
  let warnedAt = 0;
  return async (kp, reply) => {
    if (kp.rateLimit <= 0) return;
    let hits: number;
    try {
      hits = await liveness.hitWindow(KEY_PREFIX + kp.accessKey, RATE_LIMIT_WINDOW_MS);
    } catch (err) {
      if (Date.now() - warnedAt > 60_000) { warnedAt = Date.now(); log.warn({ err: (err as Error).message }, 'rate limit not counted: Redis unavailable'); }
      return;
    }
    void reply.header('X-RateLimit-Limit', String(kp.rateLimit)).header('X-RateLimit-Remaining', String(Math.max(0, kp.rateLimit - hits)))
      .header('X-RateLimit-Window', String(RATE_LIMIT_WINDOW_MS / 1000));
    if (hits > kp.rateLimit) throw new RateLimitExceeded(`more than ${kp.rateLimit} requests in 15 minutes from ${kp.accessKey}`);
  };
}
