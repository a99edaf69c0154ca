// Session events for watchers (API.md "Events"): socket.io `/watch` and the SSE stream
// `GET /events/session` are both subscribers here. A subscriber gets the stored events after its
// `sinceSeq` replayed from PostgreSQL, then live ones, with no gap and no duplicate across the
// switch: live events that arrive during the replay are held and sent after it, skipping seqs the
// replay sent (remembered a while longer, for notifications that come late from another manager).
// Live events reach subscribers through rooms per session, per owner and for admins; across
// managers they travel through the socket.io Redis adapter (serverSideEmit), and every manager
// delivers them to its own subscribers.
// Run output is live only and large (a run can print hundreds of MB): a manager decodes it only
// for a subscriber that receives it, and sends it to the other managers only while one of them
// has such a subscriber. Each manager announces what its subscribers receive output for (interest
// keys: a session, an owner, everything for admins), versioned, whenever that set changes; a
// subscription is acknowledged once the other managers have the announcement (or 2 s passed), so
// output produced after the acknowledgement reaches it. A starting manager asks the others for
// theirs, and the set is asked for again at most once a minute, which also forgets managers gone.
import { randomUUID } from 'node:crypto';
import type { Namespace, Socket } from 'socket.io';
import { Type } from 'typebox';
import { Compile } from 'typebox/compile';
import type { Logger } from '../log.ts';
import type { Database } from '../stores/types.ts';
import { consoleText } from '../../schema/agent-rpc.ts';
import type { OutputEvent, SubscribeAck, WatchEvent } from '../../schema/watch.ts';
import type { RunOutput } from './execution.ts';
import { socketAuth } from './http/auth.ts';
import type { Keypairs } from './keypairs.ts';
import type { CommittedEvent } from './persistence.ts';
import { UUID } from '../../schema/ids.ts';

const SubscribePayload = Type.Object({
  sessionId: Type.Optional(Type.String({ pattern: UUID.source })),
  // Seqs are bigint in PostgreSQL; past 2^53 a JSON number is not exact anyway.
  sinceSeq: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
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
const OUTPUT_INTEREST = 'flotilla:watch-output-interest';
const OUTPUT_INTEREST_ASK = 'flotilla:watch-output-interest-ask';
/** How long a subscription waits for the other managers to take its interest in. */
const INTEREST_ACK_MS = 2000;
/** At most this often the other managers' interest is asked for again (forgetting managers gone). */
const INTEREST_RESYNC_MS = 60_000;

/** One manager's output interest: a version (higher replaces lower) and its keys. */
interface Interest { from: string; version: number; keys: string[] }

/** The key under which a subscriber receives output: its session, else everything (admin) or its owner's sessions. */
const interestKey = (sub: Subscriber) => (sub.sessionId ? `s:${sub.sessionId}` : sub.admin ? '*' : `o:${sub.owner}`);

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
  // Output interest: this manager's keys (with how many subscribers each), the others' by manager.
  private readonly uid = randomUUID();
  private readonly outputKeys = new Map<string, number>();
  private interestVersion = 0;
  private announced?: Promise<void>;
  private readonly remote = new Map<string, { version: number; keys: Set<string> }>();
  private lastResync = 0;

  constructor(private readonly deps: { db: Database; keypairs: Keypairs; log: Logger; fanOut?: boolean }) {}

  /** Serve socket.io `/watch`; with fanOut, events also travel to (and come from) other managers. */
  attach(nsp: Namespace): void {
    this.nsp = nsp;
    nsp.use(socketAuth(this.deps.keypairs));
    nsp.on('connection', (socket) => {
      let current: Subscriber | undefined;
      socket.on('subscribe', (payload: unknown, ack?: (r: unknown) => void) => {
        const reply = typeof ack === 'function' ? ack : () => undefined;
        if (!checkSubscribe.Check(payload ?? {})) { reply({ ok: false, error: 'subscribe takes {sessionId?: uuid, sinceSeq?: integer from 0 to 2^53-1}' }); return; }
        const p = (payload ?? {}) as { sessionId?: string; sinceSeq?: number };
        if (current) this.unsubscribe(current); // one subscription per socket: the last one counts
        const sub = current = socketSubscriber(socket, p.sessionId);
        void this.subscribe(sub, p.sinceSeq).then(async (n) => { await this.announced; return n; }).then(async (n) => reply({ ok: true, replayed: n, lastSeq: await this.lastSeq(sub) } satisfies SubscribeAck), (err: Error) => {
          this.deps.log.warn({ err: err.message }, 'watch subscription failed');
          // A failed subscription delivers nothing: the client was told so and may subscribe again.
          this.unsubscribe(sub);
          if (current === sub) current = undefined;
          reply({ ok: false, error: 'subscription failed' });
        });
      });
      socket.on('disconnect', () => { if (current) this.unsubscribe(current); });
    });
    if (this.deps.fanOut) {
      nsp.on(FANOUT_EVENTS, (events: WatchEvent[]) => this.deliverAll(events));
      nsp.on(FANOUT_OUTPUT, (o: OutputEvent) => this.deliverOutput(o));
      nsp.on(OUTPUT_INTEREST, (i: Interest, ack?: (r: unknown) => void) => { this.takeInterest(i); ack?.(true); });
      nsp.on(OUTPUT_INTEREST_ASK, (ack?: (r: Interest) => void) => ack?.(this.interest()));
      this.resyncInterest();
    }
  }

  /** Committed lifecycle events: to this manager's subscribers and, with fanOut, the other managers'. */
  publish(events: CommittedEvent[]): void {
    const ws = events.map(toWatchEvent);
    if (this.deps.fanOut) this.nsp?.serverSideEmit(FANOUT_EVENTS, ws);
    this.deliverAll(ws);
  }

  /**
   * A run's output as the manager receives it (live only: output is not stored), decoded and sent
   * only where a subscriber receives it: here, or on another manager that announced interest.
   */
  publishOutput(o: RunOutput): void {
    const local = this.outputTargets(o.sessionId, o.ownerAccessKey, o.sessionName);
    const remote = this.deps.fanOut === true && this.remoteWants(o.sessionId, o.ownerAccessKey);
    if (!local.length && !remote) return;
    const payload: OutputEvent = { sessionId: o.sessionId, sessionName: o.sessionName, kernelId: o.kernelId, ownerAccessKey: o.ownerAccessKey, runId: o.runId, status: o.status, exitCode: o.exitCode, console: consoleText(o.console) };
    if (remote) this.nsp?.serverSideEmit(FANOUT_OUTPUT, payload);
    for (const sub of local) sub.sendOutput!(payload);
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
    if (sub.sendOutput) this.countInterest(interestKey(sub), add ? 1 : -1);
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

  // Live events go out once each as they commit. Seqs commit in order (insertEvents' lock), but
  // events from another manager can arrive late, so they are not filtered by "seq above the last one".
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
    for (const sub of this.outputTargets(o.sessionId, o.ownerAccessKey, o.sessionName)) sub.sendOutput!(o);
  }

  /** This manager's subscribers that receive a session's output. */
  private outputTargets(sessionId: string, owner: string, sessionName: string): Subscriber[] {
    const out: Subscriber[] = [];
    if (!this.outputKeys.size) return out;
    for (const { sub } of this.candidates(sessionId, owner)) {
      if (!sub.sendOutput || (!sub.admin && owner !== sub.owner)) continue;
      if (sub.sessionName !== undefined && sessionName !== sub.sessionName) continue;
      out.push(sub);
    }
    return out;
  }

  // ---- output interest across managers

  private interest(): Interest { return { from: this.uid, version: this.interestVersion, keys: [...this.outputKeys.keys()] }; }

  private countInterest(key: string, by: 1 | -1): void {
    const n = (this.outputKeys.get(key) ?? 0) + by;
    if (n > 0) this.outputKeys.set(key, n); else this.outputKeys.delete(key);
    if (n === 0 || (n === 1 && by === 1)) this.interestChanged();
  }

  /** Announce the changed key set (one announcement for the changes of one tick); subscribe waits for `announced`. */
  private interestChanged(): void {
    this.interestVersion++;
    if (!this.deps.fanOut || !this.nsp || this.announcing) return;
    this.announcing = true;
    const nsp = this.nsp;
    this.announced = new Promise<void>((resolve) => setImmediate(() => {
      this.announcing = false;
      const done = setTimeout(resolve, INTEREST_ACK_MS);
      nsp.serverSideEmit(OUTPUT_INTEREST, this.interest(), () => { clearTimeout(done); resolve(); });
    }));
  }
  private announcing = false;

  private takeInterest(i: Interest): void {
    if (!i || typeof i.from !== 'string' || i.from === this.uid || !Number.isInteger(i.version) || !Array.isArray(i.keys)) return;
    const cur = this.remote.get(i.from);
    if (!cur || i.version > cur.version) this.remote.set(i.from, { version: i.version, keys: new Set(i.keys.filter((k) => typeof k === 'string')) });
  }

  private remoteWants(sessionId: string, owner: string): boolean {
    if (Date.now() - this.lastResync > INTEREST_RESYNC_MS) this.resyncInterest();
    for (const { keys } of this.remote.values()) {
      if (keys.has(`s:${sessionId}`) || keys.has(`o:${owner}`) || keys.has('*')) return true;
    }
    return false;
  }

  /** Ask every other manager for its interest; when all answered, forget the managers that did not (gone). */
  private resyncInterest(): void {
    const nsp = this.nsp;
    if (!nsp) return;
    this.lastResync = Date.now();
    nsp.serverSideEmit(OUTPUT_INTEREST_ASK, (err: Error | null, replies: Interest[]) => {
      for (const r of replies ?? []) this.takeInterest(r);
      if (err) return; // someone did not answer in time: keep what is known
      const alive = new Set((replies ?? []).map((r) => r?.from));
      for (const id of this.remote.keys()) if (!alive.has(id)) this.remote.delete(id);
    });
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
