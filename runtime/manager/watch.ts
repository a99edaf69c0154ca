// socket.io namespace /watch (API.md "Events"): a client subscribes to its sessions' lifecycle
// events (admins: everyone's), gets the stored events after `sinceSeq` replayed from
// PostgreSQL, then live ones, with no gap and no duplicate across the switch: live events that
// arrive during the replay are held and sent after it, skipping any seq already sent.
import type { Namespace, Socket } from 'socket.io';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import { socketAuth } from './http/auth.ts';
import type { Keypairs } from './keypairs.ts';
import type { RunOutput } from './execution.ts';
import type { CommittedEvent } from './persistence.ts';

const SubscribePayload = Type.Object({
  sessionId: Type.Optional(Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' })),
  sinceSeq: Type.Optional(Type.Integer({ minimum: 0 })),
});
const checkSubscribe = Compile(SubscribePayload);

/** What a watcher receives, under the event's Backend.AI name (session_started, kernel_terminated, ...). */
export interface WatchEvent { name: string; seq: number; sessionId: string; kernelId: string | null; ownerAccessKey: string; status: string; reason: string | null; at: string }

interface Subscription {
  owner: string; admin: boolean; sessionId?: string;
  /** Live events held while the replay runs, and the seqs the replay sent (to skip those). */
  held?: WatchEvent[]; replayed?: Set<number>;
}

const toWatchEvent = (e: CommittedEvent): WatchEvent => ({
  name: e.name, seq: e.seq, sessionId: e.sessionId, kernelId: e.kernelId ?? null, ownerAccessKey: e.accessKey,
  status: e.status, reason: e.reason ?? null, at: e.at,
});

const REPLAY_PAGE = 1000;

export class WatchGateway {
  private readonly subs = new Map<Socket, Subscription>();

  constructor(private readonly deps: { db: Database; keypairs: Keypairs; log: Logger }) {}

  attach(nsp: Namespace): void {
    nsp.use(socketAuth(this.deps.keypairs));
    nsp.on('connection', (socket) => {
      socket.on('subscribe', (payload: unknown, ack?: (r: unknown) => void) => {
        const reply = typeof ack === 'function' ? ack : () => undefined;
        if (!checkSubscribe.Check(payload ?? {})) { reply({ ok: false, error: 'subscribe takes {sessionId?: uuid, sinceSeq?: integer ≥ 0}' }); return; }
        const p = (payload ?? {}) as { sessionId?: string; sinceSeq?: number };
        void this.subscribe(socket, p).then((n) => reply({ ok: true, replayed: n }), (err: Error) => {
          this.deps.log.warn({ err: err.message }, 'watch subscription failed');
          reply({ ok: false, error: 'subscription failed' });
        });
      });
      socket.on('disconnect', () => this.subs.delete(socket));
    });
  }

  /** Deliver committed events to the subscribers allowed to see them. */
  publish(events: CommittedEvent[]): void {
    if (!this.subs.size) return;
    const ws = events.map(toWatchEvent);
    for (const [socket, sub] of this.subs) for (const e of ws) this.deliver(socket, sub, e);
  }

  /**
   * Output of a run, live only (`execution_output`, no seq: output is not stored, so it is
   * neither replayed nor part of the seq order). Sent as the manager receives it, at the pace
   * of the client's execute/continue calls; a subscriber that is still replaying gets it at once.
   */
  publishOutput(o: RunOutput): void {
    if (!this.subs.size) return;
    const payload = { sessionId: o.sessionId, kernelId: o.kernelId, ownerAccessKey: o.ownerAccessKey, runId: o.runId, status: o.status, exitCode: o.exitCode, console: o.console };
    for (const [socket, sub] of this.subs) {
      if (sub.sessionId && sub.sessionId !== o.sessionId) continue;
      if (sub.admin || sub.owner === o.ownerAccessKey) socket.emit('execution_output', payload);
    }
  }

  private visible(sub: Subscription, e: WatchEvent): boolean {
    if (sub.sessionId && e.sessionId !== sub.sessionId) return false;
    return sub.admin || e.ownerAccessKey === sub.owner;
  }

  // Live events are delivered once each as they commit; seqs can commit slightly out of order
  // (two transactions), so they are not filtered by "seq above the last one".
  private deliver(socket: Socket, sub: Subscription, e: WatchEvent): void {
    if (!this.visible(sub, e)) return;
    if (sub.held) { sub.held.push(e); return; }
    if (sub.replayed?.has(e.seq)) return;
    socket.emit(e.name, e);
  }

  private async subscribe(socket: Socket, p: { sessionId?: string; sinceSeq?: number }): Promise<number> {
    const owner = socket.data.owner as string;
    const admin = socket.data.admin as boolean;
    const sub: Subscription = { owner, admin, sessionId: p.sessionId, held: [], replayed: new Set() };
    this.subs.set(socket, sub);
    let replayed = 0;
    let after = p.sinceSeq ?? 0;
    try {
      if (p.sinceSeq !== undefined) {
        for (;;) {
          const rows = (await this.deps.db.query<{ seq: string; session_id: string; kernel_id: string | null; access_key: string; name: string; status: string; reason: string | null; created_at: Date }>(
            `SELECT seq, session_id, kernel_id, access_key, name, status, reason, created_at FROM session_events
             WHERE seq > $1 AND ($2::uuid IS NULL OR session_id = $2::uuid) AND ($3::bool OR access_key = $4)
             ORDER BY seq LIMIT ${REPLAY_PAGE}`, [after, p.sessionId ?? null, admin, owner])).rows;
          for (const r of rows) {
            const e: WatchEvent = { name: r.name, seq: Number(r.seq), sessionId: r.session_id, kernelId: r.kernel_id, ownerAccessKey: r.access_key, status: r.status, reason: r.reason, at: r.created_at.toISOString() };
            after = e.seq;
            sub.replayed!.add(e.seq);
            socket.emit(e.name, e);
            replayed++;
          }
          if (rows.length < REPLAY_PAGE) break;
        }
      }
    } finally {
      // Switch to live: what arrived meanwhile, minus what the replay already sent.
      const held = sub.held ?? [];
      sub.held = undefined;
      for (const e of held.sort((a, b) => a.seq - b.seq)) this.deliver(socket, sub, e);
      sub.replayed = undefined;
    }
    return replayed;
  }
}
