// What the agent daemon (startAgent and its RPC handlers) needs from a container backend.
// DockerBackend is the real one; SimulatedBackend (simulated.ts) only pretends, for scale tests
// and benchmarks. Every kernel operation is idempotent by kernel id.
import type { FileRpcName } from '../../schema/file-rpc.ts';
import type { ContainerReport, CreateKernelRequest, KernelUsage } from '../../schema/agent-rpc.ts';
import type { Logger } from '../log.ts';
import type { KernelRunner } from './runner.ts';

export interface KernelExit { kernelId: string; sessionId: string; exitCode: number; oomKilled?: boolean }

export type RpcHandler = (req: unknown) => Promise<unknown>;

/** The part of a kernel's runner the execute and interrupt RPCs use. */
export type KernelRunnerPort = Pick<KernelRunner, 'start' | 'input' | 'collect' | 'interrupt'>;

export interface AgentBackend {
  /** For messages: "Docker is not reachable". */
  readonly name: string;
  /** Whether kernels here run code (runners to re-attach at start, execute, files); false when simulated. */
  readonly runsCode: boolean;
  ping(): Promise<void>;
  /** Let go of what this process holds (the kernels keep running; a new agent finds them). */
  close(): void;
  /** Kernel images present here (full names, repo:tag). */
  images(): Promise<string[]>;
  createKernel(req: CreateKernelRequest): Promise<{ containerId: string }>;
  destroyKernel(kernelId: string, opts?: { forced?: boolean; stopGraceSeconds?: number; sessionId?: string }): Promise<{ existed: boolean }>;
  restartKernel(kernelId: string, stopGraceSeconds?: number): Promise<{ containerId: string }>;
  /** Every kernel container of this agent, running or exited (for the manager's reconciliation). */
  listContainers(): Promise<ContainerReport[]>;
  kernelUsage(): Promise<KernelUsage[]>;
  /** Slots held by live kernels; the agent sums the entries (one entry holding the total will do). */
  occupiedSlots(): Promise<Record<string, string>[]>;
  logs(kernelId: string, tail?: number): Promise<string>;
  /** Report kernels that end on their own (not destroyed or restarted on purpose). Returns a stop function. */
  watchExits(onExit: (e: KernelExit) => void): Promise<() => void>;
  /** The kernel's runner (execute, interrupt). */
  runner(kernelId: string): Promise<KernelRunnerPort>;
  /** The file RPC handlers (schema/file-rpc.ts) over this backend's kernels. */
  fileRpcHandlers(log: Logger): Record<FileRpcName, RpcHandler>;
}
