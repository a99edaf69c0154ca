// The agent statechart (Backend.AI's AgentStatus): ALIVE ⇄ LOST → TERMINATED. An agent is LOST
// when no heartbeat came for heartbeat.timeout, or sooner when its connection closed and it did
// not register again within agent.reconnect_timeout; a heartbeat revives it. The deadline is a
// timestamp in context; the runtime arms a timer and sends DEADLINE (XState does not persist
// `after` timers). Pure: no I/O.
import { assign, setup } from 'xstate';
import type { AgentStatus } from '../schema/status.ts';
import { appendHistory, type StatusChange } from './history.ts';

export interface AgentInput {
  agentId: string;
  resourceGroup: string;
  addr: string;
  availableSlots: Record<string, string>;
  images: string[];
  heartbeatTimeoutMs: number;
  /** Time until the first deadline when longer than heartbeatTimeoutMs (a restored agent has to find the new leader first); cleared by its first heartbeat. */
  firstDeadlineMs?: number;
}

export interface AgentContext extends AgentInput {
  lastHeartbeatAt: number;
  /** LOST when the clock passes this without a heartbeat. */
  deadlineAt: number;
  history: StatusChange[];
}

export type AgentEvent =
  | { type: 'HEARTBEAT'; now: number; availableSlots?: Record<string, string>; images?: string[]; addr?: string; resourceGroup?: string }
  | { type: 'DEADLINE'; now: number }
  /** Its connection closed: LOST unless it registers again within reconnectWithinMs (or its deadline comes first). */
  | { type: 'DISCONNECTED'; now: number; reconnectWithinMs: number }
  | { type: 'TIMEOUT_CHANGED'; heartbeatTimeoutMs: number }
  | { type: 'SHUTDOWN' };

export const AGENT_ACCEPTS: Record<AgentStatus, readonly AgentEvent['type'][]> = {
  ALIVE: ['HEARTBEAT', 'DEADLINE', 'DISCONNECTED', 'TIMEOUT_CHANGED', 'SHUTDOWN'],
  LOST: ['HEARTBEAT', 'TIMEOUT_CHANGED', 'SHUTDOWN'],
  RESTARTING: [],
  TERMINATED: [],
};

export const agentMachine = setup({
  types: {} as { context: AgentContext; events: AgentEvent; input: AgentInput },
  guards: {
    deadlinePassed: ({ context, event }) => event.type === 'DEADLINE' && event.now >= context.deadlineAt,
  },
  actions: {
    record: assign(({ context }, { status }: { status: AgentStatus }) => ({ history: appendHistory(context.history, status) })),
    heartbeat: assign(({ context, event }) => {
      if (event.type !== 'HEARTBEAT') return {};
      return {
        lastHeartbeatAt: event.now,
        deadlineAt: event.now + context.heartbeatTimeoutMs,
        firstDeadlineMs: undefined, // it found this manager
        availableSlots: event.availableSlots ?? context.availableSlots,
        images: event.images ?? context.images,
        addr: event.addr ?? context.addr,
        resourceGroup: event.resourceGroup ?? context.resourceGroup,
      };
    }),
    disconnected: assign(({ context, event }) => (event.type === 'DISCONNECTED'
      ? { deadlineAt: Math.min(context.deadlineAt, event.now + event.reconnectWithinMs) }
      : {})),
    retime: assign(({ context, event }) => (event.type === 'TIMEOUT_CHANGED'
      ? { heartbeatTimeoutMs: event.heartbeatTimeoutMs, deadlineAt: context.lastHeartbeatAt + Math.max(event.heartbeatTimeoutMs, context.firstDeadlineMs ?? 0) }
      : {})),
  },
}).createMachine({
  id: 'agent',
  context: ({ input }) => {
    const now = Date.now();
    return { ...input, lastHeartbeatAt: now, deadlineAt: now + Math.max(input.heartbeatTimeoutMs, input.firstDeadlineMs ?? 0), history: [] };
  },
  initial: 'ALIVE',
  states: {
    ALIVE: {
      entry: { type: 'record', params: { status: 'ALIVE' } },
      on: {
        HEARTBEAT: { actions: 'heartbeat' },
        DEADLINE: { guard: 'deadlinePassed', target: 'LOST' },
        DISCONNECTED: { actions: 'disconnected' },
        TIMEOUT_CHANGED: { actions: 'retime' },
        SHUTDOWN: 'TERMINATED',
      },
    },
    LOST: {
      entry: { type: 'record', params: { status: 'LOST' } },
      on: {
        HEARTBEAT: { target: 'ALIVE', actions: 'heartbeat' },
        TIMEOUT_CHANGED: { actions: 'retime' },
        SHUTDOWN: 'TERMINATED',
      },
    },
    TERMINATED: { type: 'final', entry: { type: 'record', params: { status: 'TERMINATED' } } },
  },
});
