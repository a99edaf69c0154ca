// Agents as the manager sees them: the socket.io /agent gateway (token auth, registration,
// heartbeats, kernel events), one agent actor per agent (ALIVE ⇄ LOST → TERMINATED) with its
// deadline re-armed from the heartbeat timestamps, liveness keys in Redis, and RPCs with
// acknowledgements and timeouts.
import { EventEmitter } from 'node:events';
import type { Namespace, Socket } from 'socket.io';
import { createActor, type Actor } from 'xstate';
import type { ActorGraph } from './actor-graph.ts';
import { agentMachine, type AgentInput } from '../../actors/agent.ts';
import {
  checkHeartbeat, checkKernelExited, checkRegister, type AgentRpcName, type AgentRpcs, type ContainerReport,
  type HeartbeatPayload, type KernelExitedPayload, type RegisterPayload, type RpcReply,
} from '../../schema/agent-rpc.ts';
import { timingSafeEqual } from 'node:crypto';
import type { AgentStatus } from '../../schema/status.ts';
import type { Logger } from '../log.ts';
import { GroupCommit } from './group-commit.ts';
import type { Database, LivenessStore } from '../stores/types.ts';

export const agentLivenessKey = (agentId: string) => `flotilla:agent:${agentId}`;

interface AgentEntry {
  actor: Actor<typeof agentMachine>;
  socket?: Socket;
  deadline?: NodeJS.Timeout;
  status: AgentStatus;
  /** When the status began, on this manager's clock (for a restored agent: as its row says). */
  statusSince: number;
  occupied: Record<string, string>;
}

export interface AgentView {
  agentId: string; status: AgentStatus; resourceGroup: string; addr: string; connected: boolean;
  availableSlots: Record<string, string>; occupiedSlots: Record<string, string>; images: string[]; lastHeartbeatAt: number;
}

export interface AgentRegistryEvents {
  registered: [agentId: string, containers: ContainerReport[]];
  status: [agentId: string, status: AgentStatus];
  kernelExited: [payload: KernelExitedPayload];
  heartbeat: [agentId: string];
}

export class RpcError extends Error {
  constructor(message: string, readonly code?: string) { super(message); }
}

/**
 * An RPC until it is answered within `ms`: an agent that disconnected before answering (it
 * restarted, say) is asked again once it is back. Only for requests that are safe to repeat:
 * the kernel effects (idempotent by kernel id) and `continue` polls.
 */
export async function untilAnswered<T>(ms: number, call: (remainingMs: number) => Promise<T>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await call(Math.max(1, end - Date.now()));
    } catch (e) {
      if (!(e instanceof RpcError && e.code === 'disconnected') || Date.now() >= end) throw e;
    }
  }
}

/** An agent's registration waiting to be written (or, at a standby, parked until it leads). */
interface Registration {
  payload: RegisterPayload;
  socket: Socket;
  ack: (r: RpcReply<{ heartbeatIntervalMs: number }>) => void;
  /** When a standby parked it (Date.now()). */
  at?: number;
}

export class AgentRegistry extends EventEmitter<AgentRegistryEvents> {
  private readonly agents = new Map<string, AgentEntry>();
  /** Registrations are taken only while this manager leads; before, they are parked (by socket). */
  private accepting = false;
  private readonly parked = new Map<Socket, Registration>();
  /** Registrations that arrive while one is being written go together in the next (after a takeover every agent registers at once). */
  private readonly registrations = new GroupCommit<Registration, void>((batch) => this.register(batch).then(() => []), Infinity);

  constructor(private readonly deps: {
    db: Database; liveness: LivenessStore; log: Logger; graph?: ActorGraph;
    token: () => string; heartbeatIntervalMs: () => number; heartbeatTimeoutMs: () => number; reconnectTimeoutMs: () => number; rpcTimeoutMs: () => number;
  }) {
    super();
    this.setMaxListeners(0); // every RPC waiting for its agent listens for 'registered'
  }

  /** Serve the /agent namespace. */
  attach(nsp: Namespace): void {
    nsp.use((socket, next) => {
      const auth = socket.handshake.auth as { token?: unknown; agentId?: unknown };
      const token = this.deps.token();
      const given = typeof auth.token === 'string' ? Buffer.from(auth.token) : Buffer.alloc(0);
      if (!token || given.length !== Buffer.byteLength(token) || !timingSafeEqual(given, Buffer.from(token))) {
        next(new Error('agent authentication failed'));
        return;
      }
      if (typeof auth.agentId !== 'string' || !/^[A-Za-z0-9_.:-]{1,128}$/.test(auth.agentId)) {
        next(new Error('invalid agent id'));
        return;
      }
      next();
    });
    nsp.on('connection', (socket) => this.onConnection(socket));
  }

  list(): AgentView[] { return [...this.agents.keys()].map((id) => this.get(id)!); }

  /** Whether any known agent has the image (asked per create: no view of every agent built). */
  hasImage(image: string): boolean {
    for (const e of this.agents.values()) if (e.actor.getSnapshot().context.images.includes(image)) return true;
    return false;
  }

  /** The declared slots of each ALIVE agent of a resource group. */
  aliveSlots(resourceGroup: string): Array<Record<string, string>> {
    const out: Array<Record<string, string>> = [];
    for (const e of this.agents.values()) {
      const c = e.actor.getSnapshot().context;
      if (e.status === 'ALIVE' && c.resourceGroup === resourceGroup) out.push(c.availableSlots);
    }
    return out;
  }

  get(agentId: string): AgentView | undefined {
    const e = this.agents.get(agentId);
    if (!e) return undefined;
    const c = e.actor.getSnapshot().context;
    return {
      agentId, status: e.status, resourceGroup: c.resourceGroup, addr: c.addr, connected: !!e.socket?.connected,
      availableSlots: c.availableSlots, occupiedSlots: e.occupied, images: c.images, lastHeartbeatAt: c.lastHeartbeatAt,
    };
  }

  /**
   * Resolves once the agent is connected and registered, waiting up to ms for it (after a
   * manager restart, restored effects run before the agents have dialled back in).
   */
  async connected(agentId: string, ms: number): Promise<Socket> {
    const now = this.agents.get(agentId)?.socket;
    if (now?.connected) return now;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.off('registered', onReg); reject(new RpcError(`agent ${agentId} is not connected`)); }, ms);
      const onReg = (id: string) => {
        const socket = this.agents.get(id)?.socket;
        if (id !== agentId || !socket?.connected) return;
        clearTimeout(timer);
        this.off('registered', onReg);
        resolve(socket);
      };
      this.on('registered', onReg);
    });
  }

  /** Call an agent RPC; rejects with RpcError on timeout, disconnection or the agent's error. */
  async call<N extends AgentRpcName>(agentId: string, name: N, req: AgentRpcs[N]['req'], timeoutMs = this.deps.rpcTimeoutMs()): Promise<AgentRpcs[N]['res']> {
    const started = Date.now();
    const socket = await this.connected(agentId, timeoutMs);
    let reply: RpcReply<AgentRpcs[N]['res']>;
    // socket.io never answers an ack across a disconnection: fail then, not at the timeout.
    let onGone!: () => void;
    const gone = new Promise<never>((_, reject) => {
      onGone = () => reject(new RpcError(`agent ${agentId} disconnected before answering ${name}`, 'disconnected'));
      socket.once('disconnect', onGone);
    });
    try {
      reply = await Promise.race([socket.timeout(Math.max(1, timeoutMs - (Date.now() - started))).emitWithAck(name, req), gone]);
    } catch (e) {
      if (e instanceof RpcError) throw e;
      throw new RpcError(`agent ${agentId} did not answer ${name} within ${timeoutMs} ms`);
    } finally {
      socket.off('disconnect', onGone);
    }
    if (!reply || typeof reply !== 'object') throw new RpcError(`agent ${agentId} sent a malformed ${name} reply`);
    if (!reply.ok) throw new RpcError(reply.error?.message ?? `${name} failed on agent ${agentId}`, reply.error?.code);
    return reply.result;
  }

  /**
   * Restore agents from PostgreSQL at start: every non-terminated one begins as it was (a LOST one
   * LOST since its row says), its deadline counted from now.
   */
  async restore(): Promise<void> {
    // The status's age by the database's clock, so another host's clock does not move it.
    const rows = (await this.deps.db.query<{ id: string; status: AgentStatus; resource_group: string; addr: string; available_slots: Record<string, string>; images: string[]; status_age_ms: number }>(
      `SELECT id, status, resource_group, addr, available_slots, images, (extract(epoch FROM now() - status_changed) * 1000)::float8 AS status_age_ms
         FROM agents WHERE status <> 'TERMINATED'`,
    )).rows;
    for (const r of rows) {
      if (this.agents.has(r.id)) continue;
      // Its agents have to notice the old leader is gone and dial this one: twice the timeout.
      const timeout = this.deps.heartbeatTimeoutMs();
      const since = Date.now() - Math.max(0, r.status_age_ms);
      this.host(r.id, { agentId: r.id, resourceGroup: r.resource_group, addr: r.addr, availableSlots: r.available_slots, images: r.images, heartbeatTimeoutMs: timeout, firstDeadlineMs: 2 * timeout }, r.status, since);
    }
  }

  /** When the agent's current status began (ms since the epoch, this manager's clock). */
  statusSince(agentId: string): number | undefined { return this.agents.get(agentId)?.statusSince; }

  /** A changed heartbeat.timeout applies to every agent at once. */
  retime(): void {
    for (const e of this.agents.values()) e.actor.send({ type: 'TIMEOUT_CHANGED', heartbeatTimeoutMs: this.deps.heartbeatTimeoutMs() });
    for (const e of this.agents.values()) e.socket?.emit('heartbeatInterval', this.deps.heartbeatIntervalMs());
  }

  /** Registrations parked at this manager while it was a standby (agents whose leader had died). */
  get parkedCount(): number { return this.parked.size; }

  /**
   * Take registrations from now on, and the parked ones at once: in one statement, so a new
   * leader has its cluster's agents back without their redials and handshakes after the win.
   */
  async accept(): Promise<void> {
    this.accepting = true;
    const parked = [...this.parked.values()];
    this.parked.clear();
    await Promise.all(parked.map((r) => this.registrations.run(r)));
  }

  /**
   * A standby sends its parked agents away: to the live leader it found elsewhere, or (no URL)
   * to dial their next address, those parked longer than olderThanMs.
   */
  release(leaderUrl?: string, olderThanMs = 0): void {
    for (const [socket, p] of this.parked) {
      if (Date.now() - (p.at ?? 0) < olderThanMs) continue;
      if (leaderUrl) socket.emit('leader', leaderUrl);
      socket.disconnect(true);
      this.parked.delete(socket);
    }
  }

  async close(): Promise<void> {
    this.accepting = false;
    for (const p of this.parked.values()) p.socket.disconnect(true);
    this.parked.clear();
    for (const e of this.agents.values()) { clearTimeout(e.deadline); e.actor.stop(); e.socket?.disconnect(true); }
    this.agents.clear();
  }

  // ---- internals

  private host(agentId: string, input: AgentInput, status?: AgentStatus, since = Date.now()): AgentEntry {
    const actor = createActor(agentMachine, { input, inspect: this.deps.graph?.inspect });
    const entry: AgentEntry = { actor, status: 'ALIVE', statusSince: since, occupied: {} };
    this.agents.set(agentId, entry);
    let restoring = true;
    actor.subscribe({
      next: (snap) => {
        const next = snap.value as AgentStatus;
        this.arm(agentId, entry);
        if (next === entry.status) return;
        entry.status = next;
        // A restored LOST agent enters LOST again here: its row says so already, since when it says.
        const restored = restoring && next === status;
        if (!restored) {
          entry.statusSince = Date.now();
          void this.persist(agentId, next).catch((err) => this.deps.log.error({ agentId, err }, 'agent status not persisted'));
        }
        this.deps.log.warn({ agentId, status: next }, `agent is ${next}`);
        this.emit('status', agentId, next);
      },
      error: (err) => this.deps.log.error({ agentId, err }, 'agent actor failed'),
    });
    actor.start();
    // A restored LOST agent stays LOST until it heartbeats again.
    if (status === 'LOST') actor.send({ type: 'DEADLINE', now: Number.MAX_SAFE_INTEGER });
    restoring = false;
    this.arm(agentId, entry);
    return entry;
  }

  /** Re-arm the LOST deadline from the heartbeat timestamp in context. */
  private arm(agentId: string, e: AgentEntry): void {
    clearTimeout(e.deadline);
    const snap = e.actor.getSnapshot();
    if (snap.value !== 'ALIVE') return;
    e.deadline = setTimeout(() => e.actor.send({ type: 'DEADLINE', now: Date.now() }), Math.max(0, snap.context.deadlineAt - Date.now()) + 5);
    e.deadline.unref();
  }

  private async persist(agentId: string, status: AgentStatus): Promise<void> {
    const e = this.agents.get(agentId);
    if (!e) return;
    const c = e.actor.getSnapshot().context;
    await this.deps.db.query(
      `UPDATE agents SET status = $2, status_changed = CASE WHEN status <> $2 THEN now() ELSE status_changed END, available_slots = $3, images = $4, last_heartbeat = to_timestamp($5 / 1000.0), snapshot = $6 WHERE id = $1`,
      [agentId, status, JSON.stringify(c.availableSlots), JSON.stringify(c.images), c.lastHeartbeatAt, JSON.stringify(e.actor.getPersistedSnapshot())],
    );
  }

  private onConnection(socket: Socket): void {
    const agentId = (socket.handshake.auth as { agentId: string }).agentId;
    const log = this.deps.log.child({ agentId });
    socket.on('register', (payload: unknown, ack?: (r: RpcReply<{ heartbeatIntervalMs: number }>) => void) => {
      if (typeof ack !== 'function') return;
      if (!checkRegister.Check(payload) || payload.agentId !== agentId) {
        ack({ ok: false, error: { message: 'invalid register payload' } });
        return;
      }
      if (!this.accepting) {
        // A standby holds it: the agent's leader is gone and this manager may be the next one.
        this.parked.set(socket, { payload, socket, ack, at: Date.now() });
        log.info('agent registration parked until this manager leads');
        return;
      }
      this.registrations.run({ payload, socket, ack }).catch((err: Error) => log.error({ err }, 'agent registration failed'));
    });
    socket.on('heartbeat', (payload: unknown) => {
      if (!checkHeartbeat.Check(payload)) { log.warn('invalid heartbeat ignored'); return; }
      this.heartbeat(agentId, socket, payload);
    });
    socket.on('kernelExited', (payload: unknown) => {
      if (!checkKernelExited.Check(payload)) { log.warn('invalid kernelExited ignored'); return; }
      this.emit('kernelExited', payload);
    });
    socket.on('disconnect', (reason) => {
      this.parked.delete(socket);
      const e = this.agents.get(agentId);
      if (e?.socket === socket) {
        e.socket = undefined;
        // A crashed agent process closes its connection at once; a silent one is left to the
        // heartbeat timeout. (Not while this manager stands down and drops every agent itself.)
        if (this.accepting) e.actor.send({ type: 'DISCONNECTED', now: Date.now(), reconnectWithinMs: this.deps.reconnectTimeoutMs() });
      }
      log.info({ reason }, 'agent disconnected');
    });
  }

  /**
   * Register agents: one statement and one commit for all of them (after a takeover every agent
   * of the cluster registers at once), then each one's actor, liveness and acknowledgement.
   */
  private async register(batch: Registration[]): Promise<void> {
    // One row per agent: of two registrations of one agent, the later socket wins.
    const latest = new Map<string, Registration>();
    for (const r of batch) {
      const before = latest.get(r.payload.agentId);
      if (before && before.socket !== r.socket) before.socket.disconnect(true);
      latest.set(r.payload.agentId, r);
    }
    const regs = [...latest.values()].filter((r) => r.socket.connected);
    if (!regs.length) return;
    const column = (f: (p: RegisterPayload) => string) => regs.map((r) => f(r.payload));
    try {
      await this.deps.db.query(
        `WITH g AS (INSERT INTO resource_groups (name) SELECT DISTINCT unnest($2::text[]) ON CONFLICT (name) DO NOTHING)
         INSERT INTO agents (id, status, resource_group, addr, available_slots, images, version, last_heartbeat)
         SELECT id, 'ALIVE', rg, addr, slots::jsonb, images::jsonb, version, now()
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(id, rg, addr, slots, images, version)
         ON CONFLICT (id) DO UPDATE SET status = 'ALIVE', status_changed = CASE WHEN agents.status <> 'ALIVE' THEN now() ELSE agents.status_changed END,
           resource_group = excluded.resource_group, addr = excluded.addr, available_slots = excluded.available_slots,
           images = excluded.images, version = excluded.version, last_heartbeat = now()`,
        [column((p) => p.agentId), column((p) => p.resourceGroup), column((p) => p.addr), column((p) => JSON.stringify(p.availableSlots)),
          column((p) => JSON.stringify(p.images)), column((p) => p.version)],
      );
    } catch (err) {
      this.deps.log.error({ err, agents: regs.length }, 'agent registration failed');
      for (const r of regs) r.ack({ ok: false, error: { message: (err as Error).message } });
      return;
    }
    for (const { payload: p, socket, ack, at } of regs) {
      let e = this.agents.get(p.agentId);
      if (!e || e.actor.getSnapshot().status === 'done') {
        e = this.host(p.agentId, { agentId: p.agentId, resourceGroup: p.resourceGroup, addr: p.addr, availableSlots: p.availableSlots, images: p.images, heartbeatTimeoutMs: this.deps.heartbeatTimeoutMs() });
      }
      if (e.socket && e.socket !== socket) e.socket.disconnect(true);
      e.socket = socket;
      e.actor.send({ type: 'HEARTBEAT', now: Date.now(), availableSlots: p.availableSlots, images: p.images, addr: p.addr, resourceGroup: p.resourceGroup });
      this.deps.liveness.setAlive(agentLivenessKey(p.agentId), this.deps.heartbeatTimeoutMs()).catch(() => undefined);
      ack({ ok: true, result: { heartbeatIntervalMs: this.deps.heartbeatIntervalMs() } });
      this.deps.log.info({ agentId: p.agentId, images: p.images.length, containers: p.containers.length }, 'agent registered');
      if (at === undefined) { this.emit('registered', p.agentId, p.containers); continue; }
      // Parked: its report is as old as the parking, and the kernel exits it sent meanwhile went
      // nowhere; reconcile with the containers as they are now.
      this.call(p.agentId, 'listContainers', {}).then(
        (containers) => this.emit('registered', p.agentId, containers),
        (err: Error) => {
          this.deps.log.warn({ agentId: p.agentId, err: err.message }, 'parked agent did not list its containers again: dropped, to register afresh');
          socket.disconnect(true);
        },
      );
    }
  }

  private heartbeat(agentId: string, socket: Socket, p: HeartbeatPayload): void {
    const e = this.agents.get(agentId);
    if (!e || e.socket !== socket) return;
    e.occupied = p.occupiedSlots;
    const before = e.actor.getSnapshot().context;
    const imagesChanged = !sameList(before.images, p.images);
    const slotsChanged = !sameSlots(before.availableSlots, p.availableSlots);
    const changed = imagesChanged || slotsChanged;
    // Unchanged lists keep the context's own arrays (what caches by them, the scheduler's image sets, stays valid).
    e.actor.send({
      type: 'HEARTBEAT', now: Date.now(), resourceGroup: p.resourceGroup,
      ...(slotsChanged ? { availableSlots: p.availableSlots } : {}), ...(imagesChanged ? { images: p.images } : {}),
    });
    // Liveness in Redis is a cache for other managers and /health; a Redis blink loses nothing.
    this.deps.liveness.setAlive(agentLivenessKey(agentId), this.deps.heartbeatTimeoutMs()).catch(() => undefined);
    if (changed) void this.persist(agentId, e.status).catch(() => undefined);
    this.emit('heartbeat', agentId);
  }
}

// A heartbeat's lists compared without serialising them (1,000 agents heartbeat every second).
const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((v, i) => v === b[i]);
function sameSlots(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const k of keys) if (a[k] !== b[k]) return false;
  return true;
}
