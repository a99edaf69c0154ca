// The live actor graph: XState's `inspect` on every root actor (sessions with their kernel
// children, agents) feeds one in-memory graph of nodes — id, parent, machine, state, a context
// summary, the last events with their times, the deadline, and for kernels the agent they are
// placed on. Operators read it at GET /admin/actors, follow it on socket.io /inspect (a snapshot,
// then deltas), in `flotilla actors` and on /dashboard. The hook only keeps the latest snapshot
// and event names (O(1), nothing formatted); views are built when read, deltas go out in batches.
import { hostname } from 'node:os';
import type { InspectionEvent, Observer } from 'xstate';
import { filterActors, type ActorFilter, type ActorGraphDelta, type ActorKind, type ActorNode } from '../../schema/actors.ts';

export type { ActorKind, ActorEventRecord, ActorNode, ActorGraphDelta } from '../../schema/actors.ts';

/** How many events each node keeps. */
export const EVENTS_PER_NODE = 20;
/** How long an ended actor stays in the graph, so operators see how it ended. */
export const ENDED_KEEP_MS = 60_000;
const DELTA_MS = 100;

export interface ActorGraphOptions { managerId?: string; endedKeepMs?: number }

/** What the hook keeps per actor: raw and cheap; the ActorNode view is built when read. */
interface Held {
  id: string; kind: ActorKind; parent: string | null;
  snapshot?: Snap;
  startedAt: number; updatedAt: number; endedAt?: number;
  /** `iso` is formatted once, the first time the event is read. */
  events: Array<{ type: string; at: number; iso?: string }>;
}
type Snap = { value?: unknown; context?: Record<string, unknown>; status?: string; _nodes?: Array<{ ownEvents?: string[] }> };

export class ActorGraph {
  readonly managerId: string;
  private readonly nodes = new Map<string, Held>();
  /** XState's actor session ids (`x:12`) → our nodes. */
  private readonly refs = new Map<string, Held>();
  /** Session id → its kernels' node ids (ending a session must not scan every node). */
  private readonly kernelsOf = new Map<string, Set<string>>();
  private readonly dirty = new Set<string>();
  private readonly removed = new Set<string>();
  private readonly listeners = new Set<(d: ActorGraphDelta) => void>();
  private timer?: NodeJS.Timeout;
  private readonly endedKeepMs: number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(opts: ActorGraphOptions = {}) {
    this.managerId = opts.managerId ?? `manager:${hostname()}`;
    this.endedKeepMs = opts.endedKeepMs ?? ENDED_KEEP_MS;
    const now = Date.now();
    this.nodes.set(this.managerId, { id: this.managerId, kind: 'manager', parent: null, startedAt: now, updatedAt: now, events: [] });
    this.sweeper = setInterval(() => this.sweep(), Math.max(1000, Math.min(this.endedKeepMs, 10_000)));
    this.sweeper.unref();
  }

  /** The `inspect` option for createActor: O(1) per inspection event, nothing formatted here. */
  readonly inspect: Observer<InspectionEvent> = {
    next: (e) => {
      if (e.type === '@xstate.snapshot') this.onSnapshot(e.actorRef.sessionId, e.snapshot as Snap);
      else if (e.type === '@xstate.event') this.onEvent(e.actorRef.sessionId, e.event.type);
    },
  };

  list(filter: ActorFilter = {}): ActorNode[] {
    return filterActors([...this.nodes.values()].map((h) => this.view(h)), filter);
  }

  get(id: string): ActorNode | undefined {
    const h = this.nodes.get(id);
    return h && this.view(h);
  }

  /** Follow changes (batched every 100 ms); returns the unsubscribe function. */
  subscribe(cb: (d: ActorGraphDelta) => void): () => void {
    this.listeners.add(cb);
    return () => {
      this.listeners.delete(cb);
      if (!this.listeners.size) { this.dirty.clear(); this.removed.clear(); }
    };
  }

  /** A root actor stopped (released by its supervisor): mark its subtree ended. */
  ended(id: string): void {
    const at = Date.now();
    for (const nodeId of [id, ...this.kernelsOf.get(id) ?? []]) {
      const h = this.nodes.get(nodeId);
      if (h && !h.endedAt) { h.endedAt = at; this.touch(h.id); }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    clearTimeout(this.timer);
    this.listeners.clear();
  }

  // ---- internals

  private onEvent(ref: string, type: string): void {
    const h = this.refs.get(ref);
    if (!h || type.startsWith('xstate.')) return;
    h.events.push({ type, at: Date.now() });
    if (h.events.length > EVENTS_PER_NODE) h.events.shift();
    this.touch(h.id);
  }

  private onSnapshot(ref: string, snap: Snap): void {
    let h = this.refs.get(ref);
    if (!h) {
      const ctx = snap.context;
      if (!ctx || snap.value === undefined) return; // promise actors (effects) are not nodes
      const ident = identify(ctx);
      if (!ident) return;
      h = this.nodes.get(ident.id);
      if (!h) {
        const now = Date.now();
        h = { id: ident.id, kind: ident.kind, parent: ident.kind === 'kernel' ? String(ctx.sessionId) : this.managerId, startedAt: now, updatedAt: now, events: [] };
        this.nodes.set(ident.id, h);
        if (ident.kind === 'kernel') {
          let set = this.kernelsOf.get(h.parent!);
          if (!set) this.kernelsOf.set(h.parent!, set = new Set());
          set.add(h.id);
        }
      }
      this.refs.set(ref, h);
    }
    h.snapshot = snap;
    h.updatedAt = Date.now();
    if (snap.status === 'done' || snap.status === 'error' || snap.status === 'stopped') h.endedAt ??= h.updatedAt;
    this.touch(h.id);
  }

  /** The node as readers see it, formatted from the latest snapshot. */
  private view(h: Held): ActorNode {
    const snap = h.snapshot;
    const ctx = snap?.context ?? {};
    const state = h.kind === 'manager' ? 'running' : stateString(snap?.value);
    return {
      id: h.id, kind: h.kind, parent: h.parent, machine: h.kind, state, status: h.kind === 'manager' ? 'RUNNING' : state.split('.')[0],
      summary: h.kind === 'manager' ? { pid: process.pid } : summarize(h.kind, ctx),
      agentId: h.kind === 'kernel' && typeof ctx.agentId === 'string' ? ctx.agentId : undefined,
      deadlineAt: typeof ctx.deadlineAt === 'number' ? ctx.deadlineAt : undefined,
      startedAt: new Date(h.startedAt).toISOString(), updatedAt: new Date(h.updatedAt).toISOString(),
      events: h.events.map((e) => ({ type: e.type, at: (e.iso ??= new Date(e.at).toISOString()) })),
      accepts: this.accepts(h.kind, state, snap),
      ...(h.endedAt ? { endedAt: new Date(h.endedAt).toISOString() } : {}),
    };
  }

  /** The events a state accepts depend only on the machine and the state: computed once each. */
  private readonly acceptsByState = new Map<string, string[]>();
  private accepts(kind: ActorKind, state: string, snap: Snap | undefined): string[] {
    const key = `${kind}:${state}`;
    let a = this.acceptsByState.get(key);
    if (!a) {
      a = [...new Set((snap?._nodes ?? []).flatMap((n) => n.ownEvents ?? []))].filter((t) => !t.startsWith('xstate.') && t !== '*');
      if (snap) this.acceptsByState.set(key, a);
    }
    return a;
  }

  private touch(id: string): void {
    // Deltas are only for subscribers, and a new one starts from the whole graph (list()).
    if (!this.listeners.size) return;
    this.dirty.add(id);
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), DELTA_MS);
      this.timer.unref();
    }
  }

  private flush(): void {
    this.timer = undefined;
    const upserts = [...this.dirty].map((id) => this.nodes.get(id)).filter((h): h is Held => !!h).map((h) => this.view(h));
    const removes = [...this.removed];
    this.dirty.clear();
    this.removed.clear();
    if (!upserts.length && !removes.length) return;
    for (const cb of this.listeners) cb({ upserts, removes });
  }

  private sweep(): void {
    const before = Date.now() - this.endedKeepMs;
    for (const [id, h] of this.nodes) {
      if (h.endedAt && h.endedAt < before) {
        this.nodes.delete(id);
        if (h.kind === 'kernel') {
          const set = this.kernelsOf.get(h.parent!);
          set?.delete(id);
          if (set?.size === 0) this.kernelsOf.delete(h.parent!);
        }
        this.dirty.delete(id);
        if (this.listeners.size) this.removed.add(id);
      }
    }
    for (const [ref, h] of this.refs) if (!this.nodes.has(h.id)) this.refs.delete(ref);
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
