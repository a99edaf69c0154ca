// The supervisor hosts every live session as its own root actor (a Map, not children of one
// parent: XState copies its children object on every spawn), persists each transition before
// the effect it starts (the kernel effects wait on `durable`), re-arms deadlines from their
// timestamps, restores non-final sessions from PostgreSQL at start, and observes every root's
// errors (unobserved, one would crash the process).
import { EventEmitter } from 'node:events';
import { createActor, fromPromise, type Actor } from 'xstate';
import type { StatusChange } from '../../actors/history.ts';
import { kernelMachine, type CreatedKernel, type KernelContext, type KernelInput, type KernelMount } from '../../actors/kernel.ts';
import { sessionMachine, type SessionEvent, type SessionInput } from '../../actors/session.ts';
import { isFinalSessionStatus, lifecycleEventName, type KernelStatus, type SessionStatus } from '../../schema/status.ts';
import { SessionAlreadyExists } from '../../schema/errors.ts';
import type { Logger } from '../log.ts';
import type { ActorGraph } from './actor-graph.ts';
import type { Database, DbClient } from '../stores/types.ts';
import { insertEvents, TransitionWriter, type CommittedEvent, type EventRow, type KernelWrite, type SessionWrite } from './persistence.ts';

/** What kernel effects do in the world (agent RPCs); the supervisor gates them on durability. */
export interface KernelEffects {
  prepare(kernel: KernelContext): Promise<void>;
  create(kernel: KernelContext): Promise<CreatedKernel>;
  restart(kernel: KernelContext): Promise<void>;
  destroy(kernel: KernelContext): Promise<void>;
}

type SessionActor = Actor<typeof sessionMachine>;

interface Handle {
  sessionId: string;
  accessKey: string;
  actor: SessionActor;
  /** History entries already durable: the session's and each kernel's. */
  persisted: { session: number; kernels: Record<string, number> };
  lastWrite?: Promise<void>;
  /** statusInfo as last written (a PENDING session's reason changes without a transition). */
  writtenInfo?: string;
  writtenData?: unknown;
  deadlines: Map<string, { at: number; timer: NodeJS.Timeout }>;
  restarts: number;
  /** Agents its kernels were placed on (the supervisor's per-agent index). */
  agents: Set<string>;
}

/** Kernel id → agent id for each kernel of a session, as the scheduler placed them. */
export interface Placement { sessionId: string; placements: Record<string, string> }

/** Placements handed to their actors between two turns of the event loop. */
const DELIVER_SLICE = 500;

/** Rows read per query while a standby builds actors ahead of a takeover. */
const PREBUILD_BATCH = 1000;

/** Restart policy: an actor that throws is restored from its last durable snapshot this many times, then its session ends in ERROR. */
export const MAX_ACTOR_RESTARTS = 3;

/** Checks new sessions inside their creating transaction: for each, the error that refuses it, or undefined. */
export type AdmitSessions = (c: DbClient, sessions: NewSession[]) => Promise<Array<Error | undefined>>;

export interface NewSession extends SessionInput { environ: Record<string, string>; mounts: KernelMount[]; startupCommand?: string; tag?: string; clusterSize: number }

export interface SupervisorEvents {
  committed: [events: CommittedEvent[]];
  status: [sessionId: string, status: SessionStatus];
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  private readonly handles = new Map<string, Handle>();
  /** Agent id → the live sessions with a kernel placed there (reconciliation and agent loss ask per agent). */
  private readonly byAgent = new Map<string, Set<string>>();
  private readonly pending = new Set<string>();
  /** Placements committed, their actors not told yet (deliverPlacements). */
  private readonly delivering = new Set<string>();
  /** Built, not started: a standby's actors, by session id, with the row version they came from. */
  private readonly prebuilt = new Map<string, { version: string; accessKey: string; actor: SessionActor; persisted: Handle['persisted'] }>();
  readonly writer: TransitionWriter;
  private readonly machine;

  constructor(private readonly deps: { db: Database; log: Logger; effects: KernelEffects; graph?: ActorGraph }) {
    super();
    this.setMaxListeners(0); // every request waiting for a status listens for 'status'
    this.writer = new TransitionWriter(deps.db, {
      log: deps.log,
      onCommitted: (events, writes) => {
        if (events.length) this.emit('committed', events);
        for (const w of writes) this.emit('status', w.sessionId, w.status as SessionStatus);
      },
    });
    const gated = <T>(run: (k: KernelContext) => Promise<T>) =>
      fromPromise<T, { kernel: KernelContext }>(async ({ input }) => {
        await this.durable(input.kernel.sessionId);
        return run(input.kernel);
      });
    this.machine = sessionMachine.provide({
      actors: {
        kernel: kernelMachine.provide({
          actors: {
            // Neither touches the world, so neither waits for its own commit (rule 1 is about
            // effects): SCHEDULED, PREPARING and CREATING then commit together, before createKernel.
            awaitDurable: fromPromise<void, { kernel: KernelContext }>(async () => {}),
            prepareKernel: fromPromise<void, { kernel: KernelContext }>(({ input }) => deps.effects.prepare(input.kernel)),
            createKernel: gated((k) => deps.effects.create(k)),
            restartKernel: gated((k) => deps.effects.restart(k)),
            destroyKernel: gated((k) => deps.effects.destroy(k)),
          },
        }),
      },
    });
  }

  get size(): number { return this.handles.size; }
  /** Live sessions by status (GET /metrics): one pass over the handles, when asked. */
  statusCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const h of this.handles.values()) {
      const status = String(h.actor.getSnapshot().value);
      out[status] = (out[status] ?? 0) + 1;
    }
    return out;
  }
  /** Actors a standby has built ahead of a takeover (0 once it leads). */
  get prepared(): number { return this.prebuilt.size; }
  has(sessionId: string): boolean { return this.handles.has(sessionId); }
  liveSessionIds(): string[] { return [...this.handles.keys()]; }
  /** The live sessions in PENDING (the scheduler's queue), without a scan of every session; not those placed and committed but not yet told. */
  *pendingSessionIds(): IterableIterator<string> { for (const id of this.pending) if (!this.delivering.has(id)) yield id; }

  /** The live session actor's snapshot (undefined once it is final and released). */
  snapshot(sessionId: string) { return this.handles.get(sessionId)?.actor.getSnapshot(); }

  send(sessionId: string, event: SessionEvent): boolean {
    const h = this.handles.get(sessionId);
    if (!h) return false;
    h.actor.send(event);
    return true;
  }

  /** The live kernels placed on an agent, with their sessions and statuses. */
  kernelsOn(agentId: string): Array<{ sessionId: string; kernelId: string; status: KernelStatus }> {
    const out: Array<{ sessionId: string; kernelId: string; status: KernelStatus }> = [];
    for (const sessionId of this.byAgent.get(agentId) ?? []) {
      for (const ref of Object.values(this.snapshot(sessionId)?.children ?? {})) {
        const k = (ref as { getSnapshot(): { value: unknown; context: KernelContext } }).getSnapshot();
        if (k.context.agentId === agentId) out.push({ sessionId, kernelId: k.context.kernelId, status: k.value as KernelStatus });
      }
    }
    return out;
  }

  /** Resolves when every transition of the session observed so far is committed. */
  async durable(sessionId: string): Promise<void> {
    // The snapshot that started an effect reaches the observer in this same tick; let it.
    await new Promise((r) => setImmediate(r));
    await this.handles.get(sessionId)?.lastWrite;
  }

  /**
   * Insert new sessions with their kernels (PENDING) durably, all in one transaction, then start
   * their actors (rule 4: a 201 follows this). `admit` runs first in that transaction (policy
   * checks). Returns, per session, the error that refused it (nothing of it was created) or
   * undefined; a failed transaction rejects, and then none was created.
   */
  async createMany(batch: NewSession[], admit?: AdmitSessions): Promise<Array<Error | undefined>> {
    const now = new Date().toISOString();
    const history: StatusChange[] = [{ status: 'PENDING', at: now }];
    const { refused, events } = await this.deps.db.tx(async (c) => {
      // A live session's name is unique per owner; taken names are refused before the
      // admission counts them (in this batch too: the first of two alike wins).
      const taken = new Set((await c.query<{ key: string }>(
        `SELECT access_key || '/' || name AS key FROM sessions
          WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED') AND (access_key, name) IN (SELECT * FROM unnest($1::text[], $2::text[]))`,
        [batch.map((s) => s.accessKey), batch.map((s) => s.name)],
      )).rows.map((r) => r.key));
      const refused: Array<Error | undefined> = batch.map((s) => {
        const key = `${s.accessKey}/${s.name}`;
        if (taken.has(key)) return new SessionAlreadyExists(`a live session named ${JSON.stringify(s.name)} exists`);
        taken.add(key);
        return undefined;
      });
      const open = batch.flatMap((s, i) => (refused[i] ? [] : [i]));
      const verdicts = admit && open.length ? await admit(c, open.map((i) => batch[i])) : [];
      open.forEach((i, j) => { refused[i] = verdicts[j]; });
      const accepted = batch.filter((_s, i) => !refused[i]);
      if (!accepted.length) return { refused, events: [] as CommittedEvent[] };
      // Each statement's rows travel as one JSON document (as the TransitionWriter's do).
      const inserted = new Set((await c.query<{ id: string }>(
        `INSERT INTO sessions (id, name, access_key, image, type, cluster_mode, cluster_size, resource_group, status,
           status_history, requested_slots, environ, mounts, startup_command, tag)
         SELECT id, name, access_key, image, type, cluster_mode, cluster_size, resource_group, 'PENDING',
           status_history, requested_slots, environ, mounts, startup_command, tag
           FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, name text, access_key text, image text, type text, cluster_mode text,
             cluster_size int, resource_group text, status_history jsonb, requested_slots jsonb, environ jsonb, mounts jsonb,
             startup_command text, tag text)
         ON CONFLICT DO NOTHING RETURNING id`,
        [JSON.stringify(accepted.map((s) => ({
          id: s.sessionId, name: s.name, access_key: s.accessKey, image: s.image, type: s.type, cluster_mode: s.clusterMode,
          cluster_size: s.clusterSize, resource_group: s.resourceGroup, status_history: history, requested_slots: s.requestedSlots,
          environ: s.environ, mounts: s.mounts, startup_command: s.startupCommand ?? null, tag: s.tag ?? null,
        })))],
      )).rows.map((r) => r.id));
      // Another manager's create took the name meanwhile (the unique index said so).
      batch.forEach((s, i) => {
        if (!refused[i] && !inserted.has(s.sessionId)) refused[i] = new SessionAlreadyExists(`a live session named ${JSON.stringify(s.name)} exists`);
      });
      const created = batch.filter((_s, i) => !refused[i]);
      if (!created.length) return { refused, events: [] as CommittedEvent[] };
      await c.query(
        `INSERT INTO kernels (id, session_id, access_key, cluster_role, cluster_idx, cluster_hostname, image, status, status_history, requested_slots)
         SELECT id, session_id, access_key, cluster_role, cluster_idx, cluster_hostname, image, 'PENDING', status_history, requested_slots
           FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, session_id uuid, access_key text, cluster_role text, cluster_idx int,
             cluster_hostname text, image text, status_history jsonb, requested_slots jsonb)`,
        [JSON.stringify(created.flatMap((s) => s.kernels.map((k) => ({
          id: k.kernelId, session_id: s.sessionId, access_key: s.accessKey, cluster_role: k.role, cluster_idx: k.idx,
          cluster_hostname: k.hostname, image: k.image, status_history: history, requested_slots: k.requestedSlots,
        }))))],
      );
      const rows: EventRow[] = created.flatMap((s) => [
        { sessionId: s.sessionId, sessionName: s.name, accessKey: s.accessKey, name: 'session_enqueued', status: 'PENDING', at: now },
        ...s.kernels.map((k) => ({ sessionId: s.sessionId, sessionName: s.name, kernelId: k.kernelId, accessKey: s.accessKey, name: 'kernel_enqueued', status: 'PENDING', at: now })),
      ]);
      return { refused, events: await insertEvents(c, rows) };
    });
    // Only once the transaction has committed: watchers never see an event that may roll back.
    if (events.length) this.emit('committed', events);
    batch.forEach((s, i) => {
      if (refused[i]) return;
      const input: SessionInput = { ...s };
      this.host(s.sessionId, s.accessKey, createActor(this.machine, { input, inspect: this.deps.graph?.inspect }), { session: 1, kernels: Object.fromEntries(s.kernels.map((k) => [k.kernelId, 1])) });
    });
    return refused;
  }

  /** One session: createMany of one, its refusal thrown. */
  async create(s: NewSession, admit?: AdmitSessions): Promise<void> {
    const [refused] = await this.createMany([s], admit);
    if (refused) throw refused;
  }

  /**
   * A scheduling pass's placements, committed in bulk: one transaction sets the sessions and
   * their kernels SCHEDULED (the kernels on their agents) with the history entries and events.
   * The actors are told afterwards (deliverPlacements), with those entries counted as written:
   * the placement is durable before an actor moves, and nothing reaches an agent before the
   * actor's own next transition commits (rule 1), so a crash in between leaves a PENDING actor
   * (restored from its snapshot; requeueUntold puts its row back) that is placed again.
   * Returns the placements committed.
   */
  async commitPlacements(batch: Placement[]): Promise<Placement[]> {
    // Their earlier writes (a pending reason) first: committed after this, one would set the status back to PENDING.
    await Promise.all(batch.map((b) => this.handles.get(b.sessionId)?.lastWrite?.catch(() => undefined)));
    const live = batch.filter((b) => this.isPending(b.sessionId));
    if (!live.length) return [];
    const at = new Date().toISOString();
    const kernelRows = live.flatMap((b) => Object.entries(b.placements));
    const byId = new Map(live.map((b) => [b.sessionId, b]));
    const { committed, events } = await this.deps.db.tx(async (c) => {
      // PENDING, or SCHEDULED by a pass whose actor never heard of it (the manager died in between).
      const rows = (await c.query<{ id: string; name: string; access_key: string }>(
        `UPDATE sessions s SET status = 'SCHEDULED', status_info = NULL, status_data = NULL, status_changed = now(),
           status_history = s.status_history || jsonb_build_array(jsonb_build_object('status', 'SCHEDULED', 'at', $2::text))
          WHERE s.id = ANY($1::uuid[]) AND s.status IN ('PENDING', 'SCHEDULED')
          RETURNING s.id, s.name, s.access_key`,
        [live.map((b) => b.sessionId), at],
      )).rows;
      await c.query(
        `UPDATE kernels k SET status = 'SCHEDULED', agent_id = u.agent_id, status_info = NULL, status_data = NULL, status_changed = now(),
           status_history = k.status_history || jsonb_build_array(jsonb_build_object('status', 'SCHEDULED', 'at', $3::text))
          FROM unnest($1::uuid[], $2::text[]) AS u(id, agent_id)
         WHERE k.id = u.id AND k.session_id = ANY($4::uuid[])`,
        [kernelRows.map(([k]) => k), kernelRows.map(([, a]) => a), at, rows.map((r) => r.id)],
      );
      // The kernels' events before their session's, as everywhere (observe).
      const eventRows: EventRow[] = rows.flatMap((r) => [
        ...Object.keys(byId.get(r.id)!.placements).map((kernelId) => ({
          sessionId: r.id, sessionName: r.name, kernelId, accessKey: r.access_key, name: 'kernel_scheduled', status: 'SCHEDULED', at,
        })),
        { sessionId: r.id, sessionName: r.name, accessKey: r.access_key, name: 'session_scheduled', status: 'SCHEDULED', at },
      ]);
      return { committed: rows.map((r) => byId.get(r.id)!), events: await insertEvents(c, eventRows) };
    });
    if (events.length) this.emit('committed', events);
    for (const b of committed) {
      // Out of the scheduler's queue now (the actor is still PENDING until it is told).
      this.delivering.add(b.sessionId);
      this.emit('status', b.sessionId, 'SCHEDULED');
    }
    return committed;
  }

  /**
   * Give committed placements to their actors (SCHEDULE), DELIVER_SLICE at a time with turns of
   * the event loop between. A session whose actor left PENDING since the commit (cancelled) is
   * skipped: its own write follows and ends it. Returns how many actors were scheduled.
   */
  async deliverPlacements(committed: Placement[]): Promise<number> {
    let n = 0;
    for (let i = 0; i < committed.length; i += DELIVER_SLICE) {
      if (i) await new Promise((r) => setImmediate(r));
      for (const { sessionId, placements } of committed.slice(i, i + DELIVER_SLICE)) {
        this.delivering.delete(sessionId);
        const h = this.handles.get(sessionId);
        if (!h || !this.isPending(sessionId)) continue;
        const snap = h.actor.getSnapshot();
        // The SCHEDULED entries the actor is about to record are the ones committed.
        h.persisted.session = snap.context.history.length + 1;
        for (const kernelId of Object.keys(placements)) {
          const child = snap.children[kernelId] as { getSnapshot(): { context: KernelContext } } | undefined;
          if (child) h.persisted.kernels[kernelId] = child.getSnapshot().context.history.length + 1;
        }
        h.writtenInfo = undefined;
        h.writtenData = undefined;
        h.actor.send({ type: 'SCHEDULE', placements });
        n++;
      }
    }
    return n;
  }

  private isPending(sessionId: string): boolean { return this.handles.get(sessionId)?.actor.getSnapshot().value === 'PENDING'; }

  /**
   * Restore every non-final session from PostgreSQL (at start or takeover). Returns how many.
   * Actors a standby built beforehand (`prepareTakeover`) are only brought up to date and started.
   */
  async restore(): Promise<number> {
    // Rows without a snapshot first: one that gets its first snapshot meanwhile is then caught
    // by the catch-up below, and the newer (prebuilt) actor wins.
    const fresh = (await this.deps.db.query<SessionRow>(
      `SELECT id, name, access_key, image, type, cluster_mode, resource_group, requested_slots, snapshot
       FROM sessions WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED') AND snapshot IS NULL`,
    )).rows;
    const kernels = await this.kernelInputs(fresh.map((r) => r.id));
    await this.prepareTakeover();
    let restored = 0;
    for (const [id, b] of this.prebuilt) {
      if (!this.handles.has(id)) { this.host(id, b.accessKey, b.actor, b.persisted); restored++; }
    }
    this.prebuilt.clear();
    for (const row of fresh) {
      if (!this.handles.has(row.id)) { this.restoreRow(row, kernels.get(row.id) ?? []); restored++; }
    }
    await this.requeueUntold();
    return restored;
  }

  /**
   * Placements committed whose actors were never told (the manager died in between): the row
   * says SCHEDULED while the restored actor is PENDING. The record goes back to PENDING too
   * (kernels without their agent), so those agents' slots are not held by a placement that will
   * never start (with a full cluster it kept the sessions from being placed again), and the
   * scheduler places them afresh. History and events say so.
   */
  private async requeueUntold(): Promise<void> {
    const ids = [...this.handles.keys()].filter((id) => this.isPending(id));
    if (!ids.length) return;
    const at = new Date().toISOString();
    const info = 'placement-not-started';
    const entry = JSON.stringify([{ status: 'PENDING', at, info }]);
    const events = await this.deps.db.tx(async (c) => {
      const sessions = (await c.query<{ id: string; name: string; access_key: string }>(
        `UPDATE sessions s SET status = 'PENDING', status_changed = now(), status_history = s.status_history || $2::jsonb
          WHERE s.id = ANY($1::uuid[]) AND s.status = 'SCHEDULED' RETURNING s.id, s.name, s.access_key`, [ids, entry],
      )).rows;
      if (!sessions.length) return [];
      const kernels = (await c.query<{ id: string; session_id: string }>(
        `UPDATE kernels k SET status = 'PENDING', agent_id = NULL, status_changed = now(), status_history = k.status_history || $2::jsonb
          WHERE k.session_id = ANY($1::uuid[]) AND k.status = 'SCHEDULED' RETURNING k.id, k.session_id`, [sessions.map((r) => r.id), entry],
      )).rows;
      const byId = new Map(sessions.map((r) => [r.id, r]));
      return insertEvents(c, [
        ...sessions.map((r) => ({ sessionId: r.id, sessionName: r.name, accessKey: r.access_key, name: 'session_enqueued', status: 'PENDING', reason: info, at })),
        ...kernels.map((k) => {
          const r = byId.get(k.session_id)!;
          return { sessionId: r.id, sessionName: r.name, kernelId: k.id, accessKey: r.access_key, name: 'kernel_enqueued', status: 'PENDING', reason: info, at };
        }),
      ]);
    });
    if (events.length) {
      this.deps.log.warn({ sessions: events.filter((e) => !e.kernelId).length }, 'placements committed but never started were put back in the queue');
      this.emit('committed', events);
    }
  }

  /**
   * A standby's head start on a takeover: builds (does not start) the actor of every non-final
   * session whose row changed since the last call, from its durable snapshot, and drops those
   * that ended. A row's version is PostgreSQL's xmin, which every update changes. Returns how
   * many actors are ready. Actors only act once started, so building them early changes nothing.
   */
  prepareTakeover(): Promise<number> {
    const run = this.preparing.then(() => this.prebuild());
    this.preparing = run.catch(() => undefined); // one at a time: a takeover may start during a periodic one
    return run;
  }

  private preparing: Promise<unknown> = Promise.resolve();

  private async prebuild(): Promise<number> {
    const versions = (await this.deps.db.query<{ id: string; v: string }>(
      `SELECT id, xmin::text AS v FROM sessions WHERE status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED') AND snapshot IS NOT NULL`,
    )).rows;
    const live = new Set<string>();
    const stale: string[] = [];
    for (const r of versions) {
      if (this.handles.has(r.id)) continue; // hosted already (a leader): nothing to prepare
      live.add(r.id);
      if (this.prebuilt.get(r.id)?.version !== r.v) stale.push(r.id);
    }
    for (const id of this.prebuilt.keys()) if (!live.has(id)) this.prebuilt.delete(id);
    for (let i = 0; i < stale.length; i += PREBUILD_BATCH) {
      const rows = (await this.deps.db.query<{ id: string; access_key: string; snapshot: PersistedSession; v: string }>(
        `SELECT id, access_key, snapshot, xmin::text AS v FROM sessions
         WHERE id = ANY($1::uuid[]) AND status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED') AND snapshot IS NOT NULL`,
        [stale.slice(i, i + PREBUILD_BATCH)],
      )).rows;
      for (const r of rows) {
        this.prebuilt.set(r.id, {
          version: r.v, accessKey: r.access_key, persisted: persistedCounts(r.snapshot),
          actor: createActor(this.machine, { snapshot: r.snapshot, inspect: this.deps.graph?.inspect } as never),
        });
      }
    }
    return this.prebuilt.size;
  }

  async close(): Promise<void> {
    this.prebuilt.clear();
    this.releaseAll();
    await this.writer.close();
  }

  /** Stop hosting every actor (a manager standing down): their state is what PostgreSQL holds; the next leader restores it. */
  releaseAll(): void {
    for (const h of [...this.handles.values()]) this.release(h);
  }

  // ---- internals

  private restoreRow(row: SessionRow, kernels: KernelInput[]): void {
    if (row.snapshot) {
      // Restoring re-runs the effects that were in flight; each is idempotent by kernel id.
      this.host(row.id, row.access_key, createActor(this.machine, { snapshot: row.snapshot, inspect: this.deps.graph?.inspect } as never), persistedCounts(row.snapshot as PersistedSession));
    } else {
      // Crashed between the insert and the first transition: start it afresh from its rows.
      const input: SessionInput = {
        sessionId: row.id, name: row.name, accessKey: row.access_key, image: row.image, type: row.type as SessionInput['type'],
        clusterMode: row.cluster_mode as SessionInput['clusterMode'], resourceGroup: row.resource_group,
        requestedSlots: row.requested_slots, kernels,
      };
      this.host(row.id, row.access_key, createActor(this.machine, { input, inspect: this.deps.graph?.inspect }), { session: 1, kernels: Object.fromEntries(kernels.map((k) => [k.kernelId, 1])) });
    }
  }

  private async kernelInputs(sessionIds: string[]): Promise<Map<string, KernelInput[]>> {
    const out = new Map<string, KernelInput[]>();
    if (!sessionIds.length) return out;
    const rows = (await this.deps.db.query<{ id: string; session_id: string; cluster_role: 'main' | 'sub'; cluster_idx: number; cluster_hostname: string; image: string; requested_slots: Record<string, string>; access_key: string; environ: Record<string, string>; mounts: KernelMount[]; cluster_size: number; cluster_mode: 'single-node' | 'multi-node' }>(
      `SELECT k.id, k.session_id, k.cluster_role, k.cluster_idx, k.cluster_hostname, k.image, k.requested_slots, s.access_key, s.environ, s.mounts,
              s.cluster_size, s.cluster_mode
       FROM kernels k JOIN sessions s ON s.id = k.session_id WHERE k.session_id = ANY($1::uuid[]) ORDER BY k.cluster_role <> 'main', k.cluster_idx`,
      [sessionIds],
    )).rows;
    const hosts = new Map<string, string[]>();
    for (const r of rows) hosts.set(r.session_id, [...(hosts.get(r.session_id) ?? []), r.cluster_hostname]);
    for (const r of rows) {
      const list = out.get(r.session_id) ?? [];
      list.push({
        kernelId: r.id, sessionId: r.session_id, role: r.cluster_role, idx: r.cluster_idx, hostname: r.cluster_hostname, image: r.image,
        requestedSlots: r.requested_slots, deadlines: this.kernelDeadlines(), owner: r.access_key, environ: r.environ ?? {},
        mounts: Array.isArray(r.mounts) ? r.mounts.filter((m) => m && typeof m === 'object' && 'hostPath' in m) : [],
        ...(r.cluster_size > 1 ? { cluster: { size: r.cluster_size, mode: r.cluster_mode, hosts: hosts.get(r.session_id) ?? [] } } : {}),
      });
      out.set(r.session_id, list);
    }
    return out;
  }

  /** Deadlines given to kernels created from rows; set by the manager from the cluster config. */
  kernelDeadlines = () => ({ preparingMs: 15 * 60_000, creatingMs: 10 * 60_000, terminatingMs: 60_000 });

  private host(sessionId: string, accessKey: string, actor: SessionActor, persisted: Handle['persisted']): void {
    const h: Handle = { sessionId, accessKey, actor, persisted, deadlines: new Map(), restarts: this.handles.get(sessionId)?.restarts ?? 0, agents: new Set() };
    this.handles.set(sessionId, h);
    actor.subscribe({
      next: () => this.observe(h),
      error: (err) => this.onActorError(h, err),
    });
    actor.start();
    this.observe(h);
  }

  /** Persist what is new in the actor's history (session and kernels) and re-arm deadlines. */
  private observe(h: Handle): void {
    if (this.handles.get(h.sessionId) !== h) return;
    const snap = h.actor.getSnapshot();
    const ctx = snap.context;
    const log = this.deps.log;
    const newSession = ctx.history.slice(h.persisted.session);
    const kernels: KernelWrite[] = [];
    // The kernels' events first: a session's status sums up its kernels' (kernel_started, then
    // session_started, as Backend.AI sends them), so a client that stops at session_terminated
    // has seen its kernels end.
    const events: EventRow[] = [];
    const sessionEvents: EventRow[] = [];
    for (const e of newSession) {
      const name = lifecycleEventName('session', e.status as SessionStatus);
      if (name) sessionEvents.push({ sessionId: h.sessionId, sessionName: ctx.name, accessKey: h.accessKey, name, status: e.status, reason: e.info, at: e.at });
    }
    for (const [kernelId, ref] of Object.entries(snap.children)) {
      const k = (ref as { getSnapshot(): { context: KernelContext } }).getSnapshot().context;
      const fresh = k.history.slice(h.persisted.kernels[kernelId] ?? 0);
      this.armDeadline(h, k);
      if (k.agentId && !h.agents.has(k.agentId)) {
        h.agents.add(k.agentId);
        let set = this.byAgent.get(k.agentId);
        if (!set) this.byAgent.set(k.agentId, set = new Set());
        set.add(h.sessionId);
      }
      if (!fresh.length) continue;
      h.persisted.kernels[kernelId] = k.history.length;
      kernels.push({
        kernelId, status: fresh[fresh.length - 1].status, statusInfo: k.statusInfo, statusData: k.statusData, newHistory: fresh,
        agentId: k.agentId, containerId: k.containerId, exitCode: k.exitCode,
      });
      for (const e of fresh) {
        const name = lifecycleEventName('kernel', e.status as SessionStatus);
        if (name) events.push({ sessionId: h.sessionId, sessionName: ctx.name, kernelId, accessKey: h.accessKey, name, status: e.status, reason: e.info, at: e.at });
        // The session has no CREATING status of its own; its containers start being made when its main kernel's does.
        if (e.status === 'CREATING' && k.role === 'main') {
          sessionEvents.push({ sessionId: h.sessionId, sessionName: ctx.name, accessKey: h.accessKey, name: 'session_creating', status: 'PREPARING', reason: e.info, at: e.at });
        }
      }
    }
    // session_creating (pushed in the kernel loop) after session_preparing of the same step.
    sessionEvents.sort((a, b) => (a.name === 'session_creating' ? 1 : 0) - (b.name === 'session_creating' ? 1 : 0));
    events.push(...sessionEvents);
    const statusChanged = newSession.length > 0;
    // Never lowered: entries committed ahead of the actor (deliverPlacements) count before it records them.
    h.persisted.session = Math.max(h.persisted.session, ctx.history.length);
    const status = snap.value as SessionStatus;
    if (status === 'PENDING') this.pending.add(h.sessionId); else this.pending.delete(h.sessionId);
    // A context-only change (a pending reason and its details) is persisted too, without history or events.
    const infoChanged = ctx.statusInfo !== h.writtenInfo || ctx.statusData !== h.writtenData;
    h.writtenInfo = ctx.statusInfo;
    h.writtenData = ctx.statusData;
    if (!statusChanged && !kernels.length && !infoChanged) return;
    const write: SessionWrite = {
      sessionId: h.sessionId, status, statusInfo: ctx.statusInfo, statusData: ctx.statusData,
      newHistory: newSession, snapshot: () => h.actor.getPersistedSnapshot(), kernels, events,
    };
    const p = this.writer.write(write);
    h.lastWrite = p;
    if (isFinalSessionStatus(status)) {
      p.then(() => this.release(h), (err) => log.error({ sessionId: h.sessionId, err }, 'final transition not persisted'));
    }
    p.catch(() => undefined);
  }

  private armDeadline(h: Handle, k: KernelContext): void {
    const current = h.deadlines.get(k.kernelId);
    if (current && current.at === k.deadlineAt) return;
    if (current) clearTimeout(current.timer);
    h.deadlines.delete(k.kernelId);
    if (k.deadlineAt === undefined) return;
    const timer = setTimeout(() => {
      h.deadlines.delete(k.kernelId);
      h.actor.send({ type: 'KERNEL_DEADLINE', kernelId: k.kernelId, now: Date.now() });
    }, Math.max(0, k.deadlineAt - Date.now()));
    timer.unref();
    h.deadlines.set(k.kernelId, { at: k.deadlineAt, timer });
  }

  private release(h: Handle): void {
    for (const d of h.deadlines.values()) clearTimeout(d.timer);
    h.deadlines.clear();
    if (this.handles.get(h.sessionId) === h) {
      this.handles.delete(h.sessionId);
      this.pending.delete(h.sessionId);
      for (const a of h.agents) {
        const set = this.byAgent.get(a);
        set?.delete(h.sessionId);
        if (set?.size === 0) this.byAgent.delete(a);
      }
    }
    h.actor.stop();
    this.deps.graph?.ended(h.sessionId);
  }

  private onActorError(h: Handle, err: unknown): void {
    const log = this.deps.log.child({ sessionId: h.sessionId });
    log.error({ err }, 'session actor failed');
    this.release(h);
    void (async () => {
      if (h.restarts < MAX_ACTOR_RESTARTS) {
        const row = (await this.deps.db.query<SessionRow>(
          `SELECT id, name, access_key, image, type, cluster_mode, resource_group, requested_slots, snapshot FROM sessions WHERE id = $1`, [h.sessionId])).rows[0];
        if (!row) return;
        const kernels = await this.kernelInputs(row.snapshot ? [] : [row.id]);
        this.handles.set(h.sessionId, { ...h, restarts: h.restarts + 1 });
        this.restoreRow(row, kernels.get(row.id) ?? []);
        log.warn({ restarts: h.restarts + 1 }, 'session actor restored from its last durable snapshot');
      } else {
        await this.deps.db.query(
          `UPDATE sessions SET status = 'ERROR', status_info = 'supervisor-gave-up', status_changed = now(), terminated_at = now(),
             status_history = status_history || jsonb_build_array(jsonb_build_object('status', 'ERROR', 'at', now()))
           WHERE id = $1 AND status NOT IN ('TERMINATED', 'ERROR', 'CANCELLED')`, [h.sessionId]);
        log.error('session ended in ERROR after repeated actor failures');
      }
    })().catch((e) => log.error({ err: e }, 'restart policy failed'));
  }
}

/** A durable session snapshot, as far as the supervisor reads it. */
type PersistedSession = { context: { history: StatusChange[] }; children?: Record<string, { snapshot: { context: { history: StatusChange[] } } }> };

/** History entries a durable snapshot already holds (nothing in them is written again). */
function persistedCounts(snap: PersistedSession): Handle['persisted'] {
  return {
    session: snap.context.history.length,
    kernels: Object.fromEntries(Object.entries(snap.children ?? {}).map(([id, c]) => [id, c.snapshot.context.history.length])),
  };
}

interface SessionRow {
  id: string; name: string; access_key: string; image: string; type: string; cluster_mode: string;
  resource_group: string; requested_slots: Record<string, string>; snapshot: unknown;
}
