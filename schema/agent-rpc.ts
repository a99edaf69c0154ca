// The manager ⇄ agent protocol on socket.io namespace /agent (DESIGN.md §3). Both sides check
// every payload against these schemas: nothing one side sends can crash the other.
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';

const Slots = Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 64 }));
const Id = Type.String({ minLength: 1, maxLength: 128 });

export const ContainerReport = Type.Object({
  kernelId: Id,
  sessionId: Id,
  containerId: Type.String(),
  running: Type.Boolean(),
  exitCode: Type.Union([Type.Integer(), Type.Null()]),
});
export type ContainerReport = Static<typeof ContainerReport>;

export const RegisterPayload = Type.Object({
  agentId: Id,
  resourceGroup: Type.String({ minLength: 1, maxLength: 64 }),
  addr: Type.String({ maxLength: 256 }),
  version: Type.String({ maxLength: 64 }),
  availableSlots: Slots,
  images: Type.Array(Type.String({ maxLength: 256 }), { maxItems: 1000 }),
  containers: Type.Array(ContainerReport, { maxItems: 100_000 }),
});
export type RegisterPayload = Static<typeof RegisterPayload>;

export const HeartbeatPayload = Type.Object({
  availableSlots: Slots,
  occupiedSlots: Slots,
  images: Type.Array(Type.String({ maxLength: 256 }), { maxItems: 1000 }),
  resourceGroup: Type.String({ minLength: 1, maxLength: 64 }),
});
export type HeartbeatPayload = Static<typeof HeartbeatPayload>;

// oomKilled: Docker's State.OOMKilled (the memory limit killed a process of the container).
export const KernelExitedPayload = Type.Object({ kernelId: Id, sessionId: Id, exitCode: Type.Integer(), oomKilled: Type.Optional(Type.Boolean()) });
export type KernelExitedPayload = Static<typeof KernelExitedPayload>;

const Hostname = Type.String({ pattern: '^[a-z][a-z0-9-]{0,62}$' });
export const ClusterSpec = Type.Object({
  size: Type.Integer({ minimum: 2, maximum: 64 }),
  mode: Type.Union([Type.Literal('single-node'), Type.Literal('multi-node')]),
  /** Every kernel's hostname, main first (main1, sub1, sub2, ...). */
  hosts: Type.Array(Hostname, { minItems: 2, maxItems: 64 }),
});
export type ClusterSpec = Static<typeof ClusterSpec>;

export const CreateKernelRequest = Type.Object({
  kernelId: Id,
  sessionId: Id,
  owner: Type.String({ maxLength: 64 }),
  image: Type.String({ minLength: 1, maxLength: 256 }),
  role: Type.Union([Type.Literal('main'), Type.Literal('sub')]),
  hostname: Type.String({ maxLength: 64 }),
  slots: Slots,
  environ: Type.Record(Type.String(), Type.String()),
  stopGraceSeconds: Type.Integer({ minimum: 0 }),
  /** Folders to bind-mount: absolute host paths under the storage root, container paths under /home/work. */
  mounts: Type.Optional(Type.Array(Type.Object({
    hostPath: Type.String({ minLength: 2, maxLength: 4096, pattern: '^/' }),
    containerPath: Type.String({ minLength: 12, maxLength: 4096, pattern: '^/home/work/' }),
    readOnly: Type.Boolean(),
  }), { maxItems: 64 })),
  /** A multi-kernel session: its kernels share a network where each resolves the others by hostname. */
  cluster: Type.Optional(ClusterSpec),
});
export type CreateKernelRequest = Static<typeof CreateKernelRequest>;

/** sessionId: a cluster kernel's session, whose network goes with its last container. */
export const KernelRef = Type.Object({
  kernelId: Id, forced: Type.Optional(Type.Boolean()), stopGraceSeconds: Type.Optional(Type.Integer({ minimum: 0 })), sessionId: Type.Optional(Id),
});
export type KernelRef = Static<typeof KernelRef>;

export const LogsRequest = Type.Object({ kernelId: Id, tail: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })) });
export type LogsRequest = Static<typeof LogsRequest>;

export const ExecuteRequest = Type.Object({
  kernelId: Id,
  runId: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' }),
  mode: Type.Union([Type.Literal('query'), Type.Literal('batch'), Type.Literal('continue'), Type.Literal('input')]),
  code: Type.String({ maxLength: 16 * 1024 * 1024 }),
  build: Type.Optional(Type.Union([Type.String({ maxLength: 65536 }), Type.Null()])),
  exec: Type.Optional(Type.String({ maxLength: 65536 })),
  timeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Answer after at most this long (default: the agent's flush interval, ~1.5 s). */
  flushMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 10_000 })),
});
export type ExecuteRequest = Static<typeof ExecuteRequest>;

/**
 * One piece of a run's console as the agent hands it over: its stream and its text as the body of
 * a JSON string literal (escaped UTF-8, without the quotes), the form the runner already sends it
 * in (images/runner/PROTOCOL.md). The agent checks that body; the manager splices it into its JSON
 * replies as it is and decodes it only for watchers (consoleText). It travels as a socket.io
 * binary attachment.
 */
export type ConsoleChunk = [stream: 'stdout' | 'stderr' | 'media', json: Buffer];
export interface ExecuteReply {
  runId: string;
  status: 'continued' | 'waiting-input' | 'build-finished' | 'finished' | 'exec-timeout';
  exitCode: number | null;
  console: ConsoleChunk[];
}

/** The console of a reply as text, the way API.md's `console` has it. */
export function consoleText(chunks: readonly ConsoleChunk[]): Array<[ConsoleChunk[0], string]> {
  return chunks.map(([stream, json]) => [stream, JSON.parse(`"${json.toString('utf8')}"`) as string]);
}

const RUN_STATUSES: ReadonlyArray<ExecuteReply['status']> = ['continued', 'waiting-input', 'build-finished', 'finished', 'exec-timeout'];
/** Whether a reply from an agent has the shape of an ExecuteReply (its console bodies are the agent's to check). */
export function isExecuteReply(r: unknown): r is ExecuteReply {
  const x = r as ExecuteReply | null;
  return !!x && typeof x.runId === 'string' && RUN_STATUSES.includes(x.status) && (x.exitCode === null || Number.isInteger(x.exitCode)) && Array.isArray(x.console)
    && x.console.every((c) => Array.isArray(c) && (c[0] === 'stdout' || c[0] === 'stderr' || c[0] === 'media') && Buffer.isBuffer(c[1]));
}

/** Every RPC answers through the socket.io acknowledgement with this envelope. */
export type RpcReply<T> = { ok: true; result: T } | { ok: false; error: { message: string; code?: string } };

export const checkRegister = Compile(RegisterPayload);
export const checkHeartbeat = Compile(HeartbeatPayload);
export const checkKernelExited = Compile(KernelExitedPayload);
export const checkCreateKernel = Compile(CreateKernelRequest);
export const checkKernelRef = Compile(KernelRef);
export const checkLogs = Compile(LogsRequest);
export const checkExecute = Compile(ExecuteRequest);

/** One kernel's usage as Docker stats reports it: cumulative CPU time and current memory. */
export const KernelUsage = Type.Object({ kernelId: Id, sessionId: Id, cpuUsedMs: Type.Integer({ minimum: 0 }), memBytes: Type.Integer({ minimum: 0 }) });
export type KernelUsage = Static<typeof KernelUsage>;
export const checkKernelUsageList = Compile(Type.Array(KernelUsage));

export interface AgentRpcs {
  createKernel: { req: CreateKernelRequest; res: { containerId: string } };
  destroyKernel: { req: KernelRef; res: { existed: boolean } };
  restartKernel: { req: KernelRef; res: { containerId: string } };
  listContainers: { req: Record<string, never>; res: ContainerReport[] };
  getLogs: { req: LogsRequest; res: { logs: string } };
  execute: { req: ExecuteRequest; res: ExecuteReply };
  interrupt: { req: KernelRef; res: { interrupted: boolean } };
  kernelUsage: { req: Record<string, never>; res: KernelUsage[] };
}
export type AgentRpcName = keyof AgentRpcs;
