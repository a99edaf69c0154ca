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
