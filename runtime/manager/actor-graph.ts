// The live actor graph: XState's `inspect` on every root actor (sessions with their kernel
// children, agents) feeds one in-memory graph of nodes — id, parent, machine, state, a context
// summary, the last events with their times, the deadline, and for kernels the agent they are
// placed on. Operators read it at GET /admin/actors, follow it on socket.io /inspect (a snapshot,
// then deltas), in `flotilla actors` and on /dashboard. The hook does O(1) work per inspection
// event; deltas go out in batches.
import { hostname } from 'node:os';
import type { AnyActorRef, InspectionEvent, Observer } from 'xstate';

export type ActorKind = 'manager' | 'agent' | 'session' | 'kernel';

export interface ActorEventRecord { type: string; at: string }

export interface ActorNode {
  /** The session, kernel or agent id (the manager: `manager:<host>`). */
  id: string;
  kind: ActorKind;
  /** The supervising node: the manager for sessions and agents, the session for kernels. */
  parent: string | null;
  machine: string;
  /** The state value as a dotted path (`TERMINATING.destroying`). */
  state: string;
  /** The Backend.AI status (the top-level state). */
  status: string;
  /** A few context fields that tell the node apart (name, owner, image, agent, slots). */
  summary: Record<string, unknown>;
  /** Kernels: the agent they are placed on (a placement edge). */
  agentId?: string;
  /** Epoch ms at which a deadline fires, if one is armed. */
  deadlineAt?: number;
  startedAt: string;
  updatedAt: string;
  /** The last events the actor received, oldest first. */
  events: ActorEventRecord[];
  /** The event types its current state accepts (chart as API). */
  accepts: string[];
  /** Set once the actor reached a final state or stopped; the node is dropped a while later. */
  endedAt?: string;
}

export interface ActorGraphDelta { upserts: ActorNode[]; removes: string[] }

/** How many events each node keeps. */
export const EVENTS_PER_NODE = 20;
/** How long an ended actor stays in the graph, so operators see how it ended. */
export const ENDED_KEEP_MS = 60_000;
const DELTA_MS = 100;

export interface ActorGraphOptions { managerId?: string; endedKeepMs?: number }

export class ActorGraph {
  readonly managerId: string;
  private readonly nodes = new Map<string, ActorNode>();
  /** XState's actor session ids (`x:12`) → our node ids. */
  private readonly refs = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private readonly removed = new Set<string>();
  private readonly listeners = new Set<(d: ActorGraphDelta) => void>();
  private timer?: NodeJS.Timeout;
  private readonly endedKeepMs: number;
  private readonly sweeper: NodeJS.Timeout;
  enabled = true;

  constructor(opts: ActorGraphOptions = {}) {
    this.managerId = opts.managerId ?? `manager:${hostname()}`;
    this.endedKeepMs = opts.endedKeepMs ?? ENDED_KEEP_MS;
    const now = new Date().toISOString();
    this.nodes.set(this.managerId, {
      id: this.managerId, kind: 'manager', parent: null, machine: 'manager', state: 'running', status: 'RUNNING',
      summary: { pid: process.pid }, startedAt: now, updatedAt: now, events: [], accepts: [],
    });
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(this.endedKeepMs, 10_000)));
    this.sweeper.unref();
  }

  /** The `inspect` option for createActor. */
  readonly inspect: Observer<InspectionEvent> = {
    next: (e) => { if (this.enabled) this.onInspection(e); },
  };

  list(filter: { session?: string; agent?: string; state?: string; kind?: ActorKind } = {}): ActorNode[] {
    let out = [...this.nodes.values()];
    if (filter.session) out = out.filter((n) => n.id === filter.session || (n.kind === 'kernel' && n.parent === filter.session));
    if (filter.agent) out = out.filter((n) => n.id === filter.agent || (n.kind === 'kernel' && n.agentId === filter.agent));
    if (filter.state) out = out.filter((n) => n.status === filter.state || n.state === filter.state);
    if (filter.kind) out = out.filter((n) => n.kind === filter.kind);
    return out;
  }

  get(id: string): ActorNode | undefined { return this.nodes.get(id); }

  /** Follow changes (batched every 100 ms); returns the unsubscribe function. */
  subscribe(cb: (d: ActorGraphDelta) => void): () => void {
    this.listeners.add(cb);
    return () => { this.listeners.delete(cb); };
  }

  /** A root actor stopped (released by its supervisor): mark its subtree ended. */
  ended(id: string): void {
    const at = new Date().toISOString();
    for (const n of this.nodes.values()) {
      if ((n.id === id || n.parent === id) && !n.endedAt) { n.endedAt = at; this.touch(n.id); }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    clearTimeout(this.timer);
    this.listeners.clear();
  }

  // ---- internals

  private onInspection(e: InspectionEvent): void {
    if (e.type === '@xstate.event') {
      const id = this.refs.get(e.actorRef.sessionId);
      const n = id && this.nodes.get(id);
      if (!n || e.event.type.startsWith('xstate.')) return;
      n.events.push({ type: e.event.type, at: new Date().toISOString() });
      if (n.events.length > EVENTS_PER_NODE) n.events.shift();
      this.touch(n.id);
      return;
    }
    if (e.type !== '@xstate.snapshot') return;
    const ref = e.actorRef as AnyActorRef;
    const snap = e.snapshot as { value?: unknown; context?: Record<string, unknown>; status?: string; _nodes?: Array<{ ownEvents?: string[] }> };
    const ctx = snap.context;
    if (!ctx || snap.value === undefined) return; // promise actors (effects) are not nodes
    const ident = identify(ctx);
    if (!ident) return;
    this.refs.set(ref.sessionId, ident.id);
    const now = new Date().toISOString();
    let n = this.nodes.get(ident.id);
    if (!n) {
      n = {
        id: ident.id, kind: ident.kind, parent: ident.kind === 'kernel' ? String(ctx.sessionId) : this.managerId,
        machine: ident.kind, state: '', status: '', summary: {}, startedAt: now, updatedAt: now, events: [], accepts: [],
      };
      this.nodes.set(ident.id, n);
    }
    n.state = stateString(snap.value);
    n.status = n.state.split('.')[0];
    n.updatedAt = now;
    n.summary = summarize(ident.kind, ctx);
    n.agentId = ident.kind === 'kernel' && typeof ctx.agentId === 'string' ? ctx.agentId : undefined;
    n.deadlineAt = typeof ctx.deadlineAt === 'number' ? ctx.deadlineAt : undefined;
    n.accepts = [...new Set((snap._nodes ?? []).flatMap((s) => s.ownEvents ?? []))].filter((t) => !t.startsWith('xstate.') && t !== '*');
    if (snap.status === 'done' || snap.status === 'error' || snap.status === 'stopped') n.endedAt ??= now;
    this.touch(n.id);
  }

  private touch(id: string): void {
    this.dirty.add(id);
    if (!this.timer && this.listeners.size) {
      this.timer = setTimeout(() => this.flush(), DELTA_MS);
      this.timer.unref();
    }
  }

  private flush(): void {
    this.timer = undefined;
    const upserts = [...this.dirty].map((id) => this.nodes.get(id)).filter((n): n is ActorNode => !!n).map((n) => ({ ...n, events: [...n.events] }));
    const removes = [...this.removed];
    this.dirty.clear();
    this.removed.clear();
    if (!upserts.length && !removes.length) return;
    for (const cb of this.listeners) cb({ upserts, removes });
  }

  private sweep(): void {
    const before = Date.now() - this.endedKeepMs;
    for (const [id, n] of this.nodes) {
      if (n.endedAt && Date.parse(n.endedAt) < before) {
        this.nodes.delete(id);
        this.dirty.delete(id);
        this.removed.add(id);
      }
    }
    for (const [ref, id] of this.refs) if (!this.nodes.has(id)) this.refs.delete(ref);
    if (this.removed.size && this.listeners.size && !this.timer) { this.timer = setTimeout(() => this.flush(), DELTA_MS); this.timer.unref(); }
  }
}

function identify(ctx: Record<string, unknown>): { id: string; kind: ActorKind } | undefined {
  if (typeof ctx.kernelId === 'string') return { id: ctx.kernelId, kind: 'kernel' };
  if (typeof ctx.sessionId === 'string' && 'kernelViews' in ctx) return { id: ctx.sessionId, kind: 'session' };
  if (typeof ctx.agentId === 'string' && 'heartbeatTimeoutMs' in ctx) return { id: ctx.agentId, kind: 'agent' };
  return undefined;
}

function stateString(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    const [k, sub] = Object.entries(v)[0] ?? [];
    return k === undefined ? '' : sub === undefined || (typeof sub === 'object' && !Object.keys(sub as object).length) ? k : `${k}.${stateString(sub)}`;
  }
  return String(v);
}

function summarize(kind: ActorKind, c: Record<string, unknown>): Record<string, unknown> {
  switch (kind) {
    case 'session': return { name: c.name, owner: c.accessKey, image: c.image, resourceGroup: c.resourceGroup, statusInfo: c.statusInfo ?? null };
    case 'kernel': return { hostname: c.hostname, role: c.role, image: c.image, requestedSlots: c.requestedSlots, containerId: c.containerId ?? null, statusInfo: c.statusInfo ?? null };
    case 'agent': return { resourceGroup: c.resourceGroup, addr: c.addr, availableSlots: c.availableSlots, lastHeartbeatAt: c.lastHeartbeatAt };
    default: return {};
  }
}
