// Statuses as Backend.AI names them (ai.backend.manager.models: SessionStatus, KernelStatus,
// AgentStatus), so its users and clients recognise them. The SQL CHECK constraints in
// schema/migrations list the same values.

export const SESSION_STATUSES = [
  'PENDING', 'SCHEDULED', 'PREPARING', 'RUNNING', 'RESTARTING', 'RUNNING_DEGRADED',
  'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED',
] as const;
export type SessionStatus = (typeof SESSION_STATUSES)[number];

export const KERNEL_STATUSES = [
  'PENDING', 'SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'RESTARTING',
  'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED',
] as const;
export type KernelStatus = (typeof KERNEL_STATUSES)[number];

export const AGENT_STATUSES = ['ALIVE', 'LOST', 'RESTARTING', 'TERMINATED'] as const;
export type AgentStatus = (typeof AGENT_STATUSES)[number];

export const FINAL_SESSION_STATUSES: readonly SessionStatus[] = ['TERMINATED', 'ERROR', 'CANCELLED'];
export const FINAL_KERNEL_STATUSES: readonly KernelStatus[] = ['TERMINATED', 'ERROR', 'CANCELLED'];

export const isFinalSessionStatus = (s: string): boolean => (FINAL_SESSION_STATUSES as readonly string[]).includes(s);
export const isFinalKernelStatus = (s: string): boolean => (FINAL_KERNEL_STATUSES as readonly string[]).includes(s);

/** Kernel statuses that hold resource slots on their agent (occupancy is derived from these). */
export const OCCUPYING_KERNEL_STATUSES: readonly KernelStatus[] = [
  'SCHEDULED', 'PREPARING', 'CREATING', 'RUNNING', 'RESTARTING', 'TERMINATING',
];

/** Backend.AI's event names for a status a session or kernel enters. */
export function lifecycleEventName(kind: 'session' | 'kernel', status: SessionStatus | KernelStatus): string | undefined {
  const suffix: Partial<Record<string, string>> = {
    PENDING: 'enqueued', SCHEDULED: 'scheduled', PREPARING: 'preparing', CREATING: 'creating',
    RUNNING: 'started', TERMINATING: 'terminating', TERMINATED: 'terminated', CANCELLED: 'cancelled',
    ERROR: 'failure', RESTARTING: 'restarting', RUNNING_DEGRADED: 'degraded',
  };
  const s = suffix[status];
  return s ? `${kind}_${s}` : undefined;
}

/** A session whose main kernel runs code: RUNNING, or RUNNING_DEGRADED (a sub-kernel lost, the main one alive). */
export const acceptsCode = (s: SessionStatus): boolean => s === 'RUNNING' || s === 'RUNNING_DEGRADED';
