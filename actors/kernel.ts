// The kernel statechart: one container's life (Backend.AI's KernelStatus). Pure: every effect
// that touches the world is a named promise actor the runtime provides (prepareKernel,
// createKernel, restartKernel, destroyKernel, awaitDurable). The runtime holds each effect
// until the transition that started it is committed (write before effect, DESIGN.md §2).
//
// Deadlines are timestamps in context (XState does not persist `after` timers); the runtime
// arms a timer from `deadlineAt` and sends DEADLINE, which the chart checks against the clock.
import { assign, fromPromise, sendParent, setup } from 'xstate';
import type { KernelStatus } from '../schema/status.ts';
import type { StatusChange } from './history.ts';
import { appendHistory } from './history.ts';

export interface KernelDeadlines { preparingMs: number; creatingMs: number; terminatingMs: number }

export interface KernelInput {
  kernelId: string;
  sessionId: string;
  role: 'main' | 'sub';
  idx: number;
  hostname: string;
  image: string;
  requestedSlots: Record<string, string>;
  deadlines: KernelDeadlines;
  /** Owner's access key and the session's environment, passed to the container. */
  owner?: string;
  environ?: Record<string, string>;
  /** Virtual folders bind-mounted into the container, resolved when the session was created. */
  mounts?: KernelMount[];
  /** A multi-kernel session's shape (absent for a single kernel). */
  cluster?: { size: number; mode: 'single-node' | 'multi-node'; hosts: string[] };
}

export interface KernelMount { folderId: string; name: string; hostPath: string; containerPath: string; readOnly: boolean }

export interface KernelContext extends KernelInput {
  agentId?: string;
  containerId?: string;
  exitCode?: number;
  statusInfo?: string;
  statusData?: Record<string, unknown>;
  /** When TERMINATING ends, the kernel ends in this status (ERROR after a failure). */
  finalStatus: 'TERMINATED' | 'ERROR';
  forced: boolean;
  deadlineAt?: number;
  destroyAttempts: number;
  history: StatusChange[];
}

export type KernelEvent =
  | { type: 'SCHEDULE'; agentId: string }
  | { type: 'CANCEL'; reason: string }
  | { type: 'TERMINATE'; reason: string; forced?: boolean }
  | { type: 'RESTART' }
  | { type: 'CONTAINER_EXITED'; exitCode: number; oomKilled?: boolean }
  | { type: 'CONTAINER_MISSING'; reason: string }
  | { type: 'DEADLINE'; now: number };

/** What the runtime receives to run each effect. */
export interface KernelEffectInput { kernel: KernelContext }
export interface CreatedKernel { containerId: string }

/** Pause between attempts to destroy a container that failed. */
export const DESTROY_RETRY_MS = 1000;

export const KERNEL_EFFECTS = ['awaitDurable', 'prepareKernel', 'createKernel', 'restartKernel', 'destroyKernel'] as const;

// Stand-ins that fail loudly: the runtime replaces each with machine.provide().
const effect = <T>(name: string) => fromPromise<T, KernelEffectInput>(async () => {
  throw new Error(`kernel effect ${name} is not provided by the runtime`);
});

// The entry actions of a status: record it in the history with its deadline (or none), report it to the session.
const enter = (status: KernelStatus, deadline?: keyof KernelDeadlines) => [
  { type: 'record', params: { status, deadline } },
  { type: 'report', params: { status } },
] as const;

const errorMessage = (e: unknown) => (e instanceof Error ? e.message : String(e));

export const kernelMachine = setup({
  types: {} as { context: KernelContext; events: KernelEvent; input: KernelInput },
  actors: {
    awaitDurable: effect<void>('awaitDurable'),
    prepareKernel: effect<void>('prepareKernel'),
    createKernel: effect<CreatedKernel>('createKernel'),
    restartKernel: effect<void>('restartKernel'),
    destroyKernel: effect<void>('destroyKernel'),
    // On the actor system's clock, so a simulated clock drives it in tests.
    retryDelay: fromPromise<void>(({ system }) => new Promise((resolve) => { system._clock.setTimeout(resolve, DESTROY_RETRY_MS); })),
  },
  guards: {
    deadlinePassed: ({ context, event }) => event.type === 'DEADLINE' && context.deadlineAt !== undefined && event.now >= context.deadlineAt,
    failedExit: ({ context }) => context.exitCode !== undefined && context.exitCode !== 0,
    mayRetryDestroy: ({ context }) => context.destroyAttempts < 5,
  },
  actions: {
    // Every status entered is recorded in context; the runtime persists the new entries and
    // tells the session (the parent) through KERNEL_STATUS.
    record: assign(({ context }, { status, deadline }: { status: KernelStatus; deadline?: keyof KernelDeadlines }) => ({
      history: appendHistory(context.history, status, context.statusInfo),
      deadlineAt: deadline ? Date.now() + context.deadlines[deadline] : undefined,
    })),
    report: sendParent(({ context }, { status }: { status: KernelStatus }) => ({
      type: 'KERNEL_STATUS' as const,
      kernelId: context.kernelId,
      status,
      statusInfo: context.statusInfo,
      exitCode: context.exitCode,
    })),
  },
}).createMachine({
  id: 'kernel',
  context: ({ input }) => ({ ...input, finalStatus: 'TERMINATED', forced: false, destroyAttempts: 0, history: [] }),
  initial: 'PENDING',
  states: {
    PENDING: {
      entry: [...enter('PENDING')],
      on: {
        SCHEDULE: { target: 'SCHEDULED', actions: assign({ agentId: ({ event }) => event.agentId }) },
        CANCEL: { target: 'CANCELLED', actions: assign({ statusInfo: ({ event }) => event.reason }) },
        TERMINATE: { target: 'CANCELLED', actions: assign({ statusInfo: ({ event }) => event.reason }) },
      },
    },
    SCHEDULED: {
      entry: [...enter('SCHEDULED')],
      // Nothing runs on the agent yet; PREPARING starts once SCHEDULED is durable.
      invoke: {
        src: 'awaitDurable',
        input: ({ context }) => ({ kernel: context }),
        onDone: 'PREPARING',
        onError: { target: 'CANCELLED', actions: assign({ statusInfo: 'failed-to-schedule', statusData: ({ event }) => ({ error: errorMessage(event.error) }) }) },
      },
      on: {
        TERMINATE: { target: 'CANCELLED', actions: assign({ statusInfo: ({ event }) => event.reason }) },
        CANCEL: { target: 'CANCELLED', actions: assign({ statusInfo: ({ event }) => event.reason }) },
      },
    },
    PREPARING: {
      entry: [...enter('PREPARING', 'preparingMs')],
      invoke: {
        src: 'prepareKernel',
        input: ({ context }) => ({ kernel: context }),
        onDone: 'CREATING',
        onError: {
          target: 'TERMINATING',
          actions: assign({ finalStatus: 'ERROR' as const, statusInfo: 'failed-to-prepare', statusData: ({ event }) => ({ error: errorMessage(event.error) }) }),
        },
      },
      on: {
        DEADLINE: { guard: 'deadlinePassed', target: 'TERMINATING', actions: assign({ finalStatus: 'ERROR' as const, statusInfo: 'preparing-timeout' }) },
        TERMINATE: { target: 'TERMINATING', actions: assign({ statusInfo: ({ event }) => event.reason, forced: ({ event }) => !!event.forced }) },
      },
    },
    CREATING: {
      entry: [...enter('CREATING', 'creatingMs')],
      invoke: {
        src: 'createKernel',
        input: ({ context }) => ({ kernel: context }),
        onDone: { target: 'RUNNING', actions: assign({ containerId: ({ event }) => event.output.containerId }) },
        onError: {
          target: 'TERMINATING',
          actions: assign({ finalStatus: 'ERROR' as const, statusInfo: 'failed-to-start', statusData: ({ event }) => ({ error: errorMessage(event.error) }) }),
        },
      },
      on: {
        DEADLINE: { guard: 'deadlinePassed', target: 'TERMINATING', actions: assign({ finalStatus: 'ERROR' as const, statusInfo: 'creating-timeout' }) },
        TERMINATE: { target: 'TERMINATING', actions: assign({ statusInfo: ({ event }) => event.reason, forced: ({ event }) => !!event.forced }) },
      },
    },
    RUNNING: {
      entry: [...enter('RUNNING')],
      on: {
        TERMINATE: { target: 'TERMINATING', actions: assign({ statusInfo: ({ event }) => event.reason, forced: ({ event }) => !!event.forced }) },
        RESTART: 'RESTARTING',
        CONTAINER_EXITED: {
          target: 'TERMINATING',
          actions: assign({
            exitCode: ({ event }) => event.exitCode,
            finalStatus: ({ event }) => (event.exitCode === 0 ? 'TERMINATED' as const : 'ERROR' as const),
            // The memory limit killed it: say so (Backend.AI users otherwise see only exit code 137).
            statusInfo: ({ event }) => (event.oomKilled ? `out-of-memory (exit code ${event.exitCode})` : `self-terminated (exit code ${event.exitCode})`),
            statusData: ({ event }) => (event.oomKilled ? { exitCode: event.exitCode, oomKilled: true } : { exitCode: event.exitCode }),
          }),
        },
        CONTAINER_MISSING: {
          target: 'TERMINATING',
          actions: assign({ finalStatus: 'ERROR' as const, statusInfo: ({ event }) => event.reason }),
        },
      },
    },
    RESTARTING: {
      entry: [...enter('RESTARTING')],
      invoke: {
        src: 'restartKernel',
        input: ({ context }) => ({ kernel: context }),
        onDone: 'RUNNING',
        onError: {
          target: 'TERMINATING',
          actions: assign({ finalStatus: 'ERROR' as const, statusInfo: 'failed-to-restart', statusData: ({ event }) => ({ error: errorMessage(event.error) }) }),
        },
      },
      on: {
        TERMINATE: { target: 'TERMINATING', actions: assign({ statusInfo: ({ event }) => event.reason, forced: ({ event }) => !!event.forced }) },
        CONTAINER_EXITED: { actions: assign({ exitCode: ({ event }) => event.exitCode }) },
      },
    },
    TERMINATING: {
      entry: [...enter('TERMINATING', 'terminatingMs')],
      initial: 'destroying',
      states: {
        destroying: {
          invoke: {
            src: 'destroyKernel',
            input: ({ context }) => ({ kernel: context }),
            onDone: '#kernel.ended',
            onError: [
              { guard: 'mayRetryDestroy', target: 'backoff', actions: assign({ destroyAttempts: ({ context }) => context.destroyAttempts + 1 }) },
              { target: '#kernel.ended', actions: assign({ statusData: ({ context, event }) => ({ ...context.statusData, destroyError: errorMessage(event.error) }) }) },
            ],
          },
        },
        // An invoked delay rather than `after`: a restored actor re-runs the promise actors that
        // were in flight, so the retry survives a manager restart (an `after` timer would not).
        backoff: { invoke: { src: 'retryDelay', onDone: 'destroying' } },
      },
      on: {
        // Forced termination (Backend.AI): the record ends even though the agent never confirmed.
        DEADLINE: { guard: 'deadlinePassed', target: 'ended', actions: assign({ statusData: ({ context }) => ({ ...context.statusData, forced: 'terminating-timeout' }) }) },
        CONTAINER_EXITED: { actions: assign({ exitCode: ({ context, event }) => context.exitCode ?? event.exitCode }) },
      },
    },
    // The destroy effect has answered (or the deadline forced it): pick the final status.
    ended: {
      always: [
        { guard: ({ context }) => context.finalStatus === 'ERROR', target: 'ERROR' },
        { target: 'TERMINATED' },
      ],
    },
    TERMINATED: { type: 'final', entry: [...enter('TERMINATED')] },
    ERROR: { type: 'final', entry: [...enter('ERROR')] },
    CANCELLED: { type: 'final', entry: [...enter('CANCELLED')] },
  },
});
