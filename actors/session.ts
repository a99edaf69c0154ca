// The session statechart (Backend.AI's SessionStatus). A session owns its kernels as spawned
// child actors; its own status is derived from theirs (deriveSessionStatus) plus what was asked
// of it (terminate, cancel), and moves only along SESSION_TRANSITIONS. Pure: no I/O.
import { assign, enqueueActions, setup, type SnapshotFrom } from 'xstate';
import { SESSION_STATUSES, isFinalKernelStatus, type KernelStatus, type SessionStatus } from '../schema/status.ts';
import { appendHistory, type StatusChange } from './history.ts';
import { kernelMachine, type KernelInput } from './kernel.ts';

export interface SessionInput {
  sessionId: string;
  name: string;
  accessKey: string;
  image: string;
  type: 'interactive' | 'batch';
  clusterMode: 'single-node' | 'multi-node';
  resourceGroup: string;
  requestedSlots: Record<string, string>;
  kernels: KernelInput[];
}

export interface KernelView { status: KernelStatus; role: 'main' | 'sub'; statusInfo?: string; exitCode?: number }

export interface SessionContext extends SessionInput {
  kernelViews: Record<string, KernelView>;
  statusInfo?: string;
  statusData?: Record<string, unknown>;
  /** Set when termination (or cancellation) was asked for; the kernels follow. */
  termination?: { reason: string; forced: boolean };
  history: StatusChange[];
}

export type SessionEvent =
  | { type: 'SCHEDULE'; placements: Record<string, string> }
  | { type: 'PENDING_REASON'; reason: string; data?: Record<string, unknown> }
  | { type: 'CANCEL'; reason: string }
  | { type: 'TERMINATE'; reason: string; forced?: boolean }
  | { type: 'RESTART' }
  | { type: 'KERNEL_STATUS'; kernelId: string; status: KernelStatus; statusInfo?: string; exitCode?: number }
  | { type: 'KERNEL_EXITED'; kernelId: string; exitCode: number; oomKilled?: boolean }
  | { type: 'KERNEL_MISSING'; kernelId: string; reason: string }
  | { type: 'KERNEL_DEADLINE'; kernelId: string; now: number };

/** Backend.AI's session transitions (ERROR is reachable from every non-final status). */
export const SESSION_TRANSITIONS: Record<SessionStatus, readonly SessionStatus[]> = {
  PENDING: ['SCHEDULED', 'CANCELLED', 'ERROR'],
  SCHEDULED: ['PREPARING', 'CANCELLED', 'TERMINATING', 'ERROR'],
  PREPARING: ['RUNNING', 'TERMINATING', 'ERROR'],
  RUNNING: ['RESTARTING', 'RUNNING_DEGRADED', 'TERMINATING', 'ERROR'],
  RESTARTING: ['RUNNING', 'TERMINATING', 'ERROR'],
  RUNNING_DEGRADED: ['RUNNING', 'TERMINATING', 'ERROR'],
  TERMINATING: ['TERMINATED', 'ERROR'],
  TERMINATED: [],
  ERROR: [],
  CANCELLED: [],
};

/** The status the kernels and the requests put the session in. */
export function deriveSessionStatus(ctx: Pick<SessionContext, 'kernelViews' | 'termination'> & { history?: readonly StatusChange[] }): SessionStatus {
  const views = Object.values(ctx.kernelViews);
  const ks = views.map((k) => k.status);
  if (ks.every(isFinalKernelStatus)) {
    // A sub-kernel lost while the session went on degraded was reported then; it does not make the end an error.
    const degraded = ctx.history?.some((h) => h.status === 'RUNNING_DEGRADED') ?? false;
    if (views.some((k) => k.status === 'ERROR' && !(degraded && k.role === 'sub'))) return 'ERROR';
    if (ks.every((s) => s === 'CANCELLED')) return 'CANCELLED';
    return 'TERMINATED';
  }
  if (ks.includes('RESTARTING')) return 'RESTARTING';
  // A session that ran loses a sub-kernel: it goes on degraded while its main kernel and the
  // other kernels run (losing the main kernel ends the session).
  // A sub-kernel ending on its own (TERMINATING without the session asking) counts as lost already.
  const lost = (k: KernelView) => k.role === 'sub' && (k.status === 'TERMINATING' || isFinalKernelStatus(k.status));
  const ran = ctx.history?.some((h) => h.status === 'RUNNING') ?? false;
  if (ran && !ctx.termination && views.some(lost) && views.every((k) => k.status === 'RUNNING' || lost(k))) return 'RUNNING_DEGRADED';
  const ending = ctx.termination !== undefined || ks.some((s) => s === 'TERMINATING' || isFinalKernelStatus(s));
  if (ending && ks.some((s) => !['PENDING', 'SCHEDULED', 'CANCELLED'].includes(s))) return 'TERMINATING';
  if (ks.every((s) => s === 'RUNNING')) return 'RUNNING';
  if (ks.some((s) => s === 'PREPARING' || s === 'CREATING' || s === 'RUNNING')) return 'PREPARING';
  if (ks.some((s) => s === 'SCHEDULED')) return 'SCHEDULED';
  return 'PENDING';
}

// Every status's eventless transitions ask the same context for its derived status, once per
// candidate target after every microstep; contexts are immutable, so it is computed once.
const derived = new WeakMap<SessionContext, SessionStatus>();
function derivedStatus(context: SessionContext): SessionStatus {
  let status = derived.get(context);
  if (status === undefined) derived.set(context, status = deriveSessionStatus(context));
  return status;
}

/** Events each status accepts; everything else is ignored there (final statuses accept nothing). */
export const SESSION_ACCEPTS: Record<SessionStatus, readonly SessionEvent['type'][]> = {
  PENDING: ['SCHEDULE', 'PENDING_REASON', 'CANCEL', 'TERMINATE', 'KERNEL_STATUS'],
  SCHEDULED: ['CANCEL', 'TERMINATE', 'KERNEL_STATUS', 'KERNEL_DEADLINE'],
  PREPARING: ['TERMINATE', 'KERNEL_STATUS', 'KERNEL_EXITED', 'KERNEL_MISSING', 'KERNEL_DEADLINE'],
  RUNNING: ['TERMINATE', 'RESTART', 'KERNEL_STATUS', 'KERNEL_EXITED', 'KERNEL_MISSING', 'KERNEL_DEADLINE'],
  RESTARTING: ['TERMINATE', 'KERNEL_STATUS', 'KERNEL_EXITED', 'KERNEL_MISSING', 'KERNEL_DEADLINE'],
  RUNNING_DEGRADED: ['TERMINATE', 'KERNEL_STATUS', 'KERNEL_EXITED', 'KERNEL_MISSING', 'KERNEL_DEADLINE'],
  TERMINATING: ['KERNEL_STATUS', 'KERNEL_EXITED', 'KERNEL_MISSING', 'KERNEL_DEADLINE'],
  TERMINATED: [],
  ERROR: [],
  CANCELLED: [],
};

const liveKernelIds = (ctx: SessionContext) =>
  Object.entries(ctx.kernelViews).filter(([, k]) => !isFinalKernelStatus(k.status)).map(([id]) => id);

export const sessionMachine = setup({
  types: {} as { context: SessionContext; events: SessionEvent; input: SessionInput },
  actors: { kernel: kernelMachine },
  guards: {
    derives: ({ context }, { status }: { status: SessionStatus }) => derivedStatus(context) === status,
    kernelLive: ({ context, event }) =>
      'kernelId' in event && context.kernelViews[event.kernelId] !== undefined && !isFinalKernelStatus(context.kernelViews[event.kernelId].status),
  },
  actions: {
    record: assign(({ context }, { status }: { status: SessionStatus }) => ({
      history: appendHistory(context.history, status, context.statusInfo),
    })),
    // Ask every kernel that is still alive to end (cancel those not started yet).
    endKernels: enqueueActions(({ context, enqueue }) => {
      const t = context.termination ?? { reason: context.statusInfo ?? 'session-terminating', forced: false };
      for (const id of liveKernelIds(context)) {
        enqueue.sendTo(id, { type: 'TERMINATE', reason: t.reason, forced: t.forced });
      }
    }),
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({
    ...input,
    kernelViews: Object.fromEntries(input.kernels.map((k) => [k.kernelId, { status: 'PENDING' as KernelStatus, role: k.role }])),
    history: [],
  }),
  // Spawned once at creation; a restored session gets its kernels back from the snapshot.
  entry: enqueueActions(({ context, enqueue }) => {
    for (const k of context.kernels) enqueue.spawnChild('kernel', { id: k.kernelId, input: k, syncSnapshot: false });
  }),
  initial: 'PENDING',
  on: {
    KERNEL_STATUS: {
      // A report that changes nothing (a kernel's first PENDING) leaves the context as it is: an assign clones the snapshot.
      guard: ({ context, event }) => {
        const view = context.kernelViews[event.kernelId];
        return view !== undefined && (view.status !== event.status || view.statusInfo !== event.statusInfo || view.exitCode !== event.exitCode);
      },
      actions: assign(({ context, event }) => {
        const view: KernelView = { ...context.kernelViews[event.kernelId], status: event.status, statusInfo: event.statusInfo, exitCode: event.exitCode };
        const patch: Partial<SessionContext> = { kernelViews: { ...context.kernelViews, [event.kernelId]: view } };
        // A kernel that fails or ends on its own gives the session its reason.
        if (!context.termination && event.statusInfo && (event.status === 'TERMINATING' || event.status === 'ERROR')) {
          patch.statusInfo = view.role === 'main' ? event.statusInfo : `${event.statusInfo} (${event.kernelId})`;
          if (event.exitCode !== undefined) patch.statusData = { kernelId: event.kernelId, exitCode: event.exitCode };
        }
        return patch;
      }),
    },
  },
  states: Object.fromEntries(SESSION_STATUSES.map((status) => [status, stateNode(status)])) as Record<SessionStatus, ReturnType<typeof stateNode>>,
});

function stateNode(status: SessionStatus) {
  const accepts = SESSION_ACCEPTS[status];
  const forward = {
    KERNEL_EXITED: { guard: 'kernelLive', actions: enqueueActions(({ event: e, enqueue }) => {
      const event = e as SessionEvent;
      if (event.type === 'KERNEL_EXITED') enqueue.sendTo(event.kernelId, { type: 'CONTAINER_EXITED', exitCode: event.exitCode, oomKilled: event.oomKilled });
    }) },
    KERNEL_MISSING: { guard: 'kernelLive', actions: enqueueActions(({ event: e, enqueue }) => {
      const event = e as SessionEvent;
      if (event.type === 'KERNEL_MISSING') enqueue.sendTo(event.kernelId, { type: 'CONTAINER_MISSING', reason: event.reason });
    }) },
    KERNEL_DEADLINE: { guard: 'kernelLive', actions: enqueueActions(({ event: e, enqueue }) => {
      const event = e as SessionEvent;
      if (event.type === 'KERNEL_DEADLINE') enqueue.sendTo(event.kernelId, { type: 'DEADLINE', now: event.now });
    }) },
  } as const;
  const handlers: Record<string, unknown> = {
    SCHEDULE: {
      actions: enqueueActions(({ context, event: e, enqueue }) => {
        const event = e as SessionEvent;
        if (event.type !== 'SCHEDULE') return;
        // The pending reason goes; a session placed at once never had one (an assign clones the snapshot).
        if ((context as SessionContext).statusInfo !== undefined || (context as SessionContext).statusData !== undefined) enqueue.assign({ statusInfo: undefined, statusData: undefined });
        for (const [kernelId, agentId] of Object.entries(event.placements)) enqueue.sendTo(kernelId, { type: 'SCHEDULE', agentId });
      }),
    },
    PENDING_REASON: {
      actions: assign(({ event }) => (event.type === 'PENDING_REASON' ? { statusInfo: event.reason, statusData: event.data } : {})),
    },
    CANCEL: {
      actions: [
        assign(({ event }) => (event.type === 'CANCEL' ? { termination: { reason: event.reason, forced: false }, statusInfo: event.reason } : {})),
        'endKernels',
      ],
    },
    TERMINATE: {
      actions: [
        assign(({ event }) => (event.type === 'TERMINATE' ? { termination: { reason: event.reason, forced: !!event.forced }, statusInfo: event.reason } : {})),
        'endKernels',
      ],
    },
    RESTART: {
      actions: enqueueActions(({ context, enqueue }) => {
        for (const id of liveKernelIds(context as SessionContext)) enqueue.sendTo(id, { type: 'RESTART' });
      }),
    },
    ...forward,
  };
  const on: Record<string, unknown> = {};
  for (const type of accepts) if (type !== 'KERNEL_STATUS') on[type] = handlers[type];
  const final = SESSION_TRANSITIONS[status].length === 0;
  return {
    ...(final ? { type: 'final' as const } : {}),
    entry: [
      { type: 'record' as const, params: { status } },
      ...(status === 'TERMINATING' ? ['endKernels' as const] : []),
    ],
    always: SESSION_TRANSITIONS[status].map((target) => ({ target, guard: { type: 'derives' as const, params: { status: target } } })),
    on: on as never,
  };
}

export type SessionSnapshot = SnapshotFrom<typeof sessionMachine>;
