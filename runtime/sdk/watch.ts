// Watching sessions from the SDK: socket.io `/watch` as an async iterator that survives
// reconnects. After a dropped connection the client signs a fresh handshake and subscribes again
// from the last seq it delivered, so events come once each, in the order the manager sent them.
import { io, type Socket } from 'socket.io-client';
import { FlotillaError } from '../../schema/errors.ts';
import type { OutputEvent, SubscribeAck, WatchEvent } from '../../schema/watch.ts';
import { handshakeError } from './inspect.ts';

export type { OutputEvent, WatchEvent } from '../../schema/watch.ts';

/** What the iterator yields: lifecycle events, and (when asked for) run output. */
export type WatchItem = WatchEvent | (OutputEvent & { name: 'execution_output' });

export interface WatchOptions {
  /** Only this session (its id); default every session the keypair may see. */
  sessionId?: string;
  /** Replay the stored events after this seq first; default: only what happens from now on. */
  sinceSeq?: number;
  /** Also yield `execution_output` items (runs' output, live only). Default false. */
  output?: boolean;
  /** Wait before reconnecting after a drop; default 1000 ms. */
  reconnectionDelayMs?: number;
  /** Stop watching when aborted. */
  signal?: AbortSignal;
}

export interface SessionWatch extends AsyncIterable<WatchItem> {
  /** The seq of the last lifecycle event delivered (where a reconnect resumes). */
  readonly lastSeq: number;
  /** Resolves once the first subscription is in place (events from then on are delivered). */
  readonly ready: Promise<void>;
  /**
   * Stop: the iterator ends.
   *
   * @example
   * setTimeout(() => w.close(), 60_000);
   */
  close(): void;
}

/** Signs the handshake of one connection attempt (fresh Date each time). */
export type HandshakeSigner = () => Record<string, string>;

const LIFECYCLE = /^(session|kernel)_[a-z_]+$/;

/**
 * The iterator behind `client.watch()`, for a caller that signs handshakes itself.
 *
 * @example
 * const w = watchSessions(endpoint, () => signHandshake({ endpoint, accessKey, secretKey }), { sinceSeq: 0 });
 * for await (const e of w) console.log(e.name);
 */
export function watchSessions(endpoint: string, sign: HandshakeSigner, opts: WatchOptions = {}): SessionWatch {
  const queue: WatchItem[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  let failure: Error | undefined;
  let lastSeq = opts.sinceSeq ?? -1;
  let subscribedOnce = false;
  const seen = new Set<number>();
  let markReady!: () => void;
  let failReady!: (e: Error) => void;
  const ready = new Promise<void>((resolve, reject) => { markReady = resolve; failReady = reject; });
  ready.catch(() => undefined);

  const push = (item: WatchItem) => { queue.push(item); wake?.(); };
  const socket: Socket = io(`${endpoint.replace(/\/$/, '')}/watch`, {
    transports: ['websocket'],
    reconnectionDelay: opts.reconnectionDelayMs ?? 1000,
    reconnectionDelayMax: Math.max(opts.reconnectionDelayMs ?? 1000, 5000),
    auth: (cb) => cb(sign()),
  });
  socket.onAny((name: string, payload: unknown) => {
    if (name === 'execution_output') {
      if (opts.output) push({ ...(payload as OutputEvent), name: 'execution_output' });
      return;
    }
    if (!LIFECYCLE.test(name)) return;
    const e = payload as WatchEvent;
    if (seen.has(e.seq)) return; // already delivered before a reconnect
    seen.add(e.seq);
    if (seen.size > 100_000) seen.clear();
    if (e.seq > lastSeq) lastSeq = e.seq;
    push(e);
  });
  const subscribe = () => {
    // The first time: from sinceSeq (or now); after a drop: from the last seq delivered.
    const since = lastSeq >= 0 ? lastSeq : undefined;
    (socket.timeout(30_000).emitWithAck('subscribe', { sessionId: opts.sessionId, sinceSeq: since }) as Promise<SubscribeAck>).then((ack) => {
      if (!ack.ok) throw new Error(ack.error ?? 'subscription refused');
      // Nothing seen yet: later reconnects resume from what existed when this one subscribed.
      if (lastSeq < 0 && typeof ack.lastSeq === 'number') lastSeq = ack.lastSeq;
      if (!subscribedOnce) { subscribedOnce = true; markReady(); }
    }).catch((err: Error) => {
      if (closed) return; // closed by the caller while subscribing: not a failure
      if (!subscribedOnce) { failure = err; failReady(err); close(); return; }
      // After a reconnect the replay from lastSeq is what fills the gap: ask again, as a reconnect would.
      setTimeout(() => { if (!closed && socket.connected) subscribe(); }, opts.reconnectionDelayMs ?? 1000);
    });
  };
  socket.on('connect', subscribe);
  socket.on('connect_error', (raw) => {
    // Refused credentials (a bad key or signature, a clock too far off, an expired token) will not get better by retrying.
    const err = handshakeError(raw.message);
    if (err instanceof FlotillaError) { failure = err; failReady(err); close(); }
  });

  const close = () => {
    if (closed) return;
    closed = true;
    socket.disconnect();
    wake?.();
  };
  opts.signal?.addEventListener('abort', close, { once: true });

  return {
    get lastSeq() { return lastSeq; },
    ready,
    close,
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          // close() ends the iteration at once, even with events still queued.
          while (queue.length && !closed) yield queue.shift()!;
          if (failure) throw failure;
          if (closed) return;
          await new Promise<void>((r) => { wake = r; });
          wake = undefined;
        }
      } finally {
        close();
      }
    },
  };
}
