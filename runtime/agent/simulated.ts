// A container backend that only pretends, for scale tests and benchmarks (`flotilla agent
// --simulated`): the agent process and its protocol are the real ones, but a kernel is an entry
// in memory with a fake container id. Create, destroy and restart answer after a small delay,
// idempotent by kernel id like DockerBackend; listContainers reports the entries, so the
// manager's reconciliation works as with Docker; no code runs, so execute, interrupt, logs and
// the file RPCs answer an error. Every kernel operation is O(1) (occupied slots are kept as a
// running total), so one process can host many agents with many kernels each. Never a default.
import { randomBytes } from 'node:crypto';
import type { ContainerReport, CreateKernelRequest, KernelUsage } from '../../schema/agent-rpc.ts';
import { FILE_RPC_NAMES, type FileRpcName } from '../../schema/file-rpc.ts';
import { addSlots, subtractSlots, type ResourceSlots } from '../../schema/slots.ts';
import { CLUSTER_KEYS } from '../../config/cluster.ts';
import type { Logger } from '../log.ts';
import type { AgentBackend, KernelExit, KernelRunnerPort, RpcHandler } from './backend.ts';

export const SIMULATED_ERROR_CODE = 'simulated-agent';
export const SIMULATED_NO_CODE = 'simulated agent: no code runs here';

/** The error every code-running RPC answers on a simulated agent (code `simulated-agent`). */
export class SimulatedAgentError extends Error {
  readonly code = SIMULATED_ERROR_CODE;
  constructor(what: string) { super(`${SIMULATED_NO_CODE} (${what})`); }
}

export interface SimulatedBackendOptions {
  /** How long create, destroy and restart take, in ms (default 2). */
  delayMs?: number;
  /** Images to report (default: the full names of the default `images.aliases`). */
  images?: string[];
}

interface SimKernel {
  sessionId: string;
  containerId: string;
  slots: ResourceSlots;
  running: boolean;
  exitCode: number | null;
  startedAt: number;
}

/** The full image names of the default cluster config's aliases. */
export function defaultSimulatedImages(): string[] {
  return [...new Set(Object.values(CLUSTER_KEYS['images.aliases'].default as Record<string, string>))].sort();
}

export class SimulatedBackend implements AgentBackend {
  readonly name = 'simulated';
  readonly runsCode = false;
  readonly delayMs: number;
  private readonly imageList: string[];
  private readonly kernels = new Map<string, SimKernel>();
  /** One operation at a time per kernel (a destroy waits for a create in flight), as in DockerBackend. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly exitListeners = new Set<(e: KernelExit) => void>();
  /** Sum of the slots of the running kernels. */
  private occupied: ResourceSlots = {};
  private seq = 0;
  private readonly idPrefix = randomBytes(20).toString('hex');

  constructor(readonly agentId: string, private readonly log: Logger, opts: SimulatedBackendOptions = {}) {
    this.delayMs = Math.max(0, opts.delayMs ?? 2);
    this.imageList = [...(opts.images ?? defaultSimulatedImages())].sort();
  }

  /** How many kernels (running or exited) this backend holds. */
  get size(): number { return this.kernels.size; }

  has(kernelId: string): boolean { return this.kernels.has(kernelId); }

  private serial<T>(kernelId: string, fn: () => T | Promise<T>): Promise<T> {
    const prev = this.locks.get(kernelId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(() => this.delay()).then(fn);
    this.locks.set(kernelId, next);
    void next.finally(() => { if (this.locks.get(kernelId) === next) this.locks.delete(kernelId); }).catch(() => undefined);
    return next;
  }

  private delay(): Promise<void> {
    return this.delayMs > 0 ? new Promise((r) => setTimeout(r, this.delayMs)) : Promise.resolve();
  }

  /** A 64-hex-digit id, as Docker's look. */
  private containerId(): string {
    return this.idPrefix + (this.seq++).toString(16).padStart(24, '0');
  }

  private stopped(k: SimKernel, exitCode: number): void {
    if (!k.running) return;
    k.running = false;
    k.exitCode = exitCode;
    this.occupied = subtractSlots(this.occupied, k.slots);
  }

  private started(k: SimKernel): void {
    if (k.running) return;
    k.running = true;
    k.exitCode = null;
    k.startedAt = Date.now();
    this.occupied = addSlots(this.occupied, k.slots);
  }

  async ping(): Promise<void> { /* nothing to reach */ }

  /** The kernels stay (as containers outlive their agent): a new agent on this backend reports them. */
  close(): void { /* nothing held */ }

  async images(): Promise<string[]> { return this.imageList; }

  createKernel(req: CreateKernelRequest): Promise<{ containerId: string }> {
    return this.serial(req.kernelId, () => {
      const have = this.kernels.get(req.kernelId);
      if (have) {
        if (!have.running) throw new Error(`container of kernel ${req.kernelId} already exited (exit code ${have.exitCode})`);
        return { containerId: have.containerId };
      }
      const k: SimKernel = { sessionId: req.sessionId, containerId: this.containerId(), slots: { ...req.slots }, running: false, exitCode: null, startedAt: 0 };
      this.kernels.set(req.kernelId, k);
      this.started(k);
      this.log.debug({ kernelId: req.kernelId, sessionId: req.sessionId, containerId: k.containerId }, 'simulated container created');
      return { containerId: k.containerId };
    });
  }

  destroyKernel(kernelId: string): Promise<{ existed: boolean }> {
    return this.serial(kernelId, () => {
      const k = this.kernels.get(kernelId);
      if (!k) return { existed: false };
      this.stopped(k, 0);
      this.kernels.delete(kernelId);
      return { existed: true };
    });
  }

  restartKernel(kernelId: string): Promise<{ containerId: string }> {
    return this.serial(kernelId, () => {
      const k = this.kernels.get(kernelId);
      if (!k) throw new Error(`kernel ${kernelId} has no container here`);
      this.stopped(k, 0);
      this.started(k);
      return { containerId: k.containerId };
    });
  }

  async listContainers(): Promise<ContainerReport[]> {
    const out: ContainerReport[] = [];
    for (const [kernelId, k] of this.kernels) out.push({ kernelId, sessionId: k.sessionId, containerId: k.containerId, running: k.running, exitCode: k.exitCode });
    return out;
  }

  /** Plausible numbers: a hundredth of the kernel's cpu slot busy since it started, memory a quarter of its mem slot (at most 64 MiB). */
  async kernelUsage(): Promise<KernelUsage[]> {
    const now = Date.now();
    const out: KernelUsage[] = [];
    for (const [kernelId, k] of this.kernels) {
      if (!k.running) continue;
      const cpu = Number(k.slots.cpu ?? '1') || 1;
      const mem = Number(k.slots.mem ?? '0') || 0;
      out.push({ kernelId, sessionId: k.sessionId, cpuUsedMs: Math.floor((now - k.startedAt) * cpu / 100), memBytes: Math.min(Math.floor(mem / 4), 64 * 1024 * 1024) });
    }
    return out;
  }

  async occupiedSlots(): Promise<Record<string, string>[]> { return [this.occupied]; }

  async logs(): Promise<string> { throw new SimulatedAgentError('no logs'); }

  async watchExits(onExit: (e: KernelExit) => void): Promise<() => void> {
    this.exitListeners.add(onExit);
    return () => { this.exitListeners.delete(onExit); };
  }

  async runner(): Promise<KernelRunnerPort> { throw new SimulatedAgentError('execute and interrupt are refused'); }

  fileRpcHandlers(): Record<FileRpcName, RpcHandler> {
    const refuse: RpcHandler = async () => { throw new SimulatedAgentError('no files'); };
    return Object.fromEntries(FILE_RPC_NAMES.map((n) => [n, refuse])) as Record<FileRpcName, RpcHandler>;
  }

  /**
   * Make a kernel's container end on its own, as a crashed process would: reported to the
   * manager as an exit unless `unobserved` (then only listContainers shows it, as for an exit
   * while the agent was away).
   */
  simulateExit(kernelId: string, exitCode = 1, opts: { unobserved?: boolean } = {}): boolean {
    const k = this.kernels.get(kernelId);
    if (!k?.running) return false;
    this.stopped(k, exitCode);
    if (!opts.unobserved) for (const l of this.exitListeners) l({ kernelId, sessionId: k.sessionId, exitCode });
    return true;
  }

  /** Make a kernel's container vanish without a trace (removed behind the agent's back). */
  simulateVanish(kernelId: string): boolean {
    const k = this.kernels.get(kernelId);
    if (!k) return false;
    this.stopped(k, -1);
    return this.kernels.delete(kernelId);
  }

  /** Put a container here that no manager asked for (an orphan, for reconciliation tests). */
  simulateOrphan(kernelId: string, sessionId: string, slots: ResourceSlots = {}): string {
    const k: SimKernel = { sessionId, containerId: this.containerId(), slots: { ...slots }, running: false, exitCode: null, startedAt: 0 };
    this.kernels.set(kernelId, k);
    this.started(k);
    return k.containerId;
  }
}
