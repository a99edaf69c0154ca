// Session events for watchers (API.md "Events"): socket.io `/watch` and the SSE stream
// `GET /events/session` are both subscribers here. A subscriber gets the stored events after its
// `sinceSeq` replayed from PostgreSQL, then live ones, with no gap and no duplicate across the
// switch: live events that arrive during the replay are held and sent after it, skipping seqs the
// replay sent (remembered a while longer, for notifications that come late from another manager).
// Live events reach subscribers through rooms per session, per owner and for admins; across
// managers they travel through the socket.io Redis adapter (serverSideEmit), and every manager
// delivers them to its own subscribers.
import type { Namespace, Socket } from 'socket.io';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import type { OutputEvent, SubscribeAck, WatchEvent } from '../../schema/watch.ts';
import type { RunOutput } from './execution.ts';
import { socketAuth } from './http/auth.ts';
import type { Keypairs } from './keypairs.ts';
import type { CommittedEvent } from './persistence.ts';

const SubscribePayload = Type.Object({
  sessionId: Type.Optional(Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' })),
  sinceSeq: Type.Optional(Type.Integer({ minimum: 0 })),
}, { additionalProperties: false });
const checkSubscribe = Compile(SubscribePayload);

/** One watcher: a socket.io socket or an SSE response. */
export interface Subscriber {
  owner: string;
  admin: boolean;
  /** Only this session (else: every session the subscriber may see). */
  sessionId?: string;
  /** Only sessions of this name (SSE's `sessionName`). */
  sessionName?: string;
  send(e: WatchEvent): void;
  sendOutput?(o: OutputEvent): void;
}

interface Entry {
  sub: Subscriber;
  /** Live events held while the replay runs. */
  held?: WatchEvent[];
  /** Seqs the replay sent → until when to remember them. */
  replayed?: Map<number, number>;
}

const REPLAY_PAGE = 1000;
/** How long replayed seqs are remembered after the switch to live (late cross-manager notifications). */
const REPLAYED_GRACE_MS = 10_000;
const FANOUT_EVENTS = 'flotilla:watch-events';
const FANOUT_OUTPUT = 'flotilla:watch-output';

const toWatchEvent = (e: CommittedEvent): WatchEvent => ({
  name: e.name, seq: e.seq, sessionId: e.sessionId, sessionName: e.sessionName ?? null, kernelId: e.kernelId ?? null, ownerAccessKey: e.accessKey,
  status: e.status, reason: e.reason ?? null, at: e.at,
});

export class WatchGateway {
  private readonly entries = new Map<Subscriber, Entry>();
  // Rooms: who to look at for an event of a session, of an owner, and the admins.
  private readonly bySession = new Map<string, Set<Entry>>();
  private readonly byOwner = new Map<string, Set<Entry>>();
  private readonly admins = new Set<Entry>();
  private nsp?: Namespace;

  constructor(private readonly deps: { db: Database; keypairs: Keypairs; log: Logger; fanOut?: boolean }) {}

  /** Serve socket.io `/watch`; with fanOut, events also travel to (and come from) other managers. */
  attach(nsp: Namespace): void {
    this.nsp = nsp;
    nsp.use(socketAuth(this.deps.keypairs));
    nsp.on('connection', (socket) => {
      let current: Subscriber | undefined;
      socket.on('subscribe', (payload: unknown, ack?: (r: unknown) => void) => {
        const reply = typeof ack === 'function' ? ack : () => undefined;
        if (!checkSubscribe.Check(payload ?? {})) { reply({ ok: false, error: 'subscribe takes {sessionId?: uuid, sinceSeq?: integer ≥ 0}' }); return; }
        const p = (payload ?? {}) as { sessionId?: string; sinceSeq?: number };
        if (current) this.unsubscribe(current); // one subscription per socket: the last one counts
        current = socketSubscriber(socket, p.sessionId);
        void this.subscribe(current, p.sinceSeq).then(async (n) => reply({ ok: true, replayed: n, lastSeq: await this.lastSeq(current!) } satisfies SubscribeAck), (err: Error) => {
          this.deps.log.warn({ err: err.message }, 'watch subscription failed');
          reply({ ok: false, error: 'subscription failed' });
        });
      });
      socket.on('disconnect', () => { if (current) this.unsubscribe(current); });
    });
    if (this.deps.fanOut) {
      nsp.on(FANOUT_EVENTS, (events: WatchEvent[]) => this.deliverAll(events));
      nsp.on(FANOUT_OUTPUT, (o: OutputEvent) => this.deliverOutput(o));
    }
  }

  /** Committed lifecycle events: to this manager's subscribers and, with fanOut, the other managers'. */
  publish(events: CommittedEvent[]): void {
    const ws = events.map(toWatchEvent);
    if (this.deps.fanOut) this.nsp?.serverSideEmit(FANOUT_EVENTS, ws);
    this.deliverAll(ws);
  }

  /** A run's output as the manager receives it (live only: output is not stored). */
  publishOutput(o: RunOutput): void {
    const payload: OutputEvent = { sessionId: o.sessionId, sessionName: o.sessionName, kernelId: o.kernelId, ownerAccessKey: o.ownerAccessKey, runId: o.runId, status: o.status, exitCode: o.exitCode, console: o.console };
    if (this.deps.fanOut) this.nsp?.serverSideEmit(FANOUT_OUTPUT, payload);
    this.deliverOutput(payload);
  }

  /**
   * Start delivering to `sub`: the stored events after `sinceSeq` (none when undefined), then
   * live ones. Resolves with how many were replayed.
   */
  async subscribe(sub: Subscriber, sinceSeq?: number): Promise<number> {
    const entry: Entry = { sub, held: [], replayed: new Map() };
    this.entries.set(sub, entry);
    this.index(entry, true);
    let replayed = 0;
    let after = sinceSeq ?? 0;
    try {
      if (sinceSeq !== undefined) {
        for (;;) {
          const rows = (await this.deps.db.query<{ seq: string; session_id: string; kernel_id: string | null; access_key: string; name: string; status: string; reason: string | null; created_at: Date; session_name: string | null }>(
            `SELECT e.seq, e.session_id, e.kernel_id, e.access_key, e.name, e.status, e.reason, e.created_at, s.name AS session_name
             FROM session_events e LEFT JOIN sessions s ON s.id = e.session_id
             WHERE e.seq > $1 AND ($2::uuid IS NULL OR e.session_id = $2::uuid) AND ($3::bool OR e.access_key = $4)
               AND ($5::text IS NULL OR s.name = $5)
             ORDER BY e.seq LIMIT ${REPLAY_PAGE}`, [after, sub.sessionId ?? null, sub.admin, sub.owner, sub.sessionName ?? null])).rows;
          if (!this.entries.has(sub)) break; // gone meanwhile
          const until = Date.now() + REPLAYED_GRACE_MS;
          for (const r of rows) {
            const e: WatchEvent = { name: r.name, seq: Number(r.seq), sessionId: r.session_id, sessionName: r.session_name, kernelId: r.kernel_id, ownerAccessKey: r.access_key, status: r.status, reason: r.reason, at: r.created_at.toISOString() };
            after = e.seq;
            entry.replayed!.set(e.seq, until);
            sub.send(e);
            replayed++;
          }
          if (rows.length < REPLAY_PAGE) break;
        }
      }
    } finally {
      // Switch to live: what arrived meanwhile, minus what the replay already sent.
      const held = entry.held ?? [];
      entry.held = undefined;
      for (const e of held.sort((a, b) => a.seq - b.seq)) this.deliver(entry, e);
      if (!entry.replayed?.size) entry.replayed = undefined;
    }
    return replayed;
  }

  /** The newest stored seq the subscriber may see (where a reconnect resumes when it saw nothing). */
  async lastSeq(sub: Subscriber): Promise<number> {
    const r = await this.deps.db.query<{ seq: string | null }>(
      `SELECT max(seq) AS seq FROM session_events WHERE ($1::bool OR access_key = $2) AND ($3::uuid IS NULL OR session_id = $3::uuid)`,
      [sub.admin, sub.owner, sub.sessionId ?? null]);
    return Number(r.rows[0]?.seq ?? 0);
  }

  unsubscribe(sub: Subscriber): void {
    const entry = this.entries.get(sub);
    if (!entry) return;
    this.entries.delete(sub);
    this.index(entry, false);
  }

  get subscribers(): number { return this.entries.size; }

  // ---- internals

  private index(entry: Entry, add: boolean): void {
    const { sub } = entry;
    const room = (m: Map<string, Set<Entry>>, k: string) => {
      let set = m.get(k);
      if (add) { if (!set) m.set(k, (set = new Set())); set.add(entry); } else if (set) { set.delete(entry); if (!set.size) m.delete(k); }
    };
    if (sub.sessionId) room(this.bySession, sub.sessionId);
    else if (sub.admin) { if (add) this.admins.add(entry); else this.admins.delete(entry); }
    else room(this.byOwner, sub.owner);
  }

  private candidates(sessionId: string, owner: string): Entry[] {
    return [...(this.bySession.get(sessionId) ?? []), ...(this.byOwner.get(owner) ?? []), ...this.admins];
  }

  private deliverAll(events: WatchEvent[]): void {
    if (!this.entries.size) return;
    for (const e of events) {
      for (const entry of this.candidates(e.sessionId, e.ownerAccessKey)) this.deliver(entry, e);
    }
  }

  // Live events go out once each as they commit; seqs can commit slightly out of order (two
  // transactions), so they are not filtered by "seq above the last one".
  private deliver(entry: Entry, e: WatchEvent): void {
    const { sub } = entry;
    if (!sub.admin && e.ownerAccessKey !== sub.owner) return;
    if (sub.sessionName !== undefined && e.sessionName !== sub.sessionName) return;
    if (entry.held) { entry.held.push(e); return; }
    if (entry.replayed) {
      const until = entry.replayed.get(e.seq);
      if (until !== undefined) return;
      if (Date.now() > Math.max(...entry.replayed.values())) entry.replayed = undefined;
    }
    sub.send(e);
  }

  private deliverOutput(o: OutputEvent): void {
    for (const entry of this.candidates(o.sessionId, o.ownerAccessKey)) {
      const { sub } = entry;
      if (!sub.sendOutput || (!sub.admin && o.ownerAccessKey !== sub.owner)) continue;
      if (sub.sessionName !== undefined && o.sessionName !== sub.sessionName) continue;
      sub.sendOutput(o);
    }
  }
}

function socketSubscriber(socket: Socket, sessionId?: string): Subscriber {
  return {
    owner: socket.data.owner as string, admin: socket.data.admin as boolean, sessionId,
    send: (e) => { socket.emit(e.name, e); },
    sendOutput: (o) => { socket.emit('execution_output', o); },
  };
}

export type { OutputEvent, WatchEvent } from '../../schema/watch.ts';
