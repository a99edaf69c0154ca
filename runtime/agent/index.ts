// The agent daemon: dials the manager (socket.io /agent, NAT-friendly: nothing dials it),
// registers with its capacity, images and the containers it finds (for reconciliation),
// heartbeats, answers the manager's RPCs, and reports kernels that exit on their own.
import { hostname, cpus, totalmem } from 'node:os';
import { io, type Socket } from 'socket.io-client';
import {
  checkCreateKernel, checkExecute, checkKernelRef, checkLogs, type AgentRpcName, type HeartbeatPayload, type RegisterPayload, type RpcReply,
} from '../../schema/agent-rpc.ts';
import { addSlots, parseSlots, type ResourceSlots } from '../../schema/slots.ts';
import type { Logger } from '../log.ts';
import type { AgentBackend } from './backend.ts';
import { DockerBackend } from './docker.ts';
import { SimulatedBackend, type SimulatedBackendOptions } from './simulated.ts';

export interface AgentOptions<B extends AgentBackend = AgentBackend> {
  agentId?: string;
  managerUrls: string[];
  token: string;
  resourceGroup: string;
  /** e.g. "cpu=4,mem=8g"; default: the host's cores and memory. */
  slots?: string;
  log: Logger;
  /** The container backend; default: Docker. */
  backend?: B;
  /**
   * A simulated backend (simulated.ts: kernels only pretend, for scale tests and benchmarks),
   * when no backend is given. Never the default.
   */
  simulated?: boolean | SimulatedBackendOptions;
}

export interface RunningAgent<B extends AgentBackend = AgentBackend> {
  agentId: string;
  backend: B;
  /** Resolves once registered with a manager. */
  registered: Promise<void>;
  /** Stop heartbeating without closing (tests of agent loss). */
  pauseHeartbeats(paused: boolean): void;
  close(): Promise<void>;
}

export const AGENT_VERSION = '0.1.0';
/** Mean pause before dialling the next manager address after a refusal or a lost connection. */
const REDIAL_MS = 500;

export function defaultAgentId(): string { return `i-${hostname()}`; }

export async function startAgent<B extends AgentBackend = AgentBackend>(opts: AgentOptions<B>): Promise<RunningAgent<B>> {
  const agentId = opts.agentId ?? defaultAgentId();
  const log = opts.log.child({ agentId });
  const backend: AgentBackend = opts.backend
    ?? (opts.simulated ? new SimulatedBackend(agentId, log, opts.simulated === true ? {} : opts.simulated) : new DockerBackend(agentId, log));
  await backend.ping().catch((e: Error) => { throw new Error(`${backend.name} is not reachable: ${e.message}`); });
  const availableSlots: ResourceSlots = opts.slots ? parseSlots(opts.slots) : { cpu: String(cpus().length), mem: String(totalmem()) };

  let socket: Socket | undefined;
  let urlIndex = 0;
  /** The leader a standby named (on refusing or releasing this agent): dialled next. */
  let leaderHint: string | undefined;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  let heartbeatMs = 1000;
  let paused = false;
  let closed = false;
  let images: string[] = await backend.images();
  let resolveRegistered!: () => void;
  const registered = new Promise<void>((r) => { resolveRegistered = r; });

  // Re-attach to the runners of kernels that kept running while this agent was away; each
  // replays the output it has not had acknowledged.
  if (backend.runsCode) for (const c of await backend.listContainers()) {
    if (c.running) await backend.runner(c.kernelId).catch((err) => log.warn({ kernelId: c.kernelId, err: (err as Error).message }, 're-attach failed'));
  }

  const stopExits = await backend.watchExits((e) => {
    log.warn({ kernelId: e.kernelId, sessionId: e.sessionId, exitCode: e.exitCode }, 'kernel exited on its own');
    socket?.emit('kernelExited', e);
  });

  const heartbeat = async (): Promise<HeartbeatPayload> => {
    images = await backend.images().catch(() => images);
    const occupiedSlots = (await backend.occupiedSlots().catch(() => [])).reduce<ResourceSlots>((a, b) => addSlots(a, b), {});
    return { availableSlots, occupiedSlots, images, resourceGroup: opts.resourceGroup };
  };

  const scheduleHeartbeats = () => {
    clearInterval(heartbeatTimer);
    heartbeatTimer = setInterval(() => {
      if (paused || !socket?.connected) return;
      heartbeat().then((hb) => socket?.emit('heartbeat', hb), (err) => log.warn({ err }, 'heartbeat failed'));
    }, heartbeatMs);
  };

  // RPC handlers: validate, run, answer through the acknowledgement; never throw into socket.io.
  type Handler = (req: unknown) => Promise<unknown>;
  const handlers: Record<AgentRpcName, Handler> = {
    ...backend.fileRpcHandlers(log),
    createKernel: async (req) => {
      if (!checkCreateKernel.Check(req)) throw new Error('invalid createKernel request');
      return backend.createKernel(req);
    },
    destroyKernel: async (req) => {
      if (!checkKernelRef.Check(req)) throw new Error('invalid destroyKernel request');
      return backend.destroyKernel(req.kernelId, { forced: req.forced, stopGraceSeconds: req.stopGraceSeconds, sessionId: req.sessionId });
    },
    restartKernel: async (req) => {
      if (!checkKernelRef.Check(req)) throw new Error('invalid restartKernel request');
      return backend.restartKernel(req.kernelId, req.stopGraceSeconds);
    },
    listContainers: async () => backend.listContainers(),
    execute: async (req) => {
      if (!checkExecute.Check(req)) throw new Error('invalid execute request');
      const runner = await backend.runner(req.kernelId);
      if (req.mode === 'query' || req.mode === 'batch') {
        await runner.start(req.runId, { mode: req.mode, code: req.code, build: req.build, exec: req.exec, timeoutMs: req.timeoutMs });
      } else if (req.mode === 'input') {
        runner.input(req.runId, req.code);
      }
      return runner.collect(req.runId, req.flushMs);
    },
    interrupt: async (req) => {
      if (!checkKernelRef.Check(req)) throw new Error('invalid interrupt request');
      (await backend.runner(req.kernelId)).interrupt();
      return { interrupted: true };
    },
    kernelUsage: async () => backend.kernelUsage(),
    getLogs: async (req) => {
      if (!checkLogs.Check(req)) throw new Error('invalid getLogs request');
      return { logs: await backend.logs(req.kernelId, req.tail) };
    },
  };

  const connect = () => {
    if (closed) return;
    const url = opts.managerUrls[urlIndex % opts.managerUrls.length];
    const s = io(`${url.replace(/\/$/, '')}/agent`, {
      auth: { token: opts.token, agentId },
      reconnection: false,
      timeout: 5000,
      transports: ['websocket'],
    });
    socket = s;
    for (const [name, handler] of Object.entries(handlers)) {
      s.on(name, (req: unknown, ack?: (r: RpcReply<unknown>) => void) => {
        if (typeof ack !== 'function') return;
        handler(req).then(
          (result) => ack({ ok: true, result }),
          (err: Error & { code?: string }) => {
            log.warn({ rpc: name, err: err.message }, 'rpc failed');
            ack({ ok: false, error: { message: err.message, ...(typeof err.code === 'string' ? { code: err.code } : {}) } });
          },
        );
      });
    }
    s.on('connect', async () => {
      try {
        const payload: RegisterPayload = {
          agentId, resourceGroup: opts.resourceGroup, addr: hostname(), version: AGENT_VERSION,
          availableSlots, images: await backend.images(), containers: await backend.listContainers(),
        };
        const reply = await s.timeout(30_000).emitWithAck('register', payload) as RpcReply<{ heartbeatIntervalMs: number }>;
        if (!reply.ok) throw new Error(reply.error.message);
        heartbeatMs = reply.result.heartbeatIntervalMs;
        scheduleHeartbeats();
        log.info({ manager: url, heartbeatMs }, 'registered with the manager');
        resolveRegistered();
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'registration failed');
        s.disconnect();
      }
    });
    s.on('leader', (leader: unknown) => { if (typeof leader === 'string') leaderHint = leader; });
    s.on('heartbeatInterval', (ms: unknown) => {
      if (typeof ms === 'number' && ms >= 50) { heartbeatMs = ms; scheduleHeartbeats(); }
    });
    const retry = (why: string) => {
      s.removeAllListeners();
      s.close();
      if (closed) return;
      const hinted = leaderHint ? opts.managerUrls.findIndex((u) => u.replace(/\/$/, '') === leaderHint) : -1;
      leaderHint = undefined;
      urlIndex = hinted >= 0 ? hinted : urlIndex + 1;
      log.warn({ manager: url, why, next: opts.managerUrls[urlIndex % opts.managerUrls.length] }, 'manager connection lost, dialling again');
      // Jittered: after a takeover every agent of the cluster dials at once; spread, they do not
      // meet the new leader as one wave after another.
      setTimeout(connect, REDIAL_MS * (0.5 + Math.random())).unref();
    };
    s.on('connect_error', (err: Error & { data?: { leader?: unknown } }) => {
      if (typeof err.data?.leader === 'string') leaderHint = err.data.leader;
      retry(err.message);
    });
    s.on('disconnect', (reason) => retry(reason));
  };
  connect();

  return {
    agentId,
    backend: backend as B,
    registered,
    pauseHeartbeats(p) { paused = p; },
    async close() {
      closed = true;
      clearInterval(heartbeatTimer);
      stopExits();
      backend.close();
      socket?.removeAllListeners();
      socket?.close();
    },
  };
}
