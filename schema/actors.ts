// The live actor graph as GET /admin/actors, socket.io /inspect and the SDK see it.

export type ActorKind = 'manager' | 'agent' | 'session' | 'kernel';

export interface ActorEventRecord { type: string; at: string }

export interface ActorNode {
  /** The session, kernel or agent id (the manager: `manager:<host>:<pid>`). */
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

/** A batch of changes: nodes added or changed, ids dropped. */
export interface ActorGraphDelta { upserts: ActorNode[]; removes: string[] }

/** What /inspect sends on connect. */
export interface ActorGraphSnapshot { managerId: string; nodes: ActorNode[] }

/** What GET /admin/actors, /inspect followers and `flotilla actors` filter the graph by. */
export interface ActorFilter { session?: string; agent?: string; state?: string; kind?: ActorKind }

/** Shortest id prefix a session filter takes (the tree shows 8 characters). */
const MIN_ID_PREFIX = 8;

/**
 * The nodes a filter keeps. `session` names a session by its id, an id prefix of at least 8
 * characters (as `flotilla actors` shows it) or its name, and keeps it with its kernels.
 *
 * @example
 * const running = filterActors(graph.nodes.values(), { kind: 'session', state: 'RUNNING' });
 */
export function filterActors(nodes: Iterable<ActorNode>, f: ActorFilter = {}): ActorNode[] {
  let out = [...nodes];
  if (f.session) {
    const ref = f.session;
    const sessions = new Set([ref]); // a kernel of a session that is not in `nodes` still matches its id
    for (const n of out) {
      if (n.kind === 'session' && (n.summary.name === ref || (ref.length >= MIN_ID_PREFIX && n.id.startsWith(ref)))) sessions.add(n.id);
    }
    out = out.filter((n) => sessions.has(n.id) || (n.kind === 'kernel' && n.parent !== null && sessions.has(n.parent)));
  }
  if (f.agent) out = out.filter((n) => n.id === f.agent || (n.kind === 'kernel' && n.agentId === f.agent));
  if (f.state) out = out.filter((n) => n.status === f.state || n.state === f.state);
  if (f.kind) out = out.filter((n) => n.kind === f.kind);
  return out;
}
