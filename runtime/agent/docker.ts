// The agent's container backend: Docker through dockerode, with the names, labels, limits and
// hardening of DESIGN.md §7. Every operation is idempotent by kernel id: the container is named
// `kernel.<kernel-id>`, so a repeated create finds it and a repeated destroy of a gone one succeeds.
import { PassThrough, type Writable } from 'node:stream';
import path from 'node:path';
import { KernelRunner } from './runner.ts';
import Docker from 'dockerode';
import type { ContainerReport, CreateKernelRequest, KernelUsage } from '../../schema/agent-rpc.ts';
import type { FileRpcName } from '../../schema/file-rpc.ts';
import type { Logger } from '../log.ts';
import type { AgentBackend, KernelExit, RpcHandler } from './backend.ts';
import { fileRpcHandlers } from './files.ts';

export const LABEL = {
  kernelId: 'ai.flotilla.kernel-id',
  sessionId: 'ai.flotilla.session-id',
  agentId: 'ai.flotilla.agent-id',
  owner: 'ai.flotilla.owner',
  role: 'ai.flotilla.role',
  slots: 'ai.flotilla.slots',
  kernelspec: 'ai.flotilla.kernelspec',
} as const;

export const containerName = (kernelId: string) => `kernel.${kernelId}`;
/** A multi-kernel session's own bridge network (on the Docker daemon the agents share; hosts apart would need an overlay network). */
export const sessionNetworkName = (sessionId: string) => `flotilla-session-${sessionId}`;

/** Backend.AI's cluster environment of one kernel. */
function clusterEnviron(req: CreateKernelRequest): string[] {
  if (!req.cluster) return [];
  const subs = req.cluster.hosts.length - 1;
  return [
    `BACKENDAI_CLUSTER_SIZE=${req.cluster.size}`, `BACKENDAI_CLUSTER_MODE=${req.cluster.mode}`,
    `BACKENDAI_CLUSTER_HOSTS=${req.cluster.hosts.join(',')}`, `BACKENDAI_CLUSTER_REPLICAS=main:1${subs ? `,sub:${subs}` : ''}`,
    `BACKENDAI_CLUSTER_IDX=${req.cluster.hosts.indexOf(req.hostname) === 0 ? 1 : req.cluster.hosts.indexOf(req.hostname)}`,
    `BACKENDAI_CLUSTER_LOCAL_RANK=${req.cluster.hosts.indexOf(req.hostname)}`,
  ];
}

/** The few capabilities a kernel runner needs after CapDrop ALL (switching to the work user, owning its files). */
const CAP_ADD = ['CHOWN', 'SETUID', 'SETGID', 'FOWNER', 'DAC_OVERRIDE', 'KILL'];
const PIDS_LIMIT = 1024;

export type { KernelExit } from './backend.ts';

export class DockerBackend implements AgentBackend {
  readonly name = 'Docker';
  readonly runsCode = true;
  readonly docker: Docker;
  /** Kernels being destroyed or restarted on purpose: their `die` is not an unexpected exit. */
  private readonly quiet = new Set<string>();
  /** One operation at a time per kernel (a destroy waits for a create in flight). */
  private readonly locks = new Map<string, Promise<unknown>>();
  private attached = new Map<string, { stream: NodeJS.ReadWriteStream; runner: KernelRunner }>();

  constructor(private readonly agentId: string, private readonly log: Logger, docker?: Docker) {
    this.docker = docker ?? new Docker();
  }

  private serial<T>(kernelId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(kernelId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(kernelId, next);
    void next.finally(() => { if (this.locks.get(kernelId) === next) this.locks.delete(kernelId); }).catch(() => undefined);
    return next;
  }

  async ping(): Promise<void> { await this.docker.ping(); }

  /** Let go of every runner attach (the containers keep running; a new agent re-attaches). */
  close(): void {
    for (const kernelId of [...this.attached.keys()]) this.detach(kernelId);
  }

  /** File transfer into and out of the containers (files.ts). */
  fileRpcHandlers(log: Logger): Record<FileRpcName, RpcHandler> { return fileRpcHandlers(this, log); }

  /** Kernel images present here (by their kernelspec label): every repo:tag of each. */
  async images(): Promise<string[]> {
    const list = await this.docker.listImages({ filters: JSON.stringify({ label: [LABEL.kernelspec] }) });
    return list.flatMap((i) => i.RepoTags ?? []).filter((t) => t !== '<none>:<none>').sort();
  }

  async createKernel(req: CreateKernelRequest): Promise<{ containerId: string }> {
    return this.serial(req.kernelId, async () => {
      const log = this.log.child({ kernelId: req.kernelId, sessionId: req.sessionId });
      for (const m of req.mounts ?? []) {
        // Bind only plain absolute paths: no `..` that could climb out of the storage root.
        if (path.posix.normalize(m.hostPath) !== m.hostPath || m.hostPath.split('/').includes('..') || m.containerPath.split('/').includes('..')) {
          throw new Error(`refusing to mount ${JSON.stringify(m.hostPath)} at ${JSON.stringify(m.containerPath)}`);
        }
      }
      // Create first: a new kernel (the usual case) costs no lookup; a 409 means the container
      // exists already (a repeated create), which is then found and brought up as it stands.
      let container: Docker.Container | undefined;
      let fresh = false;
      const network = req.cluster ? await this.ensureSessionNetwork(req.sessionId) : 'bridge';
      const cpu = Number(req.slots.cpu ?? '1');
      const mem = Number(req.slots.mem ?? '0');
      try {
        container = await this.docker.createContainer({
          name: containerName(req.kernelId),
          Image: req.image,
          Hostname: req.hostname,
          WorkingDir: '/home/work',
          Labels: {
            [LABEL.kernelId]: req.kernelId, [LABEL.sessionId]: req.sessionId, [LABEL.agentId]: this.agentId,
            [LABEL.owner]: req.owner, [LABEL.role]: req.role, [LABEL.slots]: JSON.stringify(req.slots),
          },
          Env: [
            ...Object.entries(req.environ).map(([k, v]) => `${k}=${v}`),
            `BACKENDAI_SESSION_ID=${req.sessionId}`, `BACKENDAI_KERNEL_ID=${req.kernelId}`,
            `BACKENDAI_CLUSTER_ROLE=${req.role}`, `BACKENDAI_CLUSTER_HOST=${req.hostname}`, ...clusterEnviron(req),
          ],
          // The runner speaks JSON lines on the attached stdin/stdout (DESIGN.md §8).
          OpenStdin: true, StdinOnce: false, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false,
          StopTimeout: req.stopGraceSeconds,
          HostConfig: {
            NanoCpus: Math.round(cpu * 1e9),
            ...(mem > 0 ? { Memory: mem, MemorySwap: mem } : {}),
            PidsLimit: PIDS_LIMIT,
            CapDrop: ['ALL'],
            CapAdd: CAP_ADD,
            SecurityOpt: ['no-new-privileges'],
            Privileged: false,
            NetworkMode: network,
            RestartPolicy: { Name: 'no' },
            // Virtual folders: bind mounts the manager resolved (read-only where shared `ro`).
            ...(req.mounts?.length ? { Mounts: req.mounts.map((m) => ({ Type: 'bind' as const, Source: m.hostPath, Target: m.containerPath, ReadOnly: m.readOnly })) } : {}),
          },
          // The other kernels of the session reach this one by its hostname (main1, sub1, ...).
          ...(req.cluster ? { NetworkingConfig: { EndpointsConfig: { [network]: { Aliases: [req.hostname] } } } } : {}),
        });
        fresh = true;
        log.info({ containerId: container.id }, 'container created');
      } catch (e) {
        if ((e as { statusCode?: number }).statusCode !== 409) throw e;
        container = await this.find(req.kernelId);
        if (!container) throw e;
      }
      const running = fresh ? false : (await container.inspect()).State;
      if (running === false || !running.Running) {
        if (running && (running.Status === 'exited' || running.Status === 'dead')) {
          throw new Error(`container of kernel ${req.kernelId} already exited (exit code ${running.ExitCode})`);
        }
        await this.attach(req.kernelId, container, false);
        await container.start();
        log.info('container started');
      } else {
        await this.attach(req.kernelId, container, true);
      }
      return { containerId: container.id };
    });
  }

  async destroyKernel(kernelId: string, opts: { forced?: boolean; stopGraceSeconds?: number; sessionId?: string } = {}): Promise<{ existed: boolean }> {
    const out = await this.serial(kernelId, () => this.removeKernel(kernelId, opts));
    // The last kernel of a cluster to go takes the session network with it (earlier ones find it still in use).
    if (opts.sessionId) await this.removeSessionNetwork(opts.sessionId);
    return out;
  }

  /**
   * The session network, created when absent. The daemon allows two networks of one name, so
   * kernels of a session must not race here: the manager lets a cluster's first kernel create
   * alone (effects.ts), and the others then find it.
   */
  private async ensureSessionNetwork(sessionId: string): Promise<string> {
    const name = sessionNetworkName(sessionId);
    const found = await this.docker.listNetworks({ filters: JSON.stringify({ name: [name] }) });
    if (found.some((n) => n.Name === name)) return name;
    await this.docker.createNetwork({ Name: name, Driver: 'bridge', Labels: { [LABEL.sessionId]: sessionId } });
    this.log.info({ sessionId, network: name }, 'session network created');
    return name;
  }

  private async removeSessionNetwork(sessionId: string): Promise<void> {
    const name = sessionNetworkName(sessionId);
    await this.docker.getNetwork(name).remove().then(
      () => this.log.info({ sessionId, network: name }, 'session network removed'),
      (e: { statusCode?: number }) => {
        // 404: gone already; 403/409: other kernels of the session still use it.
        if (![403, 404, 409].includes(e.statusCode ?? 0)) this.log.warn({ sessionId, network: name, err: String(e) }, 'session network not removed');
      },
    );
  }

  private async removeKernel(kernelId: string, opts: { forced?: boolean; stopGraceSeconds?: number }): Promise<{ existed: boolean }> {
    const container = await this.find(kernelId);
    if (!container) return { existed: false };
    this.quiet.add(kernelId);
    try {
      this.detach(kernelId);
      if (!opts.forced) {
        await container.stop({ t: opts.stopGraceSeconds ?? 3 }).catch((e: { statusCode?: number }) => {
          if (e.statusCode !== 304 && e.statusCode !== 404) throw e; // already stopped / gone
        });
      }
      await container.remove({ force: true, v: true }).catch((e: { statusCode?: number }) => {
        if (e.statusCode !== 404 && e.statusCode !== 409) throw e; // gone, or removal already in progress
      });
      this.log.info({ kernelId }, 'container removed');
      return { existed: true };
    } finally {
      setTimeout(() => this.quiet.delete(kernelId), 5000).unref();
    }
  }

  async restartKernel(kernelId: string, stopGraceSeconds = 3): Promise<{ containerId: string }> {
    return this.serial(kernelId, async () => {
      const container = await this.find(kernelId);
      if (!container) throw new Error(`kernel ${kernelId} has no container here`);
      this.quiet.add(kernelId);
      try {
        this.detach(kernelId);
        await container.stop({ t: stopGraceSeconds }).catch((e: { statusCode?: number }) => { if (e.statusCode !== 304) throw e; });
        // A restarted runner starts afresh (new namespace, seq from 1): attach before it starts.
        await this.attach(kernelId, container, false);
        await container.start();
        return { containerId: container.id };
      } finally {
        setTimeout(() => this.quiet.delete(kernelId), 2000).unref();
      }
    });
  }

  async listContainers(): Promise<ContainerReport[]> {
    const list = await this.docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL.agentId}=${this.agentId}`] }) });
    const out: ContainerReport[] = [];
    for (const c of list) {
      const kernelId = c.Labels[LABEL.kernelId];
      const sessionId = c.Labels[LABEL.sessionId];
      if (!kernelId || !sessionId) continue;
      const running = c.State === 'running';
      let exitCode: number | null = null;
      if (!running) exitCode = (await this.docker.getContainer(c.Id).inspect().catch(() => undefined))?.State.ExitCode ?? null;
      out.push({ kernelId, sessionId, containerId: c.Id, running, exitCode });
    }
    return out;
  }

  /** CPU time and memory of this agent's running kernels (Docker stats, one sample each). */
  async kernelUsage(): Promise<KernelUsage[]> {
    const list = await this.docker.listContainers({ filters: JSON.stringify({ label: [`${LABEL.agentId}=${this.agentId}`] }) });
    const out: KernelUsage[] = [];
    for (const c of list) {
      const kernelId = c.Labels[LABEL.kernelId];
      const sessionId = c.Labels[LABEL.sessionId];
      if (!kernelId || !sessionId) continue;
      // one-shot: no wait for a second sample (the usage job wants totals, not a rate).
      const container = this.docker.getContainer(c.Id);
      const stats = container.stats.bind(container) as unknown as (o: object) => Promise<{ cpu_stats?: { cpu_usage?: { total_usage?: number } }; memory_stats?: { usage?: number } }>;
      const st = await stats({ stream: false, 'one-shot': true }).catch(() => undefined);
      if (!st) continue; // gone between the list and the stats
      out.push({
        kernelId, sessionId,
        cpuUsedMs: Math.floor((st.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e6),
        memBytes: Math.max(0, Math.floor(st.memory_stats?.usage ?? 0)),
      });
    }
    return out;
  }

  /** Slots held by this agent's live containers (from their labels). */
  async occupiedSlots(): Promise<Record<string, string>[]> {
    const list = await this.docker.listContainers({ filters: JSON.stringify({ label: [`${LABEL.agentId}=${this.agentId}`] }) });
    return list.map((c) => { try { return JSON.parse(c.Labels[LABEL.slots] ?? '{}'); } catch { return {}; } });
  }

  async logs(kernelId: string, tail = 10_000): Promise<string> {
    const container = await this.find(kernelId);
    if (!container) throw new Error(`kernel ${kernelId} has no container here`);
    const buf = await container.logs({ stdout: true, stderr: true, follow: false, tail });
    return demuxBuffer(buf as unknown as Buffer);
  }

  /** Follow this agent's containers' `die` events; unexpected exits go to onExit. Returns a stop function. */
  async watchExits(onExit: (e: KernelExit) => void): Promise<() => void> {
    const stream = await this.docker.getEvents({
      filters: JSON.stringify({ type: ['container'], event: ['die'], label: [`${LABEL.agentId}=${this.agentId}`] }),
    }) as NodeJS.ReadableStream & { destroy?: () => void };
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      // One chunk can hold several JSON objects, or part of one.
      rest += chunk.toString('utf8');
      const lines = rest.split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          const ev = JSON.parse(line) as { id?: string; Actor?: { ID?: string; Attributes?: Record<string, string> } };
          const a = ev.Actor?.Attributes ?? {};
          const kernelId = a[LABEL.kernelId];
          if (!kernelId || this.quiet.has(kernelId)) continue;
          this.detach(kernelId);
          const exit: KernelExit = { kernelId, sessionId: a[LABEL.sessionId] ?? '', exitCode: Number(a.exitCode ?? -1) };
          // Whether the memory limit killed it is only in the container's state (it is kept until destroyed).
          const containerId = ev.id ?? ev.Actor?.ID;
          void (containerId ? this.docker.getContainer(containerId).inspect().then((i) => i.State?.OOMKilled === true, () => false) : Promise.resolve(false))
            .then((oomKilled) => onExit(oomKilled ? { ...exit, oomKilled } : exit))
            .catch((err: Error) => this.log.warn({ kernelId, err: err.message }, 'container exit not reported'));
        } catch (err) {
          this.log.warn({ err, line }, 'unreadable docker event');
        }
      }
    });
    stream.on('error', (err) => this.log.warn({ err }, 'docker event stream failed'));
    return () => stream.destroy?.();
  }

  /** The kernel's runner, attaching to its container first if this agent is not attached yet. */
  async runner(kernelId: string): Promise<KernelRunner> {
    const have = this.attached.get(kernelId);
    if (have) return have.runner;
    return this.serial(kernelId, async () => {
      const container = await this.find(kernelId);
      if (!container) throw new Error(`kernel ${kernelId} has no container here`);
      if (!(await container.inspect()).State.Running) throw new Error(`the container of kernel ${kernelId} is not running`);
      await this.attach(kernelId, container, true);
      return this.attached.get(kernelId)!.runner;
    });
  }

  /**
   * Attach to the runner's stdin/stdout. Before start (reattached false) the runner's ready line
   * is read here; a re-attach (agent restart, or create re-run) asks the runner to replay.
   */
  private async attach(kernelId: string, container: Docker.Container, reattached: boolean): Promise<void> {
    if (this.attached.has(kernelId)) return;
    const stream = await container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    this.docker.modem.demuxStream(stream, stdout, stderr);
    stderr.resume(); // the runner writes nothing there; user output travels inside the protocol
    stream.on('error', () => undefined);
    const runner = new KernelRunner(kernelId, stream as unknown as Writable, stdout, this.log, reattached);
    stream.on('end', () => {
      runner.close();
      if (this.attached.get(kernelId)?.stream === stream) this.attached.delete(kernelId);
    });
    this.attached.set(kernelId, { stream, runner });
  }

  private detach(kernelId: string): void {
    const a = this.attached.get(kernelId);
    this.attached.delete(kernelId);
    a?.runner.close();
    (a?.stream as { destroy?: () => void } | undefined)?.destroy?.();
  }

  /** The kernel's container, addressed by its id (dockerode's `.id` is whatever it was looked up by). */
  private async find(kernelId: string): Promise<Docker.Container | undefined> {
    try {
      const info = await this.docker.getContainer(containerName(kernelId)).inspect();
      return this.docker.getContainer(info.Id);
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return undefined;
      throw e;
    }
  }
}

/** Docker's multiplexed log format (8-byte frame headers) to text. */
export function demuxBuffer(buf: Buffer): string {
  const parts: Buffer[] = [];
  let i = 0;
  while (i + 8 <= buf.length) {
    const len = buf.readUInt32BE(i + 4);
    parts.push(buf.subarray(i + 8, i + 8 + len));
    i += 8 + len;
  }
  return Buffer.concat(parts).toString('utf8');
}
