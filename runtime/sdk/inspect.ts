// Following the live actor graph from the SDK: socket.io `/inspect` (admin keypairs only) sends
// the whole graph on connect, then deltas. `inspectActors` keeps a local copy of the graph up to
// date across reconnects (each reconnect signs a fresh handshake and gets a fresh snapshot).
// Only socket.io-client and schema/: no server dependency.
import { io, type Socket } from 'socket.io-client';
import type { ActorGraphDelta, ActorGraphSnapshot, ActorKind, ActorNode } from '../../schema/actors.ts';
import { AuthorizationFailed, Forbidden, FlotillaError } from '../../schema/errors.ts';
import { API_VERSION, signRequest } from '../../schema/signing.ts';

export type { ActorKind, ActorNode, ActorGraphSnapshot, ActorGraphDelta } from '../../schema/actors.ts';
export { filterActors, type ActorFilter } from '../../schema/actors.ts';

/**
 * Apply a delta to a map of nodes by id (in place).
 *
 * @example
 * socket.on('delta', (d: ActorGraphDelta) => applyActorDelta(nodes, d));
 */
export function applyActorDelta(nodes: Map<string, ActorNode>, d: ActorGraphDelta): void {
  for (const id of d.removes) nodes.delete(id);
  for (const n of d.upserts) nodes.set(n.id, n);
}

export interface InspectOptions {
  /** The manager's address, e.g. `http://127.0.0.1:8081` (the graph is that manager's). */
  endpoint: string;
  accessKey: string;
  secretKey: string;
  /** Sent as `X-BackendAI-Version`; default {@link API_VERSION}. */
  apiVersion?: string;
  /** Wait before reconnecting after a drop; default 1000 ms. */
  reconnectionDelayMs?: number;
  /** Stop following when aborted. */
  signal?: AbortSignal;
}

export interface ActorGraphWatch {
  readonly managerId: string;
  /** The current graph, by node id. */
  readonly nodes: ReadonlyMap<string, ActorNode>;
  /** Resolves at the first snapshot; rejects when the manager refuses the credentials. */
  readonly ready: Promise<void>;
  /**
   * Called after the snapshot (`graph`, also after each reconnect) and after each delta, with
   * the message itself. Returns the unsubscribe function.
   *
   * @example
   * graph.onChange((m) => { if (m.kind === 'delta') console.log(m.delta.upserts.length, 'changed'); });
   */
  onChange(cb: (msg: { kind: 'graph'; graph: ActorGraphSnapshot } | { kind: 'delta'; delta: ActorGraphDelta }) => void): () => void;
  /**
   * Called when the connection fails for good (refused credentials).
   *
   * @example
   * graph.onError((err) => console.error('inspect refused:', err.message));
   */
  onError(cb: (err: Error) => void): () => void;
  /**
   * Disconnect; no more changes arrive.
   *
   * @example
   * graph.close();
   */
  close(): void;
}

/**
 * The `handshake.auth` headers that sign `GET /socket.io` for the endpoint (a fresh Date).
 *
 * @example
 * io(`${endpoint}/watch`, { auth: (cb) => cb(signHandshake({ endpoint, accessKey, secretKey })) });
 */
export function signHandshake(opts: Pick<InspectOptions, 'endpoint' | 'accessKey' | 'secretKey' | 'apiVersion'>): Record<string, string> {
  const version = opts.apiVersion ?? API_VERSION;
  const date = new Date().toISOString();
  const { authorization } = signRequest({
    method: 'GET', pathWithQuery: '/socket.io', date, host: new URL(opts.endpoint).host, version, accessKey: opts.accessKey, secretKey: opts.secretKey,
  });
  return { Date: date, 'X-BackendAI-Version': version, Authorization: authorization };
}

/** A refused handshake (/watch, /inspect) as the SDK's typed error; a plain Error for what a retry may cure (a standby). */
export function handshakeError(message: string): Error {
  if (/admin only/i.test(message)) return new Forbidden(message);
  if (/signature|access key|Authorization|Date header|Version header|request date|token/i.test(message)) return new AuthorizationFailed(message);
  return new Error(message);
}

/**
 * Follow the live actor graph of one manager (socket.io `/inspect`, admin keypairs only).
 *
 * @example
 * const g = inspectActors({ endpoint: 'http://127.0.0.1:8081', accessKey, secretKey });
 * await g.ready;
 * g.onChange(() => console.log([...g.nodes.values()].filter((n) => n.kind === 'session').length, 'sessions'));
 */
export function inspectActors(opts: InspectOptions): ActorGraphWatch {
  const nodes = new Map<string, ActorNode>();
  let managerId = '';
  let closed = false;
  let gotFirst = false;
  const changes = new Set<Parameters<ActorGraphWatch['onChange']>[0]>();
  const errors = new Set<(err: Error) => void>();
  let markReady!: () => void;
  let failReady!: (e: Error) => void;
  const ready = new Promise<void>((resolve, reject) => { markReady = resolve; failReady = reject; });
  ready.catch(() => undefined);

  const socket: Socket = io(`${opts.endpoint.replace(/\/$/, '')}/inspect`, {
    transports: ['websocket'],
    reconnectionDelay: opts.reconnectionDelayMs ?? 1000,
    reconnectionDelayMax: Math.max(opts.reconnectionDelayMs ?? 1000, 5000),
    auth: (cb) => cb(signHandshake(opts)),
  });
  socket.on('graph', (g: ActorGraphSnapshot) => {
    managerId = g.managerId;
    nodes.clear();
    for (const n of g.nodes) nodes.set(n.id, n);
    if (!gotFirst) { gotFirst = true; markReady(); }
    for (const cb of changes) cb({ kind: 'graph', graph: g });
  });
  socket.on('delta', (d: ActorGraphDelta) => {
    applyActorDelta(nodes, d);
    for (const cb of changes) cb({ kind: 'delta', delta: d });
  });
  socket.on('connect_error', (raw) => {
    const err = handshakeError(raw.message);
    // Refused credentials do not get better by retrying; anything else: socket.io retries.
    if (!(err instanceof FlotillaError)) return;
    failReady(err);
    for (const cb of errors) cb(err);
    close();
  });

  const close = () => {
    if (closed) return;
    closed = true;
    socket.disconnect();
  };
  opts.signal?.addEventListener('abort', close, { once: true });

  return {
    get managerId() { return managerId; },
    nodes,
    ready,
    onChange(cb) { changes.add(cb); return () => { changes.delete(cb); }; },
    onError(cb) { errors.add(cb); return () => { errors.delete(cb); }; },
    close,
  };
}
