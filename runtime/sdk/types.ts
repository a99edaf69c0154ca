// Request and response payloads of the session routes, named exactly as API.md names them.
import type { KernelStatus, SessionStatus } from '../../schema/status.ts';

/**
 * Named resource amounts: `cpu` in cores, `mem` in bytes, plus any accelerator slot an agent
 * declares (`cuda.device`, ...). Strings with binary suffixes (`"1g"`) are accepted on input as
 * Backend.AI clients send them.
 */
export type ResourceSlots = { cpu?: number | string; mem?: number | string; [slot: string]: number | string | undefined };

export interface CreateSessionOptions {
  /** 4–64 chars of `[a-zA-Z0-9_.-]`; `sess-<random>` when omitted. */
  name?: string;
  /** Image alias (`python`, `shell`) or full name with tag. */
  image: string;
  type?: 'interactive' | 'batch';
  clusterSize?: number;
  clusterMode?: 'single-node' | 'multi-node';
  resources?: ResourceSlots;
  /** Virtual folder names, mounted at `/home/work/<name>`. */
  mounts?: string[];
  /** Where a mounted folder appears instead of `/home/work/<name>` (an absolute path below /home/work). */
  mountMap?: Record<string, string>;
  environ?: Record<string, string>;
  /** Resource group (sent as Backend.AI's `config.scalingGroup`). */
  resourceGroup?: string;
  /** Return as soon as the session is queued instead of waiting for RUNNING. */
  enqueueOnly?: boolean;
  /** How long the manager waits for RUNNING (0 = its default). */
  maxWaitSeconds?: number;
  /** Return the live session of this name instead of failing with SessionAlreadyExists. */
  reuseIfExists?: boolean;
  startupCommand?: string;
  tag?: string;
}

export interface CreateSessionResult {
  sessionId: string;
  sessionName: string;
  /** `TIMEOUT` when the wait for RUNNING ran out; the session keeps starting. */
  status: SessionStatus | 'TIMEOUT';
  servicePorts: unknown[];
  /** False when `reuseIfExists` returned an existing session. */
  created: boolean;
}

export interface StatusHistoryEntry { status: SessionStatus; at: string }

export interface KernelInfo {
  kernelId: string;
  /** Backend.AI's cluster role: `main` or `sub`. */
  role: string;
  hostname: string;
  agentId: string | null;
  containerId: string | null;
  status: KernelStatus;
}

export interface SessionInfo {
  sessionId: string;
  sessionName: string;
  image: string;
  status: SessionStatus;
  /** Why the session is in its status (e.g. why it is still PENDING). */
  statusInfo: string | null;
  statusData: Record<string, unknown> | null;
  statusHistory: StatusHistoryEntry[];
  occupiedSlots: ResourceSlots;
  requestedSlots: ResourceSlots;
  /** ISO 8601. */
  creationTime: string;
  terminationTime: string | null;
  numQueriesExecuted: number;
  kernels: KernelInfo[];
}

/** One row of `GET /session`: the listing subset of SessionInfo, same field names. */
export type SessionListItem = Pick<SessionInfo, 'sessionId' | 'sessionName' | 'image' | 'status' | 'statusInfo' | 'creationTime' | 'terminationTime'>;

export interface SessionList { items: SessionListItem[]; total: number }

export interface ListSessionsOptions {
  /** One status or several (sent comma-separated). */
  status?: SessionStatus | SessionStatus[];
  limit?: number;
  offset?: number;
}

export interface DestroySessionResult {
  stats: Record<string, unknown>;
  /** The status the session ended in (TERMINATING if it had not ended within the wait). */
  status: SessionStatus;
}

export type ConsoleItem = [stream: 'stdout' | 'stderr' | 'media', data: string];

export interface ExecuteRequest {
  /** `query` (code in the kernel's persistent interpreter), `batch` (options.build, options.exec), `continue`, `input`. */
  mode: 'query' | 'batch' | 'continue' | 'input';
  code?: string;
  /** Required with `continue` and `input`; assigned by the server when null with `query`/`batch`. */
  runId?: string | null;
  /** batch: `{build?, exec}`; any mode: `exec_timeout` in seconds. */
  options?: Record<string, unknown>;
}

export interface ExecuteResult {
  runId: string;
  status: 'finished' | 'continued' | 'waiting-input' | 'build-finished' | 'clean-finished' | 'exec-timeout';
  exitCode: number | null;
  console: ConsoleItem[];
  options: Record<string, unknown>;
  files: unknown[];
}

export interface RunOptions {
  mode?: 'query' | 'batch';
  options?: Record<string, unknown>;
  onOutput?: (stream: ConsoleItem[0], data: string) => void;
  onInput?: () => Promise<string> | string;
}

/** `POST /auth/token`: a socket.io handshake credential (`auth: {token}`) until `expiresAt`. */
export interface SocketToken { token: string; accessKey: string; expiresAt: string }
